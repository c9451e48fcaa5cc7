//! What the integration tests share: owners and keys, requests and answers, an inner service that
//! records whether it ran, and a key store that fails on demand.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

pub(crate) mod reference;

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::watch;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_api_key::key::KeyFormat;
use tower_api_key::store::{KeyRecord, KeyUpdate, ListQuery, Page, StoreError};
use tower_api_key::{
    Identity, IssuedKey, KeyId, KeyRing, KeyStore, MemoryStore, NewKey, Owner, Status, UserLogin,
};

/// The keys and "no such key" entries `ring`'s index holds, as one pair to compare.
pub(crate) fn cached(ring: &KeyRing) -> (usize, usize) {
    let stats = ring.stats();
    (stats.keys, stats.unknown_ids)
}

/// Request and response body of the services under test.
pub(crate) type Body = Full<Bytes>;

/// The challenge of a 401 without credentials (default realm).
pub(crate) const MISSING: &str = r#"Bearer realm="api""#;
/// The challenge of a 400.
pub(crate) const INVALID_REQUEST: &str = r#"Bearer realm="api", error="invalid_request""#;
/// The challenge of a 401 with bad credentials.
pub(crate) const INVALID_TOKEN: &str = r#"Bearer realm="api", error="invalid_token""#;
/// The challenge of a 403 for a read-only identity.
pub(crate) const INSUFFICIENT_SCOPE: &str = r#"Bearer realm="api", error="insufficient_scope""#;

/// What the inner service answers with.
pub(crate) const INNER_BODY: &str = "inner service ran";

/// Alice of company Alpha.
pub(crate) fn alice() -> Owner {
    owner("u-alice", "alice", "c-alpha", "Alpha")
}

/// Bob, also of company Alpha.
pub(crate) fn bob() -> Owner {
    owner("u-bob", "bob", "c-alpha", "Alpha")
}

/// Carol of company Beta.
pub(crate) fn carol() -> Owner {
    owner("u-carol", "carol", "c-beta", "Beta")
}

pub(crate) fn owner(
    user_uid: &str,
    user_name: &str,
    company_id: &str,
    company_name: &str,
) -> Owner {
    Owner {
        user_uid: user_uid.into(),
        user_name: user_name.into(),
        company_id: company_id.into(),
        company_name: company_name.into(),
    }
}

/// Issues `new` through `ring`.
pub(crate) async fn issue(ring: &KeyRing, new: NewKey) -> IssuedKey {
    ring.issue(new).await.expect("key issued")
}

/// A key ring over a fresh memory store.
pub(crate) fn memory_ring() -> KeyRing {
    KeyRing::new(MemoryStore::new())
}

/// A key that is key-shaped for the default format, with a valid checksum, that no store holds.
pub(crate) fn unknown_key() -> String {
    KeyFormat::default()
        .generate()
        .expect("rng")
        .expose()
        .to_owned()
}

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CHECKSUM_LEN: usize = 6;
const ID_LEN: usize = 11;
const SECRET_LEN: usize = 43;

/// The secret part of a key of the default format (`tak_<id><secret><checksum>`).
pub(crate) fn secret_of(key: &str) -> &str {
    let start = "tak_".len() + ID_LEN;
    &key[start..start + SECRET_LEN]
}

/// The same key id with another secret and a checksum that matches: passes every offline check.
pub(crate) fn with_other_secret(key: &str) -> String {
    let body_end = key.len() - CHECKSUM_LEN;
    let mut body = key.as_bytes()[..body_end].to_vec();
    let last = body_end - 1;
    body[last] = if body[last] == b'a' { b'b' } else { b'a' };
    let forged = with_checksum(body);
    let format = KeyFormat::default();
    let original = format.parse(key).expect("original parses");
    let parsed = format.parse(&forged).expect("forged key parses");
    assert_eq!(parsed.id(), original.id(), "forged key keeps the id");
    forged
}

/// The key with its last checksum character changed.
pub(crate) fn with_bad_checksum(key: &str) -> String {
    let mut bytes = key.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
    String::from_utf8(bytes).expect("ascii")
}

