//! What the integration tests share: owners and keys, requests and answers, an inner service that
//! records whether it ran, and a key store that fails on demand.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

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
use tower::{Service, ServiceExt};
use tower_api_key::key::KeyFormat;
use tower_api_key::store::{KeyRecord, KeyUpdate, ListQuery, Page, StoreError};
use tower_api_key::{
    Identity, IssuedKey, KeyId, KeyRing, KeyStore, MemoryStore, NewKey, Owner, Status, UserLogin,
};

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
#[derive(Clone, Default)]
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
    gate: watch::Sender<bool>,
}

impl FaultStore {
    pub(crate) fn new(inner: MemoryStore) -> Self {
        Self {
            inner,
            state: Arc::new(FaultState {
                fault: Mutex::new(Fault::PassThrough),
                gets: AtomicUsize::new(0),
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
