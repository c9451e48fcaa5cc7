//! [`ResponseFuture`]: a request's answer, ready at once, from the inner service, or after the
//! store or token validator was asked.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::identity::Identity;
use crate::key::KeyId;
use crate::layer::Config;
use crate::notes::Notes;
use crate::rejection::{OnRejection, Reason};
use crate::scope::Scope;

pub(crate) type Check = Pin<Box<dyn Future<Output = Result<Identity, Reason>> + Send>>;

pin_project! {
    /// Response future of [`ApiKey`](crate::ApiKey).
    pub struct ResponseFuture<S, B, R, ResBody>
    where
        S: Service<Request<B>, Response = Response<ResBody>>,
    {
        #[pin]
        state: State<S, B, R, ResBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, R, ResBody>
    where
        S: Service<Request<B>, Response = Response<ResBody>>,
    {
        Inner { #[pin] future: S::Future, notes: Option<Box<Notes>> },
        Rejected { response: Option<Response<ResBody>> },
        // Boxed: a request waiting for the store is rare, and an unboxed one would make every
        // response future as large as a request.
        Checking { check: Check, call: Option<Box<Deferred<S, B, R>>> },
    }
}

/// What a request that waits for the store or a token validator needs to go on.
pub(crate) struct Deferred<S, B, R> {
    pub(crate) request: Request<B>,
    pub(crate) inner: S,
    pub(crate) config: Arc<Config>,
    pub(crate) on_rejection: R,
    pub(crate) required: Option<Scope>,
    pub(crate) key_id: Option<KeyId>,
}

impl<S, B, R, ResBody> ResponseFuture<S, B, R, ResBody>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    pub(crate) fn inner(future: S::Future, notes: Option<Box<Notes>>) -> Self {
        Self {
            state: State::Inner { future, notes },
        }
    }

    pub(crate) fn rejected(response: Response<ResBody>) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
        }
    }

    pub(crate) fn checking(check: Check, call: Deferred<S, B, R>) -> Self {
        Self {
            state: State::Checking {
                check,
                call: Some(Box::new(call)),
            },
        }
    }
}

impl<S, B, R, ResBody> Future for ResponseFuture<S, B, R, ResBody>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    R: OnRejection<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { future, notes } => {
                    // The answer is written to in place: moving it out and back costs two copies.
                    let mut poll = future.poll(cx);
                    if let Poll::Ready(Ok(response)) = &mut poll {
                        if let Some(notes) = notes.take() {
                            notes.write(response.headers_mut());
                        }
                    }
                    return poll;
                }
                StateProj::Rejected { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response));
                }
                StateProj::Checking { check, call } => {
                    let outcome = ready!(check.as_mut().poll(cx));
                    let Deferred {
                        mut request,
                        mut inner,
                        config,
                        on_rejection,
                        required,
                        key_id,
                    } = *call.take().expect("ResponseFuture polled after completion");
                    let admitted = config
                        .admit(outcome, request.method(), required)
                        .map_err(|reason| config.rejection(reason, key_id))
                        .and_then(|identity| {
                            let notes = config.notes(&identity)?;
                            Ok((identity, notes))
                        });
                    let next = match admitted {
                        Ok((identity, notes)) => {
                            crate::metrics::accepted(&identity);
                            request.extensions_mut().insert(identity);
                            State::Inner {
                                future: inner.call(request),
                                notes,
                            }
                        }
                        Err(rejection) => State::Rejected {
                            response: Some(on_rejection.on_rejection(rejection)),
                        },
                    };
                    this.state.set(next);
                }
            }
        }
    }
}

impl<S, B, R, ResBody> std::fmt::Debug for ResponseFuture<S, B, R, ResBody>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
