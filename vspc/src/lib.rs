//! A management API compatible with Veeam Service Provider Console v3's API-key endpoints: an axum
//! [`Router`] with users, companies, the OAuth 2 token endpoint and API keys.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tower_api_key_vspc::{bootstrap_admin, Admin};
//! use tower_api_key::store::AccountStore;
//! use tower_api_key::{KeyRing, MemoryStore};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let accounts: Arc<dyn AccountStore> = Arc::new(store.clone());
//! let boot = bootstrap_admin(accounts.as_ref(), None).await?;
//! if let Some(password) = boot.generated_password() {
//!     println!("admin password: {password}");
//! }
//! let secret = b"at least 32 bytes of JWT signing secret";
//! let app = Admin::new(KeyRing::new(store), accounts, secret).router();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1280").await?;
//! // The client address lets `POST /token` throttle failed logins per address.
//! let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//!
//! All under `/api/v3` except `/health` and `/metrics`. Every endpoint but `/token` sits behind `tower-api-key`'s
//! [`ApiKeyLayer`] with the `rest` scope, so an API key and an access token both work, read-only
//! identities may only `GET`, and a refused credential gets the layer's answer.
//!
//! | endpoint | who | what |
//! |---|---|---|
//! | `POST /token` | anyone | form `grant_type=password` (`username`, `password`) or `grant_type=refresh_token` (`refresh_token`), optional `readOnly=true` → `{"access_token","token_type":"bearer","refresh_token","expires_in"}` |
//! | `POST /users` | who outranks the role | VSPC's `UserInput`: `{"organizationUid","role","profile":{…},"credentials":{"userName","password"}}` → `{"data": User}` |
//! | `GET /users` | anyone signed in | portal roles: all users; company owners and administrators: their company's; others: themselves |
//! | `GET /users/me` | anyone signed in | the caller's own user (its `instanceUid` is the `userUid` of the paths below) |
//! | `GET /users/{userUid}` | self, who may read them | one user |
//! | `PATCH /users/{userUid}` | self (profile), who manages them | JSON Patch `replace` on `/status` and `/profile/…`: disabling ends all the user's keys at once and their tokens for good |
//! | `DELETE /users/{userUid}/tokens` | self, who manages them | ends the user's access and refresh tokens, on every node |
//! | `POST /organizations/companies` | portal administrators, operators | VSPC's `CompanyInput`: `{"organizationInput":{"name",…},"ownerCredentials":{"userName","password"},…}`, which also creates the `CompanyOwner` → `{"data": Company}` |
//! | `GET /organizations/companies` | anyone signed in | portal roles: all; others: their own |
//! | `GET /organizations/companies/{companyUid}` | portal roles, its users | one company |
//! | `PATCH /organizations/companies/{companyUid}` | portal administrators, operators | JSON Patch `replace` on `/status`: all keys of its users follow, their tokens end |
//! | `POST /users/{userUid}/logins/apikey` | self, who manages them | `?description=…&scopes=…&isReadAccessOnly=…` → `{"data": UserLogin}` with the key in `parameters`, the only time it is shown |
//! | `GET /users/logins` | anyone signed in | portal roles: all keys; others: their own |
//! | `GET /users/{userUid}/logins` | self, who may read them | the user's keys |
//! | `GET`, `PATCH`, `DELETE /users/{userUid}/logins/{userLoginId}` | self, who manages them | one key; PATCH is JSON Patch `replace` on `/status` and `/description`; DELETE → `{"data": true}` |
//! | `GET /openapi.json` | anyone | this table as an OpenAPI 3.1 document ([`Admin::openapi`]) |
//! | `GET /health` | anyone | `{"status":"ok"}` |
//! | `GET /metrics` | anyone | with [`Admin::with_metrics`]: Prometheus text (`text/plain; version=0.0.4`), the layer's counters of accepted and refused requests by reason, index hits and store reads |
//!
//! # Roles
//!
//! VSPC's: `PortalAdministrator`, `PortalOperator`, `PortalReadonlyOperator`, `CompanyOwner`,
//! `CompanyAdministrator`, `CompanyLocationAdministrator`, `CompanyLocationUser`,
//! `CompanyInvoiceAuditor`, `CompanySubtenant` (earlier versions' `administrator` and `user` are
//! read as `PortalAdministrator` and `CompanyLocationUser`). Each acts on the roles below it in its
//! reach (portal roles: every company; company roles: their own); read-only roles get read-only
//! tokens and keys whatever they ask. Nobody creates a principal or credential stronger than
//! themselves: a role at or above their own (portal administrators excepted), a key with scopes
//! their credential lacks, or a user through a credential that opens less than that user's login
//! (a `rest`-only key creates no users). A key whose status someone above its owner set can only
//! be changed back by someone above its owner. A user holds at most
//! [`Admin::with_max_keys_per_user`] keys (100 by default).
//!
//! `scopes` is taken as repeated parameters (`scopes=rest&scopes=integration`), as a JSON array
//! (`scopes=["integration","rest"]`) or comma-separated; a key cannot get a scope its creator's
//! identity lacks. Listings take `limit` (1 to 500, default 100), `offset`, `sort` and `filter`:
//!
//! - `sort=creationDate`, `sort=-creationDate`, `sort=["-creationDate"]` or
//!   `sort=[{"property":"creationDate","direction":"descending"}]`; fields `id`, `creationDate`,
//!   `description`, `userName`, `status`.
//! - `filter=[{"property":"status","operation":"equals","value":"enabled"}]`; also
//!   `{"property":"description","operation":"contains","value":"…"}` (case-insensitive) and
//!   `{"property":"userUid","operation":"equals","value":"…"}`. All conditions must hold.
//!
//! Collections answer `{"data":[…],"meta":{"pagingInfo":{"total","count","offset"}}}`.
//!
//! # Errors
//!
//! VSPC's envelope `{"errors":[{"message","type","code"}]}`, with `parameterName` when a query or
//! path parameter is at fault and `propertyName` for a body property: 400 for invalid input, 403
//! when the caller may not act, 404 for unknown users, companies and keys (another user's key is
//! also "not found"), 409 for a taken name, 415 for a JSON body sent with another media type. The
//! token endpoint answers in OAuth 2's form (`{"error":"invalid_grant","error_description":"…"}`).
//!
//! # Login floods
//!
//! Passwords are checked by a fixed pool of Argon2id threads (one per core) behind a bounded
//! queue ([`Admin::with_login_queue`], [`Admin::with_login_timeout`]): a full queue answers 503
//! `temporarily_unavailable` with `Retry-After` at once. Failed logins are counted per client
//! address and per user name ([`Admin::with_login_limits`]); over a limit, 429 with `Retry-After`
//! before any hashing.
//!
//! # Disabled users and companies
//!
//! Disabling a user or a company disables every key they own before the call returns (their
//! identities report `disabledDueToUser` / `disabledDueToCompany`), ends their access and refresh
//! tokens for good, on every node, including behind [`Admin::layer`] in front of your own routes,
//! and refuses them new tokens. Re-enabling restores the keys; tokens come only from a new login.
//! A refresh token works once; presenting a used one again ends every token descended from the
//! same login (RFC 9700 §4.14.2).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use axum::Router;
use http::StatusCode;
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use tower_api_key::store::AccountStore;
use tower_api_key::token::{JwtIssuer, JwtValidator};
use tower_api_key::ApiKeyLayer;
use tower_api_key::KeyRing;
use tower_api_key::RateLimit;
use tower_api_key::Scope;

