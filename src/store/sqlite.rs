//! SQLite backend: keys, users, companies and refresh tokens in one file that survives restarts.
//! This file holds SQLite's dialect and how a file is opened and migrated; the statements are the
//! shared SQL store's.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
    SqliteRow, SqliteSynchronous,
};
use sqlx::Sqlite;
use time::OffsetDateTime;

use super::codec::format_date;
use super::sql::{applied_migrations, column, impl_store_traits, Dialect, SqlStore, Tables};
use super::StoreError;

/// Schema migrations in order: entry `n` brings the schema to version `n + 1`. A released entry is
/// never edited; a change to the schema is a new entry.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_schema.sql"),
    include_str!("../../migrations/sqlite/0002_accounts.sql"),
    include_str!("../../migrations/sqlite/0003_indexes.sql"),
    include_str!("../../migrations/sqlite/0004_lifecycle.sql"),
];

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections to a file: WAL lets readers run beside the one writer, so a few are worth having.
const MAX_CONNECTIONS: u32 = 8;

/// A store in an SQLite database: a file that survives restarts, or memory.
///
/// The schema is created and migrated by [`SqliteStore::connect`]. Only one process should write a
/// file: the store sends no change notifications
/// ([`KeyStore::subscribe`](super::KeyStore::subscribe) is `None`), and a
/// [`KeyRing`](crate::KeyRing) applies its own changes to its index. Cloning shares the connection
/// pool.
///
/// Scopes are stored by name, so application scopes must be registered with [`Scope::register`](crate::Scope::register)
/// before keys that carry them are read; a name this process does not know makes the record
/// corrupt, and the request fails closed.
#[derive(Clone)]
pub struct SqliteStore {
    // Visible to the SQL store's tests, which read the database beside the store.
    pub(super) sql: SqlStore<Sqlite>,
}

impl SqliteStore {
    /// Opens the database at `url`, creating the file and the schema when missing, and migrates an
    /// older schema to this version's.
    ///
    /// `url` is `sqlite:PATH` or `sqlite://PATH` for a file (opened in WAL mode with foreign keys on
    /// and a busy timeout), or `sqlite::memory:` for a database that lives as long as the store.
    /// `Err` when the URL is not an SQLite URL, the file cannot be opened, a migration fails, or the
    /// file was written by a newer version with a schema this one does not know.
    pub async fn connect(url: &str) -> Result<SqliteStore, StoreError> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::backend("not an sqlite: URL"));
        }
        let options = SqliteConnectOptions::from_str(url).map_err(StoreError::backend)?;
        let in_memory = is_memory(url);
        let options = options
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let (options, pool, location) = if in_memory {
            // An in-memory database lives only as long as a connection to it: keep exactly one,
            // open for the life of the pool.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
            (options, pool, ":memory:".to_owned())
        } else {
            let path = options.get_filename();
            if path.as_os_str().is_empty() {
                // SQLite would give each connection its own temporary database.
                return Err(StoreError::backend("sqlite URL names no file"));
            }
            let location = path.display().to_string();
            let options = options
                .journal_mode(SqliteJournalMode::Wal)
                // Commits survive a crash of the process; a power loss may undo the last ones but
                // leaves the file consistent.
                .synchronous(SqliteSynchronous::Normal);
            let pool = SqlitePoolOptions::new().max_connections(MAX_CONNECTIONS);
            (options, pool, location)
        };
        let pool = pool
            .connect_with(options)
            .await
            .map_err(StoreError::backend)?;
        migrate(&pool).await?;
        Ok(SqliteStore {
            sql: SqlStore::new(pool, location),
        })
    }

    /// Closes every connection, waiting for those in use to be returned. Calls made afterwards, on
    /// this store or its clones, fail.
    pub async fn close(&self) {
        self.sql.close().await;
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.sql.fmt_as("SqliteStore", f)
    }
}

impl_store_traits!(SqliteStore);

impl Dialect for Sqlite {
    const TABLES: Tables = Tables {
        api_keys: "api_keys",
        users: "users",
        companies: "companies",
        owner_status: "owner_status",
        refresh_tokens: "refresh_tokens",
    };

    // `BINARY`, the default collation, compares the bytes.
    const BYTE_ORDER: &'static str = "";

    const FIND: &'static str = "instr";

    // Holds the write lock from the first statement, so a transaction never has to upgrade a read
    // snapshot another connection has written past.
    const BEGIN_WRITE: Option<&'static str> = Some("BEGIN IMMEDIATE");

    // A deferred transaction reads one snapshot from its first statement on.
    const BEGIN_SNAPSHOT: Option<&'static str> = None;

