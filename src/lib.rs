//! API-key authorization for any [tower](https://docs.rs/tower) service: axum, hyper, tonic.
//!
//! A service issues long-lived keys to its users (VSPC's `POST /users/{userUid}/logins/apikey`);
//! clients send them as `Authorization: Bearer <key>`. [`ApiKeyLayer`] checks each request:
//!
//! 1. reads the one `Authorization` header (RFC 9110, RFC 6750) and tells a key from anything else
//!    offline, by shape and CRC32 checksum;
//! 2. looks the key id up in an in-process index (no `.await`, no lock, no allocation on a hit; the
//!    [`KeyStore`] is asked only on a miss) and compares `SHA-256(secret)` in constant time;
//! 3. checks that the key, its user and its company are `enabled`, that the key holds the scope the
//!    route needs, and that a read-only key only reads (`GET`, `HEAD`);
//! 4. puts the [`Identity`] into the request extensions and calls the inner service.
//!
//! Bearer values that are not keys (OAuth 2 access tokens) go to a [`TokenValidator`]; a JWT one is
//! built in. Every refusal is a standard answer (see [`Rejection`]); the inner service never sees a
//! refused request, and a store failure is a 503, never a pass.
//!
//! # axum
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_api_key::{ApiKeyLayer, KeyRing, Login, MemoryStore, NewKey, Owner, Scope};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeyRing::new(MemoryStore::new());
//! let app: Router = Router::new()
//!     .route("/api/v3/things", get(list))
//!     .layer(ApiKeyLayer::new(keys.clone()).require_scope(Scope::REST));
//!
//! let owner = Owner {
//!     user_uid: "955b0b80-03b2-49fd-bf38-14785ecff0a8".into(),
//!     user_name: "alpha_admin".into(),
//!     company_id: "3b139961-6b11-4fd8-9e87-c2be1b0e9ca8".into(),
//!     company_name: "Alpha".into(),
//! };
//! let issued = keys
//!     .issue(NewKey::new(owner).description("CI").scope(Scope::REST).read_only(true))
//!     .await?;
//! println!("{}", issued.key()); // shown once; the store keeps only the digest
//! # Ok(()) }
//!
//! async fn list(Login(login): Login) -> String {
//!     format!("things of {}", login.user_name)
//! }
//! ```
//!
//! # `Identity` and `Login`
//!
//! The layer puts an [`Identity`] into the extensions of every request it lets through: the key id
//! (or the token's user), the scopes and the read-only flag. For an API key it is a handle the size
//! of a few words, copied out of the index slot the layer already read, so letting a request through
//! costs no allocation and no reference count. Take it (as an axum extractor or with
//! `request.extensions().get::<Identity>()`) when scopes and the key id are all a handler needs.
//!
//! The full VSPC identity, a [`UserLogin`] (user, company, description, status, creation date), is
//! read from the index on demand: `Login` is the axum extractor that does it, and
//! [`Identity::login`] the call for other services. It is `None` only when the key was deleted
//! between the layer's check and the handler's read; the extractor then answers 401 as the layer
//! would have, so a handler that takes `Login` never sees that case.
//!
//! # hyper or any tower service
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_api_key::{ApiKeyLayer, Identity, MemoryStore};
//!
//! # async fn run() {
//! let service = ServiceBuilder::new()
//!     .layer(ApiKeyLayer::new(MemoryStore::new()))
//!     .service(service_fn(|req: Request<Full<Bytes>>| async move {
//!         let identity = req.extensions().get::<Identity>().cloned();
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("{identity:?}")))))
//!     }));
//!
//! let response = service.oneshot(Request::new(Full::default())).await.unwrap();
//! assert_eq!(response.status(), 401);
//! // With hyper: hyper_util::service::TowerToHyperService::new(service)
//! # }
//! ```
//!
//! # Answers
//!
//! | request | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no `Authorization`, or another scheme | 401 | `Bearer realm="api"` |
//! | two `Authorization` headers; empty, non-token68 or oversized value; also an `access_token` query parameter | 400 | `…, error="invalid_request"` |
//! | bad checksum, unknown id, wrong secret, key/user/company not enabled, expired key, invalid or expired token | 401 | `…, error="invalid_token"` (one answer for all) |
//! | missing scope | 403 | `…, error="insufficient_scope", scope="…"` |
//! | read-only identity, writing method | 403 | `…, error="insufficient_scope"` |
//! | store or validator failure or timeout | 503 | none |
//! | over the layer's [`RateLimit`] for that identity | 429 | none; `Retry-After`, `RateLimit`, `RateLimit-Policy` |
//!
//! Bodies are VSPC's envelope, `{"errors":[{"message":"…","type":"security","code":401}]}`, when the
//! response body type can carry it ([`ErrorBody`]); [`ApiKeyLayer::on_rejection`] replaces them.
//!
//! # Key lifecycle
//!
//! Keys may expire ([`NewKey::expires`]): answers carry `Sunset` ([`SUNSET`]) in a key's last
//! week ([`ApiKeyLayer::expiry_notice`]) and it is refused from its expiry on. [`KeyRing::rotate`]
//! replaces a key by one with the same settings and lets the old one live out a grace period,
//! answering with `Deprecation` ([`DEPRECATION`]). A ring built with
//! [`KeyRingBuilder::track_last_used`] writes each key's last use to the store once per interval,
//! off the request path. [`ApiKeyLayer::rate_limit`] gives each verified identity a quota.
//!
//! ```no_run
//! # async fn run(store: tower_api_key::MemoryStore, owner: tower_api_key::Owner) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_api_key::{ApiKeyLayer, KeyRing, NewKey, RateLimit, Scope};
//!
//! let keys = KeyRing::builder(store)
//!     .track_last_used(Duration::from_secs(60))
//!     .build();
//! let in_90_days = time::OffsetDateTime::now_utc() + time::Duration::days(90);
//! let issued = keys
//!     .issue(NewKey::new(owner).scope(Scope::REST).description("CI").expires(in_90_days))
//!     .await?;
//! // Later: a successor, and a day for clients to move to it.
//! let successor = keys.rotate(issued.id(), Duration::from_secs(86_400)).await?;
//! let layer = ApiKeyLayer::new(keys).rate_limit(RateLimit::per_minute(600));
//! # let _ = (successor, layer);
//! # Ok(()) }
//! ```
//!
//! # Features
//!
//! | feature | adds |
//! |---|---|
//! | *(none)* | the layer, [`MemoryStore`], [`KeyRing`], the [`TokenValidator`] trait |
//! | `tracing` | `tracing` events for every refusal, `key_id` and `reason` in the request's span: never the secret |
//! | `metrics` | counters of accepted and refused requests and index hits, a histogram of store reads ([below](#metrics-and-tracing)) |
//! | `jwt` | [`token::JwtValidator`] (HS256, RS256, ES256, EdDSA) and [`token::JwtIssuer`] |
//! | `axum` | extractors for [`Identity`] and `Login` |
//! | `sqlite` | `SqliteStore`: keys, users and companies in one file |
//! | `postgres` | `PostgresStore`: the same in PostgreSQL, shared by many nodes, changes through `LISTEN`/`NOTIFY` |
//! | `redis` | `RedisStore`: the same in Redis, shared by many nodes, changes through pub/sub |
//! | `openapi` | `utoipa::ToSchema` for [`UserLogin`], [`Status`], [`Scopes`] and `store::Role`, to document APIs that answer with them |
//!
//! # Metrics and tracing
//!
//! With the feature `metrics`, the layer reports through the [`metrics`](https://docs.rs/metrics)
//! facade to the recorder the process installs:
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `tower_api_key_requests_accepted_total` | counter | `kind` = `api_key` \| `token` | requests let through to the inner service |
//! | `tower_api_key_requests_refused_total` | counter | `reason` = [`Reason::as_str`] (`no_credentials`, `wrong_secret`, `unknown_key`, …; a fixed set) | requests refused, by reason |
//! | `tower_api_key_store_lookup_seconds` | histogram | `outcome` = `found` \| `absent` \| `error` | the key store read on an index miss, one per id however many requests wait for it |
//! | `tower_api_key_index_lookups_total` | counter | `result` = `hit` \| `miss` | index lookups of presented keys; hit ratio = hit / (hit + miss) |
//!
//! No label holds a key id, a secret or anything a client chose. The series are registered once,
//! with the recorder found at the first request, so **install the recorder before the first
//! request**; every series exists, at zero, from then on.
//!
//! With the feature `tracing`, the layer records `key_id` (accepted and refused) and `reason`
//! (refused) into the current span when it declares them, as a `tower_http::trace::TraceLayer`
//! span can (`.make_span_with(|_: &Request<_>| tracing::info_span!("request", key_id =
//! tracing::field::Empty, reason = tracing::field::Empty))`); the store lookup of a key the index
//! does not hold runs in a `key_lookup` span with its `key_id`. The secret is never recorded.
#![cfg_attr(docsrs, feature(doc_cfg))]

