//! Bearer values that are not API keys: the [`TokenValidator`] fallback.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::identity::Identity;

#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
mod jwt;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use jwt::{JwtClaims, JwtIssuer, JwtValidator, JWT_PROVIDER};

/// Validates bearer values that are not key-shaped (OAuth 2 access tokens, JWTs, ...).
///
/// Key-shaped values never reach a validator. The identity returned goes through the same scope and
/// read-only checks as an API key's.
#[async_trait]
pub trait TokenValidator: Send + Sync + 'static {
    /// `Ok(identity)` for a valid token; `Err` with [`TokenError::invalid`] for a bad, expired or
    /// unknown token (401), with [`TokenError::unavailable`] when the validator cannot decide (503).
    async fn validate(&self, token: &str) -> Result<Identity, TokenError>;
}

#[async_trait]
impl<T: TokenValidator + ?Sized> TokenValidator for Arc<T> {
    async fn validate(&self, token: &str) -> Result<Identity, TokenError> {
        (**self).validate(token).await
    }
}

/// A [`TokenValidator`] from a synchronous closure; see [`validator_fn`].
#[derive(Clone, Copy)]
pub struct ValidatorFn<F>(F);

/// Makes a [`TokenValidator`] of a closure `Fn(&str) -> Result<Identity, TokenError>`.
pub fn validator_fn<F>(f: F) -> ValidatorFn<F>
where
    F: Fn(&str) -> Result<Identity, TokenError> + Send + Sync + 'static,
{
    ValidatorFn(f)
}

#[async_trait]
impl<F> TokenValidator for ValidatorFn<F>
where
    F: Fn(&str) -> Result<Identity, TokenError> + Send + Sync + 'static,
{
    async fn validate(&self, token: &str) -> Result<Identity, TokenError> {
        (self.0)(token)
    }
}

impl<F> fmt::Debug for ValidatorFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ValidatorFn")
    }
}

/// Why a token was refused.
#[derive(Debug)]
pub struct TokenError {
    unavailable: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TokenError {
    /// The token is bad, expired, or not for this service: 401.
    pub fn invalid(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            unavailable: false,
            source: Some(source.into()),
        }
    }

    /// The validator could not decide (a key server is down, ...): 503.
    pub fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            unavailable: true,
            source: Some(source.into()),
        }
    }

    /// Whether this is an outage rather than a bad token.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.unavailable {
            "token validator unavailable"
        } else {
            "invalid token"
        })?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TokenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
