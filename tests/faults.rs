//! Fail closed under store faults, beyond the single faults of `answers.rs`: corrupt
//! records, statuses this version does not know, slow stores cut by the lookup timeout, the bound
//! on lookups in flight, a panicking store under concurrent waiters, and no failure ever cached.

mod common;

use std::time::Duration;

use tokio::time::Instant;
use tower::ServiceBuilder;
use tower_api_key::{ApiKeyLayer, KeyRing, MemoryStore, NewKey, Scope, SqliteStore, Status};

use common::*;

/// A key issued into `memory` through another ring, so the first request through a ring over the
/// fault store asks the store.
async fn stored_key(memory: &MemoryStore) -> String {
    issue(
        &KeyRing::new(memory.clone()),
        NewKey::new(alice())
            .description("faults")
            .scope(Scope::REST),
    )
    .await
    .key()
    .to_owned()
}

fn ring_over(store: &FaultStore, timeout: Duration) -> KeyRing {
    KeyRing::builder(store.clone())
        .with_lookup_timeout(timeout)
        .build()
}

#[tokio::test]
async fn corrupt_record_gets_503_and_is_not_cached() {
    let memory = MemoryStore::new();
    let key = stored_key(&memory).await;
    let store = FaultStore::new(memory);
    let ring = ring_over(&store, Duration::from_secs(5));
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));

    store.set(Fault::Corrupt);
    for _ in 0..2 {
        send(service.clone(), get_with_key(&key))
            .await
            .assert_refused(503, None);
    }
    assert_eq!(store.gets(), 2, "each request asks again");
    assert_eq!(cached(&ring), (0, 0));
    store.set(Fault::PassThrough);
    send(service, get_with_key(&key)).await.assert_passed();
    assert_eq!(probe.calls(), 1);
}

#[tokio::test]
async fn statuses_a_store_reports_are_obeyed_and_unknown_ones_refused() {
    use Status::{Disabled, DisabledDueToTenant, Enabled, Unknown};
    let memory = MemoryStore::new();
    let key = stored_key(&memory).await;
    let store = FaultStore::new(memory);
    for statuses in [
        (Unknown, Enabled, Enabled),
        (Enabled, Unknown, Enabled),
        (Enabled, Enabled, Unknown),
        (Disabled, Enabled, Enabled),
        (Enabled, Enabled, DisabledDueToTenant),
        (Unknown, Unknown, Unknown),
    ] {
        store.set(Fault::Statuses(statuses.0, statuses.1, statuses.2));
        let ring = ring_over(&store, Duration::from_secs(5));
        let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));
        let gets = store.gets();
        // From the store, then from the index (where the record is cached with its status).
        for _ in 0..2 {
            send(service.clone(), get_with_key(&key))
                .await
                .assert_refused(401, Some(INVALID_TOKEN));
        }
        assert_eq!(store.gets(), gets + 1, "{statuses:?}");
        assert_eq!(cached(&ring), (1, 0));
        assert_eq!(probe.calls(), 0, "{statuses:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn slow_store_is_cut_by_the_lookup_timeout() {
    let timeout = Duration::from_millis(100);
    let memory = MemoryStore::new();
    let key = stored_key(&memory).await;
    let store = FaultStore::new(memory);
    let ring = ring_over(&store, timeout);
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));

    for sleep in [Duration::from_secs(1), Duration::from_secs(10)] {
        store.set(Fault::Sleep(sleep));
        let start = Instant::now();
        send(service.clone(), get_with_key(&key))
            .await
            .assert_refused(503, None);
        // The clock is tokio's paused one: it moves only to the next timer, so this is exact.
        assert_eq!(
            start.elapsed(),
            timeout,
            "answered at the timeout, not after {sleep:?}"
        );
        assert_eq!(cached(&ring), (0, 0));
    }
    // A store slower than usual but within the timeout is waited for.
    store.set(Fault::Sleep(timeout / 2));
    send(service, get_with_key(&key)).await.assert_passed();
    assert_eq!(probe.calls(), 1);
    assert_eq!(store.gets(), 3);
}

#[tokio::test]
async fn lookups_in_flight_are_bounded() {
    const MAX: usize = 4;
    const REQUESTS: usize = 50;
    let store = FaultStore::new(MemoryStore::new());
    let ring = KeyRing::builder(store.clone())
        .with_lookup_timeout(Duration::from_secs(600))
        .with_max_inflight_lookups(MAX)
        .build();
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));

    // Fifty distinct unknown ids at once, with the store held: only MAX lookups may be asked.
    store.close();
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|_| tokio::spawn(send(service.clone(), get_with_key(&unknown_key()))))
        .collect();
    while store.gets() < MAX {
        tokio::task::yield_now().await;
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(store.inflight(), MAX);
    assert_eq!(store.gets(), MAX, "the others wait for a permit");
    store.open();
    for task in tasks {
        task.await
            .expect("no panic")
            .assert_refused(401, Some(INVALID_TOKEN));
    }
    assert_eq!(store.peak(), MAX);
    assert_eq!(store.gets(), REQUESTS);
    assert_eq!(cached(&ring), (0, REQUESTS));
    assert_eq!(probe.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn lookups_waiting_for_a_permit_time_out_with_503() {
    let memory = MemoryStore::new();
    let key = stored_key(&memory).await;
    let store = FaultStore::new(memory);
    let ring = KeyRing::builder(store.clone())
        .with_lookup_timeout(Duration::from_millis(100))
        .with_max_inflight_lookups(1)
        .build();
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));

    store.close();
    let mut tasks = vec![tokio::spawn(send(service.clone(), get_with_key(&key)))];
    tasks.extend((0..9).map(|_| tokio::spawn(send(service.clone(), get_with_key(&unknown_key())))));
    for task in tasks {
        task.await.expect("no panic").assert_refused(503, None);
    }
    assert_eq!(store.peak(), 1);
    assert_eq!(cached(&ring), (0, 0));
    store.open();
    send(service, get_with_key(&key)).await.assert_passed();
    assert_eq!(probe.calls(), 1);
}

