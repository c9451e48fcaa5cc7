//! [`KeyRing`]: a store with the in-process index in front of it, shared by the layer and by whoever
//! manages keys.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use subtle::Choice;
use time::OffsetDateTime;
use tokio::sync::{oneshot, OnceCell, Semaphore};
use zeroize::Zeroizing;

use crate::identity::{Identity, Status, UserLogin};
use crate::index::{Entry, Index, Probe, Stamp, DUMMY_DIGEST};
use crate::key::{GeneratedKey, KeyError, KeyFormat, KeyId, ParsedKey, SecretDigest};
use crate::rejection::Reason;
use crate::scope::{Scope, Scopes};
use crate::store::{
    ChangeEvent, KeyRecord, KeyStore, KeyUpdate, ListQuery, Owner, Page, StoreError, StoreErrorKind,
};

const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_MAX_INFLIGHT: usize = 256;
const DEFAULT_NEGATIVE_CAPACITY: usize = 65_536;
const MAX_DESCRIPTION_CHARS: usize = 128;

/// A [`KeyStore`] with an in-process index in front of it.
///
/// Hits are answered from the index without `.await`, lock or allocation; the store is asked only on a
/// miss, once per key however many requests wait for it. Every change made through a `KeyRing` reaches
/// its index before the call returns; changes made elsewhere arrive through
/// [`KeyStore::subscribe`]. Cloning is cheap and shares everything.
#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn KeyStore>,
    index: Arc<Index>,
    format: KeyFormat,
    lookup_timeout: Duration,
    inflight: Semaphore,
    flights: Flights,
    /// Dropped with the ring, which ends the task that follows the store's changes (and with it the
    /// store's listening connection).
    _unfollow: Option<oneshot::Sender<()>>,
    /// The store's changes, when the ring was built outside a tokio runtime: following starts at the
    /// first async call, which comes before anything can be cached (only async calls fill the index).
    pending_follow: Mutex<Option<PendingFollow>>,
}

type PendingFollow = (crate::store::ChangeStream, oneshot::Receiver<()>);

#[derive(Clone, Copy)]
enum Fill {
    /// What the store said, cached: `None` means no such key. It holds for as long as the change
    /// counters stand where the stamp says; a waiter that takes it later reads the index instead.
    Fresh(Option<Entry>, Stamp),
    /// A change landed while the store was read; read again.
    Stale,
    /// The store failed; everyone who waited for this lookup fails with it rather than asking again.
    Failed(StoreErrorKind),
}

type Flights = Mutex<HashMap<KeyId, Arc<OnceCell<Fill>>>>;

/// One request's part in a single-flight lookup. Dropping it takes the lookup out of the map however
/// the request ends: answered, failed, timed out, cancelled by its client, or unwound by a panic.
struct Flight<'a> {
    flights: &'a Flights,
    id: KeyId,
    cell: Arc<OnceCell<Fill>>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if flights
            .get(&self.id)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell))
        {
            flights.remove(&self.id);
        }
    }
}

impl KeyRing {
    /// A key ring over `store` with default settings.
    pub fn new<S: KeyStore>(store: S) -> Self {
        Self::builder(store).build()
    }

    /// A builder to set the prefix, timeout and limits.
    pub fn builder<S: KeyStore>(store: S) -> KeyRingBuilder {
        KeyRingBuilder {
            store: Arc::new(store),
            format: KeyFormat::default(),
            lookup_timeout: DEFAULT_LOOKUP_TIMEOUT,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            negative_capacity: DEFAULT_NEGATIVE_CAPACITY,
        }
    }

    /// The key format (prefix) this ring issues and accepts.
    pub fn format(&self) -> &KeyFormat {
        &self.inner.format
    }

