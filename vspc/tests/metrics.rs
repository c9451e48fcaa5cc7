//! `GET /metrics` over real HTTP: the server of `admin_api.rs` with the Prometheus recorder, known
//! numbers of accepted and refused requests, and the scrape read back. Its own test binary: the
//! recorder is process-wide, and the layer registers its counters with the first one it sees.

// Helpers outside `#[test]` functions are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use tower_api_key::store::AccountStore;
use tower_api_key::{KeyFormat, KeyRing, MemoryStore, NewKey, Owner, Scope};
use tower_api_key_vspc::{bootstrap_admin, install_recorder, trace_layer, Admin};

const ADMIN_PASSWORD: &str = "admin password for tests";
const SECRET: &[u8] = b"a JWT secret for the metrics tests, 32+ bytes long";

/// A running server, as `main.rs` builds it, and a client for it.
struct Server {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    admin_uid: String,
}

async fn start(store: MemoryStore, recorder: PrometheusHandle) -> Server {
    let accounts: Arc<dyn AccountStore> = Arc::new(store.clone());
    let boot = bootstrap_admin(accounts.as_ref(), Some(ADMIN_PASSWORD))
        .await
        .unwrap();
    let app = Admin::new(KeyRing::new(store), accounts, SECRET)
        .with_metrics(recorder)
        .router()
        .layer(trace_layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Server {
        addr,
        client: Client::builder(TokioExecutor::new()).build_http(),
        shutdown: Some(tx),
        task: Some(task),
        admin_uid: boot.user_uid().to_owned(),
    }
}

impl Server {
    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Status, `Content-Type` and body of `method path`, with `Authorization: <authorization>`.
    async fn call(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        form: Option<&str>,
    ) -> (StatusCode, Option<String>, String) {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(value) = authorization {
            builder = builder.header("authorization", value);
        }
        if form.is_some() {
            builder = builder.header("content-type", "application/x-www-form-urlencoded");
        }
        let body = Full::new(Bytes::from(form.unwrap_or_default().to_owned()));
        let response = self
            .client
            .request(builder.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    async fn get(&self, path: &str, authorization: Option<&str>) -> StatusCode {
        self.call(Method::GET, path, authorization, None).await.0
    }

    /// An access token of the admin user.
    async fn admin_token(&self) -> String {
        let form = format!(
            "grant_type=password&username=admin&password={}",
            ADMIN_PASSWORD.replace(' ', "%20")
        );
        let (status, _, body) = self
            .call(Method::POST, "/api/v3/token", None, Some(&form))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        json["access_token"].as_str().unwrap().to_owned()
    }

    /// A new `rest` key of the admin user: (key, id).
    async fn create_key(&self, token: &str) -> (String, u64) {
        let path = format!(
            "/api/v3/users/{}/logins/apikey?description=metrics&scopes=rest",
            self.admin_uid
        );
        let (status, _, body) = self
            .call(Method::POST, &path, Some(&format!("Bearer {token}")), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        (
            json["data"]["parameters"].as_str().unwrap().to_owned(),
            json["data"]["id"].as_u64().unwrap(),
        )
    }

    /// The Prometheus text at `/metrics`, checked for its media type.
    async fn scrape(&self) -> String {
        let (status, content_type, body) = self.call(Method::GET, "/metrics", None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            content_type.as_deref(),
            Some("text/plain; version=0.0.4"),
            "Prometheus' text format"
        );
        body
    }
}

/// The value of the series `name{labels}` in a scrape, 0 when it is not there yet.
fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// `key` with another secret and a checksum that matches it: the same id, a wrong secret.
fn with_other_secret(key: &str) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body_end = key.len() - 6;
    let mut body = key.as_bytes()[..body_end].to_vec();
    let last = body_end - 1;
    body[last] = if body[last] == b'a' { b'b' } else { b'a' };
    let mut crc = u64::from(crc32fast::hash(&body));
    let mut tail = [0u8; 6];
    for slot in tail.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    body.extend_from_slice(&tail);
    let forged = String::from_utf8(body).unwrap();
    let format = KeyFormat::default();
    assert_eq!(
        format.parse(&forged).unwrap().id(),
        format.parse(key).unwrap().id(),
        "the forged key keeps the id"
    );
    forged
}

/// The key with its last checksum character changed.
fn with_bad_checksum(key: &str) -> String {
    let mut bytes = key.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn metrics_count_each_decision_and_store_read_and_name_no_key() {
    let recorder = install_recorder().unwrap();
    let store = MemoryStore::new();

    // A key made before a restart: the restarted server's index has never seen it.
    let before = start(store.clone(), recorder.clone()).await;
    let token = before.admin_token().await;
    let (key, id) = before.create_key(&token).await;
    before.stop().await;
    let server = start(store, recorder).await;
    let token = server.admin_token().await;
    // A well-formed key that no store of this server holds.
    let unknown = KeyRing::new(MemoryStore::new())
        .issue(
            NewKey::new(Owner {
                user_uid: "u".into(),
                user_name: "elsewhere".into(),
                company_id: "c".into(),
                company_name: "Elsewhere".into(),
            })
            .description("elsewhere")
            .scope(Scope::REST),
        )
        .await
        .unwrap();
    let unknown = unknown.key().to_owned();

    let before = server.scrape().await;
    let path = "/api/v3/users/me";
    // Accepted: the cold key three times (a store read, then two index hits), a token once.
    for _ in 0..3 {
        assert_eq!(server.get(path, Some(&format!("Bearer {key}"))).await, 200);
    }
    assert_eq!(
        server.get(path, Some(&format!("Bearer {token}"))).await,
        200
    );
    // Refused: no header twice, a wrong secret twice (index hits), an unknown id twice (a store
    // read, then its cached absence), a bad checksum once (decided before the index).
    for _ in 0..2 {
        assert_eq!(server.get(path, None).await, 401);
    }
    let wrong = with_other_secret(&key);
    for _ in 0..2 {
        assert_eq!(
            server.get(path, Some(&format!("Bearer {wrong}"))).await,
            401
        );
    }
    for _ in 0..2 {
        assert_eq!(
            server.get(path, Some(&format!("Bearer {unknown}"))).await,
            401
        );
    }
    let bad = with_bad_checksum(&key);
    assert_eq!(server.get(path, Some(&format!("Bearer {bad}"))).await, 401);
    let after = server.scrape().await;

    let delta = |series: &str| value(&after, series) - value(&before, series);
    let expected = [
        (
            r#"tower_api_key_requests_accepted_total{kind="api_key"}"#,
            3.0,
        ),
        (
            r#"tower_api_key_requests_accepted_total{kind="token"}"#,
            1.0,
        ),
        (
            r#"tower_api_key_requests_refused_total{reason="no_credentials"}"#,
            2.0,
        ),
        (
            r#"tower_api_key_requests_refused_total{reason="wrong_secret"}"#,
            2.0,
        ),
        (
            r#"tower_api_key_requests_refused_total{reason="unknown_key"}"#,
            2.0,
        ),
        (
            r#"tower_api_key_requests_refused_total{reason="bad_checksum"}"#,
            1.0,
        ),
        (
            r#"tower_api_key_requests_refused_total{reason="disabled"}"#,
            0.0,
        ),
        (r#"tower_api_key_index_lookups_total{result="hit"}"#, 5.0),
        (r#"tower_api_key_index_lookups_total{result="miss"}"#, 2.0),
        (
            r#"tower_api_key_store_lookup_seconds_count{outcome="found"}"#,
            1.0,
        ),
        (
            r#"tower_api_key_store_lookup_seconds_count{outcome="absent"}"#,
            1.0,
        ),
        (
            r#"tower_api_key_store_lookup_seconds_count{outcome="error"}"#,
            0.0,
        ),
    ];
    for (series, increment) in expected {
        assert_eq!(delta(series), increment, "{series}\n{after}");
    }
    // Every reason has its series from the first request on, at zero until it happens.
    assert!(
        after.contains(r#"tower_api_key_requests_refused_total{reason="store_timeout"} 0"#),
        "{after}"
    );
    assert!(
        after.contains(r#"tower_api_key_store_lookup_seconds_bucket{outcome="found",le="+Inf"} "#),
        "the store lookup is a histogram with buckets\n{after}"
    );

    // No credential and no key id in any label or value.
    let secret_part = &key[key.len() - 6 - 43..key.len() - 6];
    for text in [&before, &after] {
        for needle in [
            key.as_str(),
            secret_part,
            &wrong,
            &unknown,
            &bad,
            &token,
            &id.to_string(),
        ] {
            assert!(!text.contains(needle), "{needle} in the scrape:\n{text}");
        }
    }
    server.stop().await;
}