/// A key-shaped value with a character outside base62 in the secret (token68, so it passes the header).
pub(crate) fn with_non_base62_char(key: &str) -> String {
    let mut bytes = key.as_bytes().to_vec();
    bytes["tak_".len() + ID_LEN + 5] = b'-';
    String::from_utf8(bytes).expect("ascii")
}

fn with_checksum(mut body: Vec<u8>) -> String {
    let mut crc = u64::from(crc32fast::hash(&body));
    let mut tail = [0u8; CHECKSUM_LEN];
    for slot in tail.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    body.extend_from_slice(&tail);
    String::from_utf8(body).expect("ascii")
}

/// `Bearer <key>`.
pub(crate) fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// A request with the given `Authorization` headers, in order.
pub(crate) fn request(method: Method, uri: &str, authorization: &[&str]) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    for value in authorization {
        builder = builder.header(AUTHORIZATION, *value);
    }
    builder.body(Body::default()).expect("request")
}

/// `GET /things` with `Authorization: Bearer <key>`.
pub(crate) fn get_with_key(key: &str) -> Request<Body> {
    request(Method::GET, "/things", &[&bearer(key)])
}

/// An inner service that counts its calls and keeps the identity of the last request, with the full
/// login as it read it while it ran.
#[derive(Clone, Debug, Default)]
pub(crate) struct Probe {
    calls: Arc<AtomicUsize>,
    identity: Arc<Mutex<Option<Identity>>>,
    login: Arc<Mutex<Option<Arc<UserLogin>>>>,
}

impl Probe {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The handler for `ServiceBuilder::service_fn`.
    pub(crate) fn handler(
        &self,
    ) -> impl Fn(Request<Body>) -> Ready<Result<Response<Body>, Infallible>> + Clone + Send + Sync
    {
        let probe = self.clone();
        move |request: Request<Body>| {
            probe.calls.fetch_add(1, Ordering::SeqCst);
            let identity = request.extensions().get::<Identity>().cloned();
            *probe.login.lock().expect("lock") = identity.as_ref().and_then(Identity::login);
            *probe.identity.lock().expect("lock") = identity;
            ready(Ok(Response::new(Body::from(INNER_BODY))))
        }
    }

    /// `layer` in front of a fresh probe, built the way users build it: the probe, and the service.
    pub(crate) fn behind<L: Layer<Probe>>(layer: L) -> (Probe, L::Service) {
        let probe = Probe::new();
        let service = ServiceBuilder::new().layer(layer).service(probe.clone());
        (probe, service)
    }

    /// How often the inner service ran.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The identity the inner service found in the extensions of the last request.
    pub(crate) fn identity(&self) -> Option<Identity> {
        self.identity.lock().expect("lock").clone()
    }

    /// `Identity::login` as the inner service saw it during the last request.
    pub(crate) fn login(&self) -> Option<Arc<UserLogin>> {
        self.login.lock().expect("lock").clone()
    }
}

/// The probe as an inner service: what [`Probe::handler`] does, for `ServiceBuilder::service`.
impl Service<Request<Body>> for Probe {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        (self.handler())(request)
    }
}

/// A response with its body read.
#[derive(Debug, PartialEq)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn challenge(&self) -> Option<&str> {
        self.headers
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().expect("visible ASCII challenge"))
    }

    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    /// The answer of the inner service.
    pub(crate) fn assert_passed(&self) {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        assert_eq!(self.text(), INNER_BODY);
        assert!(self.challenge().is_none());
    }

    /// A standard refusal: status, exact challenge, and VSPC's error envelope with the same code.
    pub(crate) fn assert_refused(&self, status: u16, challenge: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.challenge(), challenge, "{self:?}");
        assert_eq!(
            self.headers.get(CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        let json: serde_json::Value = serde_json::from_slice(&self.body).expect("JSON body");
        let errors = json["errors"].as_array().expect("errors array");
        assert_eq!(errors.len(), 1, "{json}");
        let error = errors[0].as_object().expect("error object");
        assert_eq!(error.len(), 3, "{json}");
        assert_eq!(error["type"], "security");
        assert_eq!(error["code"], status);
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
    }
}