mod bootstrap;
mod companies;
mod error;
mod extract;
mod input;
mod keys;
mod model;
mod openapi;
mod password;
mod patch;
mod principal;
mod query;
mod rights;
mod state;
mod telemetry;
mod throttle;
mod token;
mod users;

pub use bootstrap::{
    bootstrap_admin, Bootstrap, BootstrapError, ADMIN_USER_NAME, DEFAULT_COMPANY_NAME,
};
pub use telemetry::{install_recorder, run_upkeep, trace_layer, RequestSpan};
pub use throttle::LoginLimits;

use error::{json_response, ApiError};
use principal::AccountTokens;
use state::Shared;

const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(3600);
const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(14 * 24 * 3600);
const DEFAULT_MAX_KEYS_PER_USER: u64 = 100;
/// Longer lifetimes would overflow date arithmetic long before they made sense.
const MAX_TTL: Duration = Duration::from_secs(3650 * 24 * 3600);

/// The management API: build it, then mount [`Admin::router`].
///
/// The [`KeyRing`] and the [`AccountStore`] must sit on the same database, so that the status a
/// user or company has in one is the status their keys see in the other ([`MemoryStore`] and the
/// SQL stores implement both traits).
///
/// [`MemoryStore`]: tower_api_key::MemoryStore
#[must_use]
pub struct Admin {
    ring: KeyRing,
    accounts: Arc<dyn AccountStore>,
    secret: zeroize::Zeroizing<Vec<u8>>,
    tokens: Arc<AccountTokens>,
    access_ttl: Duration,
    refresh_ttl: Duration,
    max_keys_per_user: u64,
    login_limits: LoginLimits,
    login_queue: Option<usize>,
    login_timeout: Duration,
    max_key_lifetime: Option<Duration>,
    rate_limit: Option<RateLimit>,
    metrics: Option<PrometheusHandle>,
}

