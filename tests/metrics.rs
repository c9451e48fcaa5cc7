//! The layer's metrics as a recorder sees them: every series registered at the first request, each
//! decision and store read counted once, under fixed labels only. Its own test binary: the recorder
//! is process-wide, and the layer registers its handles with the first one it sees.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

use common::{
    alice, get_with_key, issue, request, secret_of, send, unknown_key, Fault, FaultStore, Probe,
};
use tower_api_key::{ApiKeyLayer, KeyFormat, KeyRing, MemoryStore, NewKey, Scope};

/// Counters and histogram samples by series, `name{label=value,…}`.
#[derive(Default)]
struct Recorded {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<String, Arc<Samples>>>,
}

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().expect("lock").push(value);
    }
}

fn series(key: &Key) -> String {
    let labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

#[derive(Clone, Default)]
struct Shared(Arc<Recorded>);

impl Recorder for Shared {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.0.counters.lock().expect("lock");
        Counter::from_arc(counters.entry(series(key)).or_default().clone())
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        panic!(
            "the layer registers no gauge, yet asked for {}",
            series(key)
        )
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut histograms = self.0.histograms.lock().expect("lock");
        Histogram::from_arc(histograms.entry(series(key)).or_default().clone())
    }
}

impl Shared {
    fn counter(&self, series: &str) -> u64 {
        self.0.counters.lock().expect("lock")[series].load(Ordering::SeqCst)
    }

    fn samples(&self, series: &str) -> usize {
        self.0.histograms.lock().expect("lock")[series]
            .0
            .lock()
            .expect("lock")
            .len()
    }
}

#[tokio::test]
async fn each_decision_and_store_read_is_counted_once_under_fixed_labels() {
    let recorder = Shared::default();
    metrics::set_global_recorder(recorder.clone()).expect("first recorder");

    let memory = MemoryStore::new();
    let issued = issue(
        &KeyRing::new(memory.clone()),
        NewKey::new(alice())
            .description("counted")
            .scope(Scope::REST),
    )
    .await;
    let key = issued.key().to_owned();
    let store = FaultStore::new(memory);
    let ring = KeyRing::builder(store.clone())
        .with_lookup_timeout(Duration::from_secs(5))
        .build();
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring).require_scope(Scope::REST));

    // The store fails: 503, a failed read.
    store.set(Fault::Error);
    send(service.clone(), get_with_key(&key))
        .await
        .assert_refused(503, None);
    // It answers: the read that fills the index, then the index alone.
    store.set(Fault::PassThrough);
    send(service.clone(), get_with_key(&key))
        .await
        .assert_passed();
    send(service.clone(), get_with_key(&key))
        .await
        .assert_passed();
    // An id no store holds, and no credentials at all.
    let unknown = unknown_key();
    send(service.clone(), get_with_key(&unknown))
        .await
        .assert_refused(401, Some(common::INVALID_TOKEN));
    send(service.clone(), request(http::Method::GET, "/things", &[]))
        .await
        .assert_refused(401, Some(common::MISSING));
    assert_eq!(probe.calls(), 2);
    assert_eq!(store.gets(), 3, "one store read per miss");

    let expected = [
        ("tower_api_key_requests_accepted_total{kind=api_key}", 2),
        ("tower_api_key_requests_accepted_total{kind=token}", 0),
        (
            "tower_api_key_requests_refused_total{reason=store_error}",
            1,
        ),
        (
            "tower_api_key_requests_refused_total{reason=unknown_key}",
            1,
        ),
        (
            "tower_api_key_requests_refused_total{reason=no_credentials}",
            1,
        ),
        (
            "tower_api_key_requests_refused_total{reason=wrong_secret}",
            0,
        ),
        ("tower_api_key_index_lookups_total{result=hit}", 1),
        ("tower_api_key_index_lookups_total{result=miss}", 3),
    ];
    for (series, count) in expected {
        assert_eq!(recorder.counter(series), count, "{series}");
    }
    for outcome in ["error", "found", "absent"] {
        let series = format!("tower_api_key_store_lookup_seconds{{outcome={outcome}}}");
        assert_eq!(recorder.samples(&series), 1, "{series}");
    }

    // Every series of a fixed set, registered at the first request; nothing a client sent.
    let counters: Vec<String> = recorder
        .0
        .counters
        .lock()
        .expect("lock")
        .keys()
        .cloned()
        .collect();
    let histograms: Vec<String> = recorder
        .0
        .histograms
        .lock()
        .expect("lock")
        .keys()
        .cloned()
        .collect();
    assert_eq!(counters.len(), 2 + 21 + 2, "{counters:?}");
    assert_eq!(histograms.len(), 3, "{histograms:?}");
    let id = KeyFormat::default()
        .parse(&key)
        .expect("parses")
        .id()
        .get()
        .to_string();
    for series in counters.iter().chain(&histograms) {
        for needle in [secret_of(&key), secret_of(&unknown), &id] {
            assert!(!series.contains(needle), "{needle} in {series}");
        }
    }
}
