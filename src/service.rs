//! The [`ApiKey`] service: `poll_ready` and `call`; what it decides is in `decision.rs`.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::decision::Decision;
use crate::future::{Deferred, ResponseFuture};
use crate::layer::{ApiKeyLayer, Config};
use crate::rejection::{DefaultRejection, OnRejection};
use crate::ring::KeyRing;

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
        let required = match self.config.scope.fixed() {
            Ok(required) => required,
            // Only a request-dependent rule takes the request apart; the others leave it in
            // place, so it is moved once, into the inner service.
            Err(from_parts) => {
                let (parts, body) = request.into_parts();
                let required = from_parts(&parts);
                request = Request::from_parts(parts, body);
                required
            }
        };
        match self.config.decide(&request, required) {
            Decision::Admit(identity) => match self.config.notes(&identity) {
                Ok(notes) => {
                    crate::metrics::accepted(&identity);
                    request.extensions_mut().insert(identity);
                    // Called now, so the instance that was polled ready is the one that is called.
                    ResponseFuture::inner(self.inner.call(request), notes)
                }
                Err(rejection) => {
                    ResponseFuture::rejected(self.on_rejection.on_rejection(rejection))
                }
            },
            Decision::Refuse(reason, key_id) => ResponseFuture::rejected(
                self.on_rejection
                    .on_rejection(self.config.rejection(reason, key_id)),
            ),
            Decision::Wait(check, key_id) => {
                // Called later: the ready instance goes into the future, a clone stays here.
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
