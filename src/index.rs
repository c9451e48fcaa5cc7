//! The in-process index in front of every store.
//!
//! Everything the accept decision needs (id, digest, scopes, effective status, read-only flag) sits in
//! one 64-byte slot of an open-addressing table with Robin Hood probing. Readers take no lock and
//! allocate nothing: a sequence counter (a seqlock over atomic words) tells them when a writer moved
//! something under them, and they retry. Writers are serialised by a mutex and are rare (management
//! calls, fills after a miss, change notifications).

use std::cell::RefMut;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hint::spin_loop;
use std::ops::Deref;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};

use arc_swap::ArcSwap;

use crate::identity::{Status, UserLogin};
use crate::key::{KeyId, SecretDigest};
use crate::scope::Scopes;
use crate::store::{KeyRecord, Owner};
use time::OffsetDateTime;

const WORDS: usize = 8;
const META_READ_ONLY: u64 = 1 << 8;
const META_NEGATIVE: u64 = 1 << 9;
const MIN_CAPACITY: usize = 64;
const GENERATION_BUCKETS: usize = 256;

/// Where the change counters stood when a fill or a write started; see [`Index::stamp`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stamp {
    /// A fill of one key.
    Key { owners: u64, bucket: u64 },
    /// A fill of many keys (preload).
    All(u64),
    /// A change of a user's or company's status.
    Owners(u64),
}

/// One cache line: `[id, digest×4, scopes, meta, cold]`. `id == 0` marks an empty slot; `cold` is the
/// arena position of the rest of the record, plus one (`0` for "no such key" entries).
#[repr(align(64))]
struct Slot([AtomicU64; WORDS]);

impl Slot {
    fn empty() -> Self {
        Self(Default::default())
    }

    #[inline]
    fn id(&self) -> u64 {
        self.0[0].load(Ordering::Relaxed)
    }

    #[inline]
    fn read(&self) -> Entry {
        let w = |i: usize| self.0[i].load(Ordering::Relaxed);
        let mut digest = [0u8; 32];
        for (i, chunk) in digest.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&w(1 + i).to_le_bytes());
        }
        Entry {
            id: w(0),
            digest,
            scopes: w(5),
            meta: w(6),
            cold: w(7),
        }
    }

    fn write(&self, e: &Entry) {
        let s = |i: usize, v: u64| self.0[i].store(v, Ordering::Relaxed);
        s(0, e.id);
        for (i, chunk) in e.digest.chunks_exact(8).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            s(1 + i, u64::from_le_bytes(word));
        }
        s(5, e.scopes);
        s(6, e.meta);
        s(7, e.cold);
    }

    fn clear(&self) {
        self.write(&Entry::EMPTY);
    }
}

/// A plain copy of a slot.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    id: u64,
    digest: [u8; 32],
    scopes: u64,
    meta: u64,
    cold: u64,
}

impl Entry {
    const EMPTY: Entry = Entry {
        id: 0,
        digest: [0; 32],
        scopes: 0,
        meta: 0,
        cold: 0,
    };

    pub(crate) fn positive_of(record: &KeyRecord) -> Self {
        let mut meta = u64::from(record.effective_status().to_byte());
        if record.read_only {
            meta |= META_READ_ONLY;
        }
        Entry {
            id: record.id.get(),
            digest: *record.digest.as_bytes(),
            scopes: record.scopes.bits(),
            meta,
            cold: 0,
        }
    }

    fn negative(id: KeyId) -> Self {
        Entry {
            id: id.get(),
            // Never equal to the digest of any secret a request can present.
            digest: DUMMY_DIGEST,
            scopes: 0,
            meta: META_NEGATIVE | u64::from(Status::Unknown.to_byte()),
            cold: 0,
        }
    }

    pub(crate) fn digest(&self) -> SecretDigest {
        SecretDigest::from_bytes(self.digest)
    }

    pub(crate) fn is_negative(&self) -> bool {
        self.meta & META_NEGATIVE != 0
    }

    pub(crate) fn status(&self) -> Status {
        Status::from_byte((self.meta & 0xff) as u8)
    }

    pub(crate) fn read_only(&self) -> bool {
        self.meta & META_READ_ONLY != 0
    }

    pub(crate) fn scopes(&self) -> Scopes {
        Scopes::from_bits(self.scopes)
    }
}

/// Asks for `slot`'s cache line without waiting for it.
#[inline(always)]
fn touch(slot: &Slot) {
    // A prefetch instruction retires at once; a plain load that misses holds up the retirement of
    // everything behind it, hashing included, until memory answers.
    #[cfg(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "sse"
    ))]
    safe_arch::prefetch_t0(slot);
    #[cfg(not(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "sse"
    )))]
    std::hint::black_box(slot.id());
}

/// The digest compared against when an id is unknown, so unknown and known ids take the same path.
pub(crate) const DUMMY_DIGEST: [u8; 32] = [0x5a; 32];

struct Table {
    slots: Box<[Slot]>,
    mask: usize,
    seed: u64,
}

impl Table {
    fn new(capacity: usize, seed: u64) -> Self {
        let capacity = capacity.max(MIN_CAPACITY).next_power_of_two();
        Self {
            slots: (0..capacity).map(|_| Slot::empty()).collect(),
            mask: capacity - 1,
            seed,
        }
    }