    /// Starts the task that follows the store's changes, if it is not running yet and a tokio runtime
    /// is at hand. Called by every async entry point before it can fill the index.
    fn ensure_following(&self) {
        let mut pending = self
            .inner
            .pending_follow
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if pending.is_none() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            if let Some((changes, stop)) = pending.take() {
                runtime.spawn(follow(Arc::downgrade(&self.inner), changes, stop));
            }
        }
    }

    /// The store behind the index.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.inner.store
    }

    /// Issues a key: generates it, stores the digest, indexes it, and returns the key once.
    pub async fn issue(&self, new: NewKey) -> Result<IssuedKey, IssueError> {
        self.ensure_following();
        {
            validate_description(&new.description)?;
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

    /// Applies a change heard from the store (made by another node, or by this one).
    ///
    /// The index forgets what the change touched, and the next request reads it from the store.
    /// The status a user or company event carries is not copied into the index: events arrive
    /// after the calls that caused them return, so an event can be older than a change this node
    /// has applied since, and copying it would bring back a status already overwritten (an
    /// enabled user after a disable that returned).
    pub fn apply(&self, event: &ChangeEvent) {
        let index = &self.inner.index;
        match event {
            ChangeEvent::Key(id) | ChangeEvent::KeyDeleted(id) => index.invalidate(*id),
            ChangeEvent::User { user_uid, .. } => index.forget_owner(Some(user_uid), None),
            ChangeEvent::Company { company_id, .. } => index.forget_owner(None, Some(company_id)),
            ChangeEvent::Resync => index.clear(),
        }
    }

    /// Verifies a presented key end to end (parse, index or store, compare, status), as the layer does.
    /// Scope and method checks are the layer's.
    pub async fn verify(&self, presented: &str) -> Result<Identity, VerifyError> {
        let parsed = self.inner.format.parse(presented).map_err(|e| match e {
            KeyError::NotKeyShaped => VerifyError::NotAKey,
            _ => VerifyError::Invalid,
        })?;
        let digest = parsed.digest();
        let result = match self.check_cached(parsed.id(), &digest) {
            Some(result) => result,
            None => self
                .check_store(parsed.id(), digest)
                .await
                .map_err(|_| VerifyError::Unavailable)?,
        };
        result.map_err(|_| VerifyError::Invalid)
    }

    /// Reads every key from the store into the index, a page at a time, so the first request for each
    /// is a hit. Records that change while this runs are left to be read on demand. Returns the number
    /// of keys cached.
    pub async fn preload(&self) -> Result<usize, StoreError> {
        self.ensure_following();
        const PAGE: u64 = 1000;
        let mut query = ListQuery {
            limit: PAGE,
            ..ListQuery::default()
        };
        let mut cached = 0;
        loop {
            let stamp = self.inner.index.stamp(None);
            let page = self.inner.store.list(&query).await?;
            let count = page.items.len() as u64;
            for record in &page.items {
                if self.inner.index.fill(record.id, Some(record), stamp) {
                    cached += 1;
                }
            }
            if count < PAGE {
                return Ok(cached);
            }
            query.offset += count;
        }
    }

    /// Number of keys and of "no such key" entries held in the index.
    pub fn cached(&self) -> (usize, usize) {
        (self.inner.index.len(), self.inner.index.negative_len())
    }

    /// Bytes of the index's slot table (one 64-byte slot per cached id, at most 7/8 full).
    pub fn index_table_bytes(&self) -> usize {
        self.inner.index.table_bytes()
    }

    /// A counter that moves whenever a user's or company's state may have changed, here or on
    /// another node (a status written through this ring, an owner event heard from another node, a
    /// resync): what an application cached about an account before it moved may be stale.
    pub fn owners_epoch(&self) -> u64 {
        // Whoever relies on this counter relies on hearing other nodes' changes.
        self.ensure_following();
        self.inner.index.owners_epoch()
    }

    /// How long a store lookup (or a token validation) may take.
    pub(crate) fn lookup_timeout(&self) -> Duration {
        self.inner.lookup_timeout
    }

    #[inline]
    pub(crate) fn parse<'a>(&self, value: &'a [u8]) -> Result<ParsedKey<'a>, KeyError> {
        self.inner.format.parse_bytes(value)
    }

    /// Hashes the secret and decides from the index alone: `None` on a miss.
    #[inline]
    pub(crate) fn check_cached(
        &self,
        id: KeyId,
        digest: &SecretDigest,
    ) -> Option<Result<Identity, Reason>> {
        match self.inner.index.probe(id) {
            Probe::Found(entry) => Some(self.decide(id, Some(&entry), digest)),
            Probe::Miss => None,
        }
    }

    /// The hit path: starts the index lookup, hashes the secret while the slot's cache line is
    /// fetched, then decides. `None` on a miss, with the digest for [`KeyRing::check_store`].
    #[inline]
    pub(crate) fn check_key(
        &self,
        key: &ParsedKey<'_>,
    ) -> (Option<Result<Identity, Reason>>, SecretDigest) {
        let id = key.id();
        let (probe, digest) = self.inner.index.lookup(id, || key.digest());
        let outcome = match probe {
            Probe::Found(entry) => Some(self.decide(id, Some(&entry), &digest)),
            Probe::Miss => None,
        };
        (outcome, digest)
    }

    /// The miss path: one store read per id however many requests wait, bounded in time and number.
    pub(crate) async fn check_store(
        &self,
        id: KeyId,
        digest: SecretDigest,
    ) -> Result<Result<Identity, Reason>, StoreError> {
        self.ensure_following();
        let inner = &self.inner;
        let work = async {
            loop {
                let flight = {
                    let mut flights = inner.flights.lock().unwrap_or_else(|e| e.into_inner());
                    Flight {
                        flights: &inner.flights,
                        id,
                        cell: flights.entry(id).or_default().clone(),
                    }
                };
                // The waiter that runs the lookup keeps the store's error with its cause.
                let mut cause = None;
                let fill = *flight
                    .cell
                    .get_or_init(|| async {
                        // This request missed the index just before another's fill landed and
                        // left the single-flight map: that fill is the answer.
                        let stamp = inner.index.stamp(Some(id));
                        if let Probe::Found(entry) = inner.index.probe(id) {
                            return Fill::Fresh(Some(entry), stamp);
                        }
                        match self.read_store(id).await {
                            Ok(fill) => fill,
                            Err(e) => {
                                let kind = e.kind();
                                cause = Some(e);
                                Fill::Failed(kind)
                            }
                        }
                    })
                    .await;
                drop(flight);
                match fill {
                    // A change since the lookup (a revocation that returned before this request
                    // joined it) makes its answer stale for this request.
                    Fill::Fresh(entry, stamp) if inner.index.unchanged_since(id, stamp) => {
                        return Ok(self.decide(id, entry.as_ref(), &digest))
                    }
                    Fill::Failed(kind) => {
                        return Err(cause.unwrap_or_else(|| StoreError::of_kind(kind)))
                    }
                    Fill::Fresh(..) | Fill::Stale => {
                        if let Some(result) = self.check_cached(id, &digest) {
                            return Ok(result);
                        }
                    }
                }
            }
        };
        tokio::time::timeout(inner.lookup_timeout, work)
            .await
            .unwrap_or_else(|_| Err(StoreError::timeout()))
    }

    /// One store read for a miss, cached unless a change landed meanwhile.
    async fn read_store(&self, id: KeyId) -> Result<Fill, StoreError> {
        let inner = &self.inner;
        let _permit = inner
            .inflight
            .acquire()
            .await
            .map_err(|_| StoreError::overloaded())?;
        let stamp = inner.index.stamp(Some(id));
        let record = inner.store.get(id).await?;
        if record.as_ref().is_some_and(|r| r.id != id) {
            return Err(StoreError::corrupt("store returned another key's record"));
        }
        Ok(if inner.index.fill(id, record.as_ref(), stamp) {
            Fill::Fresh(record.as_ref().map(Entry::positive_of), stamp)
        } else {
            Fill::Stale
        })
    }

    /// The constant-time decision. Unknown ids are compared against a dummy digest, so unknown id,
    /// wrong secret and disabled key run the same code up to the final branch.
    #[inline]
    fn decide(
        &self,
        id: KeyId,
        entry: Option<&Entry>,
        digest: &SecretDigest,
    ) -> Result<Identity, Reason> {
        let (stored, known, status, scopes, read_only) = match entry {
            Some(e) => (
                e.digest(),
                !e.is_negative(),
                e.status(),
                e.scopes(),
                e.read_only(),
            ),
            None => (
                SecretDigest::from_bytes(DUMMY_DIGEST),
                false,
                Status::Unknown,
                Scopes::EMPTY,
                false,
            ),
        };
        let matches = stored.ct_eq(digest);
        let ok = matches & Choice::from(u8::from(known & status.is_enabled()));
        if bool::from(ok) {
            Ok(Identity::from_key(
                id,
                scopes,
                read_only,
                self.inner.index.handle(),
            ))
        } else if !known {
            Err(Reason::UnknownKey)
        } else if !bool::from(matches) {
            Err(Reason::WrongSecret)
        } else {
            Err(Reason::Disabled(status))
        }
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (keys, negatives) = self.cached();
        f.debug_struct("KeyRing")
            .field("format", &self.inner.format)
            .field("lookup_timeout", &self.inner.lookup_timeout)
            .field("cached_keys", &keys)
            .field("cached_negatives", &negatives)
            .finish()
    }
}

