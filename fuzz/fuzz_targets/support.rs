//! What the fuzz targets share: a runtime to drive the layer on, and an inner service that counts
//! the requests that reach it.

// Each target uses its own part of this module.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{Request, Response};
use tower::{Service, ServiceExt};
use tower_api_key::Identity;

/// Runs `future` to completion on this thread's runtime.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
    }
    RUNTIME.with(|rt| rt.block_on(future))
}

/// The inner service: counts its calls and keeps the identity of the last request.
#[derive(Clone, Default)]
pub(crate) struct Probe {
    calls: Arc<AtomicUsize>,
    identity: Arc<std::sync::Mutex<Option<Identity>>>,
}

impl Probe {
    pub(crate) fn handler(
        &self,
    ) -> impl Fn(Request<()>) -> Ready<Result<Response<()>, Infallible>> + Clone {
        let probe = self.clone();
        move |request: Request<()>| {
            probe.calls.fetch_add(1, Ordering::SeqCst);
            *probe.identity.lock().expect("lock") = request.extensions().get::<Identity>().cloned();
            ready(Ok(Response::new(())))
        }
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub(crate) fn identity(&self) -> Option<Identity> {
        self.identity.lock().expect("lock").clone()
    }
}

/// Sends `request` through `service` once.
pub(crate) fn send<S>(service: S, request: Request<()>) -> Response<()>
where
    S: Service<Request<()>, Response = Response<()>, Error = Infallible>,
{
    block_on(service.oneshot(request)).expect("infallible")
}
