//! The layer's fields in the request span: a `TraceLayer` span that declares `key_id` and `reason`
//! gets the key id on acceptance, both on refusal, from the index and after a store read; the
//! store lookup runs in a span with the key id; no span or event ever holds the secret.

mod common;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use http::Request;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::trace::TraceLayer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use common::{
    alice, get_with_key, issue, request, secret_of, unknown_key, with_other_secret, Body, Probe,
};
use tower_api_key::{ApiKeyLayer, KeyRing, MemoryStore, NewKey, Scope};

/// One span as the subscriber saw it: its name and every field value recorded into it.
#[derive(Clone, Debug, Default)]
struct SpanRecord {
    name: &'static str,
    fields: HashMap<&'static str, String>,
}

/// Every span and event, in order of creation. Span ids are reused once a span closes, so the
/// live ones are mapped to their place in the list.
#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<Vec<SpanRecord>>>,
    live: Arc<Mutex<HashMap<u64, usize>>>,
    events: Arc<Mutex<Vec<HashMap<&'static str, String>>>>,
}

struct Fields<'a>(&'a mut HashMap<&'static str, String>);

impl Visit for Fields<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name(), value.to_string());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut record = SpanRecord {
            name: attrs.metadata().name(),
            fields: HashMap::new(),
        };
        attrs.record(&mut Fields(&mut record.fields));
        let mut spans = self.spans.lock().expect("lock");
        self.live
            .lock()
            .expect("lock")
            .insert(id.into_u64(), spans.len());
        spans.push(record);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let at = self.live.lock().expect("lock")[&id.into_u64()];
        values.record(&mut Fields(
            &mut self.spans.lock().expect("lock")[at].fields,
        ));
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        self.events.lock().expect("lock").push(fields);
    }
}

impl Capture {
    fn take(&self) -> Vec<SpanRecord> {
        std::mem::take(&mut *self.spans.lock().expect("lock"))
    }

    /// The request spans, in order.
    fn requests(spans: &[SpanRecord]) -> Vec<&SpanRecord> {
        spans.iter().filter(|s| s.name == "request").collect()
    }
}

/// `request` through a `TraceLayer` whose span declares the layer's fields, then the layer.
async fn through(ring: &KeyRing, request: Request<Body>) -> u16 {
    let service = ServiceBuilder::new()
        .layer(
            TraceLayer::new_for_http().make_span_with(|_: &Request<Body>| {
                tracing::info_span!(
                    "request",
                    key_id = tracing::field::Empty,
                    reason = tracing::field::Empty,
                )
            }),
        )
        .layer(ApiKeyLayer::new(ring.clone()).require_scope(Scope::REST))
        .service(Probe::new());
    service
        .oneshot(request)
        .await
        .expect("infallible")
        .status()
        .as_u16()
}

fn field<'a>(span: &'a SpanRecord, name: &str) -> Option<&'a str> {
    span.fields.get(name).map(String::as_str)
}

#[tokio::test]
async fn the_request_span_gets_the_key_id_and_the_reason_never_the_secret() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));

    let store = MemoryStore::new();
    let ring = KeyRing::new(store.clone());
    let key = issue(
        &ring,
        NewKey::new(alice())
            .description("traced")
            .scope(Scope::REST),
    )
    .await;
    let id = key.id().get().to_string();
    let key = key.key().to_owned();
    let wrong = with_other_secret(&key);
    let unknown = unknown_key();
    let unknown_id = tower_api_key::KeyFormat::default()
        .parse(&unknown)
        .expect("parses")
        .id()
        .get()
        .to_string();

    // From the index: accepted, wrong secret, no header.
    assert_eq!(through(&ring, get_with_key(&key)).await, 200);
    assert_eq!(through(&ring, get_with_key(&wrong)).await, 401);
    assert_eq!(
        through(&ring, request(http::Method::GET, "/things", &[])).await,
        401
    );
    let spans = capture.take();
    let requests = Capture::requests(&spans);
    assert_eq!(requests.len(), 3, "{spans:?}");
    assert_eq!(field(requests[0], "key_id"), Some(id.as_str()));
    assert_eq!(field(requests[0], "reason"), None, "accepted: no reason");
    assert_eq!(field(requests[1], "key_id"), Some(id.as_str()));
    assert_eq!(field(requests[1], "reason"), Some("wrong_secret"));
    assert_eq!(field(requests[2], "key_id"), None, "no key, no id");
    assert_eq!(field(requests[2], "reason"), Some("no_credentials"));

    // After a store read, on a ring that has not seen the key: accepted, and an unknown id.
    let cold = KeyRing::new(store);
    assert_eq!(through(&cold, get_with_key(&key)).await, 200);
    assert_eq!(through(&cold, get_with_key(&unknown)).await, 401);
    let after = capture.take();
    let requests = Capture::requests(&after);
    assert_eq!(requests.len(), 2, "{after:?}");
    assert_eq!(field(requests[0], "key_id"), Some(id.as_str()));
    assert_eq!(field(requests[0], "reason"), None);
    assert_eq!(field(requests[1], "key_id"), Some(unknown_id.as_str()));
    assert_eq!(field(requests[1], "reason"), Some("unknown_key"));
    let lookups: Vec<_> = after
        .iter()
        .filter(|s| s.name == "key_lookup")
        .map(|s| field(s, "key_id"))
        .collect();
    assert_eq!(
        lookups,
        [Some(id.as_str()), Some(unknown_id.as_str())],
        "each store lookup runs in a span with its key id"
    );

    // Nothing recorded anywhere holds a key or its secret.
    let events = capture.events.lock().expect("lock").clone();
    assert!(!events.is_empty(), "the refusals were traced");
    let recorded: Vec<&String> = spans
        .iter()
        .chain(&after)
        .flat_map(|s| s.fields.values())
        .chain(events.iter().flat_map(|e| e.values()))
        .collect();
    for value in recorded {
        for secret in [&key, &wrong, &unknown] {
            assert!(!value.contains(secret_of(secret)), "secret in {value}");
        }
    }
}

#[tokio::test]
async fn an_expired_key_is_refused_like_any_bad_key_and_traced_as_expired() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let ring = KeyRing::new(MemoryStore::new());
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let key = issue(
        &ring,
        NewKey::new(alice())
            .description("expiring")
            .scope(Scope::REST)
            .expires(soon),
    )
    .await;
    let id = key.id().get().to_string();
    assert_eq!(through(&ring, get_with_key(key.key())).await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(through(&ring, get_with_key(key.key())).await, 401);
    let spans = capture.take();
    let requests = Capture::requests(&spans);
    assert_eq!(requests.len(), 2, "{spans:?}");
    assert_eq!(field(requests[1], "key_id"), Some(id.as_str()));
    assert_eq!(field(requests[1], "reason"), Some("expired"));
}