impl<S: KeyStore> From<S> for KeyRing {
    fn from(store: S) -> Self {
        KeyRing::new(store)
    }
}

/// Builds a [`KeyRing`].
#[must_use]
pub struct KeyRingBuilder {
    store: Arc<dyn KeyStore>,
    format: KeyFormat,
    lookup_timeout: Duration,
    max_inflight: usize,
    negative_capacity: usize,
}

impl KeyRingBuilder {
    /// The key format (prefix) to issue and accept. Default: prefix `tak`.
    pub fn with_format(mut self, format: KeyFormat) -> Self {
        self.format = format;
        self
    }

    /// How long a store lookup may take before the request gets a 503. Default: 2 s.
    pub fn with_lookup_timeout(mut self, timeout: Duration) -> Self {
        self.lookup_timeout = timeout;
        self
    }

    /// How many store lookups may be in flight at once; further misses wait (within the timeout).
    /// Default: 256.
    pub fn with_max_inflight_lookups(mut self, max: usize) -> Self {
        self.max_inflight = max.max(1);
        self
    }

    /// How many "no such key" answers the index remembers (oldest forgotten first). Default: 65 536.
    pub fn with_negative_capacity(mut self, capacity: usize) -> Self {
        self.negative_capacity = capacity;
        self
    }

