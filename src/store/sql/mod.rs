//! The one SQL store SQLite and PostgreSQL both are: every statement, every transaction and every
//! rule about keys, owners, accounts and refresh tokens, written once over a [`Dialect`].

use std::fmt;
use std::sync::Arc;

use sqlx::query::Query;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Transaction, Type,
};
use time::OffsetDateTime;

use super::codec::{
    format_date, format_generation, format_profile, format_scopes, parse_generation,
};
use super::{
    Company, CompanyProfile, KeyRecord, KeyUpdate, ListQuery, Page, RefreshToken, RefreshUse,
    SortField, StoreError, User, UserProfile,
};
use crate::identity::Status;
use crate::key::{KeyId, SecretDigest};

mod dialect;
mod rows;
#[cfg(all(test, feature = "sqlite"))]
pub(crate) mod tests;

pub(crate) use dialect::{Dialect, Tables};
pub(crate) use rows::{column, USER_COLUMNS};
use rows::{
    decode_company, decode_key, decode_refresh_token, decode_user, SchemaRow, COMPANY_COLUMNS,
    REFRESH_COLUMNS,
};

/// A store in an SQL database whose schema is migrated: a pool of connections and where they go.
/// `SqliteStore` and `PostgresStore` each hold one and hand it every call.
pub(crate) struct SqlStore<D: Database> {
    pub(super) pool: Pool<D>,
    location: Arc<str>,
}

impl<D: Database> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            location: Arc::clone(&self.location),
        }
    }
}

impl<D: Database> SqlStore<D> {
    /// The store over `pool`, whose database is `location` (shown by `Debug`, so never a password).
    pub(crate) fn new(pool: Pool<D>, location: impl Into<Arc<str>>) -> Self {
        SqlStore {
            pool,
            location: location.into(),
        }
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    /// `Debug` of the public store called `name`.
    pub(crate) fn fmt_as(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("location", &self.location)
            .field("connections", &self.pool.size())
            .finish()
    }
}

// What the statements need of sqlx for `D`: executors, arguments, and the types they bind and read.
// sqlx states each per database, so they are listed here once for both.
impl<D> SqlStore<D>
where
    D: Dialect,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'q> D::Arguments<'q>: IntoArguments<'q, D>,
    D::Row: SchemaRow,
    usize: ColumnIndex<D::Row>,
    for<'r> i64: Decode<'r, D>,
    for<'q> i64: Encode<'q, D> + Type<D>,
    for<'q> bool: Encode<'q, D> + Type<D>,
    for<'q> Option<bool>: Encode<'q, D> + Type<D>,
    for<'q> &'q str: Encode<'q, D> + Type<D>,
    for<'q> Option<&'q str>: Encode<'q, D> + Type<D>,
    for<'q> String: Encode<'q, D> + Type<D>,
    for<'q> Option<String>: Encode<'q, D> + Type<D>,
    for<'q> &'q [u8]: Encode<'q, D> + Type<D>,
{
    /// A transaction that writes.
    async fn write(&self) -> Result<Transaction<'static, D>, StoreError> {
        begin(&self.pool, D::BEGIN_WRITE).await
    }

