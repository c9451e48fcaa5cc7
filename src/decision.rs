//! One request's path through the layer, in order: the `Authorization` header, then a key or a
//! token, then its verdict, then scope and read-only, then admit or refuse.
//!
//! Everything up to the first `.await` happens in [`Config::decide`]; a request whose key the index
//! does not hold, or whose token a validator must read, waits on a [`Check`] and comes back through
//! [`Config::admit`], so both paths end in the same checks.

use http::{Method, Request};

use crate::future::Check;
use crate::header;
use crate::identity::Identity;
use crate::key::{KeyError, KeyId, ParsedKey, SECRET_TOKEN_SCHEME};
use crate::layer::Config;
use crate::metrics;
use crate::notes::Notes;
use crate::policy::authorize;
use crate::rejection::{Reason, Rejection};
use crate::scope::Scope;

/// What the layer decides about a request before anything is awaited.
pub(crate) enum Decision {
    /// Let the request through with this identity.
    Admit(Identity),
    /// Refuse it; `Some` key id when the value was a key whose id could be read.
    Refuse(Reason, Option<KeyId>),
    /// Ask the store or the token validator, then [`Config::admit`] the outcome.
    Wait(Check, Option<KeyId>),
}

impl Config {
    /// Header, then key or token, as far as it goes without waiting.
    #[inline]
    pub(crate) fn decide<B>(&self, request: &Request<B>, required: Option<Scope>) -> Decision {
        let value = match header::bearer(request.headers(), request.uri(), self.max_header_len) {
            Ok(value) => value,
            Err(reason) => return Decision::Refuse(reason, None),
        };
        match self.ring.parse(value) {
            Ok(key) => self.decide_key(&key, request.method(), required),
            Err(KeyError::NotKeyShaped) => self.decide_token(value),
            Err(KeyError::BadChecksum) => Decision::Refuse(Reason::BadChecksum, None),
            // A character outside token68 is a malformed request whatever the value's shape.
            Err(_) => Decision::Refuse(
                if header::is_token68_value(value) {
                    Reason::MalformedKey
                } else {
                    Reason::MalformedValue
                },
                None,
            ),
        }
    }

    /// A key: the index's verdict when it holds the id, else a store lookup to wait for.
    #[inline]
    fn decide_key(
        &self,
        key: &ParsedKey<'_>,
        method: &Method,
        required: Option<Scope>,
    ) -> Decision {
        let id = key.id();
        match self.ring.check_key(key) {
            (Some(verdict), _) => match self.admit(verdict, method, required) {
                Ok(identity) => Decision::Admit(identity),
                Err(reason) => Decision::Refuse(reason, Some(id)),
            },
            (None, digest) => {
                let ring = self.ring.clone();
                let check: Check = Box::pin(metrics::in_lookup_span(id, async move {
                    match ring.check_store(id, digest).await {
                        Ok(verdict) => verdict,
                        Err(e) if e.is_timeout() => Err(Reason::StoreTimeout),
                        Err(_) => Err(Reason::StoreError),
                    }
                }));
                Decision::Wait(check, Some(id))
            }
        }
    }

    /// A bearer value that is not a key: the token validator's, when there is one.
    fn decide_token(&self, value: &[u8]) -> Decision {
        let token = match header::token68(value) {
            Ok(token) => token,
            Err(reason) => return Decision::Refuse(reason, None),
        };
        let Some(validator) = &self.validator else {
            return Decision::Refuse(Reason::NoValidator, None);
        };
        let validator = validator.clone();
        let token = token.strip_prefix(SECRET_TOKEN_SCHEME).unwrap_or(token);
        let token = token.to_owned();
        let timeout = self.ring.lookup_timeout();
        let check: Check = Box::pin(async move {
            let identity = match tokio::time::timeout(timeout, validator.validate(&token)).await {
                Ok(Ok(identity)) => identity,
                Ok(Err(e)) if e.is_unavailable() => return Err(Reason::ValidatorError),
                Ok(Err(_)) => return Err(Reason::InvalidToken),
                Err(_) => return Err(Reason::ValidatorError),
            };
            // Token identities obey the same status rule as keys.
            match identity.token_status() {
                Some(status) if !status.is_enabled() => Err(Reason::Disabled(status)),
                _ => Ok(identity),
            }
        });
        Decision::Wait(check, None)
    }

    /// Scope, then read-only, on an authenticated identity (or the reason it is not one).
    #[inline]
    pub(crate) fn admit(
        &self,
        verdict: Result<Identity, Reason>,
        method: &Method,
        required: Option<Scope>,
    ) -> Result<Identity, Reason> {
        let identity = verdict?;
        authorize(
            identity.scopes(),
            identity.is_read_only(),
            method,
            required,
            self.allow_options,
        )?;
        Ok(identity)
    }

    /// What an admitted request's answer carries, spending a request of the identity's rate limit
    /// when there is one; the refusal when that limit is spent.
    #[inline]
    pub(crate) fn notes(&self, identity: &Identity) -> Result<Option<Box<Notes>>, Rejection> {
        let rate = match &self.limiter {
            None => None,
            Some(limiter) => {
                let standing = limiter.check(identity);
                if !standing.allowed() {
                    return Err(self
                        .rejection(Reason::RateLimited, identity.key_id())
                        .with_rate(standing));
                }
                Some(standing)
            }
        };
        Ok(Notes::of(identity, self.expiry_notice, rate))
    }

    /// The refusal for `reason`; `key_id` when the value was a key whose id could be read. Traced
    /// with the reason and the id, never the secret.
    pub(crate) fn rejection(&self, reason: Reason, key_id: Option<KeyId>) -> Rejection {
        #[cfg(feature = "tracing")]
        tracing::debug!(
            reason = reason.as_str(),
            key_id = key_id.map(KeyId::get),
            "request refused"
        );
        metrics::refused(reason, key_id);
        Rejection::in_realm(reason, &self.challenges)
    }
}
