//! PostgreSQL backend: keys, users, companies and refresh tokens shared by every node, with changes
//! announced through `LISTEN`/`NOTIFY`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Executor, Postgres, QueryBuilder, Transaction};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::codec::{
    format_date, format_generation, format_profile, format_scopes, parse_generation,
};
use super::notify::{self, Notifier, Subscription, Timing};
use super::sql::{
    column, decode_company, decode_key, decode_refresh_token, decode_user, push_order, sql_count,
    sql_id, write_error, FlagColumn, COMPANY_COLUMNS, REFRESH_COLUMNS, USER_COLUMNS,
};
use super::{
    AccountStore, ChangeStream, Company, CompanyProfile, KeyRecord, KeyStore, KeyUpdate, ListQuery,
    Page, RefreshToken, RefreshUse, StoreError, User, UserProfile,
};
use crate::identity::Status;
use crate::key::{KeyId, SecretDigest};

/// Schema migrations in order: entry `n` brings the schema to version `n + 1`. A released entry is
/// never edited; a change to the schema is a new entry.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_schema.sql"),
    include_str!("../../migrations/postgres/0002_accounts.sql"),
    include_str!("../../migrations/postgres/0003_indexes.sql"),
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

/// Every key with the current status of its user and company, and the status requests see.
///
/// Owners without a row in `users` or `companies` take their status from `owner_status`, and are
/// `enabled` when they have none there either. The `CASE` is [`Status::effective`] in SQL; statuses
/// compare case-insensitively because [`Status::parse`] does.
macro_rules! keys {
    () => {
        "(SELECT k.id, k.digest, k.user_uid, k.user_name, k.company_id, k.company_name, \
           k.description, k.description_folded, k.read_only, k.scopes, k.status, k.created, k.status_locked, \
           COALESCE(u.status, ou.status, 'enabled') AS user_status, \
           COALESCE(c.status, oc.status, 'enabled') AS company_status, \
           CASE \
             WHEN lower(k.status) <> 'enabled' THEN k.status \
             WHEN lower(COALESCE(c.status, oc.status, 'enabled')) <> 'enabled' \
               THEN 'disabledDueToCompany' \
             WHEN lower(COALESCE(u.status, ou.status, 'enabled')) <> 'enabled' \
               THEN 'disabledDueToUser' \
             ELSE 'enabled' \
           END AS effective_status \
         FROM tower_api_key.api_keys k \
         LEFT JOIN tower_api_key.users u ON u.uid = k.user_uid \
         LEFT JOIN tower_api_key.owner_status ou ON ou.kind = 'user' AND ou.id = k.user_uid \
         LEFT JOIN tower_api_key.companies c ON c.uid = k.company_id \
         LEFT JOIN tower_api_key.owner_status oc \
           ON oc.kind = 'company' AND oc.id = k.company_id) AS r"
    };
}

/// The record of one key.
const GET_KEY: &str = concat!("SELECT r.* FROM ", keys!(), " WHERE r.id = $1");