// The README's examples compile as doc tests.
#[cfg(all(doctest, feature = "axum", feature = "jwt", feature = "sqlite"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod decision;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
mod extract;
mod future;
mod header;
mod identity;
mod index;
pub mod key;
mod layer;
mod metrics;
mod notes;
mod policy;
pub mod rate;
mod rejection;
mod ring;
mod scope;
mod service;
pub mod store;
pub mod text;
pub mod token;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::{Login, MissingIdentity};
pub use future::ResponseFuture;
pub use identity::{Identity, IdentityKind, Status, UserLogin, API_KEY_PROVIDER};
pub use key::{KeyFormat, KeyId};
pub use layer::ApiKeyLayer;
pub use notes::{DEPRECATION, SUNSET};
pub use rate::RateLimit;
pub use rejection::{DefaultRejection, ErrorBody, OnRejection, Reason, Rejection, RejectionKind};
pub use ring::{
    validate_description, IssueError, IssuedKey, KeyRing, KeyRingBuilder, NewKey, RingStats,
    VerifyError,
};
pub use scope::{Scope, ScopeError, Scopes};
pub use service::ApiKey;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use store::PostgresStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::RedisStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use store::SqliteStore;
pub use store::{KeyStore, MemoryStore, Owner};
pub use token::{TokenError, TokenValidator};