    #[inline]
    fn home(&self, id: u64) -> usize {
        // Keyed folded multiply: clients choose the ids of unknown keys, so placement must not be
        // predictable from the id alone.
        let m = u128::from(id ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        ((m as u64) ^ ((m >> 64) as u64)) as usize & self.mask
    }

    #[inline]
    fn distance(&self, id: u64, pos: usize) -> usize {
        pos.wrapping_sub(self.home(id)) & self.mask
    }

    /// Position of `id`, if present. Bounded even when read under a concurrent writer.
    #[inline]
    fn position(&self, id: u64) -> Option<usize> {
        let mut pos = self.home(id);
        for dist in 0..=self.mask {
            let found = self.slots[pos].id();
            if found == id {
                return Some(pos);
            }
            if found == 0 || self.distance(found, pos) < dist {
                return None;
            }
            pos = (pos + 1) & self.mask;
        }
        None
    }

    /// Starts the fetch of the cache lines a lookup of `id` is likely to read: its home slot and
    /// the next one, where Robin Hood probing leaves an entry often enough (a quarter of keys at
    /// half load) that fetching that line only after reading the first would cost a second memory
    /// latency. The caller hashes the secret while both are on their way.
    #[inline]
    fn prefetch(&self, id: u64) {
        let home = self.home(id);
        touch(&self.slots[home]);
        touch(&self.slots[(home + 1) & self.mask]);
    }

    fn insert_new(&self, entry: Entry) {
        let mut cur = entry;
        let mut pos = self.home(cur.id);
        let mut dist = 0;
        loop {
            let slot = &self.slots[pos];
            let found = slot.id();
            if found == 0 {
                slot.write(&cur);
                return;
            }
            let found_dist = self.distance(found, pos);
            // Equal distances are ordered by id, so where an entry sits depends on the ids held, not
            // on the order they came in: otherwise keys cached first sit nearer home than the
            // unknown ids cached after them, and the time to look an id up tells which it is.
            if found_dist < dist || (found_dist == dist && found > cur.id) {
                let evicted = slot.read();
                slot.write(&cur);
                cur = evicted;
                dist = found_dist;
            }
            pos = (pos + 1) & self.mask;
            dist += 1;
        }
    }

    fn remove_at(&self, mut pos: usize) {
        loop {
            let next = (pos + 1) & self.mask;
            let n = self.slots[next].id();
            if n == 0 || self.distance(n, next) == 0 {
                self.slots[pos].clear();
                return;
            }
            self.slots[pos].write(&self.slots[next].read());
            pos = next;
        }
    }
}

/// The slot table a reader looks in: this thread's cached reference, or one loaded from the index.
enum TableRef<'a> {
    Cached(RefMut<'a, Arc<Table>>),
    Loaded(arc_swap::Guard<Arc<Table>>),
}

impl Deref for TableRef<'_> {
    type Target = Table;

    #[inline]
    fn deref(&self) -> &Table {
        match self {
            Self::Cached(table) => table,
            Self::Loaded(table) => table,
        }
    }
}

/// Each thread keeps the current slot table of the last few indexes it read, so a lookup reads an
/// atomic counter instead of taking and releasing a reference with two atomic read-modify-writes.
///
/// A cached table is used only while the index's table generation is the one it was cached at; a
/// table that grew is replaced on the thread's next lookup in that index. When any index is dropped,
/// every thread empties its cache on its next lookup, so a dropped index's table outlives it only on
/// threads that never look anything up again (until they exit).
mod tables {
    use super::*;
    use std::cell::RefCell;
    use std::sync::atomic::AtomicU64;

    const ENTRIES: usize = 4;

    /// Bumped each time an index is dropped.
    pub(super) static RETIRED: AtomicU64 = AtomicU64::new(0);

    thread_local! {
        pub(super) static CACHE: RefCell<Cache> = const {
            RefCell::new(Cache { entries: [const { None }; ENTRIES], next: 0, retired: 0 })
        };
    }

    struct Cached {
        index: u64,
        generation: u64,
        table: Arc<Table>,
    }

    pub(super) struct Cache {
        entries: [Option<Cached>; ENTRIES],
        next: usize,
        retired: u64,
    }

    impl Cache {
        /// The current table of `index`, as of its generation now.
        #[inline]
        pub(super) fn table(&mut self, index: &Index) -> &mut Arc<Table> {
            let retired = RETIRED.load(Ordering::Relaxed);
            if retired != self.retired {
                self.entries = [const { None }; ENTRIES];
                self.retired = retired;
            }
            // Read before the table is loaded: a table cached under a generation is at least as
            // new as that generation.
            let generation = index.generation.load(Ordering::Acquire);
            // Every entry is looked at, whichever holds the index: a lookup costs the same in each
            // of the indexes a thread serves.
            let held = self.entries.iter().enumerate().fold(None, |found, (i, e)| {
                if e.as_ref().is_some_and(|e| e.index == index.registry_id) {
                    Some(i)
                } else {
                    found
                }
            });
            let pos = match held {
                Some(pos) => pos,
                None => match self.entries.iter().position(Option::is_none) {
                    Some(free) => free,
                    None => {
                        let pos = self.next;
                        self.next = (pos + 1) % ENTRIES;
                        pos
                    }
                },
            };
            let entry = &mut self.entries[pos];
            if !entry
                .as_ref()
                .is_some_and(|e| e.index == index.registry_id && e.generation == generation)
            {
                *entry = None;
            }
            &mut entry
                .get_or_insert_with(|| Cached {
                    index: index.registry_id,
                    generation,
                    table: index.table.load_full(),
                })
                .table
        }
    }
}

