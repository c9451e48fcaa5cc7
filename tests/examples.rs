//! The examples end to end over real sockets: each example's server, started as its `main` starts
//! it, answers a valid key and refuses the rest the way its protocol expects.

// The examples' `main`s are not called here.
#[allow(dead_code)]
#[path = "../examples/hyper.rs"]
mod hyper_example;

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower_api_key::store::KeyUpdate;
use tower_api_key::{KeyRing, MemoryStore, Status};

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
