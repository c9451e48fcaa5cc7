//! How a row of the schema SQLite and PostgreSQL share is read: a column at a time, a record at a
//! time, and what cannot be read is a corrupt record.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::Dialect;
use crate::key::KeyId;
use crate::store::codec::{
    in_key, parse_date, parse_digest, parse_generation, parse_profile, parse_scopes, parse_status,
};
use crate::store::{Company, KeyRecord, Owner, RefreshToken, Role, StoreError, User};

/// One column of `row`; a value of the wrong type (or `NULL`) is a corrupt record.
pub(crate) fn column<'r, T, R>(row: &'r R, name: &str) -> Result<T, StoreError>
where
    R: Row,
    for<'n> &'n str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(name).map_err(|e| match e {
        sqlx::Error::ColumnDecode { .. } => StoreError::corrupt(e),
        e => StoreError::backend(e),
    })
}

/// A row of the schema the SQL backends share. Columns are read alike, except a flag, which SQLite
/// keeps as the integer 0 or 1 and PostgreSQL as a `BOOLEAN`.
pub(crate) trait SchemaRow {
    /// A text column.
    fn text(&self, name: &str) -> Result<String, StoreError>;
    /// A 64-bit integer column.
    fn int(&self, name: &str) -> Result<i64, StoreError>;
    /// A binary column.
    fn bytes(&self, name: &str) -> Result<Vec<u8>, StoreError>;
    /// A yes/no column.
    fn flag(&self, name: &str) -> Result<bool, StoreError>;
    /// A text column that may be `NULL`.
    fn optional_text(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// A date column that may be `NULL`.
    fn optional_date(&self, name: &str) -> Result<Option<time::OffsetDateTime>, StoreError> {
        self.optional_text(name)?
            .map(|text| parse_date(&text))
            .transpose()
    }
}

impl<R> SchemaRow for R
where
    R: Row,
    R::Database: Dialect<Row = R>,
    for<'n> &'n str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, name: &str) -> Result<String, StoreError> {
        column(self, name)
    }
    fn int(&self, name: &str) -> Result<i64, StoreError> {
        column(self, name)
    }
    fn bytes(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        column(self, name)
    }
    fn flag(&self, name: &str) -> Result<bool, StoreError> {
        R::Database::flag(self, name)
    }
    fn optional_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        column(self, name)
    }
}

pub(crate) fn decode_key(row: &impl SchemaRow) -> Result<KeyRecord, StoreError> {
    let raw_id = row.int("id")?;
    let id = u64::try_from(raw_id)
        .ok()
        .and_then(KeyId::new)
        .ok_or_else(|| StoreError::corrupt(format!("key id {raw_id} out of range")))?;
    // Name the key in any error below, so the bad row can be found.
    let decode = || -> Result<KeyRecord, StoreError> {
        Ok(KeyRecord {
            id,
            digest: parse_digest(&row.bytes("digest")?)?,
            owner: Owner {
                user_uid: row.text("user_uid")?,
                user_name: row.text("user_name")?,
                company_id: row.text("company_id")?,
                company_name: row.text("company_name")?,
            },
            description: row.text("description")?,
            read_only: row.flag("read_only")?,
            scopes: parse_scopes(&row.text("scopes")?)?,
            status: parse_status(&row.text("status")?)?,
            user_status: parse_status(&row.text("user_status")?)?,
            company_status: parse_status(&row.text("company_status")?)?,
            created: parse_date(&row.text("created")?)?,
            status_locked: row.flag("status_locked")?,
            expires: row.optional_date("expires")?,
            deprecated: row.optional_date("deprecated")?,
            last_used: row.optional_date("last_used")?,
        })
    };
    decode().map_err(|e| in_key(id, e))
}

pub(crate) fn decode_company(row: &impl SchemaRow) -> Result<Company, StoreError> {
    Ok(Company {
        uid: row.text("uid")?,
        name: row.text("name")?,
        status: parse_status(&row.text("status")?)?,
        profile: parse_profile(&row.text("profile")?)?,
        token_generation: parse_generation(row.int("token_generation")?)?,
    })
}

/// The columns [`decode_company`] reads.
pub(crate) const COMPANY_COLUMNS: &str = "uid, name, status, profile, token_generation";

/// The columns [`decode_user`] reads.
pub(crate) const USER_COLUMNS: &str =
    "uid, user_name, password_hash, role, company_id, status, created, profile, token_generation";

/// The columns [`decode_refresh_token`] reads.
pub(crate) const REFRESH_COLUMNS: &str =
    "digest, user_uid, read_only, expires, family, user_generation, company_generation";

pub(crate) fn decode_user(row: &impl SchemaRow) -> Result<User, StoreError> {
    let role = row.text("role")?;
    Ok(User {
        uid: row.text("uid")?,
        user_name: row.text("user_name")?,
        password_hash: row.text("password_hash")?,
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::corrupt(format!("unknown role `{role}`")))?,
        company_id: row.text("company_id")?,
        status: parse_status(&row.text("status")?)?,
        created: parse_date(&row.text("created")?)?,
        profile: parse_profile(&row.text("profile")?)?,
        token_generation: parse_generation(row.int("token_generation")?)?,
    })
}

pub(crate) fn decode_refresh_token(row: &impl SchemaRow) -> Result<RefreshToken, StoreError> {
    Ok(RefreshToken {
        digest: parse_digest(&row.bytes("digest")?)?,
        user_uid: row.text("user_uid")?,
        read_only: row.flag("read_only")?,
        expires: parse_date(&row.text("expires")?)?,
        family: row.text("family")?,
        user_generation: parse_generation(row.int("user_generation")?)?,
        company_generation: parse_generation(row.int("company_generation")?)?,
    })
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use time::macros::datetime;

    use crate::identity::Status;
    use crate::key::SecretDigest;
    use crate::store::sql::tests::{alice_key, exec, id, memory, user};
    use crate::store::{AccountStore, Company, KeyStore, ListQuery, RefreshToken};

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
}