/// What the index knows of an id.
pub(crate) enum Probe {
    /// A slot for the id: a key, or a cached "no such key".
    Found(Entry),
    /// Nothing cached: ask the store.
    Miss,
}

/// What the slot does not hold: enough to rebuild the [`UserLogin`] and to recompute the status when
/// a user or company changes. Owners are shared between their keys.
struct Cold {
    id: KeyId,
    owner: Arc<Owner>,
    description: Box<str>,
    created: OffsetDateTime,
    read_only: bool,
    scopes: Scopes,
    status: Status,
    user_status: Status,
    company_status: Status,
    status_locked: bool,
}

impl Cold {
    fn of(record: &KeyRecord, owner: Arc<Owner>) -> Self {
        Self {
            id: record.id,
            owner,
            description: record.description.as_str().into(),
            created: record.created,
            read_only: record.read_only,
            scopes: record.scopes,
            status: record.status,
            user_status: record.user_status,
            company_status: record.company_status,
            status_locked: record.status_locked,
        }
    }

    fn record(&self, digest: SecretDigest) -> KeyRecord {
        KeyRecord {
            id: self.id,
            digest,
            owner: (*self.owner).clone(),
            description: self.description.to_string(),
            read_only: self.read_only,
            scopes: self.scopes,
            status: self.status,
            user_status: self.user_status,
            company_status: self.company_status,
            created: self.created,
            status_locked: self.status_locked,
        }
    }
}

struct Writer {
    cold: Vec<Option<Cold>>,
    free: Vec<usize>,
    owners: HashSet<Arc<Owner>>,
    negatives: VecDeque<KeyId>,
    occupied: usize,
    positives: usize,
}

impl Writer {
    fn new() -> Self {
        Self {
            cold: Vec::new(),
            free: Vec::new(),
            owners: HashSet::new(),
            negatives: VecDeque::new(),
            occupied: 0,
            positives: 0,
        }
    }

    fn intern(&mut self, owner: &Owner) -> Arc<Owner> {
        if let Some(shared) = self.owners.get(owner) {
            return shared.clone();
        }
        let shared = Arc::new(owner.clone());
        self.owners.insert(shared.clone());
        shared
    }

    /// Stores `cold` at `at` (an existing position, plus one) or a free one; returns position plus one.
    fn put_cold(&mut self, at: u64, cold: Cold) -> u64 {
        if let Some(slot) = usize::try_from(at)
            .ok()
            .and_then(|at| at.checked_sub(1))
            .and_then(|i| self.cold.get_mut(i))
        {
            if let Some(old) = slot.replace(cold) {
                self.release_owner(&old.owner);
            } else {
                self.positives += 1;
            }
            return at;
        }
        self.positives += 1;
        match self.free.pop() {
            Some(i) => {
                self.cold[i] = Some(cold);
                i as u64 + 1
            }
            None => {
                self.cold.push(Some(cold));
                self.cold.len() as u64
            }
        }
    }

    fn take_cold(&mut self, at: u64) {
        let Some(i) = usize::try_from(at).ok().and_then(|at| at.checked_sub(1)) else {
            return;
        };
        if let Some(old) = self.cold.get_mut(i).and_then(Option::take) {
            self.free.push(i);
            self.positives -= 1;
            self.release_owner(&old.owner);
        }
    }

    fn cold(&self, at: u64) -> Option<&Cold> {
        let i = usize::try_from(at).ok()?.checked_sub(1)?;
        self.cold.get(i)?.as_ref()
    }

    fn release_owner(&mut self, owner: &Arc<Owner>) {
        // The set and the caller's copy: nobody else uses this owner any more.
        if Arc::strong_count(owner) <= 2 {
            self.owners.remove(&**owner);
        }
    }
}

/// The index. Shared by a [`KeyRing`](crate::KeyRing) and the identities it hands out.
pub(crate) struct Index {
    seq: AtomicU64,
    // Change counters: `all` moves on every change; `owners` on changes that touch many keys (user,
    // company, resync); `buckets[b]` on changes to keys whose id falls in bucket `b`. A fill is stale
    // only when its own bucket or `owners` moved, so changes to other keys do not make it retry.
    all: AtomicU64,
    owners: AtomicU64,
    buckets: Box<[AtomicU64]>,
    table: ArcSwap<Table>,
    // Moves each time `table` is replaced; see `tables`.
    generation: AtomicU64,
    writer: Mutex<Writer>,
    negative_capacity: usize,
    registry_id: u64,
}

