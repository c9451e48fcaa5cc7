//! Floods of bogus keys: random key-shaped values with a wrong checksum never reach
//! the store; with a right checksum (CRC32 is no secret, so an attacker can compute it) each unknown
//! id is one store lookup, and the "no such key" entries kept for them stay within the bound.
//!
//! `FLOOD_KEYS` sets the keys per flood (default 20 000). `scripts/security-checks` runs it with
//! 10^6 in an optimised build and reports the resident memory before and after:
//! `FLOOD_KEYS=1000000 cargo test --profile bench --all-features --test floods -- --nocapture`.

mod common;

use tower::ServiceExt;
use tower_api_key::{ApiKeyLayer, KeyRing, MemoryStore, NewKey, RingStats};

use common::*;

/// The default bound on "no such key" entries (`KeyRingBuilder::with_negative_capacity`).
const NEGATIVE_CAPACITY: usize = 65_536;

/// Resident set size of this process in KiB, from `/proc/self/status` (`None` off Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".to_owned(), |k| {
        format!("{:.1} MiB", k as f64 / 1024.0)
    })
}

#[tokio::test]
async fn floods_of_bogus_keys_cost_no_store_call_or_bounded_memory() {
    let n: usize = std::env::var("FLOOD_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let memory = MemoryStore::new();
    let issued = issue(
        &KeyRing::new(memory.clone()),
        NewKey::new(alice()).description("the one real key"),
    )
    .await;
    let store = FaultStore::new(memory);
    let ring = KeyRing::new(store.clone());
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));
    let mut rng = TestRng::new(0xf100d);
    let before = rss_kib();

    // Random ids and secrets with a checksum that does not match: refused offline.
    for _ in 0..n {
        let mut key = key_with(rng.key_id(), &rng.base62(43)).into_bytes();
        let last = key.len() - 1;
        key[last] = if key[last] == b'0' { b'1' } else { b'0' };
        let key = String::from_utf8(key).expect("ascii");
        let response = service
            .clone()
            .oneshot(get_with_key(&key))
            .await
            .expect("infallible");
        assert_eq!(response.status(), 401);
    }
    assert_eq!(store.gets(), 0, "a wrong checksum never reaches the store");
    assert_eq!(cached(&ring), (0, 0), "nor the index");
    let after_bad_checksums = rss_kib();

    // Random ids with the right checksum: one lookup each, a bounded number remembered.
    for _ in 0..n {
        let key = key_with(rng.key_id(), &rng.base62(43));
        let response = service
            .clone()
            .oneshot(get_with_key(&key))
            .await
            .expect("infallible");
        assert_eq!(response.status(), 401);
    }
    assert_eq!(store.gets(), n, "one lookup per unknown id");
    let RingStats {
        keys,
        unknown_ids: negatives,
        ..
    } = ring.stats();
    assert_eq!(keys, 0);
    assert_eq!(negatives, n.min(NEGATIVE_CAPACITY));
    let after_good_checksums = rss_kib();
    let table = ring.stats().table_bytes;
    // A table slot per entry, at most 7/8 full, doubling: at most 2 x 8/7 x 64 bytes per entry.
    assert!(
        table <= (negatives * 64 * 16).div_ceil(7).max(64 * 64),
        "{table} bytes"
    );

    // The real key still passes, after a flood that pushed it out of nothing.
    send(service, get_with_key(issued.key()))
        .await
        .assert_passed();
    assert_eq!(probe.calls(), 1);

    println!(
        "flood of {n}: wrong checksum: {} store calls, cached {:?}; right checksum: {} store \
         calls, {negatives} negative entries (bound {NEGATIVE_CAPACITY}), index table {:.1} MiB; \
         VmRSS before {}, after the wrong-checksum flood {}, after the right-checksum flood {}",
        0,
        (0, 0),
        n,
        table as f64 / (1024.0 * 1024.0),
        mib(before),
        mib(after_bad_checksums),
        mib(after_good_checksums),
    );
    if let (Some(before), Some(after)) = (before, after_good_checksums) {
        // Bounded: the index and its bookkeeping, not a record per request.
        assert!(
            after.saturating_sub(before) < 64 * 1024,
            "resident memory grew by {} KiB",
            after - before
        );
    }
}
