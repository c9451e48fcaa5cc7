//! PostgreSQL backend: keys, users, companies and refresh tokens shared by every node, with changes
//! announced through `LISTEN`/`NOTIFY`. This file holds PostgreSQL's dialect, how the database is
//! reached and migrated, and the change stream; the statements are the shared SQL store's.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgQueryResult, PgRow};
use sqlx::{Executor, Postgres};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::codec::format_date;
use super::notify::{self, Notifier, Subscription, Timing};
use super::sql::{applied_migrations, column, impl_store_traits, Dialect, SqlStore, Tables};
use super::{ChangeStream, StoreError};

/// Schema migrations in order: entry `n` brings the schema to version `n + 1`. A released entry is
/// never edited; a change to the schema is a new entry.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_schema.sql"),
    include_str!("../../migrations/postgres/0002_accounts.sql"),
    include_str!("../../migrations/postgres/0003_indexes.sql"),
    include_str!("../../migrations/postgres/0004_lifecycle.sql"),
];

/// The channel the schema's triggers notify on.
const CHANNEL: &str = "tower_api_key";

/// Advisory lock held while migrating, so nodes starting together migrate one after the other.
const MIGRATION_LOCK: i64 = 0x7461_6b5f_6d69_6772;

/// Connections in the pool. Nodes read the database only on index misses and management calls.
const MAX_CONNECTIONS: u32 = 8;

/// How long a call waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// `application_name` of the connection that listens for changes, so operators can tell it apart.
const LISTENER_NAME: &str = "tower-api-key listener";

/// A store in a PostgreSQL database that any number of nodes share.
///
/// [`PostgresStore::connect`] creates the schema `tower_api_key` and migrates it. Every write
/// announces itself with `NOTIFY` in its own transaction, from triggers, so changes made with plain
/// SQL are announced too; [`KeyStore::subscribe`](super::KeyStore::subscribe) listens on a
/// connection of its own and turns the notifications into [`ChangeEvent`](super::ChangeEvent)s for
/// a [`KeyRing`](crate::KeyRing). When that connection drops, or a ping it sends itself every 10 s
/// is not back within 5 s (a half-open connection), it reconnects with backoff (up to 1 s between
/// attempts) and yields [`ChangeEvent::Resync`](super::ChangeEvent::Resync) when the channel is
/// lost, at each failed attempt and once listening again, so a lost notification never leaves a
/// revoked key usable: while the channel is down a node re-reads every key at least once a second.
///
/// Data and behaviour are those of `SqliteStore`:
/// owners without an account row, scopes stored by name (application scopes must be registered
/// with [`Scope::register`](crate::Scope::register) before their keys are read), corrupt rows
/// reported as [`StoreError::is_corrupt`]. Cloning shares the connection pool.
///
/// TLS is not built in; an application that needs it enables one of sqlx's TLS features in its own
/// `Cargo.toml`, and `sslmode` in the URL then works.
#[derive(Clone)]
pub struct PostgresStore {
    sql: SqlStore<Postgres>,
    options: PgConnectOptions,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, or
    /// `postgresql://…`), creating and migrating the schema `tower_api_key` when needed.
    ///
    /// `Err` when the URL is not a PostgreSQL URL, the server cannot be reached or refuses the
    /// login, a migration fails, or the database was migrated by a newer version with a schema
    /// this one does not know. The error never shows the password.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::backend("not a postgres:// URL"));
        }
        // sqlx's own message may quote the URL; say only that it could not be read.
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::backend("unreadable postgres:// URL"))?;
        let location = format!(
            "{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username()),
        );
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(StoreError::backend)?;
        migrate(&pool).await?;
        Ok(PostgresStore {
            sql: SqlStore::new(pool, location),
            options,
        })
    }

    /// Closes every connection, waiting for those in use to be returned. Calls made afterwards, on
    /// this store or its clones, fail; change streams already handed out keep their own connection
    /// until they are dropped.
    pub async fn close(&self) {
        self.sql.close().await;
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.sql.fmt_as("PostgresStore", f)
    }
}