impl Index {
    pub(crate) fn new(negative_capacity: usize) -> Arc<Self> {
        let mut seed = [0u8; 8];
        // A failed RNG only weakens placement against chosen ids; fall back to the address-space layout.
        if getrandom::fill(&mut seed).is_err() {
            seed = (&seed as *const _ as u64).to_le_bytes();
        }
        let index = Arc::new(Self {
            seq: AtomicU64::new(0),
            all: AtomicU64::new(0),
            owners: AtomicU64::new(0),
            buckets: (0..GENERATION_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            table: ArcSwap::from_pointee(Table::new(MIN_CAPACITY, u64::from_le_bytes(seed))),
            generation: AtomicU64::new(0),
            writer: Mutex::new(Writer::new()),
            negative_capacity,
            registry_id: registry::next_id(),
        });
        registry::register(index.registry_id, Arc::downgrade(&index));
        index
    }

    pub(crate) fn handle(&self) -> IndexRef {
        IndexRef(self.registry_id)
    }

    /// Looks `id` up without locking or allocating.
    #[inline]
    pub(crate) fn probe(&self, id: KeyId) -> Probe {
        self.lookup(id, || ()).0
    }

    /// Looks `id` up, running `during` after the home slot of `id` was touched and before it is
    /// read, so that its cache line is on its way while `during` works (the caller hashes the
    /// secret). `during` runs exactly once.
    #[inline]
    pub(crate) fn lookup<R>(&self, id: KeyId, mut during: impl FnMut() -> R) -> (Probe, R) {
        let cached = tables::CACHE.try_with(|cache| {
            self.read(id, &mut during, || match cache.try_borrow_mut() {
                Ok(cache) => TableRef::Cached(RefMut::map(cache, |c| c.table(self))),
                Err(_) => TableRef::Loaded(self.table.load()),
            })
        });
        match cached {
            Ok(found) => found,
            // This thread is exiting and its cache is gone.
            Err(_) => self.read(id, &mut during, || TableRef::Loaded(self.table.load())),
        }
    }

    #[inline]
    fn read<'t, R>(
        &self,
        id: KeyId,
        during: &mut impl FnMut() -> R,
        mut table: impl FnMut() -> TableRef<'t>,
    ) -> (Probe, R) {
        // The counter is read before the table is: a table swapped in later moves it.
        let seq = self.stable_seq();
        let first = table();
        first.prefetch(id.get());
        let out = during();
        if let Some(found) = self.find(&first, seq, id) {
            return (found, out);
        }
        drop(first);
        loop {
            let seq = self.stable_seq();
            if let Some(found) = self.find(&table(), seq, id) {
                return (found, out);
            }
        }
    }

    /// An even value of the sequence counter: no writer is between its two bumps.
    #[inline]
    fn stable_seq(&self) -> u64 {
        loop {
            let seq = self.seq.load(Ordering::Acquire);
            if seq & 1 == 0 {
                return seq;
            }
            spin_loop();
        }
    }

    /// What `table` holds for `id`, if no writer ran since the counter read `seq`.
    #[inline]
    fn find(&self, table: &Table, seq: u64, id: KeyId) -> Option<Probe> {
        let id = id.get();
        let result = match table.position(id) {
            Some(pos) => Probe::Found(table.slots[pos].read()),
            None => Probe::Miss,
        };
        fence(Ordering::Acquire);
        let consistent = self.seq.load(Ordering::Relaxed) == seq;
        // Never trust a slot whose id does not match, whatever the counter says.
        let matches = match &result {
            Probe::Found(entry) => entry.id == id,
            Probe::Miss => true,
        };
        (consistent && matches).then_some(result)
    }

    /// Where the counters stand before a fill of `id` reads the store (`None`: before a read of many
    /// keys). A fill that read the store before a change must not cache what it read.
    pub(crate) fn stamp(&self, id: Option<KeyId>) -> Stamp {
        match id {
            Some(id) => Stamp::Key {
                owners: self.owners.load(Ordering::Acquire),
                bucket: self.bucket(id).load(Ordering::Acquire),
            },
            None => Stamp::All(self.all.load(Ordering::Acquire)),
        }
    }

    /// Whether nothing that could change `id`'s record happened since `stamp` was taken.
    pub(crate) fn unchanged_since(&self, id: KeyId, stamp: Stamp) -> bool {
        match stamp {
            Stamp::Key { owners, bucket } => {
                self.owners.load(Ordering::Acquire) == owners
                    && self.bucket(id).load(Ordering::Acquire) == bucket
            }
            Stamp::All(all) => self.all.load(Ordering::Acquire) == all,
            Stamp::Owners(owners) => self.owners.load(Ordering::Acquire) == owners,
        }
    }

    /// The owner counter: it moves whenever a user's or company's state may have changed (a status
    /// written here, an owner event heard from another node, a resync).
    pub(crate) fn owners_epoch(&self) -> u64 {
        self.owners.load(Ordering::Acquire)
    }

    /// Where the owner counter stands before a user's or company's status is written to the store.
    pub(crate) fn owners_stamp(&self) -> Stamp {
        Stamp::Owners(self.owners.load(Ordering::Acquire))
    }

