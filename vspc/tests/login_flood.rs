//! `POST /api/v3/token` under floods and guessing: failed logins throttled per address and per user
//! name before any hash, a bounded hashing queue that answers 503 at once when full, disabled
//! accounts answering exactly as wrong passwords, and what the log says about refusals.
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

use tower_api_key::store::AccountStore;
use tower_api_key::{KeyRing, MemoryStore, Status};
use tower_api_key_vspc::{bootstrap_admin, Admin, LoginLimits};

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
    ring: KeyRing,
    admin_uid: String,
    company_id: String,
}

async fn app(configure: impl FnOnce(Admin) -> Admin) -> App {
    let store = MemoryStore::new();
    let accounts: Arc<dyn AccountStore> = Arc::new(store.clone());
    let boot = bootstrap_admin(accounts.as_ref(), Some(ADMIN_PASSWORD))
        .await
        .unwrap();
    let ring = KeyRing::new(store);
    let router = configure(Admin::new(ring.clone(), accounts, SECRET)).router();
    App {
        router,
        ring,
        admin_uid: boot.user_uid().to_owned(),
        company_id: boot.company_id().to_owned(),
    }
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

fn assert_throttled(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{answer:?}");
    assert_eq!(answer.error(), "invalid_request");
    assert!((1..=3600).contains(&answer.retry_after()), "{answer:?}");
    assert_eq!(answer.headers[CONTENT_TYPE], "application/json");
    assert_eq!(answer.headers[CACHE_CONTROL], "no-store");
}

fn assert_busy(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{answer:?}");
    assert_eq!(answer.error(), "temporarily_unavailable");
    assert_eq!(answer.retry_after(), 1);
    assert_eq!(answer.headers[CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn an_address_over_its_failures_is_refused_with_429_before_hashing() {
    let (log, _guard) = Capture::start();
    let app = app(|a| limited(a, 3, LOOSE, LOOSE)).await;
    let before = log.hashes();
    for n in 0..3 {
        let answer = login(&app.router, &format!("ghost{n}"), "wrong", Some(client(1))).await;
        assert_wrong_credentials(&answer);
    }
    let hashed = log.hashes();
    assert_eq!(hashed - before, 3);
    // Even the right password: the address is refused whatever it sends, and nothing is hashed.
    let answer = login(&app.router, "admin", ADMIN_PASSWORD, Some(client(1))).await;
    assert_throttled(&answer);
    // One of three failures drains in 20 minutes.
    assert!((1190..=1200).contains(&answer.retry_after()), "{answer:?}");
    let answer = login(&app.router, "ghost9", "wrong", Some(client(1))).await;
    assert_throttled(&answer);
    assert_eq!(log.hashes(), hashed, "a refused attempt ran a hash");
    // Another address is not affected.
    let answer = login(&app.router, "admin", ADMIN_PASSWORD, Some(client(2))).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
}

#[tokio::test]
async fn a_user_name_over_its_failures_is_refused_from_every_address() {
    let (log, _guard) = Capture::start();
    let app = app(|a| limited(a, LOOSE, 2, 3)).await;
    // The owner logs in from their usual address first.
    let answer = login(&app.router, "admin", ADMIN_PASSWORD, Some(client(100))).await;
    assert_eq!(answer.status, StatusCode::OK);

    // Two failures from one address: the pair is over its limit, other names from there are not.
    for _ in 0..2 {
        assert_wrong_credentials(&login(&app.router, "admin", "guess", Some(client(1))).await);
    }
    assert_throttled(&login(&app.router, "admin", ADMIN_PASSWORD, Some(client(1))).await);
    assert_wrong_credentials(&login(&app.router, "someone", "guess", Some(client(1))).await);
    // A third failure from elsewhere: the name is over its limit from every address.
    assert_wrong_credentials(&login(&app.router, "admin", "guess", Some(client(2))).await);
    let hashed = log.hashes();
    for n in 3..6 {
        assert_throttled(&login(&app.router, "admin", ADMIN_PASSWORD, Some(client(n))).await);
    }
    assert_eq!(log.hashes(), hashed, "a refused attempt ran a hash");
    // Unknown names are counted the same way, so the throttle tells nothing about who exists.
    for n in 1..=3 {
        assert_wrong_credentials(&login(&app.router, "nobody", "guess", Some(client(n))).await);
    }
    assert_throttled(&login(&app.router, "nobody", "guess", Some(client(4))).await);
    // The address that logged in before is held to its own pair limit only: not locked out.
    let answer = login(&app.router, "admin", ADMIN_PASSWORD, Some(client(100))).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
}

#[tokio::test]
async fn successes_are_not_counted_and_clear_the_pairs_failures() {
    let (_log, _guard) = Capture::start();
    let app = app(|a| limited(a, 3, 2, LOOSE)).await;
    for _ in 0..10 {
        let answer = login(&app.router, "admin", ADMIN_PASSWORD, Some(client(1))).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    }
    // wrong, right, wrong, right: the pair never reaches 2 failures.
    for _ in 0..2 {
        assert_wrong_credentials(&login(&app.router, "admin", "typo", Some(client(1))).await);
        let answer = login(&app.router, "admin", ADMIN_PASSWORD, Some(client(1))).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    }
    // The address's failures are not cleared by a success: the third one reaches its limit.
    assert_wrong_credentials(&login(&app.router, "admin", "typo", Some(client(1))).await);
    assert_throttled(&login(&app.router, "admin", ADMIN_PASSWORD, Some(client(1))).await);
}

#[tokio::test]
async fn without_an_address_only_the_user_name_is_throttled() {
    let (_log, _guard) = Capture::start();
    let app = app(|a| limited(a, 1, 2, LOOSE)).await;
    for n in 0..3 {
        assert_wrong_credentials(&login(&app.router, &format!("ghost{n}"), "x", None).await);
    }
    assert_wrong_credentials(&login(&app.router, "admin", "guess", None).await);
    assert_wrong_credentials(&login(&app.router, "admin", "guess", None).await);
    assert_throttled(&login(&app.router, "admin", ADMIN_PASSWORD, None).await);
    assert_eq!(
        login(&app.router, "ghost0", "x", None).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_right_password_for_a_disabled_user_or_company_answers_as_a_wrong_one() {
    let (_log, _guard) = Capture::start();
    let app = app(|a| limited(a, LOOSE, 3, LOOSE)).await;
    let wrong = login(&app.router, "admin", "not the password", Some(client(1))).await;
    assert_wrong_credentials(&wrong);

    app.ring
        .set_user_status(&app.admin_uid, Status::Disabled)
        .await
        .unwrap();
    let right = login(&app.router, "admin", ADMIN_PASSWORD, Some(client(1))).await;
    let wrong_while_disabled = login(&app.router, "admin", "not it", Some(client(1))).await;
    // Same status, same headers, same bytes.
    assert_eq!(right, wrong);
    assert_eq!(wrong_while_disabled, wrong);
    // And it counted as a failure: the pair's third, so even an enabled user is refused now.
    app.ring
        .set_user_status(&app.admin_uid, Status::Enabled)
        .await
        .unwrap();
    assert_throttled(&login(&app.router, "admin", ADMIN_PASSWORD, Some(client(1))).await);

    app.ring
        .set_company_status(&app.company_id, Status::Disabled)
        .await
        .unwrap();
    let right = login(&app.router, "admin", ADMIN_PASSWORD, Some(client(2))).await;
    assert_eq!(right, wrong);

    app.ring
        .set_company_status(&app.company_id, Status::Enabled)
        .await
        .unwrap();
    let answer = login(&app.router, "admin", ADMIN_PASSWORD, Some(client(2))).await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
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

#[tokio::test]
async fn one_address_cannot_fill_the_queue_for_others() {
    let (log, _guard) = Capture::start();
    let app = app(|a| limited(a, LOOSE, LOOSE, LOOSE).with_login_queue(8)).await;
    let before = log.hashes();
    // Eight at once from one address: it gets a quarter of the places, the rest wait a second.
    let mut requests: Vec<_> = (0..8)
        .map(|n| login_request(&format!("ghost{n}"), "wrong", Some(client(1))))
        .collect();
    requests.push(login_request("admin", ADMIN_PASSWORD, Some(client(2))));
    let answers = all_at_once(&app.router, requests).await;
    for answer in &answers[..2] {
        assert_wrong_credentials(answer);
    }
    for answer in &answers[2..8] {
        assert_throttled(answer);
        assert_eq!(answer.retry_after(), 1);
    }
    assert_eq!(answers[8].status, StatusCode::OK, "{:?}", answers[8]);
    assert_eq!(log.hashes() - before, 3);
}

#[tokio::test]
async fn refused_logins_are_logged_with_name_address_and_reason_never_the_password() {
    const CANARY: &str = "canary-password-7d41c9";
    let (log, _guard) = Capture::start();
    let app = app(|a| limited(a, 1, LOOSE, LOOSE).with_login_queue(1)).await;
    let forged = "ghost\nWARN forged line";
    assert_wrong_credentials(&login(&app.router, forged, CANARY, Some(client(1))).await);
    assert_throttled(&login(&app.router, "admin", CANARY, Some(client(1))).await);
    let answers = all_at_once(
        &app.router,
        vec![
            login_request("first", CANARY, Some(client(2))),
            login_request("second", CANARY, Some(client(3))),
        ],
    )
    .await;
    assert_busy(&answers[1]);

    let text = log.text();
    let refusals: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("login refused"))
        .collect();
    assert_eq!(refusals.len(), 4, "{text}");
    let expect = [
        (
            r#"user_name="ghost\nWARN forged line""#,
            "192.0.2.1:40001",
            "wrong_credentials",
        ),
        (r#"user_name="admin""#, "192.0.2.1:40001", "throttled"),
        (
            r#"user_name="first""#,
            "192.0.2.2:40002",
            "wrong_credentials",
        ),
        (r#"user_name="second""#, "192.0.2.3:40003", "busy"),
    ];
    for (name, addr, reason) in expect {
        assert!(
            refusals.iter().any(|l| l.contains(name)
                && l.contains(addr)
                && l.contains(&format!("reason=\"{reason}\""))
                && l.contains(" WARN ")),
            "no refusal line with {name}, {addr}, {reason} in\n{text}"
        );
    }
    // The control character was escaped: no line of the log begins where the name wanted one.
    assert!(
        !text.lines().any(|l| l.starts_with("WARN forged")),
        "{text}"
    );
    assert!(
        !text.contains(CANARY),
        "the password is in the log:\n{text}"
    );
    assert!(
        !text.contains("7d41c9"),
        "part of the password is in the log"
    );
}
