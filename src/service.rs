use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use tower_service::Service;

use crate::future::{Check, Deferred, ResponseFuture};
use crate::header;
use crate::identity::Identity;
use crate::key::{KeyError, KeyId, SECRET_TOKEN_SCHEME};
use crate::layer::{ApiKeyLayer, Config};
use crate::policy::{authorize, ScopeRule};
use crate::rejection::{DefaultRejection, OnRejection, Reason, Rejection};
use crate::ring::KeyRing;
use crate::scope::Scope;

/// API-key authorization in front of `S`; built by [`ApiKeyLayer`].
#[derive(Clone)]
pub struct ApiKey<S, R = DefaultRejection> {
    pub(crate) inner: S,
    pub(crate) config: Arc<Config>,
    pub(crate) on_rejection: R,
}

impl<S> ApiKey<S> {
    /// Wraps `inner` with default settings; see [`ApiKeyLayer`] for the options.
    pub fn new(inner: S, keys: impl Into<KeyRing>) -> Self {
        use tower_layer::Layer;
        ApiKeyLayer::new(keys).layer(inner)
    }

    /// A layer with default settings over `keys`.
    pub fn layer(keys: impl Into<KeyRing>) -> ApiKeyLayer {
        ApiKeyLayer::new(keys)
    }
}

impl<S, R> ApiKey<S, R> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, R> fmt::Debug for ApiKey<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The first, synchronous step of a request.
enum Step {
    Admit(Identity),
    Refuse(Reason, Option<KeyId>),
    Wait(Check, Option<KeyId>),
}

impl Config {
    /// Everything up to the point where the store or a token validator has to be asked.
    #[inline]
    fn step<B>(&self, request: &Request<B>, required: Option<Scope>) -> Step {
        let token = match header::bearer(request.headers(), request.uri(), self.max_header_len) {
            Ok(token) => token,
            Err(reason) => return Step::Refuse(reason, None),
        };
        match self.ring.parse(token) {
            Ok(key) => {
                let id = key.id();
                match self.ring.check_key(&key) {
                    (Some(outcome), _) => match self.admit(outcome, request.method(), required) {
                        Ok(identity) => Step::Admit(identity),
                        Err(reason) => Step::Refuse(reason, Some(id)),
                    },
                    (None, digest) => {
                        let ring = self.ring.clone();
                        Step::Wait(
                            Box::pin(async move {
                                match ring.check_store(id, digest).await {
                                    Ok(outcome) => outcome,
                                    Err(e) if e.is_timeout() => Err(Reason::StoreTimeout),
                                    Err(_) => Err(Reason::StoreError),
                                }
                            }),
                            Some(id),
                        )
                    }
                }
            }
            Err(KeyError::NotKeyShaped) => match (&self.validator, header::token68(token)) {
                (_, Err(reason)) => Step::Refuse(reason, None),
                (Some(validator), Ok(token)) => {
                    let validator = validator.clone();
                    let token = token.strip_prefix(SECRET_TOKEN_SCHEME).unwrap_or(token);
                    let token = token.to_owned();
                    let timeout = self.ring.lookup_timeout();
                    Step::Wait(
                        Box::pin(async move {
                            let identity =
                                match tokio::time::timeout(timeout, validator.validate(&token))
                                    .await
                                {
                                    Ok(Ok(identity)) => identity,
                                    Ok(Err(e)) if e.is_unavailable() => {
                                        return Err(Reason::ValidatorError)
                                    }
                                    Ok(Err(_)) => return Err(Reason::InvalidToken),
                                    Err(_) => return Err(Reason::ValidatorError),
                                };
                            // Token identities obey the same status rule as keys.
                            match identity.token_status() {
                                Some(status) if !status.is_enabled() => {
                                    Err(Reason::Disabled(status))
                                }
                                _ => Ok(identity),
                            }
                        }),
                        None,
                    )
                }
                (None, Ok(_)) => Step::Refuse(Reason::NoValidator, None),
            },
            Err(KeyError::BadChecksum) => Step::Refuse(Reason::BadChecksum, None),
            // A character outside token68 is a malformed request whatever the value's shape.
            Err(_) => Step::Refuse(
                if header::is_token68_value(token) {
                    Reason::MalformedKey
                } else {
                    Reason::MalformedValue
                },
                None,
            ),
        }
    }

    /// Scope and method checks on an authenticated identity.
    #[inline]
    pub(crate) fn admit(
        &self,
        outcome: Result<Identity, Reason>,
        method: &Method,
        required: Option<Scope>,
    ) -> Result<Identity, Reason> {
        let identity = outcome?;
        authorize(
            identity.scopes(),
            identity.is_read_only(),
            method,
            required,
            self.allow_options,
        )?;
        Ok(identity)
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
        #[cfg(not(feature = "tracing"))]
        let _ = key_id;
        Rejection::in_realm(reason, &self.challenges)
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for ApiKey<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    R: OnRejection<ResBody> + Clone,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, R, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // Only the request-dependent rule takes the request apart; the others leave it in place, so
        // it is moved once, into the inner service.
        let required = match &self.config.scope {
            ScopeRule::None => None,
            ScopeRule::Fixed(scope) => Some(*scope),
            ScopeRule::FromParts(f) => {
                let (parts, body) = request.into_parts();
                let scope = f(&parts);
                request = Request::from_parts(parts, body);
                scope
            }
        };
        match self.config.step(&request, required) {
            Step::Admit(identity) => {
                request.extensions_mut().insert(identity);
                // The instance that was polled ready is the one that is called.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::inner(inner.call(request))
            }
            Step::Refuse(reason, key_id) => ResponseFuture::rejected(
                self.on_rejection
                    .on_rejection(self.config.rejection(reason, key_id)),
            ),
            Step::Wait(check, key_id) => {
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::checking(
                    check,
                    Deferred {
                        request,
                        inner,
                        config: self.config.clone(),
                        on_rejection: self.on_rejection.clone(),
                        required,
                        key_id,
                    },
                )
            }
        }
    }
}
