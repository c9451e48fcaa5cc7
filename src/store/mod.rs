//! Where key records live: the [`KeyStore`] trait and its backends.
//!
//! A store keeps [`KeyRecord`]s: the key id, `SHA-256` of the secret, and the identity fields. It never
//! sees a key. The [`KeyRing`](crate::KeyRing) puts an in-process index in front of any store, so
//! stores are asked only on an index miss and on management calls.

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use futures_core::Stream;
use time::OffsetDateTime;

use crate::identity::{Status, UserLogin, API_KEY_PROVIDER};
use crate::key::{KeyId, SecretDigest};
use crate::scope::Scopes;

mod accounts;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
mod codec;
mod memory;
pub(crate) mod notify;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisStore;
pub use accounts::{
    AccountStore, Company, CompanyProfile, RefreshToken, RefreshUse, Role, User, UserProfile,
};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteStore;

/// The user a key belongs to, with their company.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// User UID.
    pub user_uid: String,
    /// User name.
    pub user_name: String,
    /// Company UID.
    pub company_id: String,
    /// Company name.
    pub company_name: String,
}

/// One key as a store keeps it: no key, only the digest of its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key id.
    pub id: KeyId,
    /// `SHA-256` of the secret.
    pub digest: SecretDigest,
    /// Who owns the key.
    pub owner: Owner,
    /// What the key was issued for.
    pub description: String,
    /// Whether the key may only read.
    pub read_only: bool,
    /// The scopes the key opens.
    pub scopes: Scopes,
    /// The key's own status.
    pub status: Status,
    /// The owning user's status.
    pub user_status: Status,
    /// The owning company's status.
    pub company_status: Status,
    /// When the key was issued.
    pub created: OffsetDateTime,
    /// Whether the key's status was last set by someone with more rights than its owner (an
    /// administrator disabling another user's key): while set, the owner cannot change the status.
    pub status_locked: bool,
    /// When the key stops opening anything; `None` for a key that lives until it is disabled or
    /// deleted.
    pub expires: Option<OffsetDateTime>,
    /// When the key was replaced by a rotation: it lives on until [`KeyRecord::expires`] (the end of
    /// its grace period) and its answers carry a `Deprecation` header.
    pub deprecated: Option<OffsetDateTime>,
    /// When a request last used the key, as written by the ring's coalesced batches; `None` for a key
    /// never used since it was issued.
    pub last_used: Option<OffsetDateTime>,
}

impl PartialEq for SecretDigest {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for SecretDigest {}

impl KeyRecord {
    /// The status requests see: the key's own, else the company's, else the user's.
    pub fn effective_status(&self) -> Status {
        Status::effective(self.status, self.user_status, self.company_status)
    }

    /// The VSPC identity of this record, with `parameters` empty.
    pub fn to_login(&self) -> UserLogin {
        UserLogin {
            id: self.id.get(),
            user_uid: self.owner.user_uid.clone(),
            user_name: self.owner.user_name.clone(),
            company_id: self.owner.company_id.clone(),
            company_name: self.owner.company_name.clone(),
            identity_provider_name: API_KEY_PROVIDER.to_owned(),
            description: self.description.clone(),
            is_read_access_only: self.read_only,
            scopes: self.scopes,
            status: self.effective_status(),
            parameters: String::new(),
            identifier_in_provider: self.id.get(),
            creation_date: self.created,
            expiration_date: self.expires,
            deprecation_date: self.deprecated,
            last_used_date: self.last_used,
        }
    }
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("digest", &self.digest)
            .field("owner", &self.owner)
            .field("description", &self.description)
            .field("read_only", &self.read_only)
            .field("scopes", &self.scopes)
            .field("status", &self.status)
            .field("user_status", &self.user_status)
            .field("company_status", &self.company_status)
            .field("created", &self.created)
            .field("status_locked", &self.status_locked)
            .field("expires", &self.expires)
            .field("deprecated", &self.deprecated)
            .field("last_used", &self.last_used)
            .finish()
    }
}

/// A change to one key's mutable fields. `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyUpdate {
    /// New status of the key itself.
    pub status: Option<Status>,
    /// New description.
    pub description: Option<String>,
    /// New [`KeyRecord::status_locked`].
    pub status_locked: Option<bool>,
    /// Retires the key: sets [`KeyRecord::deprecated`] to the first time and [`KeyRecord::expires`]
    /// to the second (a store keeps an earlier expiry when the key already had one).
    pub retire: Option<(OffsetDateTime, OffsetDateTime)>,
}

