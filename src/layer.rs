//! [`ApiKeyLayer`]: the configuration every [`ApiKey`](crate::ApiKey) service of one layer shares.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use tower_layer::Layer;

use crate::header::DEFAULT_MAX_HEADER_LEN;
use crate::notes::DEFAULT_EXPIRY_NOTICE;
use crate::policy::ScopeRule;
use crate::rate::{Limiter, RateLimit};
use crate::rejection::{Challenges, DefaultRejection};
use crate::ring::KeyRing;
use crate::scope::Scope;
use crate::service::ApiKey;
use crate::token::TokenValidator;

/// Puts API-key authorization in front of a service; see the [crate docs](crate).
///
/// Requests with a valid, enabled key (or a token the [`TokenValidator`] accepts) that holds the
/// required scope and, when read-only, uses a reading method reach the inner service with an
/// [`Identity`](crate::Identity) in their extensions. Every other request gets the answer of
/// [`Rejection`](crate::Rejection) and never reaches the inner service.
#[derive(Clone)]
#[must_use]
pub struct ApiKeyLayer<R = DefaultRejection> {
    pub(crate) config: Arc<Config>,
    pub(crate) on_rejection: R,
}

/// What every request reads sits in the first cache line, and the whole is aligned to one, so a
/// request touches the same lines of every layer's configuration whatever its heap address (the
/// constant-time test of unknown ids against known ones times two layers).
#[derive(Clone)]
#[repr(C, align(64))]
pub(crate) struct Config {
    pub(crate) ring: KeyRing,
    pub(crate) challenges: Arc<Challenges>,
    pub(crate) max_header_len: usize,
    pub(crate) allow_options: bool,
    pub(crate) limiter: Option<Arc<Limiter>>,
    pub(crate) scope: ScopeRule,
    // Read only for keys that expire or were replaced, and for tokens.
    pub(crate) expiry_notice: Duration,
    pub(crate) validator: Option<Arc<dyn TokenValidator>>,
}

impl ApiKeyLayer {
    /// A layer checking keys against `keys`: a [`KeyRing`] or any [`KeyStore`](crate::KeyStore)
    /// (which gets a ring of its own).
    pub fn new(keys: impl Into<KeyRing>) -> Self {
        Self {
            config: Arc::new(Config {
                ring: keys.into(),
                challenges: Arc::new(Challenges::new("api")),
                scope: ScopeRule::None,
                allow_options: false,
                validator: None,
                max_header_len: DEFAULT_MAX_HEADER_LEN,
                expiry_notice: DEFAULT_EXPIRY_NOTICE,
                limiter: None,
            }),
            on_rejection: DefaultRejection,
        }
    }
}

impl<R> ApiKeyLayer<R> {
    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Every request needs `scope`.
    pub fn require_scope(mut self, scope: Scope) -> Self {
        self.config_mut().scope = ScopeRule::Fixed(scope);
        self
    }

    /// The scope a request needs is computed from its parts (`None`: any authenticated identity).
    ///
    /// Decide from what the router matched, not from the raw path: with axum, use `route_layer` and
    /// read [`MatchedPath`](https://docs.rs/axum/latest/axum/extract/struct.MatchedPath.html) from the
    /// extensions, or put one layer per route.
    pub fn scope_from<F>(mut self, f: F) -> Self
    where
        F: Fn(&Parts) -> Option<Scope> + Send + Sync + 'static,
    {
        self.config_mut().scope = ScopeRule::FromParts(Arc::new(f));
        self
    }

    /// Bearer values that are not key-shaped go to `validator`; without one they get a 401.
    pub fn with_token_validator<V: TokenValidator>(mut self, validator: V) -> Self {
        self.config_mut().validator = Some(Arc::new(validator));
        self
    }

    /// The `realm` of `WWW-Authenticate` challenges. Default: `api`.
    ///
    /// # Panics
    ///
    /// When `realm` holds a `"`, a `\` or a character that is not visible ASCII or space.
    pub fn with_realm(mut self, realm: &'static str) -> Self {
        assert!(
            realm
                .bytes()
                .all(|b| (b == b' ' || b.is_ascii_graphic()) && b != b'"' && b != b'\\'),
            "realm must be visible ASCII without quotes or backslashes"
        );
        self.config_mut().challenges = Arc::new(Challenges::new(realm));
        self
    }

    /// Whether read-only identities may use `OPTIONS` (besides `GET` and `HEAD`). Default: no.
    pub fn allow_options_for_read_only(mut self, allow: bool) -> Self {
        self.config_mut().allow_options = allow;
        self
    }

    /// Longest `Authorization` header accepted, in bytes; longer ones get a 400. Default: 4096.
    pub fn with_max_header_len(mut self, max: usize) -> Self {
        self.config_mut().max_header_len = max;
        self
    }

    /// How long before a key expires its answers carry a `Sunset` header (RFC 8594) with the
    /// expiry. Keys in the grace period of a rotation carry it, with `Deprecation`, all along.
    /// Default: 7 days.
    pub fn expiry_notice(mut self, notice: Duration) -> Self {
        self.config_mut().expiry_notice = notice;
        self
    }

    /// Limits each verified identity (each key, each token identity) to `limit`'s quota; see
    /// [`RateLimit`]. Services built from this layer share the quotas. Default: no limit.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.config_mut().limiter = Some(Arc::new(Limiter::new(limit)));
        self
    }

    /// Replaces the standard answers with `hook`'s: a closure `Fn(Rejection) -> Response<B>` or any
    /// [`OnRejection`](crate::OnRejection).
    pub fn on_rejection<R2>(self, hook: R2) -> ApiKeyLayer<R2> {
        ApiKeyLayer {
            config: self.config,
            on_rejection: hook,
        }
    }

    /// The key ring the layer checks keys against.
    pub fn key_ring(&self) -> &KeyRing {
        &self.config.ring
    }
}

impl<S, R: Clone> Layer<S> for ApiKeyLayer<R> {
    type Service = ApiKey<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKey {
            inner,
            config: self.config.clone(),
            on_rejection: self.on_rejection.clone(),
        }
    }
}

impl<R> fmt::Debug for ApiKeyLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("ring", &self.ring)
            .field("challenges", &self.challenges)
            .field("scope", &self.scope)
            .field("allow_options", &self.allow_options)
            .field("token_validator", &self.validator.is_some())
            .field("max_header_len", &self.max_header_len)
            .field("expiry_notice", &self.expiry_notice)
            .field("limiter", &self.limiter)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_request_reads_fits_the_first_cache_line() {
        assert_eq!(std::mem::align_of::<Config>(), 64);
        let end = std::mem::offset_of!(Config, scope) + std::mem::size_of::<ScopeRule>();
        assert!(end <= 64, "the scope rule ends at byte {end}");
        for offset in [
            std::mem::offset_of!(Config, ring),
            std::mem::offset_of!(Config, challenges),
            std::mem::offset_of!(Config, max_header_len),
            std::mem::offset_of!(Config, allow_options),
            std::mem::offset_of!(Config, limiter),
        ] {
            assert!(offset < std::mem::offset_of!(Config, scope));
        }
    }
}
