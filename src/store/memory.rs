//! [`MemoryStore`]: the reference store, in process memory; every backend must answer as it does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::notify::{change_channel, ChangeSender};
use super::{
    AccountStore, ChangeEvent, ChangeStream, Company, CompanyProfile, KeyRecord, KeyStore,
    KeyUpdate, ListQuery, Page, RefreshToken, RefreshUse, StoreError, User, UserProfile,
};
use crate::identity::Status;
use crate::key::KeyId;

/// A store held in this process's memory: for tests, single-node services and as a reference for
/// other backends. Cloning shares the same records.
///
/// Every [`KeyRing`](crate::KeyRing) over the same store (or a clone of it) hears of the changes the
/// others make through [`KeyStore::subscribe`], as rings on different nodes do over a shared
/// database; a ring built over a `MemoryStore` therefore needs a tokio runtime.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    keys: BTreeMap<KeyId, KeyRecord>,
    // Status of users and companies, also of those that only exist as key owners.
    users: HashMap<String, Status>,
    companies: HashMap<String, Status>,
    accounts: BTreeMap<String, User>,
    company_records: BTreeMap<String, Company>,
    // Each token with whether it was used.
    refresh_tokens: HashMap<[u8; 32], (RefreshToken, bool)>,
    subscribers: Vec<ChangeSender>,
}

impl Inner {
    /// The record with the current user and company status filled in.
    fn resolve(&self, record: &KeyRecord) -> KeyRecord {
        let mut record = record.clone();
        record.user_status = self.user_status(&record.owner.user_uid);
        record.company_status = self.company_status(&record.owner.company_id);
        record
    }

    fn user_status(&self, uid: &str) -> Status {
        self.users.get(uid).copied().unwrap_or(Status::Enabled)
    }

    fn company_status(&self, id: &str) -> Status {
        self.companies.get(id).copied().unwrap_or(Status::Enabled)
    }

    /// Tells every subscriber, under the same lock as the write, so they hear changes in write order.
    fn notify(&mut self, event: ChangeEvent) {
        self.subscribers.retain(|s| s.send(event.clone()));
    }
}

fn page<T: Clone>(items: Vec<T>, offset: u64, limit: u64) -> Page<T> {
    let total = items.len() as u64;
    let items = items
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .collect();
    Page { items, total }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written record: every write is one insert.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.len())
            .finish()
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let inner = self.lock();
        Ok(inner.keys.get(&id).map(|r| inner.resolve(r)))
    }

    async fn insert(&self, record: KeyRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.keys.contains_key(&record.id) {
            return Err(StoreError::conflict());
        }
        let id = record.id;
        inner.keys.insert(id, record);
        inner.notify(ChangeEvent::Key(id));
        Ok(())
    }

    async fn update(&self, id: KeyId, update: KeyUpdate) -> Result<Option<KeyRecord>, StoreError> {
        let mut inner = self.lock();
        let Some(record) = inner.keys.get_mut(&id) else {
            return Ok(None);
        };
        update.apply_to(record);
        let record = record.clone();
        inner.notify(ChangeEvent::Key(id));
        Ok(Some(inner.resolve(&record)))
    }

    async fn record_use(&self, uses: &[(KeyId, OffsetDateTime)]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for &(id, at) in uses {
            if let Some(record) = inner.keys.get_mut(&id) {
                record.last_used = Some(record.last_used.map_or(at, |used| used.max(at)));
            }
        }
        Ok(())
    }

    async fn delete(&self, id: KeyId) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let existed = inner.keys.remove(&id).is_some();
        if existed {
            inner.notify(ChangeEvent::KeyDeleted(id));
        }
        Ok(existed)
    }

    async fn list(&self, query: &ListQuery) -> Result<Page<KeyRecord>, StoreError> {
        let inner = self.lock();
        let records = inner.keys.values().map(|r| inner.resolve(r)).collect();
        Ok(query.apply(records))
    }

    async fn set_user_status(&self, user_uid: &str, status: Status) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.users.insert(user_uid.to_owned(), status);
        inner.notify(ChangeEvent::User {
            user_uid: user_uid.to_owned(),
            status,
        });
        Ok(())
    }

    async fn set_company_status(&self, company_id: &str, status: Status) -> Result<(), StoreError> {
        let mut inner = self.lock();
        inner.companies.insert(company_id.to_owned(), status);
        inner.notify(ChangeEvent::Company {
            company_id: company_id.to_owned(),
            status,
        });
        Ok(())
    }

    fn subscribe(&self) -> Option<ChangeStream> {
        let (sender, stream) = change_channel();
        self.lock().subscribers.push(sender);
        Some(stream)
    }
}

