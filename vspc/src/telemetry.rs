//! What the server tells its operators: Prometheus text at `GET /metrics` and a span per request
//! that `tower-api-key`'s layer fills with the key id and the reason of a refusal.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{MakeSpan, TraceLayer};
use tracing::Span;

/// Prometheus' text exposition format.
const TEXT_FORMAT: HeaderValue = HeaderValue::from_static("text/plain; version=0.0.4");

/// Buckets of `tower_api_key_store_lookup_seconds`, from a local SQLite read to a slow network.
const STORE_LOOKUP_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Installs the process-wide Prometheus recorder and returns the handle for
/// [`Admin::with_metrics`](crate::Admin::with_metrics). Call it before the server takes its first
/// request: the layer registers its counters with the recorder it finds then.
///
/// Store lookup times are kept as a histogram with fixed buckets (so nodes can be summed); the
/// caller runs [`PrometheusHandle::run_upkeep`] every few seconds (see [`run_upkeep`]).
///
/// # Errors
///
/// When a recorder is already installed.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("tower_api_key_store_lookup_seconds".to_owned()),
            &STORE_LOOKUP_BUCKETS,
        )?
        .install_recorder()
}

/// Runs the recorder's upkeep every five seconds, for as long as the returned future is polled.
pub async fn run_upkeep(handle: PrometheusHandle) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}

/// `GET /metrics`.
pub(crate) fn render(handle: &PrometheusHandle) -> Response {
    ([(CONTENT_TYPE, TEXT_FORMAT)], handle.render()).into_response()
}

/// The request span of [`trace_layer`]: `request` at `INFO`, with `method`, `path`, and the empty
/// fields `key_id` and `reason` that the API-key layer records into when it decides.
///
/// The path is recorded without the query, which may carry a credential (`access_token`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        tracing::info_span!(
            "request",
            method = %request.method(),
            path = request.uri().path(),
            key_id = tracing::field::Empty,
            reason = tracing::field::Empty,
        )
    }
}

/// tower-http's [`TraceLayer`] with [`RequestSpan`]: the server's span for each request.
pub fn trace_layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, RequestSpan> {
    TraceLayer::new_for_http().make_span_with(RequestSpan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_span_declares_the_fields_the_layer_records() {
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry());
        let request = Request::get("/api/v3/users?access_token=secret")
            .body(())
            .expect("request");
        let span = RequestSpan.make_span(&request);
        let fields = span.metadata().expect("enabled").fields();
        for name in ["method", "path", "key_id", "reason"] {
            assert!(fields.field(name).is_some(), "{name} not declared");
        }
        assert!(
            fields.field("uri").is_none(),
            "the query may carry a credential"
        );
    }
}
