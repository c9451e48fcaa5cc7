//! What the SQL backends (SQLite, PostgreSQL) share beyond their dialects: how sqlx errors become
//! store errors, how ids and counts become SQL integers, and how a listing is ordered.

use sqlx::{Database, QueryBuilder};

use super::{ListQuery, SortField, StoreError};
use crate::key::KeyId;

mod rows;

pub(crate) use rows::{
    column, decode_company, decode_key, decode_refresh_token, decode_user, FlagColumn,
    COMPANY_COLUMNS, REFRESH_COLUMNS, USER_COLUMNS,
};

/// A unique or primary key taken is a conflict; anything else, the backend failing.
pub(crate) fn write_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::conflict(),
        _ => StoreError::backend(e),
    }
}

/// A key id as a 64-bit SQL integer.
pub(crate) fn sql_id(id: KeyId) -> Result<i64, StoreError> {
    // Key ids are below 2^53, so this never fails for a real id.
    i64::try_from(id.get()).map_err(|_| StoreError::backend("key id does not fit a 64-bit integer"))
}

/// A limit or offset as a 64-bit SQL integer (saturating: nothing lies beyond `i64::MAX` rows).
pub(crate) fn sql_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The `ORDER BY` clause of a listing: [`ListQuery::apply`]'s order, ties broken by key id.
/// `collate` follows each text column so that it sorts by bytes, as Rust compares strings, whatever
/// the database's locale (empty where that is already the default).
pub(crate) fn push_order<DB: Database>(
    sql: &mut QueryBuilder<'_, DB>,
    query: &ListQuery,
    collate: &str,
) {
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
        sql.push(field).push(collate).push(direction).push(", ");
    }
    sql.push("r.id").push(direction);
}
