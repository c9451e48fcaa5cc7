//! The examples end to end over real sockets: each example's server, started as its `main` starts
//! it, answers a valid key and refuses the rest the way its protocol expects.

// The examples' `main`s are not called here.
#[allow(dead_code)]
#[path = "../examples/hyper.rs"]
mod hyper_example;
#[allow(dead_code)]
#[path = "../examples/tonic.rs"]
mod tonic_example;

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tonic::metadata::MetadataValue;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower_api_key::store::KeyUpdate;
use tower_api_key::{KeyRing, MemoryStore, Reason, Rejection, Scope, Status};

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    (listener, addr)
}

async fn disable(keys: &KeyRing, id: tower_api_key::KeyId) {
    keys.update(id, KeyUpdate::status(Status::Disabled))
        .await
        .expect("store")
        .expect("key");
}

/// `key` with one character of its secret changed.
fn tampered(key: &str) -> String {
    let mut wrong = key.to_owned();
    let i = key.len() / 2 + 4;
    let c = if &key[i..=i] == "A" { "B" } else { "A" };
    wrong.replace_range(i..=i, c);
    wrong
}

/// `GET /` over HTTP/1 with `authorization`, if any: status, `WWW-Authenticate`, body.
async fn get(
    addr: SocketAddr,
    authorization: Option<&str>,
) -> (StatusCode, Option<String>, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::get(format!("http://{addr}/"));
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    let response = client
        .request(request.body(Full::default()).expect("request"))
        .await
        .expect("answer");
    let status = response.status();
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        challenge,
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

#[tokio::test]
async fn hyper_example_answers_its_key_and_refuses_the_rest() {
    let keys = KeyRing::new(MemoryStore::new());
    let issued = hyper_example::issue_key(&keys).await.expect("issued");
    let (listener, addr) = listen().await;
    let server = tokio::spawn(hyper_example::serve(listener, keys.clone()));

    let bearer = format!("Bearer {}", issued.key());
    let (status, _, body) = get(addr, Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        format!(
            "hello, key {} (scopes: rest, read-only: false)\n",
            issued.id()
        )
    );

    let (status, challenge, _) = get(addr, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.as_deref(), Some("Bearer realm=\"api\""));
    let (status, challenge, body) =
        get(addr, Some(&format!("Bearer {}", tampered(issued.key())))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge.as_deref(),
        Some("Bearer realm=\"api\", error=\"invalid_token\"")
    );
    assert!(!body.contains("hello"));

    disable(&keys, issued.id()).await;
    let (status, challenge, _) = get(addr, Some(&bearer)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge.as_deref(),
        Some("Bearer realm=\"api\", error=\"invalid_token\"")
    );
    server.abort();
}

/// `grpc.health.v1.Health/Check` with `key`, if any: the serving status or the gRPC status.
async fn check(addr: SocketAddr, key: Option<&str>) -> Result<i32, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::new(channel);
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    if let Some(key) = key {
        let value = MetadataValue::try_from(format!("Bearer {key}")).expect("ascii");
        request.metadata_mut().insert("authorization", value);
    }
    client.check(request).await.map(|r| r.into_inner().status)
}

/// A gRPC health check without credentials over plain HTTP/2: the HTTP status and headers.
async fn grpc_over_h2(addr: SocketAddr) -> (StatusCode, http::HeaderMap) {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    // An empty HealthCheckRequest: no compression flag, zero length.
    let frame = Bytes::from_static(&[0, 0, 0, 0, 0]);
    let request = Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(frame))
        .expect("request");
    let response = client.request(request).await.expect("answer");
    (response.status(), response.headers().clone())
}

#[tokio::test]
async fn tonic_example_serves_health_to_its_key_and_refuses_with_grpc_statuses() {
    let keys = KeyRing::new(MemoryStore::new());
    let grpc = tonic_example::grpc_scope();
    let issued = tonic_example::issue_key(&keys, grpc, false)
        .await
        .expect("issued");
    let read_only = tonic_example::issue_key(&keys, grpc, true)
        .await
        .expect("issued");
    let rest_only = tonic_example::issue_key(&keys, Scope::REST, false)
        .await
        .expect("issued");
    let (listener, addr) = listen().await;
    let server = tokio::spawn(tonic_example::serve(listener, keys.clone()));

    let serving = check(addr, Some(issued.key())).await.expect("served");
    // Refusals reach the wire as gRPC answers, not as HTTP errors (which a client would map to
    // similar codes without the message).
    let (status, headers) = grpc_over_h2(addr).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["grpc-status"], "16");
    assert_eq!(serving, ServingStatus::Serving as i32);

    let refused = |result: Result<i32, tonic::Status>| result.expect_err("refused");
    let none = refused(check(addr, None).await);
    assert_eq!(none.code(), Code::Unauthenticated);
    assert_eq!(
        none.message(),
        "an API key is required: authorization: Bearer <key>"
    );
    let wrong_key = tampered(issued.key());
    let wrong = refused(check(addr, Some(&wrong_key)).await);
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(wrong.message(), "the API key is invalid");
    assert!(!wrong.message().contains(&wrong_key));
    // Every gRPC call is a POST: a read-only key opens none.
    let reading = refused(check(addr, Some(read_only.key())).await);
    assert_eq!(reading.code(), Code::PermissionDenied);
    assert_eq!(reading.message(), "the API key may not call this method");
    let other_scope = refused(check(addr, Some(rest_only.key())).await);
    assert_eq!(other_scope.code(), Code::PermissionDenied);

    disable(&keys, issued.id()).await;
    let disabled = refused(check(addr, Some(issued.key())).await);
    assert_eq!(disabled.code(), Code::Unauthenticated);
    assert_eq!(disabled.message(), wrong.message());
    server.abort();
}

#[test]
fn tonic_refusals_are_http_200_with_a_grpc_status() {
    let cases = [
        (Reason::NoCredentials, "16"),
        (Reason::WrongSecret, "16"),
        (Reason::Disabled(Status::Disabled), "16"),
        (Reason::DuplicateHeader, "3"),
        (Reason::MissingScope(Scope::REST), "7"),
        (Reason::ReadOnly, "7"),
        (Reason::StoreTimeout, "14"),
        (Reason::StoreError, "14"),
    ];
    for (reason, code) in cases {
        let response = tonic_example::grpc_rejection(Rejection::new(reason));
        assert_eq!(response.status(), StatusCode::OK, "{reason}");
        let headers = response.headers();
        assert_eq!(headers["content-type"], "application/grpc", "{reason}");
        assert_eq!(headers["grpc-status"], code, "{reason}");
        let message = headers["grpc-message"].to_str().expect("ascii");
        assert!(!message.is_empty(), "{reason}");
        assert!(!message.contains(reason.as_str()), "{reason}: {message}");
    }
}