/// Sends `request` through `service` with `oneshot` and reads the whole answer.
pub(crate) async fn send<S>(service: S, request: Request<Body>) -> Answer
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    let response = service.oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("infallible").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// What [`FaultStore::get`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Asks the memory store.
    PassThrough,
    /// Fails with a backend error.
    Error,
    /// Sleeps this long, then asks the memory store.
    Sleep(Duration),
    /// Panics.
    Panic,
    /// Answers with the record of another key id.
    WrongRecord,
    /// Fails as a backend that cannot decode the record.
    Corrupt,
    /// Answers with the record, its own, its user's and its company's status replaced by these.
    Statuses(Status, Status, Status),
}

/// A [`MemoryStore`] whose `get` counts its calls and fails on demand; every other call goes through.
#[derive(Clone)]
pub(crate) struct FaultStore {
    inner: MemoryStore,
    state: Arc<FaultState>,
}

struct FaultState {
    fault: Mutex<Fault>,
    gets: AtomicUsize,
    inflight: AtomicUsize,
    peak: AtomicUsize,
    gate: watch::Sender<bool>,
}

/// Counts one `get` in flight until dropped, however the call ends.
struct InFlight<'a>(&'a FaultState);

impl<'a> InFlight<'a> {
    fn enter(state: &'a FaultState) -> Self {
        let now = state.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak.fetch_max(now, Ordering::SeqCst);
        Self(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FaultStore {
    pub(crate) fn new(inner: MemoryStore) -> Self {
        Self {
            inner,
            state: Arc::new(FaultState {
                fault: Mutex::new(Fault::PassThrough),
                gets: AtomicUsize::new(0),
                inflight: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                gate: watch::Sender::new(true),
            }),
        }
    }

    pub(crate) fn set(&self, fault: Fault) {
        *self.state.fault.lock().expect("lock") = fault;
    }

    /// How often `get` was called.
    pub(crate) fn gets(&self) -> usize {
        self.state.gets.load(Ordering::SeqCst)
    }

    /// How many `get`s are running now.
    pub(crate) fn inflight(&self) -> usize {
        self.state.inflight.load(Ordering::SeqCst)
    }

    /// The most `get`s that ever ran at once.
    pub(crate) fn peak(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    /// Makes every `get` wait until [`FaultStore::open`].
    pub(crate) fn close(&self) {
        self.state.gate.send_replace(false);
    }

    /// Lets waiting and future `get`s go on.
    pub(crate) fn open(&self) {
        self.state.gate.send_replace(true);
    }
}

#[async_trait]
impl KeyStore for FaultStore {
    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.state.gets.fetch_add(1, Ordering::SeqCst);
        let _inflight = InFlight::enter(&self.state);
        let mut gate = self.state.gate.subscribe();
        gate.wait_for(|open| *open).await.expect("gate kept open");
        let fault = *self.state.fault.lock().expect("lock");
        match fault {
            Fault::PassThrough => self.inner.get(id).await,
            Fault::Error => Err(StoreError::backend("injected failure")),
            Fault::Sleep(duration) => {
                tokio::time::sleep(duration).await;
                self.inner.get(id).await
            }
            Fault::Panic => panic!("injected store panic"),
            Fault::WrongRecord => {
                let other = KeyId::new(if id.get() == 1 { 2 } else { 1 }).expect("valid id");
                Ok(self.inner.get(id).await?.map(|record| KeyRecord {
                    id: other,
                    ..record
                }))
            }
            Fault::Corrupt => Err(StoreError::corrupt("digest of 31 bytes, not 32")),
            Fault::Statuses(status, user_status, company_status) => {
                Ok(self.inner.get(id).await?.map(|record| KeyRecord {
                    status,
                    user_status,
                    company_status,
                    ..record
                }))
            }
        }
    }

    async fn insert(&self, record: KeyRecord) -> Result<(), StoreError> {
        self.inner.insert(record).await
    }

    async fn update(&self, id: KeyId, update: KeyUpdate) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.update(id, update).await
    }

    async fn delete(&self, id: KeyId) -> Result<bool, StoreError> {
        self.inner.delete(id).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page<KeyRecord>, StoreError> {
        self.inner.list(query).await
    }

    async fn set_user_status(&self, user_uid: &str, status: Status) -> Result<(), StoreError> {
        self.inner.set_user_status(user_uid, status).await
    }

    async fn set_company_status(&self, company_id: &str, status: Status) -> Result<(), StoreError> {
        self.inner.set_company_status(company_id, status).await
    }
}

/// A key of the default format with this id and secret text and the checksum that matches: passes
/// every offline check, whatever the store holds.
pub(crate) fn key_with(id: u64, secret: &[u8]) -> String {
    reference::key_text("tak", &reference::encode_base62(id, ID_LEN), secret)
}

/// A deterministic generator of test data (xorshift64*): reproducible, not secret.
pub(crate) struct TestRng(u64);

impl TestRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `len` random base62 characters.
    pub(crate) fn base62(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| ALPHABET[self.below(62) as usize])
            .collect()
    }

    /// A key id that a key could carry (1 to 2^53 - 1).
    pub(crate) fn key_id(&mut self) -> u64 {
        1 + self.below((1 << 53) - 1)
    }
}

/// Every form in which a key could leak: the key, its secret (base62 text, raw bytes), the digest
/// the store keeps, each in hex and base64 too, and every 12-character run of the secret.
pub(crate) struct Canary {
    forms: Vec<(String, Vec<u8>)>,
}

impl Canary {
    pub(crate) fn new(key: &str) -> Self {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        use base64::Engine;
        use sha2::{Digest, Sha256};

        let secret = secret_of(key).as_bytes();
        let raw_secret = decode_base62_256(secret);
        let digest: [u8; 32] = Sha256::digest(secret).into();
        let mut forms = Vec::new();
        for (name, bytes) in [
            ("key", key.as_bytes()),
            ("secret", secret),
            ("raw secret", &raw_secret[..]),
            ("digest", &digest[..]),
        ] {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            forms.push((format!("{name} hex"), hex.to_ascii_uppercase().into_bytes()));
            forms.push((format!("{name} hex"), hex.into_bytes()));
            forms.push((
                format!("{name} base64"),
                STANDARD.encode(bytes).into_bytes(),
            ));
            forms.push((
                format!("{name} base64url"),
                URL_SAFE_NO_PAD.encode(bytes).into_bytes(),
            ));
            forms.push((name.to_owned(), bytes.to_vec()));
        }
        for (i, run) in secret.windows(12).enumerate() {
            forms.push((format!("secret[{i}..{}]", i + 12), run.to_vec()));
        }
        Self { forms }
    }

