//! `POST /api/v3/token` under floods: a bounded hashing queue that answers 503 at once when full
//! or when a login has waited out its timeout.
//!
//! Requests go through the router with `oneshot`, each carrying the `ConnectInfo` that
//! `into_make_service_with_connect_info` would set. Whether a hash ran is read from the
//! `password hash computed` trace event, which the hashing threads emit into the subscriber of the
//! request that sent the job.

// Helpers outside `#[test]` functions are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use tracing_subscriber::util::SubscriberInitExt;

use tower_api_key::admin::{bootstrap_admin, Admin, LoginLimits};
use tower_api_key::store::AccountStore;
use tower_api_key::{KeyRing, MemoryStore};

const ADMIN_PASSWORD: &str = "admin password for the flood tests";
const SECRET: &[u8] = b"a JWT secret for the login flood tests, 32+ bytes";

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Everything logged on this thread (and by hashing threads for its requests) until dropped.
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let capture = Capture::default();
        let writer = capture.clone();
        let guard = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish()
            .set_default();
        (capture, guard)
    }

    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    fn hashes(&self) -> usize {
        self.text().matches("password hash computed").count()
    }
}

/// The router over a fresh store with `admin` / [`ADMIN_PASSWORD`].
struct App {
    router: Router,
}

async fn app(configure: impl FnOnce(Admin) -> Admin) -> App {
    let store = MemoryStore::new();
    let accounts: Arc<dyn AccountStore> = Arc::new(store.clone());
    bootstrap_admin(accounts.as_ref(), Some(ADMIN_PASSWORD))
        .await
        .unwrap();
    let router = configure(Admin::new(KeyRing::new(store), accounts, SECRET)).router();
    App { router }
}

/// Failures allowed per address, per user name and address and per user name over an hour, and a
/// timeout long enough never to be what a test sees.
fn limited(admin: Admin, per_client: u32, per_user_and_client: u32, per_user: u32) -> Admin {
    admin
        .with_login_limits(LoginLimits {
            per_client,
            per_user_and_client,
            per_user,
            window: Duration::from_secs(3600),
        })
        .with_login_timeout(Duration::from_secs(30))
}

/// A limit that stays out of the way.
const LOOSE: u32 = 1000;

/// A client at 192.0.2.`n`.
fn client(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n], 40_000 + u16::from(n)))
}

#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }

    /// `Retry-After` as whole seconds; fails the test when missing or not an integer.
    fn retry_after(&self) -> u64 {
        self.headers[RETRY_AFTER].to_str().unwrap().parse().unwrap()
    }
}

/// `application/x-www-form-urlencoded`: everything but letters and digits as `%XX`.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn login_request(user: &str, password: &str, from: Option<SocketAddr>) -> Request<Body> {
    let form = format!(
        "grant_type=password&username={}&password={}",
        form_encode(user),
        form_encode(password)
    );
    let mut request = Request::post("/api/v3/token")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .unwrap();
    if let Some(addr) = from {
        request.extensions_mut().insert(ConnectInfo(addr));
    }
    request
}

async fn login(router: &Router, user: &str, password: &str, from: Option<SocketAddr>) -> Answer {
    let response = router
        .clone()
        .oneshot(login_request(user, password, from))
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

fn assert_wrong_credentials(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{answer:?}");
    assert_eq!(answer.error(), "invalid_grant");
}

fn assert_busy(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(answer.error(), "temporarily_unavailable");
    assert_eq!(answer.retry_after(), 1);
    assert_eq!(answer.headers[CACHE_CONTROL], "no-store");
}

/// Sends every request at once and collects the answers in order.
async fn all_at_once(router: &Router, requests: Vec<Request<Body>>) -> Vec<Answer> {
    let mut tasks = tokio::task::JoinSet::new();
    for (n, request) in requests.into_iter().enumerate() {
        let router = router.clone();
        tasks.spawn(async move {
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (
                n,
                Answer {
                    status,
                    headers,
                    body,
                },
            )
        });
    }
    let mut answers = tasks.join_all().await;
    answers.sort_by_key(|(n, _)| *n);
    answers.into_iter().map(|(_, a)| a).collect()
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_without_hashing() {
    let (log, _guard) = Capture::start();
    let app = app(|a| limited(a, LOOSE, LOOSE, LOOSE).with_login_queue(1)).await;
    let before = log.hashes();
    // Each from its own address, so that no address's share of the queue is what refuses them.
    let requests = (1..=8)
        .map(|n| login_request(&format!("ghost{n}"), "wrong", Some(client(n))))
        .collect();
    let answers = all_at_once(&app.router, requests).await;
    assert_wrong_credentials(&answers[0]);
    for answer in &answers[1..] {
        assert_busy(answer);
    }
    assert_eq!(
        log.hashes() - before,
        1,
        "only the admitted login was hashed"
    );
    // Busy answers are not failures: all eight may try again.
    for n in 2..=8 {
        let answer = login(&app.router, &format!("ghost{n}"), "wrong", Some(client(n))).await;
        assert_wrong_credentials(&answer);
    }
}

#[tokio::test]
async fn a_login_that_outwaits_its_timeout_answers_503() {
    let (_log, _guard) = Capture::start();
    let app =
        app(|a| limited(a, LOOSE, LOOSE, LOOSE).with_login_timeout(Duration::from_millis(1))).await;
    let answer = login(&app.router, "admin", ADMIN_PASSWORD, Some(client(1))).await;
    assert_busy(&answer);
}