impl_store_traits!(PostgresStore, {
    /// Listens on a connection of its own; see [`PostgresStore`]. Panics outside a tokio runtime.
    fn subscribe(&self) -> Option<ChangeStream> {
        let notifier = PgNotifier {
            pool: self.sql.pool.clone(),
            options: self.options.clone(),
        };
        Some(notify::subscribe(notifier, Timing::DEFAULT))
    }
});

impl Dialect for Postgres {
    const TABLES: Tables = Tables {
        api_keys: "tower_api_key.api_keys",
        users: "tower_api_key.users",
        companies: "tower_api_key.companies",
        owner_status: "tower_api_key.owner_status",
        refresh_tokens: "tower_api_key.refresh_tokens",
    };

    // The migrations' indexes are built with this collation, so ordered reads can use them.
    const BYTE_ORDER: &'static str = " COLLATE \"C\"";

    const FIND: &'static str = "strpos";

    // Writers are kept apart by the locks below, not by the transaction.
    const BEGIN_WRITE: Option<&'static str> = None;

    const BEGIN_SNAPSHOT: Option<&'static str> =
        Some("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");

    const FOR_UPDATE: &'static str = " FOR UPDATE";

    const OWNER_LOCK: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))");

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    fn flag(row: &PgRow, name: &str) -> Result<bool, StoreError> {
        column(row, name)
    }
}

/// Applies the migrations the database has not seen yet, all in one transaction.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await.map_err(StoreError::backend)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
    // `Executor::execute` with a bare string rather than `raw_sql`, whose future on a transaction is
    // not provably `Send`, which would keep `connect` out of spawned tasks.
    tx.execute(
        "CREATE SCHEMA IF NOT EXISTS tower_api_key; \
         CREATE TABLE IF NOT EXISTS tower_api_key.schema_version (\
             version INTEGER NOT NULL PRIMARY KEY, \
             applied TEXT NOT NULL)",
    )
    .await
    .map_err(StoreError::backend)?;
    let current: i32 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM tower_api_key.schema_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
    let applied = applied_migrations(current.into(), MIGRATIONS)?;
    for (version, sql) in (1i32..).zip(MIGRATIONS).skip(applied) {
        tx.execute(*sql).await.map_err(StoreError::backend)?;
        sqlx::query("INSERT INTO tower_api_key.schema_version (version, applied) VALUES ($1, $2)")
            .bind(version)
            .bind(format_date(OffsetDateTime::now_utc())?)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
    }
    tx.commit().await.map_err(StoreError::backend)
}

/// The store's change channel: `LISTEN` on a connection of its own, `NOTIFY` through the pool.
struct PgNotifier {
    pool: PgPool,
    options: PgConnectOptions,
}

#[async_trait]
impl Notifier for PgNotifier {
    async fn listen(&self) -> Result<Subscription, StoreError> {
        // A pool of one, private to this subscription: sqlx's listener takes its connection from a
        // pool, and this one's goes away with the subscription instead of returning to the store's
        // pool still listening.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(self.options.clone().application_name(LISTENER_NAME))
            .await
            .map_err(StoreError::backend)?;
        let mut listener = PgListener::connect_with(&pool)
            .await
            .map_err(StoreError::backend)?;
        // A lost connection ends the subscription; the listener loop reconnects and resyncs.
        listener.eager_reconnect(false);
        listener.ignore_pool_close_event(true);
        listener
            .listen(CHANNEL)
            .await
            .map_err(StoreError::backend)?;
        let (tx, payloads) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let _pool = pool;
            while let Ok(Some(notification)) = listener.try_recv().await {
                if tx.send(notification.payload().to_owned()).is_err() {
                    return;
                }
            }
        });
        Ok(Subscription {
            payloads,
            reader: reader.abort_handle(),
        })
    }

    async fn publish(&self, payload: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }
}