    fn bucket(&self, id: KeyId) -> &AtomicU64 {
        let b = (id.get().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize;
        &self.buckets[b % self.buckets.len()]
    }

    fn key_changed(&self, id: KeyId) {
        self.all.fetch_add(1, Ordering::AcqRel);
        self.bucket(id).fetch_add(1, Ordering::AcqRel);
    }

    fn owners_changed(&self) {
        self.all.fetch_add(1, Ordering::AcqRel);
        self.owners.fetch_add(1, Ordering::AcqRel);
    }

    /// Caches what the store said of `id`, unless it may have changed since `stamp` was taken.
    /// Returns whether the result was cached.
    pub(crate) fn fill(&self, id: KeyId, record: Option<&KeyRecord>, stamp: Stamp) -> bool {
        let mut w = self.lock();
        if !self.unchanged_since(id, stamp) {
            return false;
        }
        match record {
            Some(record) => self.put(&mut w, record),
            None => self.put_negative(&mut w, id),
        }
        true
    }

    /// Applies a record that a management call on this node just wrote.
    #[cfg(test)]
    pub(crate) fn upsert(&self, record: &KeyRecord) {
        let mut w = self.lock();
        self.key_changed(record.id);
        self.put(&mut w, record);
    }

    /// Applies a record that a management call on this node wrote, read after `stamp` was taken.
    /// When the key or an owner changed since (another write, here or on another node, may have
    /// landed after this one and been applied first), the record may be older than what the index
    /// holds: forget the key instead, so the next request reads the store.
    pub(crate) fn upsert_since(&self, record: &KeyRecord, stamp: Stamp) {
        let mut w = self.lock();
        let unchanged = self.unchanged_since(record.id, stamp);
        self.key_changed(record.id);
        if unchanged {
            self.put(&mut w, record);
        } else {
            self.remove(&mut w, record.id);
        }
    }

    /// Forgets `id` (deleted, or changed elsewhere and to be re-read).
    pub(crate) fn invalidate(&self, id: KeyId) {
        let mut w = self.lock();
        self.key_changed(id);
        self.remove(&mut w, id);
    }

    fn remove(&self, w: &mut Writer, id: KeyId) {
        let table = self.table.load_full();
        if let Some(pos) = table.position(id.get()) {
            let cold = table.slots[pos].read().cold;
            self.write(|table| table.remove_at(pos));
            w.occupied -= 1;
            w.take_cold(cold);
        }
    }

    /// Applies a user's or company's status that a management call on this node wrote after
    /// `stamp` was taken. When another owner change was applied since, it may have been written
    /// after this one: forget the owner's cached keys instead, so they are read again.
    pub(crate) fn set_owner_status_since(
        &self,
        user_uid: Option<&str>,
        company_id: Option<&str>,
        status: Status,
        stamp: Stamp,
    ) {
        let mut w = self.lock();
        if self.unchanged_since_owners(stamp) {
            return self.apply_owner_status(&mut w, user_uid, company_id, status);
        }
        self.forget_owner_locked(&mut w, user_uid, company_id);
    }

    /// Forgets every cached key of a user or company, so they are read again: a status write whose
    /// outcome is unknown (the store failed) must not leave a guess in the index.
    pub(crate) fn forget_owner(&self, user_uid: Option<&str>, company_id: Option<&str>) {
        let mut w = self.lock();
        self.forget_owner_locked(&mut w, user_uid, company_id);
    }

    fn forget_owner_locked(
        &self,
        w: &mut Writer,
        user_uid: Option<&str>,
        company_id: Option<&str>,
    ) {
        self.owners_changed();
        let owned: Vec<KeyId> = w
            .cold
            .iter()
            .flatten()
            .filter(|cold| {
                user_uid.is_some_and(|uid| cold.owner.user_uid == uid)
                    || company_id.is_some_and(|id| cold.owner.company_id == id)
            })
            .map(|cold| cold.id)
            .collect();
        for id in owned {
            self.remove(w, id);
        }
    }

    fn unchanged_since_owners(&self, stamp: Stamp) -> bool {
        match stamp {
            Stamp::Owners(owners) => self.owners.load(Ordering::Acquire) == owners,
            Stamp::Key { .. } | Stamp::All(_) => false,
        }
    }

    /// Recomputes every cached key of a user or company after its status changed.
    #[cfg(test)]
    pub(crate) fn set_owner_status(
        &self,
        user_uid: Option<&str>,
        company_id: Option<&str>,
        status: Status,
    ) {
        let mut w = self.lock();
        self.apply_owner_status(&mut w, user_uid, company_id, status);
    }

    fn apply_owner_status(
        &self,
        w: &mut Writer,
        user_uid: Option<&str>,
        company_id: Option<&str>,
        status: Status,
    ) {
        self.owners_changed();
        let mut changed = Vec::new();
        for cold in w.cold.iter_mut().flatten() {
            if user_uid.is_some_and(|uid| cold.owner.user_uid == uid) {
                cold.user_status = status;
            } else if company_id.is_some_and(|id| cold.owner.company_id == id) {
                cold.company_status = status;
            } else {
                continue;
            }
            let effective = Status::effective(cold.status, cold.user_status, cold.company_status);
            changed.push((cold.id, effective));
        }
        self.write(|table| {
            for (id, effective) in &changed {
                if let Some(pos) = table.position(id.get()) {
                    let slot = &table.slots[pos];
                    let mut entry = slot.read();
                    entry.meta = (entry.meta & !0xff) | u64::from(effective.to_byte());
                    slot.write(&entry);
                }
            }
        });
    }

    /// Forgets everything: notifications may have been lost.
    pub(crate) fn clear(&self) {
        let mut w = self.lock();
        self.owners_changed();
        *w = Writer::new();
        let seed = self.table.load().seed;
        self.write(|_| {});
        self.swap_table(Table::new(MIN_CAPACITY, seed));
    }

    /// The cached record of `id`, rebuilt from its slot and arena entry.
    pub(crate) fn record(&self, id: KeyId) -> Option<KeyRecord> {
        let w = self.lock();
        let Probe::Found(entry) = self.probe(id) else {
            return None;
        };
        let cold = w.cold(entry.cold).filter(|c| c.id == id)?;
        Some(cold.record(entry.digest()))
    }

    pub(crate) fn login(&self, id: KeyId) -> Option<Arc<UserLogin>> {
        self.record(id).map(|r| Arc::new(r.to_login()))
    }

    /// Number of cached positive records.
    pub(crate) fn len(&self) -> usize {
        self.lock().positives
    }

    /// Number of cached "no such key" entries.
    pub(crate) fn negative_len(&self) -> usize {
        self.lock().negatives.len()
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, w: &mut Writer, record: &KeyRecord) {
        let mut entry = Entry::positive_of(record);
        let owner = w.intern(&record.owner);
        let existing = {
            let table = self.table.load();
            table
                .position(record.id.get())
                .map_or(0, |pos| table.slots[pos].read().cold)
        };
        entry.cold = w.put_cold(existing, Cold::of(record, owner));
        self.store_entry(w, entry);
    }

    fn put_negative(&self, w: &mut Writer, id: KeyId) {
        if self.negative_capacity == 0 {
            return;
        }
        while w.negatives.len() >= self.negative_capacity {
            let Some(old) = w.negatives.pop_front() else {
                break;
            };
            self.write(|table| {
                if let Some(pos) = table.position(old.get()) {
                    if table.slots[pos].read().is_negative() {
                        table.remove_at(pos);
                        w.occupied -= 1;
                    }
                }
            });
        }
        w.negatives.push_back(id);
        self.store_entry(w, Entry::negative(id));
    }

    fn store_entry(&self, w: &mut Writer, entry: Entry) {
        let table = self.table.load_full();
        if let Some(pos) = table.position(entry.id) {
            self.write(|t| t.slots[pos].write(&entry));
            return;
        }
        if (w.occupied + 1) * 8 > table.slots.len() * 7 {
            let bigger = Table::new(table.slots.len() * 2, table.seed);
            for slot in table.slots.iter() {
                if slot.id() != 0 {
                    bigger.insert_new(slot.read());
                }
            }
            bigger.insert_new(entry);
            w.occupied += 1;
            self.write(|_| {});
            self.swap_table(bigger);
            return;
        }
        w.occupied += 1;
        self.write(|t| t.insert_new(entry));
    }

    /// Runs `f` on the current table inside a seqlock write section. Caller holds the writer mutex.
    fn write(&self, f: impl FnOnce(&Table)) {
        let table = self.table.load_full();
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        f(&table);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    fn swap_table(&self, table: Table) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.table.store(Arc::new(table));
        self.generation.fetch_add(1, Ordering::Release);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// Bytes held by the slot table.
    pub(crate) fn table_bytes(&self) -> usize {
        self.table.load().slots.len() * std::mem::size_of::<Slot>()
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        registry::unregister(self.registry_id);
        tables::RETIRED.fetch_add(1, Ordering::Relaxed);
    }
}

/// A `Copy` reference from an [`Identity`](crate::Identity) back to the index that authorized it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexRef(u64);

impl IndexRef {
    pub(crate) fn login(self, id: KeyId) -> Option<Arc<UserLogin>> {
        registry::get(self.0)?.login(id)
    }
}

mod registry {
    use super::*;
    use std::sync::atomic::AtomicU64;

    static NEXT: AtomicU64 = AtomicU64::new(1);
    static INDEXES: OnceLock<RwLock<HashMap<u64, Weak<Index>>>> = OnceLock::new();

    fn map() -> &'static RwLock<HashMap<u64, Weak<Index>>> {
        INDEXES.get_or_init(Default::default)
    }

    pub(super) fn next_id() -> u64 {
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn register(id: u64, index: Weak<Index>) {
        map()
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, index);
    }

    pub(super) fn unregister(id: u64) {
        map().write().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    pub(super) fn get(id: u64) -> Option<Arc<Index>> {
        map()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)?
            .upgrade()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64) -> KeyRecord {
        KeyRecord {
            id: KeyId::new(id).expect("valid id"),
            digest: SecretDigest::from_bytes([id as u8; 32]),
            owner: Owner {
                user_uid: format!("user-{}", id % 3),
                user_name: "u".into(),
                company_id: format!("company-{}", id % 2),
                company_name: "c".into(),
            },
            description: "d".into(),
            read_only: id % 2 == 0,
            scopes: Scopes::from_bits(id & 7),
            status: Status::Enabled,
            user_status: Status::Enabled,
            company_status: Status::Enabled,
            status_locked: false,
            created: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn found(index: &Index, id: u64) -> Option<Entry> {
        match index.probe(KeyId::new(id).expect("valid")) {
            Probe::Found(e) => Some(e),
            Probe::Miss => None,
        }
    }

    #[test]
    fn slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
    }

    #[test]
    fn slot_positions_depend_on_the_ids_held_not_the_order_they_came_in() {
        // Whether an id was cached first (a key) or later (an unknown id during a flood) must not
        // change how far from home it sits, or the cache lines a lookup touches tell them apart.
        let ids: Vec<u64> = (1..=3000u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) | 1)
            .collect();
        let entry = |id: u64| Entry { id, ..Entry::EMPTY };
        let layout = |order: &[u64], extra: &[u64]| {
            let table = Table::new(4096, 0x5eed);
            for &id in extra.iter().chain(order) {
                table.insert_new(entry(id));
            }
            for &id in extra {
                let pos = table.position(id).expect("present");
                table.remove_at(pos);
            }
            table.slots.iter().map(Slot::id).collect::<Vec<_>>()
        };
        let forward = layout(&ids, &[]);
        let mut reversed = ids.clone();
        reversed.reverse();
        let mut interleaved: Vec<u64> = ids.iter().copied().step_by(2).collect();
        interleaved.extend(ids.iter().copied().skip(1).step_by(2));
        let removed: Vec<u64> = (1..=300u64).map(|i| i << 40).collect();
        assert_eq!(layout(&reversed, &[]), forward);
        assert_eq!(layout(&interleaved, &[]), forward);
        assert_eq!(layout(&ids, &removed), forward);
    }

    #[test]
    fn a_key_and_a_cached_unknown_id_sit_in_the_same_slot() {
        // The same ids held, one of them a key in one index and a cached "no such key" in the other:
        // every id sits in the same slot in both, so a lookup of any id walks the same slots, reads
        // the same cache lines, and runs the same compare whichever it is.
        let ids: Vec<u64> = (1..=2000u64).map(|i| i * 7919).collect();
        // One index, emptied between layouts: `clear` keeps the placement seed.
        let index = Index::new(4096);
        let layout = |negatives: &[u64]| {
            index.clear();
            // Keys first, unknown ids after (as a flood caches them once the keys are loaded).
            for &id in ids.iter().filter(|id| !negatives.contains(id)) {
                index.upsert(&record(id));
            }
            for &id in negatives {
                let key = KeyId::new(id).expect("valid");
                assert!(index.fill(key, None, index.stamp(Some(key))));
            }
            let table = index.table.load_full();
            table.slots.iter().map(Slot::id).collect::<Vec<_>>()
        };
        let all_keys = layout(&[]);
        for negatives in [&ids[..1], &ids[1000..1001], &ids[..1000], &ids[..]] {
            assert_eq!(layout(negatives), all_keys);
        }
    }

    #[test]
    fn inserts_grow_and_stay_findable_then_removals_leave_the_rest() {
        let index = Index::new(16);
        let ids: Vec<u64> = (1..=5000u64).map(|i| i * 7919).collect();
        for &id in &ids {
            index.upsert(&record(id));
        }
        for &id in &ids {
            let e = found(&index, id).expect("present");
            assert_eq!(e.id, id);
            assert_eq!(e.digest, [id as u8; 32]);
            assert_eq!(e.read_only(), id % 2 == 0);
        }
        for &id in ids.iter().step_by(2) {
            index.invalidate(KeyId::new(id).expect("valid"));
        }
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(found(&index, id).is_some(), i % 2 == 1, "id {id}");
        }
        assert!(found(&index, 3).is_none());
        assert_eq!(index.len(), 2500);
    }