#[async_trait]
impl AccountStore for MemoryStore {
    async fn create_company(&self, company: Company) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let taken = inner.company_records.contains_key(&company.uid)
            || inner
                .company_records
                .values()
                .any(|c| c.name == company.name);
        if taken {
            return Err(StoreError::conflict());
        }
        inner.companies.insert(company.uid.clone(), company.status);
        // The company's own status now applies to its users' keys.
        inner.notify(ChangeEvent::Company {
            company_id: company.uid.clone(),
            status: company.status,
        });
        inner.company_records.insert(company.uid.clone(), company);
        Ok(())
    }

    async fn company(&self, uid: &str) -> Result<Option<Company>, StoreError> {
        let inner = self.lock();
        Ok(inner.company_records.get(uid).map(|c| Company {
            status: inner.company_status(uid),
            ..c.clone()
        }))
    }

    async fn list_companies(&self, offset: u64, limit: u64) -> Result<Page<Company>, StoreError> {
        let inner = self.lock();
        let mut all: Vec<Company> = inner
            .company_records
            .values()
            .map(|c| Company {
                status: inner.company_status(&c.uid),
                ..c.clone()
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name).then(a.uid.cmp(&b.uid)));
        Ok(page(all, offset, limit))
    }

    async fn update_company_profile(
        &self,
        uid: &str,
        profile: CompanyProfile,
    ) -> Result<Option<Company>, StoreError> {
        let mut inner = self.lock();
        let Some(company) = inner.company_records.get_mut(uid) else {
            return Ok(None);
        };
        company.profile = profile;
        let company = company.clone();
        Ok(Some(Company {
            status: inner.company_status(uid),
            ..company
        }))
    }

    async fn create_user(&self, user: User) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let taken = inner.accounts.contains_key(&user.uid)
            || inner
                .accounts
                .values()
                .any(|u| u.user_name == user.user_name);
        if taken {
            return Err(StoreError::conflict());
        }
        inner.users.insert(user.uid.clone(), user.status);
        // The account's own status now applies to the user's keys.
        inner.notify(ChangeEvent::User {
            user_uid: user.uid.clone(),
            status: user.status,
        });
        inner.accounts.insert(user.uid.clone(), user);
        Ok(())
    }

    async fn user(&self, uid: &str) -> Result<Option<User>, StoreError> {
        let inner = self.lock();
        Ok(inner.accounts.get(uid).map(|u| User {
            status: inner.user_status(uid),
            ..u.clone()
        }))
    }

    async fn user_by_name(&self, user_name: &str) -> Result<Option<User>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .accounts
            .values()
            .find(|u| u.user_name == user_name)
            .map(|u| User {
                status: inner.user_status(&u.uid),
                ..u.clone()
            }))
    }

    async fn list_users(
        &self,
        company_id: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<Page<User>, StoreError> {
        let inner = self.lock();
        let mut all: Vec<User> = inner
            .accounts
            .values()
            .filter(|u| company_id.is_none_or(|id| u.company_id == id))
            .map(|u| User {
                status: inner.user_status(&u.uid),
                ..u.clone()
            })
            .collect();
        all.sort_by(|a, b| a.user_name.cmp(&b.user_name).then(a.uid.cmp(&b.uid)));
        Ok(page(all, offset, limit))
    }

    async fn update_user_profile(
        &self,
        uid: &str,
        profile: UserProfile,
    ) -> Result<Option<User>, StoreError> {
        let mut inner = self.lock();
        let Some(user) = inner.accounts.get_mut(uid) else {
            return Ok(None);
        };
        user.profile = profile;
        let user = user.clone();
        Ok(Some(User {
            status: inner.user_status(uid),
            ..user
        }))
    }

    async fn put_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError> {
        let mut inner = self.lock();
        // Expired tokens, used or not, are of no more use, not even to recognise a replay.
        let now = time::OffsetDateTime::now_utc();
        inner.refresh_tokens.retain(|_, (t, _)| t.expires > now);
        inner
            .refresh_tokens
            .insert(*token.digest.as_bytes(), (token, false));
        Ok(())
    }

    async fn take_refresh_token(
        &self,
        digest: &crate::key::SecretDigest,
    ) -> Result<Option<RefreshUse>, StoreError> {
        let mut inner = self.lock();
        Ok(inner
            .refresh_tokens
            .get_mut(digest.as_bytes())
            .map(|(token, used)| {
                let was_used = std::mem::replace(used, true);
                if was_used {
                    RefreshUse::Replayed(token.clone())
                } else {
                    RefreshUse::Fresh(token.clone())
                }
            }))
    }

    async fn revoke_refresh_family(&self, family: &str) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let before = inner.refresh_tokens.len();
        inner.refresh_tokens.retain(|_, (t, _)| t.family != family);
        Ok((before - inner.refresh_tokens.len()) as u64)
    }

    async fn revoke_user_tokens(&self, user_uid: &str) -> Result<Option<u64>, StoreError> {
        let mut inner = self.lock();
        let Some(user) = inner.accounts.get_mut(user_uid) else {
            return Ok(None);
        };
        user.token_generation += 1;
        let generation = user.token_generation;
        inner
            .refresh_tokens
            .retain(|_, (t, _)| t.user_uid != user_uid);
        let status = inner.user_status(user_uid);
        inner.notify(ChangeEvent::User {
            user_uid: user_uid.to_owned(),
            status,
        });
        Ok(Some(generation))
    }

    async fn revoke_company_tokens(&self, company_id: &str) -> Result<Option<u64>, StoreError> {
        let mut inner = self.lock();
        let Some(company) = inner.company_records.get_mut(company_id) else {
            return Ok(None);
        };
        company.token_generation += 1;
        let generation = company.token_generation;
        let status = inner.company_status(company_id);
        inner.notify(ChangeEvent::Company {
            company_id: company_id.to_owned(),
            status,
        });
        Ok(Some(generation))
    }
}
