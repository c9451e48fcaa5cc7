//! Nothing derived from a secret appears in a log line, an answer, an error, or any public
//! type's `Debug` or `Display`. A canary key is pushed through every path with a `tracing` subscriber
//! at TRACE writing into a buffer, and the buffer, the answers and the formatted values are searched
//! for the key, its secret and its digest, raw, in base62, hex and base64 (`common::Canary`).

mod common;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use tower::{Service, ServiceBuilder};
use tower_api_key::key::KeyFormat;
use tower_api_key::store::{ChangeEvent, KeyUpdate, ListQuery, StoreError};
use tower_api_key::token::{validator_fn, JwtValidator};
use tower_api_key::{
    ApiKeyLayer, IssueError, KeyRing, KeyStore, MemoryStore, NewKey, Rejection, Scope, Status,
    TokenError, VerifyError,
};

use common::*;

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What was written to the log, every answer, every rejection handed to the hook, and every value
/// formatted along the way.
#[derive(Default)]
struct Seen {
    text: Vec<u8>,
}

impl Seen {
    fn add(&mut self, what: impl AsRef<[u8]>) {
        self.text.extend_from_slice(what.as_ref());
        self.text.push(b'\n');
    }

    fn answer(&mut self, answer: &Answer) {
        self.add(answer.status.as_str());
        for (name, value) in &answer.headers {
            self.add(name.as_str());
            self.add(value.as_bytes());
        }
        self.add(&answer.body);
    }

    /// `Debug`, pretty `Debug`, and (when there is one) `Display`.
    fn debug(&mut self, value: &impl std::fmt::Debug) {
        self.add(format!("{value:?}"));
        self.add(format!("{value:#?}"));
    }

    fn shown(&mut self, value: &(impl std::fmt::Debug + std::fmt::Display)) {
        self.debug(value);
        self.add(value.to_string());
    }
}