impl Admin {
    /// The API over `ring` and `accounts`, signing and checking access tokens with HS256 and
    /// `jwt_secret` (use at least 32 random bytes).
    pub fn new(ring: KeyRing, accounts: Arc<dyn AccountStore>, jwt_secret: &[u8]) -> Self {
        let tokens = Arc::new(AccountTokens::new(
            JwtValidator::hs256(jwt_secret),
            accounts.clone(),
            ring.clone(),
        ));
        Self {
            ring,
            accounts,
            secret: zeroize::Zeroizing::new(jwt_secret.to_vec()),
            tokens,
            access_ttl: DEFAULT_ACCESS_TTL,
            refresh_ttl: DEFAULT_REFRESH_TTL,
            max_keys_per_user: DEFAULT_MAX_KEYS_PER_USER,
            login_limits: LoginLimits::default(),
            login_queue: None,
            login_timeout: throttle::DEFAULT_TIMEOUT,
            max_key_lifetime: None,
            rate_limit: None,
            metrics: None,
        }
    }

    /// How many failed password logins are tolerated per client address, per user name and
    /// address, and per user name, before `POST /token` answers 429 with `Retry-After` without
    /// checking the password. Default: [`LoginLimits::default`].
    ///
    /// The client address is the connection's ([`axum::extract::ConnectInfo`]`<SocketAddr>`: serve
    /// with `into_make_service_with_connect_info`); without it only the per-name limit applies.
    /// Behind a proxy, put the client's address into that extension with a layer of your own
    /// that trusts the proxy; `X-Forwarded-For` is not read.
    pub fn with_login_limits(mut self, limits: LoginLimits) -> Self {
        self.login_limits = limits;
        self
    }

    /// How many password logins may wait for or run on the Argon2id threads at once (at least 1).
    /// Beyond that `POST /token` answers 503 `temporarily_unavailable` with `Retry-After: 1` at
    /// once, without hashing; one client address may hold a quarter of the places, and its
    /// further logins meanwhile get 429 with `Retry-After: 1`. Default: 8 per hashing thread (one
    /// thread per core, shared by the process), so a queued login waits about 8 hash times.
    pub fn with_login_queue(mut self, len: usize) -> Self {
        self.login_queue = Some(len.max(1));
        self
    }

    /// How long a password login may take from entering the queue to its answer; then it gets
    /// 503 with `Retry-After: 1`, and its hash is skipped if it has not started. Default: 500 ms.
    pub fn with_login_timeout(mut self, timeout: Duration) -> Self {
        self.login_timeout = timeout;
        self
    }

    /// Serve the metrics of `recorder` (see [`install_recorder`]) as Prometheus text at
    /// `GET /metrics`, outside `/api/v3` and without authentication: keep it on a private network
    /// or behind a proxy that restricts it. Default: no `/metrics`.
    pub fn with_metrics(mut self, recorder: PrometheusHandle) -> Self {
        self.metrics = Some(recorder);
        self
    }

    /// How many API keys one user may hold; creating one more answers 409. Default: 100.
    pub fn with_max_keys_per_user(mut self, max: u64) -> Self {
        self.max_keys_per_user = max;
        self
    }