    // The write lock, held from `BEGIN IMMEDIATE`, leaves one writer at a time.
    const FOR_UPDATE: &'static str = "";
    const OWNER_LOCK: Option<&'static str> = None;

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    fn flag(row: &SqliteRow, name: &str) -> Result<bool, StoreError> {
        parse_flag(column(row, name)?)
    }
}

/// Whether `url` names an in-memory database, read the way `SqliteConnectOptions` reads it.
fn is_memory(url: &str) -> bool {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database == ":memory:" || params.split('&').any(|param| param == "mode=memory")
}

/// Applies the migrations the database has not seen yet, all in one transaction.
async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    // IMMEDIATE takes the write lock before the version is read, so two processes opening the same
    // new file do not both migrate it.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::backend)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_version (\
             version INTEGER NOT NULL PRIMARY KEY, \
             applied TEXT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(StoreError::backend)?;
    let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
    let applied = applied_migrations(current, MIGRATIONS)?;
    for (version, sql) in (1i64..).zip(MIGRATIONS).skip(applied) {
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        sqlx::query("INSERT INTO schema_version (version, applied) VALUES (?, ?)")
            .bind(version)
            .bind(format_date(OffsetDateTime::now_utc())?)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
    }
    tx.commit().await.map_err(StoreError::backend)
}

fn parse_flag(value: i64) -> Result<bool, StoreError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(StoreError::corrupt(format!(
            "flag {other} is neither 0 nor 1"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::store::sql::tests::{alice_key, exec, id, memory};
    use crate::store::sql::USER_COLUMNS;
    use crate::store::KeyStore;

    /// A directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let path = std::env::temp_dir().join(format!(
                "tower-api-key-unit-{name}-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&path).expect("temp dir is created");
            Self(path)
        }

        fn url(&self) -> String {
            format!("sqlite://{}", self.0.join("keys.db").display())
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn reopening_a_file_applies_each_migration_once() {
        let dir = TempDir::new("reopen");
        let store = SqliteStore::connect(&dir.url()).await.expect("created");
        store.insert(alice_key(7)).await.expect("inserted");
        store.close().await;
        drop(store);

        let store = SqliteStore::connect(&dir.url()).await.expect("reopened");
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version")
                .fetch_all(&store.sql.pool)
                .await
                .expect("versions");
        let expected: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
        assert_eq!(versions, expected);
        assert_eq!(store.get(id(7)).await.expect("read"), Some(alice_key(7)));

        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.sql.pool)
            .await
            .expect("pragma");
        assert_eq!(journal, "wal");
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&store.sql.pool)
            .await
            .expect("pragma");
        assert_eq!(foreign_keys, 1);
    }

    #[tokio::test]
    async fn a_schema_newer_than_this_build_is_refused() {
        let dir = TempDir::new("newer");
        let store = SqliteStore::connect(&dir.url()).await.expect("created");
        exec(
            &store,
            "INSERT INTO schema_version (version, applied) VALUES (999, 'later')",
        )
        .await;
        store.close().await;
        let err = SqliteStore::connect(&dir.url())
            .await
            .expect_err("newer schema refused");
        assert!(err.to_string().contains("999"), "{err}");
    }

    #[tokio::test]
    async fn urls_that_name_no_sqlite_database_are_refused() {
        for url in [
            "postgres://localhost/keys",
            "keys.db",
            "sqlite:",
            "sqlite://",
        ] {
            assert!(SqliteStore::connect(url).await.is_err(), "{url}");
        }
    }

    #[tokio::test]
    async fn memory_databases_are_separate_and_shared_by_clones() {
        let a = memory().await;
        let b = memory().await;
        a.insert(alice_key(7)).await.expect("inserted");
        assert!(a.clone().get(id(7)).await.expect("read").is_some());
        assert!(b.get(id(7)).await.expect("read").is_none());
        assert!(format!("{a:?}").starts_with("SqliteStore { location: \":memory:\""));
    }

    #[tokio::test]
    async fn the_purge_and_company_listings_read_their_indexes() {
        let store = memory().await;
        let cases = [
            (
                "DELETE FROM refresh_tokens WHERE expires <= ?".to_owned(),
                "refresh_tokens_expires",
            ),
            (
                format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE company_id = ? \
                     ORDER BY user_name, uid LIMIT 10"
                ),
                "users_company_id",
            ),
            (
                "SELECT COUNT(*) FROM users WHERE company_id = ?".to_owned(),
                "users_company_id",
            ),
        ];
        for (statement, index) in cases {
            let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {statement}"))
                .bind("x")
                .fetch_all(&store.sql.pool)
                .await
                .expect("explained");
            let plan: Vec<String> = rows
                .iter()
                .map(|row| column(row, "detail").expect("detail"))
                .collect();
            assert!(
                plan.iter()
                    .any(|step| step.contains(index) && !step.contains("TEMP")),
                "{statement}: {plan:?}"
            );
        }
    }
}
