//! What the SQL backends (SQLite, PostgreSQL) share beyond their dialects: how sqlx errors become
//! store errors, how a column is read, and how ids and counts become SQL integers.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::StoreError;
use crate::key::KeyId;

/// A unique or primary key taken is a conflict; anything else, the backend failing.
pub(crate) fn write_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::conflict(),
        _ => StoreError::backend(e),
    }
}

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

/// A key id as a 64-bit SQL integer.
pub(crate) fn sql_id(id: KeyId) -> Result<i64, StoreError> {
    // Key ids are below 2^53, so this never fails for a real id.
    i64::try_from(id.get()).map_err(|_| StoreError::backend("key id does not fit a 64-bit integer"))
}

/// A limit or offset as a 64-bit SQL integer (saturating: nothing lies beyond `i64::MAX` rows).
pub(crate) fn sql_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
