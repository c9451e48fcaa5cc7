//! What SQLite and PostgreSQL do differently, as far as the shared SQL store is concerned: where the
//! tables are, how text is ordered and searched, how writers are kept apart, and how sqlx reports
//! rows changed and reads a flag.

use sqlx::Database;

use crate::store::StoreError;

/// The store's tables, named as statements must name them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tables {
    pub(crate) api_keys: &'static str,
    pub(crate) users: &'static str,
    pub(crate) companies: &'static str,
    pub(crate) owner_status: &'static str,
    pub(crate) refresh_tokens: &'static str,
}

/// A database the SQL store runs on: the fragments of its statements that are not the same in
/// both, and how it reads what a statement did and a flag. Everything else is written once: the
/// statements use `$n` placeholders, which sqlx binds to the `n`-th value on either database, and
/// `TRUE`/`FALSE`, which SQLite reads as 1 and 0.
pub(crate) trait Dialect: Database {
    /// Where the tables are.
    const TABLES: Tables;

    /// Follows a text column that must compare by bytes, as Rust compares strings, whatever the
    /// database's locale; empty where that is already the default.
    const BYTE_ORDER: &'static str;

    /// The function that finds text in text: `FIND(haystack, needle)` is the 1-based position of the
    /// first match, 0 when there is none.
    const FIND: &'static str;

    /// The statement that begins a transaction that writes; `None` for a plain `BEGIN`.
    const BEGIN_WRITE: Option<&'static str>;

    /// The statement that begins a transaction whose reads all see one snapshot; `None` for a plain
    /// `BEGIN`.
    const BEGIN_SNAPSHOT: Option<&'static str>;

    /// Follows the `SELECT` of a row the transaction is about to change, so that no other
    /// transaction reads it for the same purpose first; empty where a writing transaction already
    /// shuts out every other writer.
    const FOR_UPDATE: &'static str;

    /// The statement that locks one owner until the transaction ends, bound to
    /// `tower_api_key:<kind>:<id>`; `None` where a writing transaction already shuts out every other
    /// writer.
    const OWNER_LOCK: Option<&'static str>;

    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// The yes/no column `name` of `row`; `Err` (corrupt) when it holds anything else.
    fn flag(row: &Self::Row, name: &str) -> Result<bool, StoreError>;
}