    /// Builds the ring. When the store sends change notifications, a task applying them is spawned on
    /// the current tokio runtime; if the store's change stream ever ends, the task forgets everything
    /// cached and subscribes again.
    ///
    /// Built outside a tokio runtime, the ring starts following its store's changes at its first
    /// async call (nothing is cached before one).
    pub fn build(self) -> KeyRing {
        let changes = self.store.subscribe();
        let (unfollow, stop) = match changes {
            Some(_) => {
                let (unfollow, stop) = oneshot::channel();
                (Some(unfollow), Some(stop))
            }
            None => (None, None),
        };
        let ring = KeyRing {
            inner: Arc::new(Inner {
                index: Index::new(self.negative_capacity),
                format: self.format,
                lookup_timeout: self.lookup_timeout,
                inflight: Semaphore::new(self.max_inflight),
                flights: Mutex::new(HashMap::new()),
                store: self.store,
                _unfollow: unfollow,
                pending_follow: Mutex::new(changes.zip(stop)),
            }),
        };
        ring.ensure_following();
        ring
    }
}

/// How long the ring waits before subscribing again to a store whose change stream ended.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(100);

/// Applies a store's changes to the ring's index for as long as the ring exists (`stop` resolves
/// when it is dropped, without waiting for another event). A stream that ends is a channel lost:
/// forget everything, and subscribe again rather than go deaf.
async fn follow(
    ring: std::sync::Weak<Inner>,
    mut changes: crate::store::ChangeStream,
    mut stop: oneshot::Receiver<()>,
) {
    use futures_core::Stream;
    use std::future::{poll_fn, Future};
    use std::pin::Pin;
    use std::task::Poll;
    loop {
        loop {
            let next = poll_fn(|cx| {
                if Pin::new(&mut stop).poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Pin::new(&mut changes).poll_next(cx).map(Some)
            })
            .await;
            match next {
                None => return,
                Some(Some(event)) => {
                    let Some(inner) = ring.upgrade() else { return };
                    KeyRing { inner }.apply(&event);
                }
                Some(None) => break,
            }
        }
        let Some(inner) = ring.upgrade() else { return };
        KeyRing {
            inner: inner.clone(),
        }
        .apply(&ChangeEvent::Resync);
        let resubscribed = inner.store.subscribe();
        drop(inner);
        match resubscribed {
            Some(stream) => changes = stream,
            None => return,
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

impl fmt::Debug for KeyRingBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRingBuilder")
            .field("format", &self.format)
            .field("lookup_timeout", &self.lookup_timeout)
            .field("max_inflight", &self.max_inflight)
            .field("negative_capacity", &self.negative_capacity)
            .finish()
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
}

impl fmt::Display for IssueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidDescription => f.write_str(
                "description must be 1 to 128 characters and must not contain '<', '>' or '='",
            ),
            Self::Key(e) => write!(f, "key generation failed: {e}"),
            Self::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for IssueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(e) => Some(e),
            Self::Key(e) => Some(e),
            Self::InvalidDescription => None,
        }
    }
}