    /// A transaction whose reads see one snapshot, so that a page and its total agree.
    async fn snapshot(&self) -> Result<Transaction<'static, D>, StoreError> {
        begin(&self.pool, D::BEGIN_SNAPSHOT).await
    }

    /// Serialises status writes and account creation for one owner where writers are not
    /// serialised already: without it, a status set for an owner while their account is being
    /// created could land in `owner_status` after the account row took over, and be lost.
    async fn lock_owner(
        tx: &mut Transaction<'static, D>,
        kind: OwnerKind,
        id: &str,
    ) -> Result<(), StoreError> {
        if let Some(lock) = D::OWNER_LOCK {
            sqlx::query(lock)
                .bind(format!("tower_api_key:{}:{id}", kind.as_str()))
                .execute(&mut **tx)
                .await
                .map_err(StoreError::backend)?;
        }
        Ok(())
    }

    /// One page of a table and its row count, read in one snapshot: `select` gets the page's
    /// `LIMIT` and `OFFSET`.
    async fn page<T>(
        &self,
        count: Statement,
        mut select: Statement,
        offset: u64,
        limit: u64,
        decode: fn(&D::Row) -> Result<T, StoreError>,
    ) -> Result<Page<T>, StoreError> {
        select
            .push(" LIMIT ")
            .push_bind(Value::Int(sql_count(limit)))
            .push(" OFFSET ")
            .push_bind(Value::Int(sql_count(offset)));
        let mut tx = self.snapshot().await?;
        let total: i64 = Self::query(&count)
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(StoreError::backend)?;
        let rows = Self::query(&select)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(Page {
            items: rows.iter().map(decode).collect::<Result<_, _>>()?,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    /// `statement` with its values bound.
    fn query(statement: &Statement) -> Query<'_, D, D::Arguments<'_>> {
        let query = sqlx::query(&statement.sql);
        statement
            .values
            .iter()
            .fold(query, |query, value| match value {
                Value::Text(text) => query.bind(text.as_str()),
                Value::Int(int) => query.bind(*int),
            })
    }

    async fn set_owner_status(
        &self,
        kind: OwnerKind,
        id: &str,
        status: Status,
    ) -> Result<(), StoreError> {
        let Tables { owner_status, .. } = D::TABLES;
        let mut tx = self.write().await?;
        Self::lock_owner(&mut tx, kind, id).await?;
        let updated = sqlx::query(&kind.update_account_status::<D>())
            .bind(status.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map(|done| D::rows_affected(&done))
            .map_err(StoreError::backend)?;
        if updated == 0 {
            sqlx::query(&format!(
                "INSERT INTO {owner_status} (kind, id, status) VALUES ($1, $2, $3) \
                 ON CONFLICT (kind, id) DO UPDATE SET status = excluded.status"
            ))
            .bind(kind.as_str())
            .bind(id)
            .bind(status.as_str())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        }
        tx.commit().await.map_err(StoreError::backend)
    }

    // `KeyStore`

    pub(crate) async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(&get_key::<D>())
            .bind(sql_id(id)?)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::backend)?;
        row.as_ref().map(decode_key).transpose()
    }

    pub(crate) async fn insert(&self, record: KeyRecord) -> Result<(), StoreError> {
        let Tables { api_keys, .. } = D::TABLES;
        sqlx::query(&format!(
            "INSERT INTO {api_keys} (id, digest, user_uid, user_name, company_id, company_name, \
             description, description_folded, read_only, scopes, status, created, status_locked, \
             expires, deprecated, last_used) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ))
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
        .bind(record.expires.map(format_date).transpose()?)
        .bind(record.deprecated.map(format_date).transpose()?)
        .bind(record.last_used.map(format_date).transpose()?)
        .execute(&self.pool)
        .await
        .map_err(write_error)?;
        Ok(())
    }

    pub(crate) async fn update(
        &self,
        id: KeyId,
        update: KeyUpdate,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let Tables { api_keys, .. } = D::TABLES;
        let mut tx = self.write().await?;
        let updated = sqlx::query(&format!(
            "UPDATE {api_keys} SET status = COALESCE($1, status), \
             description = COALESCE($2, description), \
             description_folded = COALESCE($3, description_folded), \
             status_locked = COALESCE($4, status_locked), \
             deprecated = CASE WHEN deprecated IS NULL OR deprecated > CAST($6 AS TEXT) \
               THEN COALESCE(CAST($6 AS TEXT), deprecated) ELSE deprecated END, \
             expires = CASE WHEN expires IS NULL OR expires > CAST($7 AS TEXT) \
               THEN COALESCE(CAST($7 AS TEXT), expires) ELSE expires END \
             WHERE id = $5"
        ))
        .bind(update.status.map(Status::as_str))
        .bind(update.description.as_deref())
        .bind(update.description.as_deref().map(str::to_lowercase))
        .bind(update.status_locked)
        .bind(sql_id(id)?)
        .bind(update.retire.map(|(at, _)| format_date(at)).transpose()?)
        .bind(
            update
                .retire
                .map(|(_, until)| format_date(until))
                .transpose()?,
        )
        .execute(&mut *tx)
        .await
        .map(|done| D::rows_affected(&done))
        .map_err(StoreError::backend)?;
        if updated == 0 {
            return Ok(None);
        }
        let row = sqlx::query(&get_key::<D>())
            .bind(sql_id(id)?)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        // Decoded before the commit: a record that cannot be returned is not changed either.
        let record = decode_key(&row)?;
        tx.commit().await.map_err(StoreError::backend)?;
        Ok(Some(record))
    }

    pub(crate) async fn record_use(
        &self,
        uses: &[(KeyId, OffsetDateTime)],
    ) -> Result<(), StoreError> {
        let Tables { api_keys, .. } = D::TABLES;
        let statement = format!(
            "UPDATE {api_keys} SET last_used = $1 \
             WHERE id = $2 AND (last_used IS NULL OR last_used < $1)"
        );
        // One transaction a batch: one commit (one sync of SQLite's file) for many keys.
        for batch in uses.chunks(512) {
            let mut tx = self.write().await?;
            for &(id, at) in batch {
                sqlx::query(&statement)
                    .bind(format_date(at)?)
                    .bind(sql_id(id)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::backend)?;
            }
            tx.commit().await.map_err(StoreError::backend)?;
        }
        Ok(())
    }

    pub(crate) async fn delete(&self, id: KeyId) -> Result<bool, StoreError> {
        let Tables { api_keys, .. } = D::TABLES;
        let deleted = sqlx::query(&format!("DELETE FROM {api_keys} WHERE id = $1"))
            .bind(sql_id(id)?)
            .execute(&self.pool)
            .await
            .map(|done| D::rows_affected(&done))
            .map_err(StoreError::backend)?;
        Ok(deleted > 0)
    }

    pub(crate) async fn list(&self, query: &ListQuery) -> Result<Page<KeyRecord>, StoreError> {
        let keys = keys::<D>();
        let mut count = Statement::new(format!("SELECT COUNT(*) FROM {keys}"));
        push_filters::<D>(&mut count, query);
        let mut select = Statement::new(format!("SELECT r.* FROM {keys}"));
        push_filters::<D>(&mut select, query);
        push_order::<D>(&mut select, query);
        self.page(count, select, query.offset, query.limit, decode_key)
            .await
    }

    pub(crate) async fn set_user_status(
        &self,
        user_uid: &str,
        status: Status,
    ) -> Result<(), StoreError> {
        self.set_owner_status(OwnerKind::User, user_uid, status)
            .await
    }

    pub(crate) async fn set_company_status(
        &self,
        company_id: &str,
        status: Status,
    ) -> Result<(), StoreError> {
        self.set_owner_status(OwnerKind::Company, company_id, status)
            .await
    }

    // `AccountStore`

    pub(crate) async fn create_company(&self, company: Company) -> Result<(), StoreError> {
        let Tables {
            companies,
            owner_status,
            ..
        } = D::TABLES;
        let mut tx = self.write().await?;
        Self::lock_owner(&mut tx, OwnerKind::Company, &company.uid).await?;
        sqlx::query(&format!(
            "INSERT INTO {companies} (uid, name, status, profile, token_generation) \
             VALUES ($1, $2, $3, $4, $5)"
        ))
        .bind(&company.uid)
        .bind(&company.name)
        .bind(company.status.as_str())
        .bind(format_profile(&company.profile)?)
        .bind(format_generation(company.token_generation))
        .execute(&mut *tx)
        .await
        .map_err(write_error)?;
        // From now on the company's row holds its status.
        sqlx::query(&format!(
            "DELETE FROM {owner_status} WHERE kind = 'company' AND id = $1"
        ))
        .bind(&company.uid)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)
    }

    pub(crate) async fn company(&self, uid: &str) -> Result<Option<Company>, StoreError> {
        let Tables { companies, .. } = D::TABLES;
        let row = sqlx::query(&format!(
            "SELECT {COMPANY_COLUMNS} FROM {companies} WHERE uid = $1"
        ))
        .bind(uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        row.as_ref().map(decode_company).transpose()
    }

    pub(crate) async fn list_companies(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<Page<Company>, StoreError> {
        let Tables { companies, .. } = D::TABLES;
        let by_bytes = D::BYTE_ORDER;
        let count = Statement::new(format!("SELECT COUNT(*) FROM {companies}"));
        let select = Statement::new(format!(
            "SELECT {COMPANY_COLUMNS} FROM {companies} ORDER BY name{by_bytes}, uid{by_bytes}"
        ));
        self.page(count, select, offset, limit, decode_company)
            .await
    }

    pub(crate) async fn update_company_profile(
        &self,
        uid: &str,
        profile: CompanyProfile,
    ) -> Result<Option<Company>, StoreError> {
        let Tables { companies, .. } = D::TABLES;
        let row = sqlx::query(&format!(
            "UPDATE {companies} SET profile = $1 WHERE uid = $2 RETURNING {COMPANY_COLUMNS}"
        ))
        .bind(format_profile(&profile)?)
        .bind(uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        row.as_ref().map(decode_company).transpose()
    }

    pub(crate) async fn create_user(&self, user: User) -> Result<(), StoreError> {
        let Tables {
            users,
            owner_status,
            ..
        } = D::TABLES;
        let mut tx = self.write().await?;
        Self::lock_owner(&mut tx, OwnerKind::User, &user.uid).await?;
        sqlx::query(&format!(
            "INSERT INTO {users} (uid, user_name, password_hash, role, company_id, status, \
             created, profile, token_generation) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
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
        sqlx::query(&format!(
            "DELETE FROM {owner_status} WHERE kind = 'user' AND id = $1"
        ))
        .bind(&user.uid)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)
    }

    pub(crate) async fn user(&self, uid: &str) -> Result<Option<User>, StoreError> {
        let Tables { users, .. } = D::TABLES;
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM {users} WHERE uid = $1"
        ))
        .bind(uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        row.as_ref().map(decode_user).transpose()
    }

    pub(crate) async fn user_by_name(&self, user_name: &str) -> Result<Option<User>, StoreError> {
        let Tables { users, .. } = D::TABLES;
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM {users} WHERE user_name = $1"
        ))
        .bind(user_name)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        row.as_ref().map(decode_user).transpose()
    }

    pub(crate) async fn list_users(
        &self,
        company_id: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<Page<User>, StoreError> {
        let Tables { users, .. } = D::TABLES;
        let by_bytes = D::BYTE_ORDER;
        let mut count = Statement::new(format!("SELECT COUNT(*) FROM {users}"));
        let mut select = Statement::new(format!("SELECT {USER_COLUMNS} FROM {users}"));
        if let Some(id) = company_id {
            count
                .push(" WHERE company_id = ")
                .push_bind(Value::Text(id.to_owned()));
            select
                .push(" WHERE company_id = ")
                .push_bind(Value::Text(id.to_owned()));
        }
        select.push(&format!(" ORDER BY user_name{by_bytes}, uid{by_bytes}"));
        self.page(count, select, offset, limit, decode_user).await
    }

    pub(crate) async fn update_user_profile(
        &self,
        uid: &str,
        profile: UserProfile,
    ) -> Result<Option<User>, StoreError> {
        let Tables { users, .. } = D::TABLES;
        let row = sqlx::query(&format!(
            "UPDATE {users} SET profile = $1 WHERE uid = $2 RETURNING {USER_COLUMNS}"
        ))
        .bind(format_profile(&profile)?)
        .bind(uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        row.as_ref().map(decode_user).transpose()
    }

    pub(crate) async fn put_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError> {
        let Tables { refresh_tokens, .. } = D::TABLES;
        let by_bytes = D::BYTE_ORDER;
        let mut tx = self.write().await?;
        // Expired tokens, used or not, are of no more use, not even to recognise a replay.
        sqlx::query(&format!(
            "DELETE FROM {refresh_tokens} WHERE expires{by_bytes} <= $1"
        ))
        .bind(format_date(OffsetDateTime::now_utc())?)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        sqlx::query(&format!(
            "INSERT INTO {refresh_tokens} (digest, user_uid, read_only, expires, family, \
             user_generation, company_generation, used) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE) \
             ON CONFLICT (digest) DO UPDATE SET user_uid = excluded.user_uid, \
             read_only = excluded.read_only, expires = excluded.expires, family = excluded.family, \
             user_generation = excluded.user_generation, \
             company_generation = excluded.company_generation, used = FALSE"
        ))
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

    pub(crate) async fn take_refresh_token(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<RefreshUse>, StoreError> {
        let Tables { refresh_tokens, .. } = D::TABLES;
        let for_update = D::FOR_UPDATE;
        // The row is held from the read to the mark, so two requests cannot both see it unused.
        let mut tx = self.write().await?;
        let row = sqlx::query(&format!(
            "SELECT {REFRESH_COLUMNS}, used FROM {refresh_tokens} WHERE digest = $1{for_update}"
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
        let used = row.flag("used")?;
        if !used {
            sqlx::query(&format!(
                "UPDATE {refresh_tokens} SET used = TRUE WHERE digest = $1"
            ))
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

    pub(crate) async fn revoke_refresh_family(&self, family: &str) -> Result<u64, StoreError> {
        let Tables { refresh_tokens, .. } = D::TABLES;
        let deleted = sqlx::query(&format!("DELETE FROM {refresh_tokens} WHERE family = $1"))
            .bind(family)
            .execute(&self.pool)
            .await
            .map(|done| D::rows_affected(&done))
            .map_err(StoreError::backend)?;
        Ok(deleted)
    }

    pub(crate) async fn revoke_user_tokens(
        &self,
        user_uid: &str,
    ) -> Result<Option<u64>, StoreError> {
        let Tables {
            users,
            refresh_tokens,
            ..
        } = D::TABLES;
        // PostgreSQL's trigger on `users` tells every node, in this transaction.
        let mut tx = self.write().await?;
        let generation: Option<i64> = sqlx::query_scalar(&format!(
            "UPDATE {users} SET token_generation = token_generation + 1 WHERE uid = $1 \
             RETURNING token_generation"
        ))
        .bind(user_uid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::backend)?;
        let Some(generation) = generation else {
            return Ok(None);
        };
        sqlx::query(&format!("DELETE FROM {refresh_tokens} WHERE user_uid = $1"))
            .bind(user_uid)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::backend)?;
        tx.commit().await.map_err(StoreError::backend)?;
        parse_generation(generation).map(Some)
    }

    pub(crate) async fn revoke_company_tokens(
        &self,
        company_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        let Tables { companies, .. } = D::TABLES;
        // PostgreSQL's trigger on `companies` tells every node.
        let generation: Option<i64> = sqlx::query_scalar(&format!(
            "UPDATE {companies} SET token_generation = token_generation + 1 WHERE uid = $1 \
             RETURNING token_generation"
        ))
        .bind(company_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::backend)?;
        generation.map(parse_generation).transpose()
    }
}

/// Implements `KeyStore` and `AccountStore` for a public store whose field `sql` is an
/// [`SqlStore`], each method being the shared one. Tokens in braces after the type join the
/// `KeyStore` impl (PostgreSQL's `subscribe`).
macro_rules! impl_store_traits {
    ($store:ty $(, { $($key_store:tt)* })?) => {
        const _: () = {
            use async_trait::async_trait;
            use time::OffsetDateTime;

            use $crate::identity::Status;
            use $crate::key::{KeyId, SecretDigest};
            use $crate::store::{
                AccountStore, Company, CompanyProfile, KeyRecord, KeyStore, KeyUpdate, ListQuery,
                Page, RefreshToken, RefreshUse, StoreError, User, UserProfile,
            };

            #[async_trait]
            impl KeyStore for $store {
                async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
                    self.sql.get(id).await
                }

                async fn insert(&self, record: KeyRecord) -> Result<(), StoreError> {
                    self.sql.insert(record).await
                }

                async fn update(
                    &self,
                    id: KeyId,
                    update: KeyUpdate,
                ) -> Result<Option<KeyRecord>, StoreError> {
                    self.sql.update(id, update).await
                }

                async fn delete(&self, id: KeyId) -> Result<bool, StoreError> {
                    self.sql.delete(id).await
                }

                async fn record_use(
                    &self,
                    uses: &[(KeyId, OffsetDateTime)],
                ) -> Result<(), StoreError> {
                    self.sql.record_use(uses).await
                }

                async fn list(&self, query: &ListQuery) -> Result<Page<KeyRecord>, StoreError> {
                    self.sql.list(query).await
                }

                async fn set_user_status(
                    &self,
                    user_uid: &str,
                    status: Status,
                ) -> Result<(), StoreError> {
                    self.sql.set_user_status(user_uid, status).await
                }

                async fn set_company_status(
                    &self,
                    company_id: &str,
                    status: Status,
                ) -> Result<(), StoreError> {
                    self.sql.set_company_status(company_id, status).await
                }

                $($($key_store)*)?
            }

            #[async_trait]
            impl AccountStore for $store {
                async fn create_company(&self, company: Company) -> Result<(), StoreError> {
                    self.sql.create_company(company).await
                }

                async fn company(&self, uid: &str) -> Result<Option<Company>, StoreError> {
                    self.sql.company(uid).await
                }

                async fn list_companies(
                    &self,
                    offset: u64,
                    limit: u64,
                ) -> Result<Page<Company>, StoreError> {
                    self.sql.list_companies(offset, limit).await
                }

                async fn update_company_profile(
                    &self,
                    uid: &str,
                    profile: CompanyProfile,
                ) -> Result<Option<Company>, StoreError> {
                    self.sql.update_company_profile(uid, profile).await
                }

                async fn create_user(&self, user: User) -> Result<(), StoreError> {
                    self.sql.create_user(user).await
                }

                async fn user(&self, uid: &str) -> Result<Option<User>, StoreError> {
                    self.sql.user(uid).await
                }

                async fn user_by_name(&self, user_name: &str) -> Result<Option<User>, StoreError> {
                    self.sql.user_by_name(user_name).await
                }

                async fn list_users(
                    &self,
                    company_id: Option<&str>,
                    offset: u64,
                    limit: u64,
                ) -> Result<Page<User>, StoreError> {
                    self.sql.list_users(company_id, offset, limit).await
                }

                async fn update_user_profile(
                    &self,
                    uid: &str,
                    profile: UserProfile,
                ) -> Result<Option<User>, StoreError> {
                    self.sql.update_user_profile(uid, profile).await
                }

                async fn put_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError> {
                    self.sql.put_refresh_token(token).await
                }

                async fn take_refresh_token(
                    &self,
                    digest: &SecretDigest,
                ) -> Result<Option<RefreshUse>, StoreError> {
                    self.sql.take_refresh_token(digest).await
                }

                async fn revoke_refresh_family(&self, family: &str) -> Result<u64, StoreError> {
                    self.sql.revoke_refresh_family(family).await
                }

                async fn revoke_user_tokens(
                    &self,
                    user_uid: &str,
                ) -> Result<Option<u64>, StoreError> {
                    self.sql.revoke_user_tokens(user_uid).await
                }

                async fn revoke_company_tokens(
                    &self,
                    company_id: &str,
                ) -> Result<Option<u64>, StoreError> {
                    self.sql.revoke_company_tokens(company_id).await
                }
            }
        };
    };
}

pub(crate) use impl_store_traits;

/// Every key with the current status of its user and company, and the status requests see, as the
/// subquery `r`.
///
/// Owners without a row in `users` or `companies` take their status from `owner_status`, and are
/// `enabled` when they have none there either. The `CASE` is [`Status::effective`] in SQL; statuses
/// compare case-insensitively because [`Status::parse`] does, with `lower()` rather than SQLite's
/// `COLLATE NOCASE`, which would make the whole `CASE` sort case-insensitively.
fn keys<D: Dialect>() -> String {
    let Tables {
        api_keys,
        users,
        companies,
        owner_status,
        ..
    } = D::TABLES;
    format!(
        "(SELECT k.id, k.digest, k.user_uid, k.user_name, k.company_id, k.company_name, \
           k.description, k.description_folded, k.read_only, k.scopes, k.status, k.created, \
           k.status_locked, k.expires, k.deprecated, k.last_used, \
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
         FROM {api_keys} k \
         LEFT JOIN {users} u ON u.uid = k.user_uid \
         LEFT JOIN {owner_status} ou ON ou.kind = 'user' AND ou.id = k.user_uid \
         LEFT JOIN {companies} c ON c.uid = k.company_id \
         LEFT JOIN {owner_status} oc ON oc.kind = 'company' AND oc.id = k.company_id) AS r"
    )
}

/// The record of one key.
fn get_key<D: Dialect>() -> String {
    format!("SELECT r.* FROM {} WHERE r.id = $1", keys::<D>())
}

/// The `WHERE` clause of a listing: [`ListQuery::matches`] in SQL.
fn push_filters<D: Dialect>(sql: &mut Statement, query: &ListQuery) {
    sql.push(" WHERE TRUE");
    if let Some(uid) = &query.user_uid {
        sql.push(" AND r.user_uid = ")
            .push_bind(Value::Text(uid.clone()));
    }
    if let Some(status) = query.status {
        // Statuses are ASCII, which `lower()` folds in both databases.
        sql.push(" AND lower(r.effective_status) = lower(")
            .push_bind(Value::Text(status.as_str().to_owned()))
            .push(")");
    }
    if let Some(needle) = &query.description_contains {
        // Both sides lowercased by Rust's Unicode rules, as `ListQuery::matches` does.
        sql.push(" AND ")
            .push(D::FIND)
            .push("(r.description_folded, ")
            .push_bind(Value::Text(needle.to_lowercase()))
            .push(") > 0");
    }
    if let Some(since) = query.unused_since {
        sql.push(" AND (r.last_used IS NULL OR r.last_used < ")
            .push_bind(Value::Text(format_date(since).unwrap_or_default()))
            .push(")");
    }
}

/// The `ORDER BY` clause of a listing: [`ListQuery::apply`]'s order, ties broken by key id, text
/// by bytes as Rust compares strings.
fn push_order<D: Dialect>(sql: &mut Statement, query: &ListQuery) {
    let field = match query.sort {
        SortField::Id => None,
        SortField::CreationDate => Some("r.created"),
        SortField::Description => Some("r.description"),
        SortField::UserName => Some("r.user_name"),
        SortField::Status => Some("r.effective_status"),
    };
    let direction = if query.descending { " DESC" } else { "" };
    sql.push(" ORDER BY ");
    if let Some(field) = field {
        sql.push(field)
            .push(D::BYTE_ORDER)
            .push(direction)
            .push(", ");
    }
    sql.push("r.id").push(direction);
}

/// A statement put together at run time, as a listing is: its text, with a `$n` placeholder for
/// each value it binds.
struct Statement {
    sql: String,
    values: Vec<Value>,
}

/// A value a [`Statement`] binds.
enum Value {
    Text(String),
    Int(i64),
}

impl Statement {
    fn new(sql: String) -> Self {
        Statement {
            sql,
            values: Vec::new(),
        }
    }

    fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    fn push_bind(&mut self, value: Value) -> &mut Self {
        self.values.push(value);
        self.sql.push_str(&format!("${}", self.values.len()));
        self
    }
}

/// A transaction begun with `statement`, or with a plain `BEGIN` when there is none.
async fn begin<D: Database>(
    pool: &Pool<D>,
    statement: Option<&'static str>,
) -> Result<Transaction<'static, D>, StoreError> {
    match statement {
        Some(statement) => pool.begin_with(statement).await,
        None => pool.begin().await,
    }
    .map_err(StoreError::backend)
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

    fn update_account_status<D: Dialect>(self) -> String {
        let Tables {
            users, companies, ..
        } = D::TABLES;
        match self {
            OwnerKind::User => format!("UPDATE {users} SET status = $1 WHERE uid = $2"),
            OwnerKind::Company => format!("UPDATE {companies} SET status = $1 WHERE uid = $2"),
        }
    }
}

/// How many of `migrations` a database at schema version `current` has had; the rest are to be
/// applied in order. `Err` when the version is one this build does not know.
pub(crate) fn applied_migrations(current: i64, migrations: &[&str]) -> Result<usize, StoreError> {
    let current = usize::try_from(current)
        .map_err(|_| StoreError::corrupt(format!("schema version {current}")))?;
    if current > migrations.len() {
        return Err(StoreError::backend(format!(
            "database schema version {current} is newer than this build knows ({})",
            migrations.len()
        )));
    }
    Ok(current)
}

/// A unique or primary key taken is a conflict; anything else, the backend failing.
fn write_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::conflict(),
        _ => StoreError::backend(e),
    }
}

/// A key id as a 64-bit SQL integer.
fn sql_id(id: KeyId) -> Result<i64, StoreError> {
    // Key ids are below 2^53, so this never fails for a real id.
    i64::try_from(id.get()).map_err(|_| StoreError::backend("key id does not fit a 64-bit integer"))
}

/// A limit or offset as a 64-bit SQL integer (saturating: nothing lies beyond `i64::MAX` rows).
fn sql_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
