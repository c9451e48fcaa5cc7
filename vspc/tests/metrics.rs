//! `GET /metrics` over real HTTP: the server of `admin_api.rs` with the Prometheus recorder, known
//! numbers of accepted and refused requests, and the scrape read back. Its own test binary: the
//! recorder is process-wide, and the layer registers its counters with the first one it sees.

// Helpers outside `#[test]` functions are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use http::StatusCode;
use metrics_exporter_prometheus::PrometheusHandle;

use common::*;
use tower_api_key::store::AccountStore;
use tower_api_key::{KeyRing, MemoryStore, NewKey, Owner, Scope};
use tower_api_key_vspc::{bootstrap_admin, install_recorder, trace_layer, Admin};

/// The server as `main.rs` builds it: the recorder's `/metrics` and the request span.
async fn start(store: MemoryStore, recorder: PrometheusHandle) -> Server {
    let accounts: Arc<dyn AccountStore> = Arc::new(store.clone());
    let boot = bootstrap_admin(accounts.as_ref(), Some(ADMIN_PASSWORD))
        .await
        .unwrap();
    let app = Admin::new(KeyRing::new(store), accounts, SECRET)
        .with_metrics(recorder)
        .router()
        .layer(trace_layer());
    serve(app, boot.user_uid()).await
}

/// The Prometheus text at `/metrics`, checked for its media type.
async fn scrape(server: &Server) -> String {
    let (status, headers, body) = server.text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-type"], "text/plain; version=0.0.4",
        "Prometheus' text format"
    );
    body
}

/// The status of `GET path` with `credential`.
async fn status(server: &Server, path: &str, credential: Option<&str>) -> StatusCode {
    server.get(path, credential).await.status
}

/// The value of the series `name{labels}` in a scrape, 0 when it is not there yet.
fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn metrics_count_each_decision_and_store_read_and_name_no_key() {
    let recorder = install_recorder().unwrap();
    let store = MemoryStore::new();

    // A key made before a restart: the restarted server's index has never seen it.
    let before = start(store.clone(), recorder.clone()).await;
    let token = before.login("admin", ADMIN_PASSWORD).await.access;
    let uid = before.admin_uid.clone();
    let (key, id) = before
        .create_key(&token, &uid, "description=metrics&scopes=rest")
        .await;
    before.stop().await;
    let server = start(store, recorder).await;
    let token = server.login("admin", ADMIN_PASSWORD).await.access;
    // A well-formed key that no store of this server holds.
    let unknown = KeyRing::new(MemoryStore::new())
        .issue(
            NewKey::new(Owner {
                user_uid: "u".into(),
                user_name: "elsewhere".into(),
                company_id: "c".into(),
                company_name: "Elsewhere".into(),
            })
            .description("elsewhere")
            .scope(Scope::REST),
        )
        .await
        .unwrap();
    let unknown = unknown.key().to_owned();

    let before = scrape(&server).await;
    let path = "/api/v3/users/me";
    // Accepted: the cold key three times (a store read, then two index hits), a token once.
    for _ in 0..3 {
        assert_eq!(status(&server, path, Some(&key)).await, 200);
    }
    assert_eq!(status(&server, path, Some(&token)).await, 200);
    // Refused: no header twice, a wrong secret twice (index hits), an unknown id twice (a store
    // read, then its cached absence), a bad checksum once (decided before the index).
    for _ in 0..2 {
        assert_eq!(status(&server, path, None).await, 401);
    }
    let wrong = with_other_secret(&key);
    for _ in 0..2 {
        assert_eq!(status(&server, path, Some(&wrong)).await, 401);
    }
    for _ in 0..2 {
        assert_eq!(status(&server, path, Some(&unknown)).await, 401);
    }
    let bad = with_bad_checksum(&key);
    assert_eq!(status(&server, path, Some(&bad)).await, 401);
    let after = scrape(&server).await;

    let delta = |series: &str| value(&after, series) - value(&before, series);
    let expected = [
        (
            r#"tower_api_key_requests_accepted_total{kind="api_key"}"#,
            3.0,
        ),
        (
            r#"tower_api_key_requests_accepted_total{kind="token"}"#,
            1.0,
        ),
        (
            r#"tower_api_key_requests_refused_total{reason="no_credentials"}"#,
            2.0,
        ),
        (
            r#"tower_api_key_requests_refused_total{reason="wrong_secret"}"#,
            2.0,
        ),
        (
            r#"tower_api_key_requests_refused_total{reason="unknown_key"}"#,
            2.0,
        ),
        (
            r#"tower_api_key_requests_refused_total{reason="bad_checksum"}"#,
            1.0,
        ),
        (
            r#"tower_api_key_requests_refused_total{reason="disabled"}"#,
            0.0,
        ),
        (r#"tower_api_key_index_lookups_total{result="hit"}"#, 5.0),
        (r#"tower_api_key_index_lookups_total{result="miss"}"#, 2.0),
        (
            r#"tower_api_key_store_lookup_seconds_count{outcome="found"}"#,
            1.0,
        ),
        (
            r#"tower_api_key_store_lookup_seconds_count{outcome="absent"}"#,
            1.0,
        ),
        (
            r#"tower_api_key_store_lookup_seconds_count{outcome="error"}"#,
            0.0,
        ),
    ];
    for (series, increment) in expected {
        assert_eq!(delta(series), increment, "{series}\n{after}");
    }
    // Every reason has its series from the first request on, at zero until it happens.
    assert!(
        after.contains(r#"tower_api_key_requests_refused_total{reason="store_timeout"} 0"#),
        "{after}"
    );
    assert!(
        after.contains(r#"tower_api_key_store_lookup_seconds_bucket{outcome="found",le="+Inf"} "#),
        "the store lookup is a histogram with buckets\n{after}"
    );

    // No credential and no key id in any label or value.
    let secret_part = &key[key.len() - 6 - 43..key.len() - 6];
    for text in [&before, &after] {
        for needle in [
            key.as_str(),
            secret_part,
            &wrong,
            &unknown,
            &bad,
            &token,
            &id.to_string(),
        ] {
            assert!(!text.contains(needle), "{needle} in the scrape:\n{text}");
        }
    }
    server.stop().await;
}
