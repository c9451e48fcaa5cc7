//! The layer over a real socket: under an axum 0.8 `Router`, and in front of a bare hyper 1 server,
//! driven by a hyper client.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::MatchedPath;
use axum::routing::get;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_api_key::{ApiKeyLayer, Identity, KeyRing, MemoryStore, NewKey, Scope, Status};

use common::*;

/// Sends one request over a fresh connection and reads the whole answer.
async fn fetch(
    addr: SocketAddr,
    method: Method,
    path: &str,
    authorization: &[&str],
) -> Result<Answer, hyper_util::client::legacy::Error> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for value in authorization {
        builder = builder.header(AUTHORIZATION, *value);
    }
    let response = client
        .request(builder.body(Full::default()).expect("request"))
        .await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

async fn get_over_socket(addr: SocketAddr, path: &str, authorization: &[&str]) -> Answer {
    fetch(addr, Method::GET, path, authorization)
        .await
        .expect("answer")
}

async fn whoami(Extension(identity): Extension<Identity>) -> Json<Value> {
    let login = identity.login();
    Json(json!({
        "keyId": identity.key_id().map(|id| id.get()),
        "userName": login.as_ref().map(|l| l.user_name.clone()),
        "scopes": identity.scopes(),
        "readOnly": identity.is_read_only(),
    }))
}

async fn create() -> StatusCode {
    StatusCode::CREATED
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    (listener, addr)
}

async fn serve_axum(app: Router) -> SocketAddr {
    let (listener, addr) = listen().await;
    tokio::spawn(async move { axum::serve(listener, app).await.expect("axum server") });
    addr
}

#[tokio::test]
async fn axum_router_with_the_layer_over_a_socket() {
    let ring = memory_ring();
    let valid = issue(
        &ring,
        NewKey::new(alice())
            .description("axum")
            .scopes([Scope::REST, Scope::UI]),
    )
    .await;
    let reader = issue(
        &ring,
        NewKey::new(alice())
            .description("reader")
            .scope(Scope::REST)
            .read_only(true),
    )
    .await;
    let disabled = issue(
        &ring,
        NewKey::new(alice())
            .description("off")
            .scope(Scope::REST)
            .status(Status::Disabled),
    )
    .await;
    let app = Router::new()
        .route("/api/v3/whoami", get(whoami).post(create))
        .layer(ApiKeyLayer::new(ring.clone()).require_scope(Scope::REST));
    let addr = serve_axum(app).await;

    let answer = get_over_socket(addr, "/api/v3/whoami", &[&bearer(valid.key())]).await;
    assert_eq!(answer.status, StatusCode::OK);
    let body: Value = serde_json::from_slice(&answer.body).expect("json");
    assert_eq!(
        body,
        json!({
            "keyId": valid.id().get(),
            "userName": "alice",
            "scopes": ["ui", "rest"],
            "readOnly": false,
        })
    );
    let created = fetch(
        addr,
        Method::POST,
        "/api/v3/whoami",
        &[&bearer(valid.key())],
    )
    .await
    .expect("answer");
    assert_eq!(created.status, StatusCode::CREATED);

    get_over_socket(addr, "/api/v3/whoami", &[])
        .await
        .assert_refused(401, Some(MISSING));
    get_over_socket(addr, "/api/v3/whoami", &[&bearer(disabled.key())])
        .await
        .assert_refused(401, Some(INVALID_TOKEN));
    fetch(
        addr,
        Method::POST,
        "/api/v3/whoami",
        &[&bearer(reader.key())],
    )
    .await
    .expect("answer")
    .assert_refused(403, Some(INSUFFICIENT_SCOPE));
    // The client's two headers arrive as two headers.
    get_over_socket(
        addr,
        "/api/v3/whoami",
        &[&bearer(valid.key()), &bearer(valid.key())],
    )
    .await
    .assert_refused(400, Some(INVALID_REQUEST));

    // A change through the ring reaches the running server at once.
    ring.set_user_status(&alice().user_uid, Status::Disabled)
        .await
        .expect("disabled");
    get_over_socket(addr, "/api/v3/whoami", &[&bearer(valid.key())])
        .await
        .assert_refused(401, Some(INVALID_TOKEN));
}

