//! Cross-node revocation: how long after node A's `update(.., Disabled)` returns does node B, which
//! had the key cached, refuse it? And does node A ever accept it after its call returned?
//!
//! For each store with a server configured, two `KeyRing`s (node A and node B) over two separate
//! store connections to one fresh database (PostgreSQL) or key prefix (Redis). Each round issues a
//! key on A, makes B cache it (one accepted `verify`), disables it through A, and from the moment
//! A's call returns polls `verify` on A and on B in a tight loop (yielding between polls) until B
//! refuses. It prints p50, p99 and max of that time, and the number of accepts on A after its
//! call returned (must be 0).
//!
//! ```text
//! scripts/services start && eval "$(scripts/services env)"
//! cargo bench --all-features --bench revocation
//! ```
//!
//! Reads `TOWER_API_KEY_POSTGRES_URL` and `TOWER_API_KEY_REDIS_URL` (skips a store whose variable is
//! unset) and `REVOCATION_BENCH_ROUNDS` (default 1000).

use std::error::Error;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use tower_api_key::store::KeyUpdate;
use tower_api_key::{KeyRing, KeyStore, NewKey, Owner, PostgresStore, RedisStore, Status};

type BoxError = Box<dyn Error + Send + Sync>;

const POSTGRES_URL: &str = "TOWER_API_KEY_POSTGRES_URL";
const REDIS_URL: &str = "TOWER_API_KEY_REDIS_URL";

/// How long B may take before a round counts as a miss (and the bench fails).
const GIVE_UP: Duration = Duration::from_secs(5);

/// Rounds run first and not counted: connections, prepared statements and scripts warm up.
const WARM_UP: usize = 20;

struct Report {
    name: &'static str,
    latencies: Vec<Duration>,
    stale_on_a: usize,
    missed: usize,
}

impl Report {
    fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(rank).copied().unwrap_or_default()
    }

    fn print(&self) {
        println!(
            "{:<10} rounds {:>5}  p50 {:>9.3} ms  p99 {:>9.3} ms  max {:>9.3} ms  \
             stale accepts on A {}  missed {}",
            self.name,
            self.latencies.len(),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            ms(self.latencies.iter().max().copied().unwrap_or_default()),
            self.stale_on_a,
            self.missed,
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// `url` with its database (path) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{}/{database}{query}", &base[..host_end])
}

async fn measure(
    name: &'static str,
    node_a: impl KeyStore,
    node_b: impl KeyStore,
    rounds: usize,
) -> Result<Report, BoxError> {
    let ring_a = KeyRing::new(node_a);
    let ring_b = KeyRing::new(node_b);
    let owner = Owner {
        user_uid: "u-bench".into(),
        user_name: "bench".into(),
        company_id: "c-bench".into(),
        company_name: "Bench".into(),
    };
    let mut report = Report {
        name,
        latencies: Vec::with_capacity(rounds),
        stale_on_a: 0,
        missed: 0,
    };
    for round in 0..WARM_UP + rounds {
        let issued = ring_a
            .issue(NewKey::new(owner.clone()).description("revocation bench"))
            .await?;
        let key = issued.key();
        // B caches the key: its first verify reads the store.
        let cached = Instant::now();
        while ring_b.verify(key).await.is_err() {
            if cached.elapsed() > GIVE_UP {
                return Err(format!("{name}: node B never accepted a fresh key").into());
            }
            tokio::task::yield_now().await;
        }
        ring_a
            .update(issued.id(), KeyUpdate::status(Status::Disabled))
            .await?;
        let returned = Instant::now();
        let mut stale = 0;
        let latency = loop {
            if ring_a.verify(key).await.is_ok() {
                stale += 1;
            }
            if ring_b.verify(key).await.is_err() {
                break Some(returned.elapsed());
            }
            if returned.elapsed() > GIVE_UP {
                break None;
            }
            tokio::task::yield_now().await;
        };
        if round < WARM_UP {
            continue;
        }
        report.stale_on_a += stale;
        match latency {
            Some(latency) => report.latencies.push(latency),
            None => report.missed += 1,
        }
    }
    Ok(report)
}

async fn postgres(url: &str, rounds: usize) -> Result<Report, BoxError> {
    let database = unique("tak_bench");
    let mut admin = sqlx::PgConnection::connect(url).await?;
    sqlx::raw_sql(&format!("CREATE DATABASE {database}"))
        .execute(&mut admin)
        .await?;
    let url = with_database(url, &database);
    let result = async {
        let a = PostgresStore::connect(&url).await?;
        let b = PostgresStore::connect(&url).await?;
        measure("postgres", a, b, rounds).await
    }
    .await;
    sqlx::raw_sql(&format!("DROP DATABASE {database} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    result
}

async fn redis(url: &str, rounds: usize) -> Result<Report, BoxError> {
    let prefix = format!("{}:", unique("tak-bench"));
    let result = async {
        let a = RedisStore::connect_with_prefix(url, &prefix).await?;
        let b = RedisStore::connect_with_prefix(url, &prefix).await?;
        measure("redis", a, b, rounds).await
    }
    .await;
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<()>(&mut conn)
            .await?;
    }
    result
}

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; this binary has no options of its own.
    let rounds = std::env::var("REVOCATION_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let postgres_url = std::env::var(POSTGRES_URL).ok().filter(|u| !u.is_empty());
    let redis_url = std::env::var(REDIS_URL).ok().filter(|u| !u.is_empty());
    println!("cross-node revocation: {rounds} rounds per store (after {WARM_UP} warm-up rounds)");
    println!("command: cargo bench --all-features --bench revocation");
    if postgres_url.is_none() && redis_url.is_none() {
        println!(
            "SKIPPED: set {POSTGRES_URL} and/or {REDIS_URL} \
             (scripts/services start && eval \"$(scripts/services env)\")"
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut failed = false;
    runtime.block_on(async {
        let mut reports = Vec::new();
        match &postgres_url {
            Some(url) => reports.push(postgres(url, rounds).await?),
            None => println!("postgres: SKIPPED, {POSTGRES_URL} is not set"),
        }
        match &redis_url {
            Some(url) => reports.push(redis(url, rounds).await?),
            None => println!("redis: SKIPPED, {REDIS_URL} is not set"),
        }
        for report in &reports {
            report.print();
            failed |= report.stale_on_a > 0 || report.missed > 0;
        }
        Ok::<_, BoxError>(())
    })?;
    if failed {
        return Err(
            "a key was accepted on node A after its revocation returned, or node B never \
                    refused it"
                .into(),
        );
    }
    Ok(())
}