/// A store in a PostgreSQL database that any number of nodes share.
///
/// [`PostgresStore::connect`] creates the schema `tower_api_key` and migrates it. Every write
/// announces itself with `NOTIFY` in its own transaction, from triggers, so changes made with plain
/// SQL are announced too; [`KeyStore::subscribe`] listens on a connection of its own and turns the
/// notifications into [`ChangeEvent`](super::ChangeEvent)s for a [`KeyRing`](crate::KeyRing). When
/// that connection drops, or a ping it sends itself every 10 s is not back within 5 s (a half-open
/// connection), it reconnects with backoff (up to 1 s between attempts) and yields
/// [`ChangeEvent::Resync`](super::ChangeEvent::Resync) when the channel is lost, at each failed
/// attempt and once listening again, so a lost notification never leaves a revoked key usable:
/// while the channel is down a node re-reads every key at least once a second.
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
    pool: PgPool,
    options: PgConnectOptions,
    location: Arc<str>,
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
            pool,
            options,
            location: location.into(),
        })
    }

    /// Closes every connection, waiting for those in use to be returned. Calls made afterwards, on
    /// this store or its clones, fail; change streams already handed out keep their own connection
    /// until they are dropped.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.pool.begin().await.map_err(StoreError::backend)
    }

    async fn set_owner_status(
        &self,
        kind: OwnerKind,
        id: &str,
        status: Status,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        lock_owner(&mut tx, kind, id).await?;
        let updated = sqlx::query(kind.update_account_status())
            .bind(status.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?
            .rows_affected();
        if updated == 0 {
            sqlx::query(
                "INSERT INTO tower_api_key.owner_status (kind, id, status) VALUES ($1, $2, $3) \
                 ON CONFLICT (kind, id) DO UPDATE SET status = excluded.status",
            )
            .bind(kind.as_str())
            .bind(id)
            .bind(status.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        }
        tx.commit().await.map_err(StoreError::backend)
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .field("connections", &self.pool.size())
            .finish()
    }
}

/// Serialises status writes and account creation for one owner: without it, a status set for an
/// owner while their account is being created could land in `owner_status` after the account row
/// took over, and be lost.
async fn lock_owner(
    tx: &mut Transaction<'static, Postgres>,
    kind: OwnerKind,
    id: &str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("tower_api_key:{}:{id}", kind.as_str()))
        .execute(&mut **tx)
        .await
        .map_err(StoreError::backend)?;
    Ok(())
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
    let current = usize::try_from(current)
        .map_err(|_| StoreError::corrupt(format!("schema version {current}")))?;
    if current > MIGRATIONS.len() {
        return Err(StoreError::backend(format!(
            "database schema version {current} is newer than this build knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (version, sql) in (1i32..).zip(MIGRATIONS).skip(current) {
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

#[derive(Clone, Copy)]
enum OwnerKind {
    User,
    Company,
}

impl OwnerKind {
    fn as_str(self) -> &'static str {
        match self {
            OwnerKind::User => "user",
            OwnerKind::Company => "company",
        }
    }

    fn update_account_status(self) -> &'static str {
        match self {
            OwnerKind::User => "UPDATE tower_api_key.users SET status = $1 WHERE uid = $2",
            OwnerKind::Company => "UPDATE tower_api_key.companies SET status = $1 WHERE uid = $2",
        }
    }
}

impl FlagColumn for PgRow {
    fn flag(&self, name: &str) -> Result<bool, StoreError> {
        column(self, name)
    }
}

/// The `WHERE` clause of a listing: [`ListQuery::matches`] in SQL.
fn push_filters(sql: &mut QueryBuilder<'_, Postgres>, query: &ListQuery) {
    sql.push(" WHERE TRUE");
    if let Some(uid) = &query.user_uid {
        sql.push(" AND r.user_uid = ").push_bind(uid.clone());
    }
    if let Some(status) = query.status {
        sql.push(" AND lower(r.effective_status) = lower(")
            .push_bind(status.as_str())
            .push(")");
    }
    if let Some(needle) = &query.description_contains {
        // Both sides lowercased by Rust's Unicode rules, as `ListQuery::matches` does.
        sql.push(" AND strpos(r.description_folded, ")
            .push_bind(needle.to_lowercase())
            .push(") > 0");
    }
}

/// A read-only transaction that sees one snapshot for all its statements.
async fn snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, StoreError> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(StoreError::backend)
}

/// One page of a table and its row count, read in one snapshot: `select` gets the page's
/// `LIMIT` and `OFFSET`.
async fn page<T>(
    pool: &PgPool,
    count: &mut QueryBuilder<'_, Postgres>,
    select: &mut QueryBuilder<'_, Postgres>,
    offset: u64,
    limit: u64,
    decode: fn(&PgRow) -> Result<T, StoreError>,
) -> Result<Page<T>, StoreError> {
    select
        .push(" LIMIT ")
        .push_bind(sql_count(limit))
        .push(" OFFSET ")
        .push_bind(sql_count(offset));
    let mut tx = snapshot(pool).await?;
    let total: i64 = count
        .build_query_scalar()
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
    let rows = select
        .build()
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
    tx.commit().await.map_err(StoreError::backend)?;
    Ok(Page {
        items: rows.iter().map(decode).collect::<Result<_, _>>()?,
        total: u64::try_from(total).unwrap_or(0),
    })
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(GET_KEY)
            .bind(sql_id(id)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        row.as_ref().map(decode_key).transpose()
    }

    async fn insert(&self, record: KeyRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tower_api_key.api_keys (id, digest, user_uid, user_name, company_id, \
             company_name, description, description_folded, read_only, scopes, status, created, \
             status_locked) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(sql_id(record.id)?)
        .bind(&record.digest.as_bytes()[..])
        .bind(&record.owner.user_uid)
        .bind(&record.owner.user_name)
        .bind(&record.owner.company_id)
        .bind(&record.owner.company_name)
        .bind(&record.description)
        .bind(record.description.to_lowercase())
        .bind(record.read_only)
        .bind(format_scopes(record.scopes))
        .bind(record.status.as_str())
        .bind(format_date(record.created)?)
        .bind(record.status_locked)
        .execute(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(())
    }

    async fn update(&self, id: KeyId, update: KeyUpdate) -> Result<Option<KeyRecord>, StoreError> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE tower_api_key.api_keys SET status = COALESCE($1, status), \
             description = COALESCE($2, description), \
             description_folded = COALESCE($3, description_folded), \
             status_locked = COALESCE($5, status_locked) \
             WHERE id = $4",
        )
        .bind(update.status.map(Status::as_str))
        .bind(update.description.as_deref())
        .bind(update.description.as_deref().map(str::to_lowercase))
        .bind(sql_id(id)?)
        .bind(update.status_locked)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?
        .rows_affected();
        if updated == 0 {
            return Ok(None);
        }
        let row = sqlx::query(GET_KEY)
            .bind(sql_id(id)?)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        // Decoded before the commit: a record that cannot be returned is not changed either.
        let record = decode_key(&row)?;
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(Some(record))
    }

    async fn delete(&self, id: KeyId) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM tower_api_key.api_keys WHERE id = $1")
            .bind(sql_id(id)?)
            .execute(&self.pool)
            .await
            .map_err(StoreError::backend)?
            .rows_affected();
        Ok(deleted > 0)
    }

    async fn list(&self, query: &ListQuery) -> Result<Page<KeyRecord>, StoreError> {
        let mut count = QueryBuilder::new("SELECT COUNT(*) FROM ");
        count.push(keys!());
        push_filters(&mut count, query);
        let mut select = QueryBuilder::new("SELECT r.* FROM ");
        select.push(keys!());
        push_filters(&mut select, query);
        push_order(&mut select, query, " COLLATE \"C\"");
        select
            .push(" LIMIT ")
            .push_bind(sql_count(query.limit))
            .push(" OFFSET ")
            .push_bind(sql_count(query.offset));
        // One snapshot: the total and the page agree.
        let mut tx = snapshot(&self.pool).await?;
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        let rows = select
            .build()
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(Page {
            items: rows.iter().map(decode_key).collect::<Result<_, _>>()?,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    async fn set_user_status(&self, user_uid: &str, status: Status) -> Result<(), StoreError> {
        self.set_owner_status(OwnerKind::User, user_uid, status)
            .await
    }

    async fn set_company_status(&self, company_id: &str, status: Status) -> Result<(), StoreError> {
        self.set_owner_status(OwnerKind::Company, company_id, status)
            .await
    }

    /// Listens on a connection of its own; see [`PostgresStore`]. Panics outside a tokio runtime.
    fn subscribe(&self) -> Option<ChangeStream> {
        let notifier = PgNotifier {
            pool: self.pool.clone(),
            options: self.options.clone(),
        };
        Some(notify::subscribe(notifier, Timing::DEFAULT))
    }
}

#[async_trait]
impl AccountStore for PostgresStore {
    async fn create_company(&self, company: Company) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        lock_owner(&mut tx, OwnerKind::Company, &company.uid).await?;
        sqlx::query(
            "INSERT INTO tower_api_key.companies (uid, name, status, profile, token_generation) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&company.uid)
        .bind(&company.name)
        .bind(company.status.as_str())
        .bind(format_profile(&company.profile)?)
        .bind(format_generation(company.token_generation))
        .execute(&mut *tx)
        .await
        .map_err(write_error)?;
        // From now on the company's row holds its status.
        sqlx::query("DELETE FROM tower_api_key.owner_status WHERE kind = 'company' AND id = $1")
            .bind(&company.uid)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)
    }

    async fn company(&self, uid: &str) -> Result<Option<Company>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COMPANY_COLUMNS} FROM tower_api_key.companies WHERE uid = $1"
        ))
        .bind(uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        row.as_ref().map(decode_company).transpose()
    }

    async fn list_companies(&self, offset: u64, limit: u64) -> Result<Page<Company>, StoreError> {
        let mut count = QueryBuilder::new("SELECT COUNT(*) FROM tower_api_key.companies");
        let mut select = QueryBuilder::new(format!(
            "SELECT {COMPANY_COLUMNS} FROM tower_api_key.companies \
             ORDER BY name COLLATE \"C\", uid COLLATE \"C\""
        ));
        page(
            &self.pool,
            &mut count,
            &mut select,
            offset,
            limit,
            decode_company,
        )
        .await
    }

    async fn update_company_profile(
        &self,
        uid: &str,
        profile: CompanyProfile,
    ) -> Result<Option<Company>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE tower_api_key.companies SET profile = $1 WHERE uid = $2 \
             RETURNING {COMPANY_COLUMNS}"
        ))
        .bind(format_profile(&profile)?)
        .bind(uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        row.as_ref().map(decode_company).transpose()
    }

    async fn create_user(&self, user: User) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        lock_owner(&mut tx, OwnerKind::User, &user.uid).await?;
        sqlx::query(
            "INSERT INTO tower_api_key.users (uid, user_name, password_hash, role, company_id, \
             status, created, profile, token_generation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&user.uid)
        .bind(&user.user_name)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(&user.company_id)
        .bind(user.status.as_str())
        .bind(format_date(user.created)?)
        .bind(format_profile(&user.profile)?)
        .bind(format_generation(user.token_generation))
        .execute(&mut *tx)
        .await
        .map_err(write_error)?;
        // From now on the user's row holds their status.
        sqlx::query("DELETE FROM tower_api_key.owner_status WHERE kind = 'user' AND id = $1")
            .bind(&user.uid)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)
    }

    async fn user(&self, uid: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM tower_api_key.users WHERE uid = $1"
        ))
        .bind(uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        row.as_ref().map(decode_user).transpose()
    }

    async fn user_by_name(&self, user_name: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM tower_api_key.users WHERE user_name = $1"
        ))
        .bind(user_name)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        row.as_ref().map(decode_user).transpose()
    }

    async fn list_users(
        &self,
        company_id: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<Page<User>, StoreError> {
        let mut count = QueryBuilder::new("SELECT COUNT(*) FROM tower_api_key.users");
        let mut select =
            QueryBuilder::new(format!("SELECT {USER_COLUMNS} FROM tower_api_key.users"));
        if let Some(id) = company_id {
            count.push(" WHERE company_id = ").push_bind(id.to_owned());
            select.push(" WHERE company_id = ").push_bind(id.to_owned());
        }
        select.push(" ORDER BY user_name COLLATE \"C\", uid COLLATE \"C\"");
        page(
            &self.pool,
            &mut count,
            &mut select,
            offset,
            limit,
            decode_user,
        )
        .await
    }

    async fn update_user_profile(
        &self,
        uid: &str,
        profile: UserProfile,
    ) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE tower_api_key.users SET profile = $1 WHERE uid = $2 RETURNING {USER_COLUMNS}"
        ))
        .bind(format_profile(&profile)?)
        .bind(uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        row.as_ref().map(decode_user).transpose()
    }

    async fn put_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // Expired tokens, used or not, are of no more use, not even to recognise a replay.
        sqlx::query("DELETE FROM tower_api_key.refresh_tokens WHERE expires COLLATE \"C\" <= $1")
            .bind(format_date(OffsetDateTime::now_utc())?)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        sqlx::query(
            "INSERT INTO tower_api_key.refresh_tokens (digest, user_uid, read_only, expires, \
             family, user_generation, company_generation, used) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE) \
             ON CONFLICT (digest) DO UPDATE SET user_uid = excluded.user_uid, \
             read_only = excluded.read_only, expires = excluded.expires, family = excluded.family, \
             user_generation = excluded.user_generation, \
             company_generation = excluded.company_generation, used = FALSE",
        )
        .bind(&token.digest.as_bytes()[..])
        .bind(&token.user_uid)
        .bind(token.read_only)
        .bind(format_date(token.expires)?)
        .bind(&token.family)
        .bind(format_generation(token.user_generation))
        .bind(format_generation(token.company_generation))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)
    }

    async fn take_refresh_token(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<RefreshUse>, StoreError> {
        // The row lock is held from the read to the mark, so two requests cannot both see it
        // unused.
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {REFRESH_COLUMNS}, used FROM tower_api_key.refresh_tokens \
             WHERE digest = $1 FOR UPDATE"
        ))
        .bind(&digest.as_bytes()[..])
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        let Some(row) = row else {
            return Ok(None);
        };
        // A token that cannot be decoded stays as it is, to be looked at.
        let token = decode_refresh_token(&row)?;
        let used: bool = column(&row, "used")?;
        if !used {
            sqlx::query("UPDATE tower_api_key.refresh_tokens SET used = TRUE WHERE digest = $1")
                .bind(&digest.as_bytes()[..])
                .execute(&mut *tx)
                .await
                .map_err(StoreError::backend)?;
        }
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(Some(if used {
            RefreshUse::Replayed(token)
        } else {
            RefreshUse::Fresh(token)
        }))
    }

    async fn revoke_refresh_family(&self, family: &str) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM tower_api_key.refresh_tokens WHERE family = $1")
            .bind(family)
            .execute(&self.pool)
            .await
            .map_err(StoreError::backend)?
            .rows_affected();
        Ok(deleted)
    }

    async fn revoke_user_tokens(&self, user_uid: &str) -> Result<Option<u64>, StoreError> {
        // The trigger on `users` tells every node, in this transaction.
        let mut tx = self.begin().await?;
        let generation: Option<i64> = sqlx::query_scalar(
            "UPDATE tower_api_key.users SET token_generation = token_generation + 1 \
             WHERE uid = $1 RETURNING token_generation",
        )
        .bind(user_uid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        let Some(generation) = generation else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM tower_api_key.refresh_tokens WHERE user_uid = $1")
            .bind(user_uid)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)?;
        parse_generation(generation).map(Some)
    }

    async fn revoke_company_tokens(&self, company_id: &str) -> Result<Option<u64>, StoreError> {
        // The trigger on `companies` tells every node.
        let generation: Option<i64> = sqlx::query_scalar(
            "UPDATE tower_api_key.companies SET token_generation = token_generation + 1 \
             WHERE uid = $1 RETURNING token_generation",
        )
        .bind(company_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        generation.map(parse_generation).transpose()
    }
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