#[tokio::test]
async fn trace_logs_answers_and_values_of_every_path_hold_no_form_of_the_key() {
    use tracing_subscriber::util::SubscriberInitExt;

    let capture = Capture::default();
    let writer = capture.clone();
    let _guard = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish()
        .set_default();
    let mut seen = Seen::default();

    let memory = MemoryStore::new();
    let ring = KeyRing::new(memory.clone());
    let issued = issue(
        &ring,
        NewKey::new(alice())
            .description("canary")
            .scope(Scope::REST)
            .read_only(true),
    )
    .await;
    let key = issued.key().to_owned();
    let canary = Canary::new(&key);
    let store = FaultStore::new(memory.clone());
    let cold = KeyRing::builder(store.clone())
        .with_lookup_timeout(Duration::from_millis(20))
        .build();

    let rejections: Arc<Mutex<Vec<Rejection>>> = Arc::default();
    let hook = {
        let rejections = rejections.clone();
        move |rejection: Rejection| {
            rejections.lock().expect("lock").push(rejection.clone());
            rejection.into_response::<Body>()
        }
    };
    let tokens: Arc<Mutex<Vec<String>>> = Arc::default();
    let validator = {
        let tokens = tokens.clone();
        validator_fn(move |token: &str| {
            tokens.lock().expect("lock").push(token.len().to_string());
            Err(TokenError::invalid("not a token we know"))
        })
    };
    let layer = |ring: &KeyRing, scope: Scope| {
        ApiKeyLayer::new(ring.clone())
            .require_scope(scope)
            .with_token_validator(validator.clone())
            .on_rejection(hook.clone())
    };
    let probe = Probe::new();
    let mut requests = Vec::new();
    let auth = bearer(&key);
    let long = format!("Bearer {key}{}", " ".repeat(5000));
    let query_uri = format!("/things?access_token={key}");
    let foreign = KeyFormat::new("xyz")
        .expect("prefix")
        .generate()
        .expect("rng");
    for value in [
        key.clone(),
        format!("secret-token:{key}"),
        with_other_secret(&key),
        with_bad_checksum(&key),
        with_non_base62_char(&key),
        foreign.expose().to_owned(),
    ] {
        requests.push(request(Method::GET, "/things", &[&bearer(&value)]));
    }
    requests.push(request(Method::POST, "/things", &[&auth]));
    requests.push(request(Method::GET, "/things", &[&auth, &auth]));
    requests.push(request(Method::GET, "/things", &[&long]));
    requests.push(request(Method::GET, &query_uri, &[&auth]));
    requests.push(request(Method::GET, &query_uri, &[]));
    requests.push(request(Method::GET, "/things", &[&format!("Basic {key}")]));
    requests.push(request(
        Method::GET,
        "/things",
        &[&format!("Bearer  {key}")],
    ));

    // Warm and cold rings, a scope the key has and one it lacks.
    for (ring, scope) in [
        (&ring, Scope::REST),
        (&ring, Scope::UI),
        (&cold, Scope::REST),
    ] {
        let service = ServiceBuilder::new()
            .layer(layer(ring, scope))
            .service_fn(probe.handler());
        for request in &requests {
            let (parts, body) = request_parts(request);
            let answer = send(service.clone(), http::Request::from_parts(parts, body)).await;
            seen.answer(&answer);
        }
    }
    // Every store fault, through a cold ring each time.
    for fault in [
        Fault::Error,
        Fault::Corrupt,
        Fault::WrongRecord,
        Fault::Sleep(Duration::from_secs(3600)),
        Fault::Statuses(Status::Unknown, Status::Enabled, Status::Enabled),
    ] {
        store.set(fault);
        cold.apply(&ChangeEvent::Resync);
        let mut service = ServiceBuilder::new()
            .layer(layer(&cold, Scope::REST))
            .service_fn(probe.handler());
        let future = service.call(get_with_key(&key));
        seen.debug(&future);
        drop(future);
        seen.answer(&send(service, get_with_key(&key)).await);
    }
    store.set(Fault::PassThrough);

    // The ring's own calls and their errors.
    for presented in [key.clone(), with_other_secret(&key), format!("x{key}")] {
        match ring.verify(&presented).await {
            Ok(identity) => seen.debug(&identity),
            Err(e) => seen.shown(&e),
        }
    }
    store.set(Fault::Error);
    cold.apply(&ChangeEvent::Resync);
    seen.shown(&cold.verify(&key).await.expect_err("store down"));
    store.set(Fault::PassThrough);
    let record = ring.get(issued.id()).await.expect("read").expect("exists");
    seen.debug(&record);
    seen.debug(
        &ring
            .update(issued.id(), KeyUpdate::description("renamed"))
            .await,
    );
    seen.shown(
        &ring
            .update(issued.id(), KeyUpdate::description("<bad>"))
            .await
            .expect_err("invalid description"),
    );
    seen.debug(&ring.list(&ListQuery::default()).await.expect("list"));
    ring.set_user_status("u-alice", Status::Disabled)
        .await
        .expect("status");
    seen.debug(&ring.verify(&key).await);
    ring.set_user_status("u-alice", Status::Enabled)
        .await
        .expect("status");
    seen.debug(&ring.preload().await);
    for error in [
        StoreError::backend("connection reset"),
        StoreError::corrupt("digest of 31 bytes, not 32"),
        StoreError::conflict(),
    ] {
        seen.shown(&error);
    }
    seen.shown(&IssueError::InvalidDescription);
    seen.shown(&VerifyError::Invalid);

    // The public types around the key, formatted.
    let format = KeyFormat::default();
    let parsed = format.parse(&key).expect("parses");
    seen.debug(&format);
    seen.debug(&parsed);
    seen.debug(&parsed.digest());
    seen.debug(&parsed.id());
    seen.add(parsed.id().to_string());
    seen.debug(&issued);
    seen.debug(issued.login());
    let (login_with_key, shown) = issued.login_with_key();
    seen.debug(&login_with_key);
    seen.debug(&shown.len());
    seen.debug(&ring);
    seen.debug(&KeyRing::builder(memory.clone()));
    seen.debug(&memory);
    seen.debug(&store_debug(&memory).await);
    seen.debug(&layer(&ring, Scope::REST));
    seen.debug(
        &ServiceBuilder::new()
            .layer(layer(&ring, Scope::REST))
            .service_fn(probe.handler()),
    );
    seen.debug(&JwtValidator::hs256(key.as_bytes()));
    seen.debug(&tower_api_key::token::JwtIssuer::hs256(key.as_bytes()));
    seen.debug(&validator);
    seen.debug(&NewKey::new(alice()).description("canary"));
    seen.shown(&TokenError::invalid("bad signature"));
    for rejection in rejections.lock().expect("lock").iter() {
        seen.debug(rejection);
        seen.shown(&rejection.reason());
        seen.debug(&rejection.kind());
        seen.add(rejection.body());
    }
    if let Some(identity) = probe.identity() {
        seen.debug(&identity);
        seen.debug(&identity.login());
    }

    // The capture works: the refusals and their reasons are there.
    let logs = capture.0.lock().expect("lock").clone();
    let log_text = String::from_utf8_lossy(&logs);
    for expected in [
        "request refused",
        "wrong_secret",
        "bad_checksum",
        "store_error",
        "store_timeout",
    ] {
        assert!(
            log_text.contains(expected),
            "{expected} missing from the log"
        );
    }
    let rejections = rejections.lock().expect("lock").len();
    assert!(rejections > 30, "{rejections} rejections seen");

    let log_hits = canary.hits(&logs);
    let other_hits = canary.hits(&seen.text);
    println!(
        "canary: {} forms searched in {} bytes of TRACE log and {} bytes of answers and \
         formatted values: {} + {} hits",
        canary.len(),
        logs.len(),
        seen.text.len(),
        log_hits.len(),
        other_hits.len()
    );
    canary.assert_absent(&logs, "the TRACE log");
    canary.assert_absent(&seen.text, "answers and formatted values");
}

/// A request's parts and body, copied (requests are not `Clone`).
fn request_parts(request: &http::Request<Body>) -> (http::request::Parts, Body) {
    let mut copy = http::Request::builder()
        .method(request.method().clone())
        .uri(request.uri().clone());
    for (name, value) in request.headers() {
        copy = copy.header(name, value);
    }
    copy.body(request.body().clone())
        .expect("request")
        .into_parts()
}

/// What a store hands back for every key, formatted.
async fn store_debug(store: &MemoryStore) -> String {
    let page = store.list(&ListQuery::default()).await.expect("list");
    format!("{page:?}")
}

#[tokio::test]
async fn generated_key_material_shows_only_through_expose() {
    let format = KeyFormat::default();
    let generated = format.generate().expect("rng");
    let canary = Canary::new(generated.expose());
    let mut seen = Seen::default();
    seen.debug(&generated);
    seen.debug(&generated.digest());
    seen.debug(&generated.id());
    seen.debug(&format.parse(generated.expose()).expect("parses"));
    canary.assert_absent(&seen.text, "a generated key, formatted");
    // The check is not vacuous: the exposed text holds every form of the key.
    assert!(!canary.hits(generated.expose().as_bytes()).is_empty());
}