impl KeyUpdate {
    /// An update of the status alone.
    pub fn status(status: Status) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }

    /// An update of the description alone.
    pub fn description(description: impl Into<String>) -> Self {
        Self {
            description: Some(description.into()),
            ..Self::default()
        }
    }

    /// An update that retires the key at `now`, to expire at `until` or at its own expiry, whichever
    /// comes first: what a rotation does to the key it replaces.
    pub fn retire(now: OffsetDateTime, until: OffsetDateTime) -> Self {
        Self {
            retire: Some((now, until)),
            ..Self::default()
        }
    }

    /// Applies this update to `record` in memory (stores without a query language use this).
    pub fn apply_to(&self, record: &mut KeyRecord) {
        if let Some(status) = self.status {
            record.status = status;
        }
        if let Some(description) = &self.description {
            record.description.clone_from(description);
        }
        if let Some(locked) = self.status_locked {
            record.status_locked = locked;
        }
        if let Some((now, until)) = self.retire {
            record.deprecated = Some(record.deprecated.map_or(now, |d| d.min(now)));
            record.expires = Some(record.expires.map_or(until, |e| e.min(until)));
        }
    }

    /// Also sets [`KeyRecord::status_locked`].
    #[must_use]
    pub fn locked(mut self, locked: bool) -> Self {
        self.status_locked = Some(locked);
        self
    }
}

/// Field to sort a listing by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SortField {
    /// Key id (the default).
    #[default]
    Id,
    /// Creation time.
    CreationDate,
    /// Description.
    Description,
    /// Owner's user name.
    UserName,
    /// Effective status.
    Status,
}

/// What [`KeyStore::list`] returns and in which order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListQuery {
    /// Only keys of this user.
    pub user_uid: Option<String>,
    /// Only keys whose effective status is this.
    pub status: Option<Status>,
    /// Only keys whose description contains this (case-insensitive).
    pub description_contains: Option<String>,
    /// Only keys not used since this time: never used, or last used before it.
    pub unused_since: Option<OffsetDateTime>,
    /// Sort field.
    pub sort: SortField,
    /// Sort descending.
    pub descending: bool,
    /// Records to skip.
    pub offset: u64,
    /// Most records to return.
    pub limit: u64,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            user_uid: None,
            status: None,
            description_contains: None,
            unused_since: None,
            sort: SortField::Id,
            descending: false,
            offset: 0,
            limit: 100,
        }
    }
}

impl ListQuery {
    /// Only the keys of user `user_uid`.
    #[must_use]
    pub fn of_user(mut self, user_uid: impl Into<String>) -> Self {
        self.user_uid = Some(user_uid.into());
        self
    }

    /// Only the keys not used since `since`: never used, or last used before it.
    #[must_use]
    pub fn unused_since(mut self, since: OffsetDateTime) -> Self {
        self.unused_since = Some(since);
        self
    }

    /// Skips the first `offset` records.
    #[must_use]
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// Returns `limit` records at most.
    #[must_use]
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    /// Whether `record` passes the filters (stores without a query language use this).
    pub fn matches(&self, record: &KeyRecord) -> bool {
        self.user_uid
            .as_deref()
            .is_none_or(|uid| record.owner.user_uid == uid)
            && self
                .status
                .is_none_or(|status| record.effective_status() == status)
            && self.description_contains.as_deref().is_none_or(|needle| {
                record
                    .description
                    .to_lowercase()
                    .contains(&needle.to_lowercase())
            })
            && self
                .unused_since
                .is_none_or(|since| record.last_used.is_none_or(|used| used < since))
    }

    /// Sorts and pages `records` in memory (stores without a query language use this).
    pub fn apply(&self, mut records: Vec<KeyRecord>) -> Page<KeyRecord> {
        records.retain(|r| self.matches(r));
        records.sort_by(|a, b| {
            let order = match self.sort {
                SortField::Id => a.id.cmp(&b.id),
                SortField::CreationDate => a.created.cmp(&b.created).then(a.id.cmp(&b.id)),
                SortField::Description => a.description.cmp(&b.description).then(a.id.cmp(&b.id)),
                SortField::UserName => a
                    .owner
                    .user_name
                    .cmp(&b.owner.user_name)
                    .then(a.id.cmp(&b.id)),
                SortField::Status => a
                    .effective_status()
                    .as_str()
                    .cmp(b.effective_status().as_str())
                    .then(a.id.cmp(&b.id)),
            };
            if self.descending {
                order.reverse()
            } else {
                order
            }
        });
        let total = records.len() as u64;
        let items: Vec<KeyRecord> = records
            .into_iter()
            .skip(usize::try_from(self.offset).unwrap_or(usize::MAX))
            .take(usize::try_from(self.limit).unwrap_or(usize::MAX))
            .collect();
        Page { items, total }
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The records on this page.
    pub items: Vec<T>,
    /// How many records matched in all.
    pub total: u64,
}

/// A change made to a store, as other nodes hear of it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeEvent {
    /// A key was created or its fields changed: re-read it.
    Key(KeyId),
    /// A key was deleted.
    KeyDeleted(KeyId),
    /// A user's status changed.
    User {
        /// The user.
        user_uid: String,
        /// The new status.
        status: Status,
    },
    /// A company's status changed.
    Company {
        /// The company.
        company_id: String,
        /// The new status.
        status: Status,
    },
    /// Changes may have been lost (the notification channel dropped): forget everything cached.
    Resync,
}

/// Stream of [`ChangeEvent`]s from [`KeyStore::subscribe`].
pub type ChangeStream = Pin<Box<dyn Stream<Item = ChangeEvent> + Send>>;

/// Why a store call failed. Opaque: the layer turns any of these into a 503 and never lets the request
/// through.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreErrorKind {
    Backend,
    Timeout,
    Corrupt,
    Conflict,
    Overloaded,
}

