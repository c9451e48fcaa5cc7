//! Issuing and managing keys: what to issue, the key handed out once, and the writes that reach
//! the index before they return.

use std::fmt;

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::KeyRing;
use crate::identity::{Status, UserLogin};
use crate::key::{GeneratedKey, KeyError, KeyId};
use crate::scope::{Scope, Scopes};
use crate::store::{KeyRecord, KeyUpdate, ListQuery, Owner, Page, StoreError};

const MAX_DESCRIPTION_CHARS: usize = 128;

impl KeyRing {
    /// Issues a key: generates it, stores the digest, indexes it, and returns the key once.
    pub async fn issue(&self, new: NewKey) -> Result<IssuedKey, IssueError> {
        self.ensure_following();
        {
            validate_description(&new.description)?;
            if new.expires.is_some_and(|at| at <= now()) {
                return Err(IssueError::Expired);
            }
            // Ids are random; a collision with an existing key is retried with a fresh key.
            for _ in 0..4 {
                let key = self.inner.format.generate().map_err(IssueError::Key)?;
                let record = KeyRecord {
                    id: key.id(),
                    digest: key.digest(),
                    owner: new.owner.clone(),
                    description: new.description.clone(),
                    read_only: new.read_only,
                    scopes: new.scopes,
                    status: new.status,
                    user_status: Status::Enabled,
                    company_status: Status::Enabled,
                    created: now(),
                    status_locked: false,
                    expires: new.expires,
                    deprecated: None,
                    last_used: None,
                };
                match self.inner.store.insert(record).await {
                    Ok(()) => {}
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(IssueError::Store(e)),
                }
                // Read back: the store knows the owner's current user and company status.
                let stamp = self.inner.index.stamp(Some(key.id()));
                let stored = self
                    .inner
                    .store
                    .get(key.id())
                    .await
                    .map_err(IssueError::Store)?
                    .ok_or_else(|| IssueError::Store(StoreError::backend("issued key vanished")))?;
                self.inner.index.upsert_since(&stored, stamp);
                return Ok(IssuedKey {
                    login: stored.to_login(),
                    key,
                });
            }
            Err(IssueError::Store(StoreError::conflict()))
        }
    }