#[tokio::test]
async fn axum_route_layer_takes_the_scope_from_the_matched_route() {
    let ring = memory_ring();
    let rest = issue(
        &ring,
        NewKey::new(alice()).description("rest").scope(Scope::REST),
    )
    .await;
    let integration = issue(
        &ring,
        NewKey::new(alice())
            .description("integration")
            .scope(Scope::INTEGRATION),
    )
    .await;
    let layer = ApiKeyLayer::new(ring).scope_from(|parts: &Parts| {
        match parts
            .extensions
            .get::<MatchedPath>()
            .map(MatchedPath::as_str)
        {
            Some("/api/v3/users/{uid}/logins") => Some(Scope::REST),
            Some("/api/v3/integrations") => Some(Scope::INTEGRATION),
            _ => Some(Scope::UI),
        }
    });
    let app = Router::new()
        .route("/api/v3/users/{uid}/logins", get(whoami))
        .route("/api/v3/integrations", get(whoami))
        .route_layer(layer);
    let addr = serve_axum(app).await;

    let logins = "/api/v3/users/u-alice/logins";
    let answer = get_over_socket(addr, logins, &[&bearer(rest.key())]).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    get_over_socket(addr, logins, &[&bearer(integration.key())])
        .await
        .assert_refused(
            403,
            Some(r#"Bearer realm="api", error="insufficient_scope", scope="rest""#),
        );
    let answer = get_over_socket(addr, "/api/v3/integrations", &[&bearer(integration.key())]).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    get_over_socket(addr, "/api/v3/integrations", &[&bearer(rest.key())])
        .await
        .assert_refused(
            403,
            Some(r#"Bearer realm="api", error="insufficient_scope", scope="integration""#),
        );
    // A path no route matches never reaches the route layer.
    let answer = get_over_socket(addr, "/api/v3/other", &[]).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

/// A bare hyper server with the layer over a `service_fn`; the probe counts the calls.
async fn serve_hyper(ring: KeyRing, probe: Probe) -> SocketAddr {
    let handler = probe.handler();
    let service = ServiceBuilder::new()
        .layer(ApiKeyLayer::new(ring))
        .service_fn(move |request: Request<Incoming>| {
            let (parts, _) = request.into_parts();
            let user = parts
                .extensions
                .get::<Identity>()
                .and_then(Identity::login)
                .map(|login| login.user_name.clone())
                .unwrap_or_default();
            let inner = handler.clone();
            async move {
                inner(Request::from_parts(parts, Body::default())).await?;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(user))))
            }
        });
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                // A connection may end in an error (a client gone, a panicking store); the server goes on.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn hyper_server_with_the_layer_over_a_socket() {
    let ring = memory_ring();
    let valid = issue(&ring, NewKey::new(alice()).description("hyper")).await;
    let disabled = issue(
        &ring,
        NewKey::new(bob())
            .description("off")
            .status(Status::Disabled),
    )
    .await;
    let probe = Probe::new();
    let addr = serve_hyper(ring, probe.clone()).await;

    let answer = get_over_socket(addr, "/things", &[&bearer(valid.key())]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "alice");
    assert_eq!(probe.calls(), 1);

    let answer = get_over_socket(addr, "/things", &[]).await;
    answer.assert_refused(401, Some(MISSING));
    assert_eq!(answer.headers[CONTENT_TYPE], "application/json");
    get_over_socket(addr, "/things", &[&bearer(disabled.key())])
        .await
        .assert_refused(401, Some(INVALID_TOKEN));
    // Scheme case and trailing whitespace survive the trip (hyper trims the whitespace itself).
    let answer = get_over_socket(addr, "/things", &[&format!("bEaReR {} ", valid.key())]).await;
    assert_eq!(answer.status, StatusCode::OK);
    get_over_socket(
        addr,
        "/things",
        &[&bearer(valid.key()), "Basic dXNlcjpwYXNz"],
    )
    .await
    .assert_refused(400, Some(INVALID_REQUEST));
    assert_eq!(probe.calls(), 2);
}

/// What a panicking store means in a real server: hyper's connection task ends, the client sees the
/// connection close without an answer, the inner service is not called, and the server goes on.
#[tokio::test]
async fn store_panic_under_hyper_drops_the_connection_without_calling_inner() {
    let memory = MemoryStore::new();
    let issued = issue(
        &KeyRing::new(memory.clone()),
        NewKey::new(alice()).description("panic"),
    )
    .await;
    let store = FaultStore::new(memory);
    let ring = KeyRing::builder(store.clone())
        .with_lookup_timeout(Duration::from_secs(5))
        .build();
    let probe = Probe::new();
    let addr = serve_hyper(ring, probe.clone()).await;

    store.set(Fault::Panic);
    let outcome = fetch(addr, Method::GET, "/things", &[&bearer(issued.key())]).await;
    assert!(outcome.is_err(), "no answer after a panic: {outcome:?}");
    assert_eq!(probe.calls(), 0);

    store.set(Fault::PassThrough);
    let answer = get_over_socket(addr, "/things", &[&bearer(issued.key())]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "alice");
    assert_eq!(store.gets(), 2);
    assert_eq!(probe.calls(), 1);
}