    #[test]
    fn a_thread_that_cached_a_table_sees_the_grown_one() {
        let index = Index::new(16);
        index.upsert(&record(1));
        // This thread now holds the first table; each growth must replace it before the next read.
        assert!(found(&index, 1).is_some());
        let first = Arc::downgrade(&index.table.load_full());
        for id in 2..=1000u64 {
            index.upsert(&record(id));
            assert_eq!(found(&index, id).map(|e| e.id), Some(id), "id {id}");
        }
        assert!(
            index.generation.load(Ordering::Relaxed) > 0,
            "the table grew"
        );
        // The reader moved on, so the first table is gone.
        assert!(first.upgrade().is_none());
    }

    #[test]
    fn readers_on_other_threads_follow_growth_and_removals() {
        let index = Index::new(16);
        index.upsert(&record(1));
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) {
                    // Key 1 is never removed: every read must find it, whatever table is current.
                    assert_eq!(found(&index, 1).map(|e| e.id), Some(1));
                    reads += 1;
                }
                reads
            });
            for id in 2..=5000u64 {
                index.upsert(&record(id));
            }
            for id in 2..=5000u64 {
                index.invalidate(KeyId::new(id).expect("valid"));
            }
            done.store(true, Ordering::Release);
            assert!(reader.join().expect("reader") > 0);
        });
        // The thread that read is gone, and with it its cached table.
        assert!(found(&index, 4999).is_none());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn more_indexes_than_cache_entries_read_in_turn_each_answer_for_themselves() {
        let indexes: Vec<_> = (0..7u64)
            .map(|i| {
                let index = Index::new(16);
                index.upsert(&record(100 + i));
                index
            })
            .collect();
        for round in 0..3 {
            for (i, index) in indexes.iter().enumerate() {
                for (j, _) in indexes.iter().enumerate() {
                    let id = 100 + j as u64;
                    assert_eq!(found(index, id).is_some(), i == j, "round {round}: {i} {j}");
                }
                // Growth of one index while the others hold cache entries.
                if round == 1 {
                    for id in 1000..1100 {
                        index.upsert(&record(id + 1000 * i as u64));
                    }
                }
            }
        }
        for (i, index) in indexes.iter().enumerate() {
            assert!(found(index, 1050 + 1000 * i as u64).is_some(), "{i}");
        }
    }

    #[test]
    fn a_dropped_index_leaves_no_table_behind_in_the_thread_that_read_it() {
        let index = Index::new(16);
        index.upsert(&record(1));
        assert!(found(&index, 1).is_some());
        let table = Arc::downgrade(&index.table.load_full());
        drop(index);
        assert!(table.upgrade().is_some(), "still cached by this thread");
        // The next lookup in any index empties the cache of dropped ones.
        let other = Index::new(16);
        assert!(found(&other, 1).is_none());
        assert!(table.upgrade().is_none());
    }

    #[test]
    fn negative_cache_is_bounded_and_a_real_key_replaces_its_entry() {
        let index = Index::new(4);
        for id in 1..=10u64 {
            let key = KeyId::new(id).expect("valid");
            assert!(index.fill(key, None, index.stamp(Some(key))));
        }
        assert_eq!(index.negative_len(), 4);
        let negatives = (1..=10u64)
            .filter(|&id| found(&index, id).is_some())
            .count();
        assert_eq!(negatives, 4);
        assert!(found(&index, 10).expect("cached").is_negative());
        index.upsert(&record(10));
        let e = found(&index, 10).expect("present");
        assert!(!e.is_negative());
        assert_eq!(e.status(), Status::Enabled);
    }

    #[test]
    fn a_fill_that_started_before_a_change_is_not_cached() {
        let index = Index::new(4);
        let id = KeyId::new(42).expect("valid");
        let stamp = index.stamp(Some(id));
        let all = index.stamp(None);
        // A change to another key does not make this fill stale; one to this key does.
        let other = (1..)
            .map(|i| KeyId::new(i).expect("valid"))
            .find(|k| !std::ptr::eq(index.bucket(*k), index.bucket(id)));
        index.invalidate(other.expect("some id in another bucket"));
        assert!(!index.fill(id, Some(&record(42)), all));
        index.invalidate(id);
        assert!(!index.fill(id, Some(&record(42)), stamp));
        assert!(found(&index, 42).is_none());
        let stamp = index.stamp(Some(id));
        index.invalidate(other.expect("some id in another bucket"));
        assert!(index.fill(id, Some(&record(42)), stamp));
        let stamp = index.stamp(Some(id));
        index.set_owner_status(Some("nobody"), None, Status::Disabled);
        assert!(!index.fill(id, None, stamp));
    }

    #[test]
    fn owner_status_changes_reach_every_cached_key() {
        let index = Index::new(4);
        for id in 1..=30u64 {
            index.upsert(&record(id));
        }
        index.set_owner_status(Some("user-1"), None, Status::Disabled);
        for id in 1..=30u64 {
            let e = found(&index, id).expect("present");
            let expected = if id % 3 == 1 {
                Status::DisabledDueToUser
            } else {
                Status::Enabled
            };
            assert_eq!(e.status(), expected, "id {id}");
        }
        index.set_owner_status(None, Some("company-0"), Status::Disabled);
        assert_eq!(
            found(&index, 2).expect("present").status(),
            Status::DisabledDueToCompany
        );
        index.set_owner_status(Some("user-1"), None, Status::Enabled);
        assert_eq!(found(&index, 1).expect("present").status(), Status::Enabled);
        let login = index.login(KeyId::new(4).expect("valid")).expect("cached");
        assert_eq!(login.status, Status::DisabledDueToCompany);
    }

    #[test]
    fn readers_never_see_a_torn_slot_while_writers_run() {
        let index = Index::new(64);
        for id in 1..=200u64 {
            index.upsert(&record(id));
        }
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                for round in 0..200_000u64 {
                    let id = 1 + round % 200;
                    if let Some(e) = found(&index, id) {
                        assert_eq!(e.id, id);
                        assert_eq!(e.digest, [id as u8; 32]);
                    }
                }
            });
            for round in 0..2_000u64 {
                let id = 1 + round % 200;
                index.invalidate(KeyId::new(id).expect("valid"));
                index.upsert(&record(id));
                index.upsert(&record(1000 + round));
            }
            reader.join().expect("reader ok");
        });
    }
}