    /// Replaces key `id` by a new key with the same owner, description, scopes, read-only flag,
    /// status (and status lock) and expiry. The old key keeps working for `grace`, never past its
    /// own expiry, and its answers carry `Deprecation` and `Sunset` headers meanwhile; a zero
    /// `grace` (a leaked key) deletes it. `Ok(None)` when no such key exists;
    /// [`IssueError::Expired`] when it has expired; [`IssueError::Replaced`] when a rotation
    /// already replaced it (each key is replaced once, so rotations cannot multiply live keys).
    pub async fn rotate(
        &self,
        id: KeyId,
        grace: std::time::Duration,
    ) -> Result<Option<IssuedKey>, IssueError> {
        let Some(old) = self.get(id).await.map_err(IssueError::Store)? else {
            return Ok(None);
        };
        let started = now();
        if old.expires.is_some_and(|at| at <= started) {
            return Err(IssueError::Expired);
        }
        if old.deprecated.is_some() {
            return Err(IssueError::Replaced);
        }
        let mut new = NewKey::new(old.owner.clone())
            .description(old.description.clone())
            .scopes(old.scopes)
            .read_only(old.read_only)
            .status(old.status);
        new.expires = old.expires;
        let issued = self.issue(new).await?;
        let retired = async {
            if old.status_locked {
                // An administrator's lock on the old key's status holds for its successor.
                self.update(issued.id(), KeyUpdate::default().locked(true))
                    .await?;
            }
            if grace.is_zero() {
                self.delete(id).await.map_err(IssueError::Store)?;
            } else {
                let grace = time::Duration::try_from(grace).unwrap_or(time::Duration::MAX);
                self.update(
                    id,
                    KeyUpdate::retire(started, started.saturating_add(grace)),
                )
                .await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = retired {
            // The old key stays as it was: take back the new one, which nobody has seen.
            let _ = self.delete(issued.id()).await;
            return Err(e);
        }
        Ok(Some(issued))
    }

    /// The record of key `id` as the store has it now.
    pub async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.store.get(id).await
    }

    /// Changes a key's status or description; the index reflects it before this returns.
    /// `Ok(None)` when no such key exists.
    pub async fn update(
        &self,
        id: KeyId,
        update: KeyUpdate,
    ) -> Result<Option<KeyRecord>, IssueError> {
        self.ensure_following();
        if let Some(description) = &update.description {
            validate_description(description)?;
        }
        let stamp = self.inner.index.stamp(Some(id));
        let result = self.inner.store.update(id, update).await;
        // Whatever the store answered, the cached copy may be stale now.
        match &result {
            Ok(Some(record)) if record.id == id => self.inner.index.upsert_since(record, stamp),
            _ => self.inner.index.invalidate(id),
        }
        result.map_err(IssueError::Store)
    }

    /// Deletes a key; the index forgets it before this returns. `Ok(true)` when it existed.
    pub async fn delete(&self, id: KeyId) -> Result<bool, StoreError> {
        self.ensure_following();
        let result = self.inner.store.delete(id).await;
        self.inner.index.invalidate(id);
        result
    }

    /// One page of keys.
    pub async fn list(&self, query: &ListQuery) -> Result<Page<KeyRecord>, StoreError> {
        self.inner.store.list(query).await
    }

    /// Sets a user's status; every key of that user follows before this returns.
    pub async fn set_user_status(&self, user_uid: &str, status: Status) -> Result<(), StoreError> {
        self.ensure_following();
        let index = &self.inner.index;
        let stamp = index.owners_stamp();
        let result = self.inner.store.set_user_status(user_uid, status).await;
        match &result {
            Ok(()) => index.set_owner_status_since(Some(user_uid), None, status, stamp),
            Err(_) => index.forget_owner(Some(user_uid), None),
        }
        result
    }

    /// Sets a company's status; every key of its users follows before this returns.
    pub async fn set_company_status(
        &self,
        company_id: &str,
        status: Status,
    ) -> Result<(), StoreError> {
        self.ensure_following();
        let index = &self.inner.index;
        let stamp = index.owners_stamp();
        let result = self
            .inner
            .store
            .set_company_status(company_id, status)
            .await;
        match &result {
            Ok(()) => index.set_owner_status_since(None, Some(company_id), status, stamp),
            Err(_) => index.forget_owner(None, Some(company_id)),
        }
        result
    }
}

/// What to issue: owner, description, scopes, read-only.
#[derive(Clone, Debug)]
#[must_use]
pub struct NewKey {
    owner: Owner,
    description: String,
    scopes: Scopes,
    read_only: bool,
    status: Status,
    expires: Option<OffsetDateTime>,
}

impl NewKey {
    /// A key for `owner`, with no scopes, read-write, enabled.
    pub fn new(owner: Owner) -> Self {
        Self {
            owner,
            description: String::new(),
            scopes: Scopes::EMPTY,
            read_only: false,
            status: Status::Enabled,
            expires: None,
        }
    }

    /// What the key is for (1 to 128 characters, no `<`, `>`, `=`).
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// The scopes the key opens.
    pub fn scopes(mut self, scopes: impl Into<Scopes>) -> Self {
        self.scopes = scopes.into();
        self
    }

    /// Adds one scope.
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scopes.insert(scope);
        self
    }

    /// Whether the key may only read (`GET`, `HEAD`).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// When the key stops opening anything. Default: never. A time that has passed makes
    /// [`KeyRing::issue`] fail with [`IssueError::Expired`].
    pub fn expires(mut self, at: OffsetDateTime) -> Self {
        self.expires = Some(at);
        self
    }

    /// The initial status. Default: enabled.
    pub fn status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }
}

/// A freshly issued key and its identity. The key is shown once: nothing keeps it after this value is
/// dropped (its memory is zeroized).
pub struct IssuedKey {
    key: GeneratedKey,
    login: UserLogin,
}

impl IssuedKey {
    /// The key, to hand to its owner.
    pub fn key(&self) -> &str {
        self.key.expose()
    }