impl StoreError {
    /// The backend failed (connection, I/O, query).
    pub fn backend(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            kind: StoreErrorKind::Backend,
            source: Some(source.into()),
        }
    }

    /// A record could not be decoded.
    pub fn corrupt(what: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            kind: StoreErrorKind::Corrupt,
            source: Some(what.into()),
        }
    }

    /// A key with that id already exists.
    pub fn conflict() -> Self {
        Self {
            kind: StoreErrorKind::Conflict,
            source: None,
        }
    }

    pub(crate) fn timeout() -> Self {
        Self {
            kind: StoreErrorKind::Timeout,
            source: None,
        }
    }

    pub(crate) fn overloaded() -> Self {
        Self {
            kind: StoreErrorKind::Overloaded,
            source: None,
        }
    }

    /// What kind of failure this is, to be handed to others waiting for the same answer.
    pub(crate) fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// A failure of `kind`, for those who waited on a lookup that failed (the first waiter keeps the
    /// cause).
    pub(crate) fn of_kind(kind: StoreErrorKind) -> Self {
        Self { kind, source: None }
    }

    /// Whether the call timed out.
    pub fn is_timeout(&self) -> bool {
        self.kind == StoreErrorKind::Timeout
    }

    /// Whether an id or name was already taken.
    pub fn is_conflict(&self) -> bool {
        self.kind == StoreErrorKind::Conflict
    }

    /// Whether a record could not be decoded.
    pub fn is_corrupt(&self) -> bool {
        self.kind == StoreErrorKind::Corrupt
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            StoreErrorKind::Backend => "key store backend failed",
            StoreErrorKind::Timeout => "key store lookup timed out",
            StoreErrorKind::Corrupt => "key store record is corrupt",
            StoreErrorKind::Conflict => "key id already exists",
            StoreErrorKind::Overloaded => "too many key store lookups in flight",
        })?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A place that keeps key records.
///
/// Lookups are by key id only; the secret never reaches a store. Implementations must be safe to share
/// between tasks. Each method's `Err` means the store could not answer: the layer fails closed (503).
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The record of key `id`: `Ok(None)` when no such key exists.
    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// Adds a new record. `Err` with [`StoreError::conflict`] when the id is taken.
    async fn insert(&self, record: KeyRecord) -> Result<(), StoreError>;

    /// Changes a key's status or description: `Ok(Some(record))` with the record as it now is,
    /// `Ok(None)` when no such key exists.
    async fn update(&self, id: KeyId, update: KeyUpdate) -> Result<Option<KeyRecord>, StoreError>;

    /// Deletes a key: `Ok(true)` when it existed.
    async fn delete(&self, id: KeyId) -> Result<bool, StoreError>;

    /// One page of the records that match `query`, with the total count.
    async fn list(&self, query: &ListQuery) -> Result<Page<KeyRecord>, StoreError>;

    /// Records when keys were last used: for each `(id, at)`, sets [`KeyRecord::last_used`] to `at`
    /// unless it is already later. Keys that no longer exist are skipped. Not a change other nodes
    /// need to hear of: it must not reach [`KeyStore::subscribe`].
    ///
    /// The ring calls this off the request path, at most once per key per interval. The default
    /// keeps nothing, for stores that do not track use; every store of this crate keeps it.
    async fn record_use(&self, uses: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        let _ = uses;
        Ok(())
    }

    /// Sets the status of user `user_uid` as seen by all their keys (present and future).
    async fn set_user_status(&self, user_uid: &str, status: Status) -> Result<(), StoreError>;

    /// Sets the status of company `company_id` as seen by all its users' keys.
    async fn set_company_status(&self, company_id: &str, status: Status) -> Result<(), StoreError>;

    /// Changes made by other processes. `None` for stores that only this process writes; the stream
    /// yields [`ChangeEvent::Resync`] whenever notifications may have been lost.
    fn subscribe(&self) -> Option<ChangeStream> {
        None
    }
}

#[async_trait]
impl<T: KeyStore + ?Sized> KeyStore for std::sync::Arc<T> {
    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        (**self).get(id).await
    }
    async fn insert(&self, record: KeyRecord) -> Result<(), StoreError> {
        (**self).insert(record).await
    }
    async fn update(&self, id: KeyId, update: KeyUpdate) -> Result<Option<KeyRecord>, StoreError> {
        (**self).update(id, update).await
    }
    async fn delete(&self, id: KeyId) -> Result<bool, StoreError> {
        (**self).delete(id).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Page<KeyRecord>, StoreError> {
        (**self).list(query).await
    }
    async fn record_use(&self, uses: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        (**self).record_use(uses).await
    }
    async fn set_user_status(&self, user_uid: &str, status: Status) -> Result<(), StoreError> {
        (**self).set_user_status(user_uid, status).await
    }
    async fn set_company_status(&self, company_id: &str, status: Status) -> Result<(), StoreError> {
        (**self).set_company_status(company_id, status).await
    }
    fn subscribe(&self) -> Option<ChangeStream> {
        (**self).subscribe()
    }
}
