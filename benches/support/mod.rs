//! What the benches that time one call of a service share (and `tests/allocations.rs`, which counts
//! what one call allocates).

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use tower::Service;

/// Calls the service and polls the future once; every path measured through this completes on that
/// poll (the request is refused or accepted from the index, never waits for a store).
pub(crate) fn call_ready<S>(service: &mut S, request: Request<()>) -> Response<()>
where
    S: Service<Request<()>, Response = Response<()>, Error = Infallible>,
{
    let mut future = pin!(service.call(request));
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(Ok(response)) => response,
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => panic!("the path did not complete on its first poll"),
    }
}