    /// The key id.
    pub fn id(&self) -> KeyId {
        self.key.id()
    }

    /// The identity, with `parameters` empty.
    pub fn login(&self) -> &UserLogin {
        &self.login
    }

    /// The identity with the key in `parameters`: VSPC's creation response. The returned string is
    /// wrapped so it is zeroized when dropped.
    pub fn login_with_key(&self) -> (UserLogin, Zeroizing<String>) {
        let mut login = self.login.clone();
        login.parameters = self.key.expose().to_owned();
        (login, Zeroizing::new(self.key.expose().to_owned()))
    }
}

impl fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKey")
            .field("key", &"<redacted>")
            .field("login", &self.login)
            .finish()
    }
}

/// Why issuing or changing a key failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum IssueError {
    /// The description is empty, longer than 128 characters or has `<`, `>` or `=`.
    InvalidDescription,
    /// Key generation failed.
    Key(KeyError),
    /// The store failed.
    Store(StoreError),
    /// The expiry asked for has passed, or the key to rotate has expired.
    Expired,
    /// The key to rotate was already replaced by a rotation.
    Replaced,
}

impl fmt::Display for IssueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidDescription => f.write_str(
                "description must be 1 to 128 characters and must not contain '<', '>' or '='",
            ),
            Self::Key(e) => write!(f, "key generation failed: {e}"),
            Self::Store(e) => write!(f, "{e}"),
            Self::Expired => f.write_str("the key's expiry has passed"),
            Self::Replaced => f.write_str("the key was already replaced by a rotation"),
        }
    }
}

impl std::error::Error for IssueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(e) => Some(e),
            Self::Key(e) => Some(e),
            Self::InvalidDescription | Self::Expired | Self::Replaced => None,
        }
    }
}