/// Why [`KeyRing::verify`] refused a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not key-shaped: another kind of credential.
    NotAKey,
    /// Bad checksum, unknown id, wrong secret or not enabled: one answer for all.
    Invalid,
    /// The store failed or timed out.
    Unavailable,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAKey => "not an API key",
            Self::Invalid => "invalid API key",
            Self::Unavailable => "key store unavailable",
        })
    }
}

impl std::error::Error for VerifyError {}

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
    use crate::store::MemoryStore;

    fn owner() -> Owner {
        Owner {
            user_uid: "u1".into(),
            user_name: "alice".into(),
            company_id: "c1".into(),
            company_name: "Alpha".into(),
        }
    }

    /// A key for `owner()` through `ring`.
    async fn issue_one(ring: &KeyRing) -> IssuedKey {
        ring.issue(NewKey::new(owner()).description("x"))
            .await
            .expect("issued")
    }

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
    async fn a_second_ring_on_the_same_store_fills_from_the_store() {
        let store = MemoryStore::new();
        let a = KeyRing::new(store.clone());
        let b = KeyRing::new(store);
        let issued = issue_one(&a).await;
        assert_eq!(b.cached(), (0, 0));
        assert!(b.verify(issued.key()).await.is_ok());
        assert_eq!(b.cached(), (1, 0));
    }

    #[tokio::test]
    async fn rings_over_one_memory_store_hear_each_others_revocations() {
        let store = MemoryStore::new();
        let a = KeyRing::new(store.clone());
        let b = KeyRing::new(store);
        let issued = issue_one(&a).await;
        assert!(b.verify(issued.key()).await.is_ok());
        a.update(issued.id(), KeyUpdate::status(Status::Disabled))
            .await
            .expect("updated");
        // B applies the change when its task runs, which is at B's next yield.
        for _ in 0..100 {
            if b.verify(issued.key()).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("ring B still accepts a key disabled through ring A");
    }

    #[tokio::test]
    async fn abandoned_lookups_leave_no_flight_behind() {
        let ring = KeyRing::builder(MemoryStore::new())
            .with_lookup_timeout(Duration::from_millis(5))
            .with_max_inflight_lookups(1)
            .build();
        let digest = SecretDigest::from_bytes([0; 32]);
        // With the only lookup permit taken, every lookup waits: until its timeout, or until its
        // client goes away.
        let busy = ring.inner.inflight.acquire().await.expect("permit");
        for raw in 1..=10 {
            let id = KeyId::new(raw).expect("valid id");
            let result = ring.check_store(id, digest).await;
            assert!(result.is_err_and(|e| e.is_timeout()));
        }
        for raw in 11..=20 {
            let id = KeyId::new(raw).expect("valid id");
            let mut lookup = Box::pin(ring.check_store(id, digest));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(std::future::Future::poll(lookup.as_mut(), &mut cx).is_pending());
            drop(lookup);
        }
        drop(busy);
        let flights = ring.inner.flights.lock().expect("lock").len();
        assert_eq!(
            flights, 0,
            "abandoned lookups must leave the single-flight map"
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

    /// A memory store that counts `get`s, fails owner-status writes on demand, and holds the next
    /// write after it reached the store, before it returns. It sends no changes, so what a ring's
    /// index holds comes from that ring's own calls alone.
    #[derive(Clone, Default)]
    struct Held {
        inner: MemoryStore,
        state: Arc<HeldState>,
    }

    #[derive(Default)]
    struct HeldState {
        hold_next: std::sync::atomic::AtomicBool,
        fail_owner_writes: std::sync::atomic::AtomicBool,
        written: tokio::sync::Notify,
        release: tokio::sync::Notify,
        gets: std::sync::atomic::AtomicUsize,
    }

    impl Held {
        fn hold_next_write(&self) {
            self.state.hold_next.store(true, SeqCst);
        }

        async fn pause(&self) {
            if self.state.hold_next.swap(false, SeqCst) {
                self.state.written.notify_one();
                self.state.release.notified().await;
            }
        }
    }

    use std::sync::atomic::Ordering::SeqCst;

    #[async_trait::async_trait]
    impl KeyStore for Held {
        async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
            self.state.gets.fetch_add(1, SeqCst);
            self.inner.get(id).await
        }
        async fn insert(&self, record: KeyRecord) -> Result<(), StoreError> {
            self.inner.insert(record).await
        }
        async fn update(
            &self,
            id: KeyId,
            update: KeyUpdate,
        ) -> Result<Option<KeyRecord>, StoreError> {
            let result = self.inner.update(id, update).await;
            self.pause().await;
            result
        }
        async fn delete(&self, id: KeyId) -> Result<bool, StoreError> {
            self.inner.delete(id).await
        }
        async fn list(&self, query: &ListQuery) -> Result<Page<KeyRecord>, StoreError> {
            self.inner.list(query).await
        }
        async fn set_user_status(&self, uid: &str, status: Status) -> Result<(), StoreError> {
            if self.state.fail_owner_writes.load(SeqCst) {
                return Err(StoreError::backend(
                    "connection lost after the write was sent",
                ));
            }
            let result = self.inner.set_user_status(uid, status).await;
            self.pause().await;
            result
        }
        async fn set_company_status(&self, id: &str, status: Status) -> Result<(), StoreError> {
            self.inner.set_company_status(id, status).await
        }
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

    #[tokio::test]
    async fn a_miss_that_lost_the_race_to_a_fill_reads_the_index_not_the_store() {
        let store = Held::default();
        let other = KeyRing::new(store.inner.clone());
        let k = issue_one(&other).await;
        let ring = KeyRing::new(store.clone());
        let digest = ring.parse(k.key().as_bytes()).expect("parses").digest();
        assert!(ring
            .check_store(k.id(), digest)
            .await
            .expect("read")
            .is_ok());
        // A request that missed the index before that fill landed comes in now.
        assert!(ring
            .check_store(k.id(), digest)
            .await
            .expect("read")
            .is_ok());
        assert_eq!(store.state.gets.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn a_lookup_answered_before_a_revocation_is_not_handed_to_later_requests() {
        let store = Held::default();
        let ring = KeyRing::new(store.clone());
        let k = issue_one(&ring).await;
        let digest = ring.parse(k.key().as_bytes()).expect("parses").digest();
        let enabled = ring.get(k.id()).await.expect("read").expect("exists");
        // A lookup of the key finished, and its answer still sits in the single-flight map...
        let answer = Fill::Fresh(
            Some(Entry::positive_of(&enabled)),
            ring.inner.index.stamp(Some(k.id())),
        );
        ring.inner
            .flights
            .lock()
            .expect("lock")
            .insert(k.id(), Arc::new(OnceCell::new_with(Some(answer))));
        // ...when a revocation lands and returns; the key then falls out of the index.
        ring.update(k.id(), KeyUpdate::status(Status::Disabled))
            .await
            .expect("updated");
        ring.inner.index.invalidate(k.id());
        let result = ring.check_store(k.id(), digest).await.expect("read");
        assert!(
            result.is_err(),
            "a request after the revocation took the old answer"
        );
    }

    /// A store whose change streams the test ends at will.
    #[derive(Clone, Default)]
    struct Streams {
        inner: MemoryStore,
        senders: Arc<Mutex<Vec<crate::store::notify::ChangeSender>>>,
    }

    #[async_trait::async_trait]
    impl KeyStore for Streams {
        async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
            self.inner.get(id).await
        }
        async fn insert(&self, record: KeyRecord) -> Result<(), StoreError> {
            self.inner.insert(record).await
        }
        async fn update(
            &self,
            id: KeyId,
            update: KeyUpdate,
        ) -> Result<Option<KeyRecord>, StoreError> {
            self.inner.update(id, update).await
        }
        async fn delete(&self, id: KeyId) -> Result<bool, StoreError> {
            self.inner.delete(id).await
        }
        async fn list(&self, query: &ListQuery) -> Result<Page<KeyRecord>, StoreError> {
            self.inner.list(query).await
        }
        async fn set_user_status(&self, uid: &str, status: Status) -> Result<(), StoreError> {
            self.inner.set_user_status(uid, status).await
        }
        async fn set_company_status(&self, id: &str, status: Status) -> Result<(), StoreError> {
            self.inner.set_company_status(id, status).await
        }
        fn subscribe(&self) -> Option<crate::store::ChangeStream> {
            let (sender, stream) = crate::store::notify::change_channel();
            self.senders.lock().expect("lock").push(sender);
            Some(stream)
        }
    }

    #[tokio::test]
    async fn a_change_stream_that_ends_means_resync_and_a_new_subscription() {
        let store = Streams::default();
        let ring = KeyRing::new(store.clone());
        let k = issue_one(&ring).await;
        assert!(ring.verify(k.key()).await.is_ok());
        assert_eq!(ring.cached(), (1, 0));

        store.senders.lock().expect("lock").clear();
        for _ in 0..1000 {
            if store.senders.lock().expect("lock").len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            store.senders.lock().expect("lock").len(),
            1,
            "subscribed again"
        );
        assert_eq!(
            ring.cached(),
            (0, 0),
            "forgot what it could no longer follow"
        );
    }

    #[tokio::test]
    async fn an_owner_event_older_than_a_local_change_does_not_undo_it() {
        let store = Streams::default();
        let ring = KeyRing::new(store.clone());
        let k = issue_one(&ring).await;
        ring.set_user_status("u1", Status::Enabled)
            .await
            .expect("set");
        ring.set_user_status("u1", Status::Disabled)
            .await
            .expect("set");
        assert!(ring.verify(k.key()).await.is_err());
        // The event of the enable arrives only now, after the disable returned.
        let stale = ChangeEvent::User {
            user_uid: "u1".into(),
            status: Status::Enabled,
        };
        assert!(store.senders.lock().expect("lock")[0].send(stale));
        for _ in 0..1000 {
            if ring.cached().0 == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(ring.cached(), (0, 0), "the event was applied");
        assert_eq!(
            ring.verify(k.key()).await.unwrap_err(),
            VerifyError::Invalid,
            "a stale enable brought a disabled user's key back"
        );
    }

    #[tokio::test]
    async fn a_dropped_ring_stops_following_its_store() {
        let store = Streams::default();
        let ring = KeyRing::new(store.clone());
        drop(ring);
        // No event arrives to wake the task: it must notice the ring is gone by itself.
        for _ in 0..1000 {
            if store.senders.lock().expect("lock")[0].is_closed() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the task following the store outlived its ring");
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

    #[test]
    fn a_ring_built_outside_a_runtime_follows_changes_from_its_first_async_call() {
        let store = MemoryStore::new();
        // No runtime here: building must not panic.
        let a = KeyRing::new(store.clone());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let b = KeyRing::new(store.clone());
            let k = issue_one(&b).await;
            assert!(a.verify(k.key()).await.is_ok(), "a fills from the store");
            b.update(k.id(), KeyUpdate::status(Status::Disabled))
                .await
                .expect("updated");
            for _ in 0..200 {
                if a.verify(k.key()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("a never heard of the revocation made through b");
        });
    }
}
