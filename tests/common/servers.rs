//! Where tests find PostgreSQL and Redis (`scripts/services` starts both on loopback), and a database
//! or key prefix of their own on each, so that tests run in parallel.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection;

/// The variable that holds the PostgreSQL server's URL (any database; tests create their own).
pub(crate) const POSTGRES_URL: &str = "TOWER_API_KEY_POSTGRES_URL";
/// The variable that holds the Redis server's URL.
pub(crate) const REDIS_URL: &str = "TOWER_API_KEY_REDIS_URL";

/// The URL in `var`. When it is missing, says so loudly and returns `None` so the test can skip,
/// except in CI (`CI` set), where the servers must be there and the test fails instead.
pub(crate) fn server_url(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{var} is not set: CI runs every {what} test (.ci/run starts the servers with \
                 scripts/services)"
            );
            // Straight to the process's stderr: the test harness captures `eprintln!`, and this
            // line must be seen even when the test passes.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: set {var} to run the {what} tests \
                 (scripts/services start && eval \"$(scripts/services env)\")"
            );
            None
        }
    }
}

/// A name no other test (in this process or another) uses.
pub(crate) fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with its database (path) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A database of its own on the PostgreSQL server, dropped (with any connection still open to it)
/// when this value is.
pub(crate) struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// `None` (after a SKIPPED line) when no server is configured.
    pub(crate) async fn create() -> Option<PgDatabase> {
        let admin_url = server_url(POSTGRES_URL, "PostgreSQL")?;
        let name = unique_name("tak_test");
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_URL} does not answer: {e}"));
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("test database created");
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        Some(PgDatabase {
            admin_url,
            name,
            url,
        })
    }

    /// The URL of this database.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Runs `sql` on this database with a connection of its own.
    pub(crate) async fn exec(&self, sql: &str) {
        let mut conn = sqlx::PgConnection::connect(&self.url)
            .await
            .expect("test database answers");
        sqlx::raw_sql(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime, which cannot block on its own futures.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::raw_sql(&sql).execute(&mut admin).await.ok()?;
                admin.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: test database {} was left behind", self.name);
        }
    }
}

/// A key prefix of its own on the Redis server; its keys are deleted when this value is dropped.
pub(crate) struct RedisPrefix {
    url: String,
    prefix: String,
}

impl RedisPrefix {
    /// `None` (after a SKIPPED line) when no server is configured.
    pub(crate) fn create() -> Option<RedisPrefix> {
        let url = server_url(REDIS_URL, "Redis")?;
        Some(RedisPrefix {
            url,
            prefix: format!("{}:", unique_name("tak-test")),
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Runs one command on the server with a connection of its own.
    pub(crate) fn command(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url.as_str()).expect("redis URL");
        let mut conn = client.get_connection().expect("redis answers");
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut conn)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let pattern = format!("{}*", self.prefix);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

#[test]
fn database_names_replace_the_path_of_a_url() {
    assert_eq!(
        with_database("postgres://u:p@h:1/postgres?sslmode=disable", "x"),
        "postgres://u:p@h:1/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}
