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
    sql: SqlStore<Sqlite>,
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

    use time::macros::datetime;

    use super::*;
    use crate::identity::Status;
    use crate::key::{KeyId, SecretDigest};
    use crate::scope::{Scope, Scopes};
    use crate::store::codec::{format_scopes, parse_date, parse_scopes};
    use crate::store::sql::USER_COLUMNS;
    use crate::store::MemoryStore;
    use crate::store::{
        AccountStore, Company, KeyRecord, KeyStore, KeyUpdate, ListQuery, Owner, RefreshToken,
        RefreshUse, Role, SortField, User,
    };

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

    async fn memory() -> SqliteStore {
        SqliteStore::connect("sqlite::memory:")
            .await
            .expect("in-memory database opens")
    }

    fn owner(user: &str, company: &str) -> Owner {
        Owner {
            user_uid: format!("u-{user}"),
            user_name: user.to_owned(),
            company_id: format!("c-{company}"),
            company_name: company.to_owned(),
        }
    }

    fn id(raw: u64) -> KeyId {
        KeyId::new(raw).expect("valid key id")
    }

    fn record(raw: u64, owner: Owner, description: &str, created: OffsetDateTime) -> KeyRecord {
        KeyRecord {
            id: id(raw),
            digest: SecretDigest::from_bytes([raw as u8; 32]),
            owner,
            description: description.to_owned(),
            read_only: raw % 2 == 0,
            scopes: Scopes::from([Scope::REST]),
            status: Status::Enabled,
            user_status: Status::Enabled,
            company_status: Status::Enabled,
            created,
            status_locked: false,
        }
    }

    fn alice_key(raw: u64) -> KeyRecord {
        record(
            raw,
            owner("alice", "Alpha"),
            "CI",
            datetime!(2024-05-01 12:00 UTC),
        )
    }

    fn user(uid: &str, name: &str, status: Status) -> User {
        User {
            uid: uid.to_owned(),
            user_name: name.to_owned(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
            role: Role::CompanyLocationUser,
            company_id: "c-Alpha".to_owned(),
            status,
            created: datetime!(2024-01-01 0:00 UTC),
            profile: Default::default(),
            token_generation: 0,
        }
    }

    async fn exec(store: &SqliteStore, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&store.sql.pool)
            .await
            .expect("raw statement runs");
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
    async fn missing_keys_are_reported_as_absent() {
        let store = memory().await;
        assert_eq!(store.get(id(1)).await.expect("read"), None);
        assert_eq!(
            store
                .update(id(1), KeyUpdate::status(Status::Disabled))
                .await
                .expect("update"),
            None
        );
        assert!(!store.delete(id(1)).await.expect("delete"));
        store.insert(alice_key(1)).await.expect("inserted");
        assert!(store.delete(id(1)).await.expect("delete"));
        assert!(!store.delete(id(1)).await.expect("delete"));
    }

    #[tokio::test]
    async fn taken_ids_and_names_are_conflicts() {
        let store = memory().await;
        store.insert(alice_key(7)).await.expect("inserted");
        let mut again = alice_key(7);
        again.description = "other".into();
        assert!(store.insert(again).await.unwrap_err().is_conflict());
        assert_eq!(store.get(id(7)).await.expect("read"), Some(alice_key(7)));

        let company = Company {
            uid: "c-Alpha".into(),
            name: "Alpha".into(),
            status: Status::Enabled,
            profile: Default::default(),
            token_generation: 0,
        };
        store
            .create_company(company.clone())
            .await
            .expect("created");
        let same_name = Company {
            uid: "c-other".into(),
            ..company.clone()
        };
        assert!(store
            .create_company(same_name)
            .await
            .unwrap_err()
            .is_conflict());
        assert!(store
            .create_company(company)
            .await
            .unwrap_err()
            .is_conflict());

        store
            .create_user(user("u-alice", "alice", Status::Enabled))
            .await
            .expect("created");
        assert!(store
            .create_user(user("u-alice", "alice2", Status::Enabled))
            .await
            .unwrap_err()
            .is_conflict());
        assert!(store
            .create_user(user("u-other", "alice", Status::Enabled))
            .await
            .unwrap_err()
            .is_conflict());
    }

    #[tokio::test]
    async fn a_failed_create_user_leaves_the_owner_status_in_place() {
        let store = memory().await;
        store
            .create_user(user("u-alice", "alice", Status::Enabled))
            .await
            .expect("created");
        store
            .set_user_status("u-bob", Status::Disabled)
            .await
            .expect("set");
        // Name taken: the insert fails, so the status must not move out of `owner_status`.
        let err = store
            .create_user(user("u-bob", "alice", Status::Enabled))
            .await
            .unwrap_err();
        assert!(err.is_conflict());
        store
            .insert(record(
                3,
                owner("bob", "Alpha"),
                "x",
                datetime!(2024-05-01 0:00 UTC),
            ))
            .await
            .expect("inserted");
        let key = store.get(id(3)).await.expect("read").expect("exists");
        assert_eq!(key.user_status, Status::Disabled);
    }

    #[tokio::test]
    async fn owner_status_moves_into_accounts_created_later() {
        let store = memory().await;
        let oracle = MemoryStore::new();
        let key = alice_key(5);
        for s in [&store as &dyn KeyStore, &oracle] {
            s.insert(key.clone()).await.expect("inserted");
            s.set_user_status("u-alice", Status::Disabled)
                .await
                .expect("set");
            s.set_company_status("c-Alpha", Status::DisabledDueToTenant)
                .await
                .expect("set");
        }
        assert_eq!(
            store.get(key.id).await.expect("read"),
            oracle.get(key.id).await.expect("read")
        );

        // The account's own status wins over what was set for the owner before it existed.
        let alice = user("u-alice", "alice", Status::Enabled);
        let alpha = Company {
            uid: "c-Alpha".into(),
            name: "Alpha".into(),
            status: Status::Enabled,
            profile: Default::default(),
            token_generation: 0,
        };
        store.create_user(alice.clone()).await.expect("created");
        oracle.create_user(alice.clone()).await.expect("created");
        store.create_company(alpha.clone()).await.expect("created");
        oracle.create_company(alpha.clone()).await.expect("created");
        let read = store.get(key.id).await.expect("read").expect("exists");
        assert_eq!(read.user_status, Status::Enabled);
        assert_eq!(read.company_status, Status::Enabled);
        assert_eq!(Some(read), oracle.get(key.id).await.expect("read"));
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM owner_status")
            .fetch_one(&store.sql.pool)
            .await
            .expect("count");
        assert_eq!(rows, 0);

        store
            .set_user_status("u-alice", Status::Disabled)
            .await
            .expect("set");
        oracle
            .set_user_status("u-alice", Status::Disabled)
            .await
            .expect("set");
        let account = store.user("u-alice").await.expect("read").expect("exists");
        assert_eq!(account.status, Status::Disabled);
        assert_eq!(Some(account), oracle.user("u-alice").await.expect("read"));
        assert_eq!(
            store.get(key.id).await.expect("read"),
            oracle.get(key.id).await.expect("read")
        );
    }

    #[tokio::test]
    async fn corrupt_key_rows_are_reported_as_corrupt() {
        let cases = [
            "UPDATE api_keys SET digest = zeroblob(31)",
            "UPDATE api_keys SET digest = 'not a blob'",
            "UPDATE api_keys SET scopes = 'rest,no-such-scope'",
            "UPDATE api_keys SET scopes = 'rest,'",
            "UPDATE api_keys SET created = 'yesterday'",
            "UPDATE api_keys SET status = 'bogus'",
            "UPDATE api_keys SET read_only = 2",
            "UPDATE api_keys SET read_only = 'yes'",
            "UPDATE api_keys SET user_name = x'00ff'",
            "INSERT INTO owner_status (kind, id, status) VALUES ('user', 'u-alice', 'bogus')",
            "INSERT INTO owner_status (kind, id, status) VALUES ('company', 'c-Alpha', '')",
        ];
        for sql in cases {
            let store = memory().await;
            store.insert(alice_key(7)).await.expect("inserted");
            exec(&store, sql).await;
            let err = store.get(id(7)).await.expect_err(sql);
            assert!(err.is_corrupt(), "{sql}: {err}");
            assert!(err.to_string().contains("key 7"), "{sql}: {err}");
            let err = store.list(&ListQuery::default()).await.expect_err(sql);
            assert!(err.is_corrupt(), "{sql}: {err}");
        }

        let store = memory().await;
        store.insert(alice_key(7)).await.expect("inserted");
        exec(&store, "UPDATE api_keys SET id = -7").await;
        let err = store.list(&ListQuery::default()).await.unwrap_err();
        assert!(err.is_corrupt(), "{err}");
    }

    #[tokio::test]
    async fn an_update_that_cannot_be_read_back_changes_nothing() {
        let store = memory().await;
        store.insert(alice_key(7)).await.expect("inserted");
        exec(&store, "UPDATE api_keys SET scopes = 'no-such-scope'").await;
        let err = store
            .update(id(7), KeyUpdate::status(Status::Disabled))
            .await
            .unwrap_err();
        assert!(err.is_corrupt());
        let status: String = sqlx::query_scalar("SELECT status FROM api_keys WHERE id = 7")
            .fetch_one(&store.sql.pool)
            .await
            .expect("read");
        assert_eq!(status, "enabled");
    }

    #[tokio::test]
    async fn corrupt_account_rows_are_reported_as_corrupt() {
        let store = memory().await;
        store
            .create_user(user("u-alice", "alice", Status::Enabled))
            .await
            .expect("created");
        exec(&store, "UPDATE users SET role = 'root'").await;
        assert!(store.user("u-alice").await.unwrap_err().is_corrupt());
        assert!(store.user_by_name("alice").await.unwrap_err().is_corrupt());
        assert!(store
            .list_users(None, 0, 10)
            .await
            .unwrap_err()
            .is_corrupt());
        exec(&store, "UPDATE users SET role = 'user', status = 'bogus'").await;
        assert!(store.user("u-alice").await.unwrap_err().is_corrupt());
        exec(
            &store,
            "UPDATE users SET status = 'enabled', created = '2024'",
        )
        .await;
        assert!(store.user("u-alice").await.unwrap_err().is_corrupt());

        store
            .create_company(Company {
                uid: "c-Alpha".into(),
                name: "Alpha".into(),
                status: Status::Enabled,
                profile: Default::default(),
                token_generation: 0,
            })
            .await
            .expect("created");
        exec(&store, "UPDATE companies SET status = 'bogus'").await;
        assert!(store.company("c-Alpha").await.unwrap_err().is_corrupt());
        assert!(store.list_companies(0, 10).await.unwrap_err().is_corrupt());

        let digest = SecretDigest::from_bytes([9; 32]);
        store
            .put_refresh_token(RefreshToken {
                digest,
                user_uid: "u-alice".into(),
                read_only: false,
                expires: datetime!(2030-01-01 0:00 UTC),
                family: "f".into(),
                user_generation: 0,
                company_generation: 0,
            })
            .await
            .expect("stored");
        exec(&store, "UPDATE refresh_tokens SET expires = 'soon'").await;
        assert!(store
            .take_refresh_token(&digest)
            .await
            .unwrap_err()
            .is_corrupt());
        // Rolled back: the token is still there to be looked at.
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens")
            .fetch_one(&store.sql.pool)
            .await
            .expect("count");
        assert_eq!(left, 1);
    }

    #[tokio::test]
    async fn refresh_tokens_are_used_once_and_replays_recognised() {
        let store = memory().await;
        let token = |byte: u8, uid: &str, family: &str| RefreshToken {
            digest: SecretDigest::from_bytes([byte; 32]),
            user_uid: uid.to_owned(),
            read_only: byte % 2 == 0,
            expires: datetime!(2030-01-01 0:00:00.5 +01:00),
            family: family.into(),
            user_generation: u64::from(byte),
            company_generation: 7,
        };
        store
            .put_refresh_token(token(1, "u-a", "a"))
            .await
            .expect("put");
        store
            .put_refresh_token(token(2, "u-a", "a"))
            .await
            .expect("put");
        store
            .put_refresh_token(token(3, "u-b", "b"))
            .await
            .expect("put");
        // Putting the same digest again replaces the token.
        store
            .put_refresh_token(token(3, "u-c", "c"))
            .await
            .expect("put");

        let digest = SecretDigest::from_bytes([1; 32]);
        let taken = store.take_refresh_token(&digest).await.expect("take");
        assert_eq!(taken, Some(RefreshUse::Fresh(token(1, "u-a", "a"))));
        let again = store.take_refresh_token(&digest).await.expect("take");
        assert_eq!(again, Some(RefreshUse::Replayed(token(1, "u-a", "a"))));
        assert_eq!(store.revoke_refresh_family("a").await.expect("revoke"), 2);
        assert_eq!(store.revoke_refresh_family("b").await.expect("revoke"), 0);
        assert_eq!(store.take_refresh_token(&digest).await.expect("take"), None);
        let third = store
            .take_refresh_token(&SecretDigest::from_bytes([3; 32]))
            .await
            .expect("take");
        assert_eq!(third, Some(RefreshUse::Fresh(token(3, "u-c", "c"))));
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

    #[test]
    fn dates_keep_nanoseconds_and_sort_as_text() {
        let date = datetime!(2020-08-18 16:02:26.0136931 +02:00);
        let text = format_date(date).expect("formats");
        assert_eq!(text, "2020-08-18T14:02:26.013693100Z");
        assert_eq!(parse_date(&text).expect("parses"), date);

        let ordered = [
            datetime!(0000-01-01 0:00 UTC),
            datetime!(1999-12-31 23:59:59.999999999 UTC),
            datetime!(2000-01-01 1:00 +01:00),
            datetime!(2000-01-01 0:00:00.000000001 UTC),
            datetime!(2000-01-01 0:00:00.1 UTC),
            datetime!(9999-12-31 23:59:59 UTC),
        ];
        for pair in ordered.windows(2) {
            let (a, b) = (format_date(pair[0]), format_date(pair[1]));
            assert!(a.expect("formats") < b.expect("formats"), "{pair:?}");
        }
        assert!(format_date(datetime!(-0001-12-31 0:00 UTC)).is_err());
        assert!(format_date(datetime!(9999-12-31 23:00 -02:00)).is_err());
    }

    #[test]
    fn scopes_are_stored_by_name() {
        let billing = Scope::register("sqlite-test.billing").expect("registers");
        let scopes = Scopes::from([Scope::REST, billing, Scope::UI]);
        let text = format_scopes(scopes);
        assert_eq!(text, format!("ui,rest,{}", billing.name()));
        assert_eq!(parse_scopes(&text).expect("parses"), scopes);
        assert_eq!(parse_scopes("").expect("parses"), Scopes::EMPTY);
        assert!(parse_scopes(" rest").unwrap_err().is_corrupt());
    }

    /// Keys that exercise every ordering: equal fields broken by id, case and accents, offsets.
    fn oracle_records() -> Vec<KeyRecord> {
        let t = datetime!(2024-05-01 12:00 UTC);
        let mut records = vec![
            record(40, owner("alice", "Alpha"), "CI", t),
            record(3, owner("alice", "Alpha"), "ci deploy", t),
            record(17, owner("bob", "Beta"), "Émile's key", t),
            record(
                9,
                owner("Émile", "Beta"),
                "ÉMILE backup",
                datetime!(2024-05-01 13:00 +01:00),
            ),
            record(
                25,
                owner("zoë", "Gamma"),
                "zeta",
                datetime!(2023-01-01 0:00 UTC),
            ),
            record(
                6,
                owner("carol", "Alpha"),
                "Alpha",
                datetime!(2025-02-03 4:05:06.7 UTC),
            ),
            record(
                12,
                owner("carol", "Alpha"),
                "alpha",
                datetime!(2025-02-03 4:05:06.7 UTC),
            ),
            record(1 << 52, owner("dave", "Delta"), "big id", t),
            record(
                31,
                owner("erin", "External"),
                "CI",
                datetime!(2020-01-01 0:00 -05:00),
            ),
            record(8, owner("bob", "Beta"), "CI", t),
        ];
        records[1].status = Status::Disabled;
        records[4].status = Status::DisabledDueToSystem;
        records[6].status = Status::Unknown;
        records[7].scopes = Scopes::EMPTY;
        records[8].scopes = Scopes::from([Scope::UI, Scope::INTEGRATION]);
        records
    }

    #[tokio::test]
    async fn list_agrees_with_list_query_apply() {
        let store = memory().await;
        let oracle = MemoryStore::new();
        for s in [&store as &dyn KeyStore, &oracle] {
            for r in oracle_records() {
                s.insert(r).await.expect("inserted");
            }
            s.set_user_status("u-bob", Status::Disabled)
                .await
                .expect("set");
            s.set_company_status("c-Gamma", Status::Disabled)
                .await
                .expect("set");
            s.set_company_status("c-Delta", Status::DisabledDueToTenant)
                .await
                .expect("set");
        }
        for a in [&store as &dyn AccountStore, &oracle] {
            a.create_user(user("u-carol", "carol", Status::Disabled))
                .await
                .expect("created");
            a.create_company(Company {
                uid: "c-Alpha".into(),
                name: "Alpha".into(),
                status: Status::Enabled,
                profile: Default::default(),
                token_generation: 0,
            })
            .await
            .expect("created");
        }

        let sorts = [
            SortField::Id,
            SortField::CreationDate,
            SortField::Description,
            SortField::UserName,
            SortField::Status,
        ];
        let filters = [
            ListQuery::default(),
            ListQuery {
                user_uid: Some("u-alice".into()),
                ..ListQuery::default()
            },
            ListQuery {
                user_uid: Some("u-nobody".into()),
                ..ListQuery::default()
            },
            ListQuery {
                status: Some(Status::Enabled),
                ..ListQuery::default()
            },
            ListQuery {
                status: Some(Status::DisabledDueToUser),
                ..ListQuery::default()
            },
            ListQuery {
                status: Some(Status::DisabledDueToCompany),
                ..ListQuery::default()
            },
            ListQuery {
                status: Some(Status::Unknown),
                ..ListQuery::default()
            },
            ListQuery {
                description_contains: Some("émile".into()),
                ..ListQuery::default()
            },
            ListQuery {
                description_contains: Some("CI".into()),
                status: Some(Status::Enabled),
                ..ListQuery::default()
            },
            ListQuery {
                description_contains: Some(String::new()),
                ..ListQuery::default()
            },
            ListQuery {
                description_contains: Some("%".into()),
                ..ListQuery::default()
            },
        ];
        let pages = [
            (0, 100),
            (0, 3),
            (2, 4),
            (9, 5),
            (50, 5),
            (0, 0),
            (1, u64::MAX),
        ];
        let mut checked = 0;
        for filter in &filters {
            for sort in sorts {
                for descending in [false, true] {
                    for (offset, limit) in pages {
                        let query = ListQuery {
                            sort,
                            descending,
                            offset,
                            limit,
                            ..filter.clone()
                        };
                        let got = store.list(&query).await.expect("listed");
                        let want = oracle.list(&query).await.expect("listed");
                        assert_eq!(got, want, "{query:?}");
                        checked += got.items.len();
                    }
                }
            }
        }
        assert!(checked > 0);
    }
}