    /// How many forms there are to look for.
    pub(crate) fn len(&self) -> usize {
        self.forms.len()
    }

    /// The names of the forms found in `haystack`.
    pub(crate) fn hits(&self, haystack: &[u8]) -> Vec<&str> {
        self.forms
            .iter()
            .filter(|(_, needle)| haystack.windows(needle.len()).any(|w| w == &needle[..]))
            .map(|(name, _)| name.as_str())
            .collect()
    }

    pub(crate) fn assert_absent(&self, haystack: impl AsRef<[u8]>, what: &str) {
        let haystack = haystack.as_ref();
        let hits = self.hits(haystack);
        assert!(
            hits.is_empty(),
            "{what} shows {hits:?}: {}",
            String::from_utf8_lossy(haystack)
        );
    }
}

/// The 32 bytes a 43-character big-endian base62 secret stands for.
pub(crate) fn decode_base62_256(text: &[u8]) -> [u8; 32] {
    let mut n = [0u8; 32];
    for &c in text {
        let digit = ALPHABET.iter().position(|&d| d == c).expect("base62") as u32;
        let mut carry = digit;
        for byte in n.iter_mut().rev() {
            let acc = u32::from(*byte) * 62 + carry;
            *byte = acc as u8;
            carry = acc >> 8;
        }
        assert_eq!(carry, 0, "a secret stands for at most 256 bits");
    }
    n
}