#[tokio::test]
async fn no_failure_is_ever_cached() {
    let memory = MemoryStore::new();
    let key = stored_key(&memory).await;
    let store = FaultStore::new(memory);
    let ring = ring_over(&store, Duration::from_millis(50));
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));
    let unknown = unknown_key();

    for fault in [
        Fault::Error,
        Fault::Corrupt,
        Fault::WrongRecord,
        Fault::Sleep(Duration::from_secs(3600)),
    ] {
        for presented in [&key, &unknown] {
            if fault == Fault::WrongRecord && presented == &unknown {
                // There is no record to swap for an id the store does not hold.
                continue;
            }
            store.set(fault);
            let gets = store.gets();
            send(service.clone(), get_with_key(presented))
                .await
                .assert_refused(503, None);
            assert_eq!(
                cached(&ring),
                (0, 0),
                "{fault:?}: neither a key nor a \"no such key\""
            );
            // The next request asks the store again and gets the real answer.
            store.set(Fault::PassThrough);
            let answer = send(service.clone(), get_with_key(presented)).await;
            assert_eq!(store.gets(), gets + 2, "{fault:?}");
            if presented == &key {
                answer.assert_passed();
            } else {
                answer.assert_refused(401, Some(INVALID_TOKEN));
            }
            // Start the next round cold again.
            ring.apply(&tower_api_key::store::ChangeEvent::Resync);
        }
    }
    assert_eq!(probe.calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_store_under_concurrent_waiters_never_admits_and_recovers() {
    let memory = MemoryStore::new();
    let key = stored_key(&memory).await;
    let store = FaultStore::new(memory);
    let ring = ring_over(&store, Duration::from_secs(30));
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));

    // Ten requests for one cold key share a single-flight lookup; whoever runs it panics.
    store.set(Fault::Panic);
    store.close();
    let tasks: Vec<_> = (0..10)
        .map(|_| tokio::spawn(send(service.clone(), get_with_key(&key))))
        .collect();
    while store.gets() == 0 {
        tokio::task::yield_now().await;
    }
    store.open();
    for task in tasks {
        let outcome = task.await;
        assert!(
            outcome.as_ref().is_err_and(|e| e.is_panic()),
            "a waiter whose lookup panicked must not be answered as if it had not: {:?}",
            outcome.map(|answer| answer.status)
        );
    }
    assert_eq!(probe.calls(), 0);
    assert_eq!(cached(&ring), (0, 0));

    store.set(Fault::PassThrough);
    send(service, get_with_key(&key)).await.assert_passed();
    assert_eq!(probe.calls(), 1);
}

/// A SQLite file whose rows were changed behind the store's back.
#[tokio::test]
async fn sqlite_rows_that_do_not_decode_get_503_and_unknown_statuses_401() {
    let dir = std::env::temp_dir().join(format!(
        "tower-api-key-faults-{}-{}",
        std::process::id(),
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let store = SqliteStore::connect(&url).await.expect("opens");
    let issued = issue(
        &KeyRing::new(store.clone()),
        NewKey::new(alice()).description("sqlite faults"),
    )
    .await;
    let pool = sqlx::SqlitePool::connect(&url)
        .await
        .expect("second connection");
    let id = i64::try_from(issued.id().get()).expect("below 2^53");
    let probe = Probe::new();

    let cases: [(&str, u16); 5] = [
        (
            "UPDATE api_keys SET status = 'somethingNew' WHERE id = ?",
            503,
        ),
        ("UPDATE api_keys SET digest = x'00' WHERE id = ?", 503),
        ("UPDATE api_keys SET read_only = 7 WHERE id = ?", 503),
        ("UPDATE api_keys SET status = 'Unknown' WHERE id = ?", 401),
        ("UPDATE api_keys SET status = 'disabled' WHERE id = ?", 401),
    ];
    for (sql, status) in cases {
        // Put the row back as issued, then damage one field.
        sqlx::query("UPDATE api_keys SET status = 'enabled', read_only = 0 WHERE id = ?")
            .bind(id)
            .execute(&pool)
            .await
            .expect("restored");
        let digest_before: Vec<u8> = sqlx::query_scalar("SELECT digest FROM api_keys WHERE id = ?")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("digest");
        sqlx::query(sql)
            .bind(id)
            .execute(&pool)
            .await
            .expect("damaged");
        // A cold ring reads the damaged row.
        let service = ServiceBuilder::new()
            .layer(ApiKeyLayer::new(KeyRing::new(store.clone())))
            .service_fn(probe.handler());
        let answer = send(service, get_with_key(issued.key())).await;
        match status {
            503 => answer.assert_refused(503, None),
            _ => answer.assert_refused(401, Some(INVALID_TOKEN)),
        }
        sqlx::query("UPDATE api_keys SET digest = ? WHERE id = ?")
            .bind(&digest_before)
            .bind(id)
            .execute(&pool)
            .await
            .expect("digest restored");
    }
    assert_eq!(probe.calls(), 0);
    pool.close().await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