    /// The longest a new API key may live: a creation without `expirationDate` gets this lifetime,
    /// and one asking for a later date answers 400. Default: no limit (keys live until disabled or
    /// deleted, as VSPC's do).
    pub fn with_max_key_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_key_lifetime = Some(lifetime.min(MAX_TTL));
        self
    }

    /// Limits every identity (each API key, each user's access tokens) to `limit` on the protected
    /// endpoints; see [`RateLimit`]. Default: no limit.
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// How long access tokens live (`expires_in`). Default: one hour; at most ten years.
    pub fn with_access_token_ttl(mut self, ttl: Duration) -> Self {
        self.access_ttl = ttl.min(MAX_TTL);
        self
    }

    /// How long an unused refresh token stays good. Default: 14 days; at most ten years.
    pub fn with_refresh_token_ttl(mut self, ttl: Duration) -> Self {
        self.refresh_ttl = ttl.min(MAX_TTL);
        self
    }

    /// The layer in front of the API's endpoints: keys from the ring, access tokens from this API,
    /// the `rest` scope required. Put it in front of your own routes to accept the same credentials.
    ///
    /// An access token is checked against its account on every request: it stops working as soon
    /// as its user or company is disabled or its user's tokens are revoked, on every node, as keys
    /// do.
    pub fn layer(&self) -> ApiKeyLayer {
        let layer = ApiKeyLayer::new(self.ring.clone())
            .require_scope(Scope::REST)
            .with_token_validator(self.tokens.clone());
        match self.rate_limit {
            Some(limit) => layer.rate_limit(limit),
            None => layer,
        }
    }

    /// The router: `/api/v3/…`, `/health` and, [`with_metrics`](Admin::with_metrics), `/metrics`, with JSON answers for unknown paths and methods.
    pub fn router(&self) -> Router {
        let shared = Arc::new(Shared {
            ring: self.ring.clone(),
            accounts: self.accounts.clone(),
            issuer: JwtIssuer::hs256(&self.secret),
            access_ttl: self.access_ttl,
            refresh_ttl: self.refresh_ttl,
            max_keys_per_user: self.max_keys_per_user,
            max_key_lifetime: self.max_key_lifetime,
            key_locks: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
            throttle: throttle::Throttle::new(
                self.login_limits,
                self.login_queue,
                self.login_timeout,
            ),
            openapi: openapi::Document::default(),
        });
        let (mut router, doc) = self.routes();
        shared.openapi.set(&doc);
        // Prometheus text, outside the JSON API and its document.
        if let Some(recorder) = self.metrics.clone() {
            router = router.route(
                "/metrics",
                axum::routing::get(move || std::future::ready(telemetry::render(&recorder))),
            );
        }
        router
            .fallback(no_route)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(shared)
    }

    /// The OpenAPI 3.1 document of [`Admin::router`]'s routes, as `GET /api/v3/openapi.json`
    /// answers it: merge it into your own when you mount the router beside other routes.
    pub fn openapi(&self) -> utoipa::openapi::OpenApi {
        self.routes().1
    }

    /// Every route, each registered with the `#[utoipa::path]` of its handler, so the document
    /// lists exactly what the router serves.
    fn routes(&self) -> (Router<state::AppState>, utoipa::openapi::OpenApi) {
        let protected = OpenApiRouter::new()
            .routes(routes!(users::list, users::create))
            .routes(routes!(users::me))
            .routes(routes!(keys::list_all))
            .routes(routes!(users::get, users::patch))
            .routes(routes!(users::revoke_tokens))
            .routes(routes!(keys::list_for_user))
            .routes(routes!(keys::create))
            .routes(routes!(keys::rotate))
            .routes(routes!(keys::get, keys::patch, keys::delete))
            .routes(routes!(companies::list, companies::create))
            .routes(routes!(companies::get, companies::patch))
            // Only matched routes are guarded: the token endpoint and unknown paths stay open.
            .route_layer(self.layer());
        let api = OpenApiRouter::new()
            .routes(routes!(token::token))
            .routes(routes!(openapi::document))
            .merge(protected);
        let (router, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
            .nest("/api/v3", api)
            .routes(routes!(health))
            .split_for_parts();
        (router, openapi::finish(doc))
    }
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("ring", &self.ring)
            .field("jwt_secret", &"<redacted>")
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("login_limits", &self.login_limits)
            .field("login_queue", &self.login_queue)
            .field("login_timeout", &self.login_timeout)
            .field("max_key_lifetime", &self.max_key_lifetime)
            .field("rate_limit", &self.rate_limit)
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

/// The answer of `GET /health`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// `GET /health`.
#[utoipa::path(
    get,
    path = "/health",
    tag = "Service",
    operation_id = "health",
    summary = "Liveness",
    responses((status = 200, description = "The server answers.", body = Health)),
)]
async fn health() -> Response {
    json_response(StatusCode::OK, &Health { status: "ok" })
}

async fn no_route() -> ApiError {
    ApiError::no_route()
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