/// Checks a key description: 1 to 128 characters, none of `<`, `>`, `=`, and no control, format
/// (zero-width, bidirectional override) or separator characters.
pub fn validate_description(description: &str) -> Result<(), IssueError> {
    if !crate::text::is_visible(description, MAX_DESCRIPTION_CHARS)
        || description.contains(['<', '>', '='])
    {
        return Err(IssueError::InvalidDescription);
    }
    Ok(())
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::SeqCst;

    use crate::ring::testing::{issue_one, owner, Held};
    use crate::ring::VerifyError;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn issued_key_verifies_and_revocation_is_immediate() {
        let ring = KeyRing::new(MemoryStore::new());
        let issued = ring
            .issue(NewKey::new(owner()).description("ci").scope(Scope::REST))
            .await
            .expect("issued");
        let identity = ring.verify(issued.key()).await.expect("valid");
        assert_eq!(identity.key_id(), Some(issued.id()));
        assert!(identity.has_scope(Scope::REST));
        assert_eq!(identity.login().expect("cached").user_name, "alice");

        ring.update(issued.id(), KeyUpdate::status(Status::Disabled))
            .await
            .expect("updated");
        assert_eq!(
            ring.verify(issued.key()).await.unwrap_err(),
            VerifyError::Invalid
        );
        ring.update(issued.id(), KeyUpdate::status(Status::Enabled))
            .await
            .expect("updated");
        assert!(ring.verify(issued.key()).await.is_ok());
        assert!(ring.delete(issued.id()).await.expect("deleted"));
        assert_eq!(
            ring.verify(issued.key()).await.unwrap_err(),
            VerifyError::Invalid
        );
    }

    #[tokio::test]
    async fn user_and_company_status_disable_all_their_keys() {
        let ring = KeyRing::new(MemoryStore::new());
        let k = issue_one(&ring).await;
        ring.set_user_status("u1", Status::Disabled)
            .await
            .expect("ok");
        assert!(ring.verify(k.key()).await.is_err());
        let record = ring.get(k.id()).await.expect("ok").expect("exists");
        assert_eq!(record.effective_status(), Status::DisabledDueToUser);
        ring.set_user_status("u1", Status::Enabled)
            .await
            .expect("ok");
        assert!(ring.verify(k.key()).await.is_ok());
        ring.set_company_status("c1", Status::Disabled)
            .await
            .expect("ok");
        assert!(ring.verify(k.key()).await.is_err());
        // A key issued while the company is disabled starts disabled too.
        let k2 = ring
            .issue(NewKey::new(owner()).description("y"))
            .await
            .expect("issued");
        assert_eq!(k2.login().status, Status::DisabledDueToCompany);
        assert!(ring.verify(k2.key()).await.is_err());
    }

    #[tokio::test]
    async fn a_key_write_that_returns_after_a_later_one_leaves_no_stale_record() {
        let store = Held::default();
        let ring = KeyRing::new(store.clone());
        let k = issue_one(&ring).await;
        assert!(ring.verify(k.key()).await.is_ok());

        // An enable reaches the store first but returns last, after a disable that followed it.
        store.hold_next_write();
        let late = tokio::spawn({
            let ring = ring.clone();
            let id = k.id();
            async move { ring.update(id, KeyUpdate::status(Status::Enabled)).await }
        });
        store.state.written.notified().await;
        ring.update(k.id(), KeyUpdate::status(Status::Disabled))
            .await
            .expect("updated");
        assert!(ring.verify(k.key()).await.is_err());
        store.state.release.notify_one();
        late.await.expect("task").expect("updated");

        assert_eq!(
            ring.verify(k.key()).await.unwrap_err(),
            VerifyError::Invalid,
            "the store holds the disable; the late enable must not win in the index"
        );
    }

    #[tokio::test]
    async fn an_owner_write_that_returns_after_a_later_one_leaves_no_stale_status() {
        let store = Held::default();
        let ring = KeyRing::new(store.clone());
        let k = issue_one(&ring).await;
        assert!(ring.verify(k.key()).await.is_ok());

        store.hold_next_write();
        let late = tokio::spawn({
            let ring = ring.clone();
            async move { ring.set_user_status("u1", Status::Enabled).await }
        });
        store.state.written.notified().await;
        ring.set_user_status("u1", Status::Disabled)
            .await
            .expect("set");
        store.state.release.notify_one();
        late.await.expect("task").expect("set");

        assert_eq!(
            ring.verify(k.key()).await.unwrap_err(),
            VerifyError::Invalid,
            "the store holds the disable; the late enable must not win in the index"
        );
        assert_eq!(
            ring.get(k.id()).await.expect("read").map(|r| r.user_status),
            Some(Status::Disabled)
        );
    }

    #[tokio::test]
    async fn a_failed_owner_write_leaves_no_guess_in_the_index() {
        let store = Held::default();
        let ring = KeyRing::new(store.clone());
        let k = issue_one(&ring).await;
        ring.set_user_status("u1", Status::Disabled)
            .await
            .expect("set");
        store.state.fail_owner_writes.store(true, SeqCst);
        assert!(ring.set_user_status("u1", Status::Enabled).await.is_err());
        assert_eq!(
            ring.verify(k.key()).await.unwrap_err(),
            VerifyError::Invalid,
            "the store still says disabled"
        );
    }

    #[test]
    fn descriptions_are_checked() {
        assert!(validate_description("Portal Operator API Key").is_ok());
        assert!(validate_description(&"é".repeat(128)).is_ok());
        for bad in [
            "",
            "  ",
            "a<b",
            "a>b",
            "a=b",
            "line\nbreak",
            "gpj.\u{202E}exe",
            "zero\u{200B}width",
            "\u{2066}isolate",
        ] {
            assert!(validate_description(bad).is_err(), "{bad:?}");
        }
        assert!(validate_description(&"x".repeat(129)).is_err());
    }

    #[test]
    fn issued_key_debug_hides_the_key() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _runtime = rt.enter();
        let ring = KeyRing::new(MemoryStore::new());
        let issued = rt
            .block_on(ring.issue(NewKey::new(owner()).description("x")))
            .expect("issued");
        let text = format!("{issued:?} {ring:?}");
        assert!(!text.contains(issued.key()));
        assert!(!text.contains(&issued.key()[4..30]));
    }
}
