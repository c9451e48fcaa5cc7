//! What a password grant passes before any hash: failed logins counted per client address, per
//! user name from one address and per user name from every address, and this router's places in
//! the hashing queue.
//!
//! Each key holds a level that one failure raises by one and that drains at `limit / window` per
//! second: `limit` failures in a burst, then one more every `window / limit`. Attempts still being
//! checked count too, so that 300 requests sent at once do not all pass before the first failure
//! is recorded; and one address holds at most a quarter of the queue's places at once, so that one
//! client cannot keep the queue full for everyone else. Successes do not count: a success clears
//! the level of its (user name, address) pair and marks the pair as known for [`TRUSTED_FOR`].
//!
//! The limits trade guessing against lock-out. An address is refused after
//! [`LoginLimits::per_client`] failures whatever names it tries; a user name from one address after
//! [`LoginLimits::per_user_and_client`]. A user name from every address together is refused after
//! the much higher [`LoginLimits::per_user`], and not at all from a known pair: an attacker failing
//! on a victim's name, from one address or many, does not lock the victim out of an address they
//! logged in from; from a new one it does, which is the price of capping a guess spread over many
//! addresses.
//!
//! User names are kept as 16-byte salted digests, so every entry has the same small size; the
//! table holds at most [`CAPACITY`] of them and, when full, forgets drained ones first and then the
//! longest-untouched eighth.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::password::{self, Admission, HashError, LoginQueue};

/// Entries the table holds at most (about 100 bytes each), plus those of attempts in flight.
pub(crate) const CAPACITY: usize = 30_000;

/// How long a (user name, address) pair that logged in stays exempt from the name's limit across
/// addresses, unless the table needs its place first.
pub(crate) const TRUSTED_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// Queued logins per hashing thread: at 20 to 30 ms per hash, a login waits at most about a
/// quarter of a second behind the others.
pub(crate) const QUEUE_PER_WORKER: usize = 8;

/// How long a login may take from entering the queue to its answer.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// One address may hold at most this fraction of the queue.
const IN_FLIGHT_SHARE: usize = 4;

/// How many failed logins are tolerated, and over what time they are forgiven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures from one client address, whatever the user names.
    pub per_client: u32,
    /// Failures for one user name from one client address.
    pub per_user_and_client: u32,
    /// Failures for one user name from all addresses together, except those it logged in from
    /// during the last seven days.
    pub per_user: u32,
    /// The time over which a full allowance drains.
    pub window: Duration,
}

impl Default for LoginLimits {
    /// 20 per address, 5 per user name and address, 100 per user name, over 15 minutes.
    fn default() -> Self {
        Self {
            per_client: 20,
            per_user_and_client: 5,
            per_user: 100,
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// The failure table and the hashing queue of one management API.
pub(crate) struct Throttle {
    client: Limit,
    pair: Limit,
    name: Limit,
    /// Attempts one address may have in flight.
    in_flight_per_client: u32,
    /// Keys the name digests, so that nobody picks names that share an entry.
    salt: [u8; 16],
    table: Mutex<Table>,
    queue: LoginQueue,
}

/// A limit and the rate its level drains at.
#[derive(Debug, Clone, Copy)]
struct Limit {
    limit: f64,
    per_second: f64,
}

impl Limit {
    fn new(limit: u32, window: Duration) -> Self {
        let limit = f64::from(limit.max(1));
        Self {
            limit,
            per_second: limit / window.as_secs_f64().max(1.0),
        }
    }
}

/// The entries, and a counter that orders their last use (clock readings can tie).
#[derive(Debug, Default)]
struct Table {
    entries: HashMap<Key, Entry>,
    uses: u64,
}

impl Table {
    fn tick(&mut self) -> u64 {
        self.uses += 1;
        self.uses
    }
}

/// Where a client comes from, as far as counting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    /// No `ConnectInfo`: every such attempt shares this one.
    Unknown,
    V4([u8; 4]),
    /// The /64 prefix: one host usually holds all of it.
    V6([u8; 8]),
}

impl Client {
    fn of(ip: Option<IpAddr>) -> Self {
        match ip {
            None => Self::Unknown,
            Some(IpAddr::V4(v4)) => Self::V4(v4.octets()),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Self::V6(prefix)
                }
            },
        }
    }
}

/// A user name's digest: fixed size whatever the name's length.
type Name = [u8; 16];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Client(Client),
    Pair(Name, Client),
    Name(Name),
}

#[derive(Debug)]
struct Entry {
    /// Failures, drained since `at`.
    level: f64,
    at: Instant,
    /// Attempts admitted and not yet settled.
    pending: u32,
    /// When it was last used, in [`Table::uses`]: the longest-untouched go first when full.
    touched: u64,
    /// For pairs: logged in successfully, and exempt from the name's limit until then.
    trusted_until: Option<Instant>,
}

impl Entry {
    fn new(now: Instant, touched: u64) -> Self {
        Self {
            level: 0.0,
            at: now,
            pending: 0,
            touched,
            trusted_until: None,
        }
    }

    fn level(&self, now: Instant, limit: Limit) -> f64 {
        let drained = now.saturating_duration_since(self.at).as_secs_f64() * limit.per_second;
        (self.level - drained).max(0.0)
    }

    fn trusted(&self, now: Instant) -> bool {
        self.trusted_until.is_some_and(|until| now < until)
    }

    /// How long until one more attempt may pass, if it may not now: until enough failures have
    /// drained, or a second when only attempts still being checked fill the allowance.
    fn wait(&self, now: Instant, limit: Limit) -> Option<Duration> {
        let level = self.level(now, limit);
        let excess = level + 1.0 - limit.limit;
        if excess > 0.0 {
            return Some(Duration::from_secs_f64(excess / limit.per_second));
        }
        (level + f64::from(self.pending) + 1.0 > limit.limit).then_some(Duration::from_secs(1))
    }
}

/// One admitted attempt. Settle it with [`Attempt::failed`] or [`Attempt::succeeded`]; dropped
/// unsettled (busy, store failure), it counts as nothing.
pub(crate) struct Attempt<'a> {
    throttle: &'a Throttle,
    keys: [Option<Key>; 3],
    settled: bool,
}

impl Throttle {
    /// Counters for `limits`; `queue` places in the hashing queue (default: 8 per hashing thread)
    /// and `timeout` from entering it to the answer.
    pub(crate) fn new(limits: LoginLimits, queue: Option<usize>, timeout: Duration) -> Self {
        let queue = queue
            .unwrap_or_else(|| QUEUE_PER_WORKER * password::workers())
            .max(1);
        let mut salt = [0u8; 16];
        // Without randomness the digests are still fixed-size; only picking colliding names
        // becomes possible, which merges two counters and locks out no one new.
        let _ = getrandom::fill(&mut salt);
        Self {
            client: Limit::new(limits.per_client, limits.window),
            pair: Limit::new(limits.per_user_and_client, limits.window),
            name: Limit::new(limits.per_user, limits.window),
            in_flight_per_client: u32::try_from(queue / IN_FLIGHT_SHARE)
                .unwrap_or(u32::MAX)
                .max(1),
            salt,
            table: Mutex::new(Table::default()),
            queue: LoginQueue::new(queue, timeout),
        }
    }

    fn limit(&self, key: &Key) -> Limit {
        match key {
            Key::Client(_) => self.client,
            Key::Pair(..) => self.pair,
            Key::Name(_) => self.name,
        }
    }

    fn digest(&self, user_name: &str) -> Name {
        let digest = Sha256::new()
            .chain_update(self.salt)
            .chain_update(user_name.as_bytes())
            .finalize();
        let mut name = [0u8; 16];
        name.copy_from_slice(&digest[..16]);
        name
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Counters hold no invariant a panic could break halfway.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits an attempt for `user_name` from `client`, or says how long to wait (at least a
    /// second) when the address, the pair or the name is over its limit, or the address already
    /// has its share of the queue in flight. A refusal is not counted.
    pub(crate) fn attempt(
        &self,
        user_name: &str,
        client: Option<IpAddr>,
    ) -> Result<Attempt<'_>, Duration> {
        let name = self.digest(user_name);
        let client = Client::of(client);
        // Without an address there is no per-address limit: it would be one for every client.
        let by_client = (client != Client::Unknown).then_some(Key::Client(client));
        let pair = Key::Pair(name, client);
        let now = Instant::now();
        let mut table = self.lock();
        let tick = table.tick();
        let trusted = table.entries.get(&pair).is_some_and(|e| e.trusted(now));
        let checked = [by_client, Some(pair), (!trusted).then_some(Key::Name(name))];
        let mut wait = None::<Duration>;
        for key in checked.iter().flatten() {
            let limit = self.limit(key);
            let Some(entry) = table.entries.get_mut(key) else {
                continue;
            };
            let crowded =
                matches!(key, Key::Client(_)) && entry.pending >= self.in_flight_per_client;
            let this = entry
                .wait(now, limit)
                .or_else(|| crowded.then_some(Duration::from_secs(1)));
            if let Some(this) = this {
                // Touched, so that a refused attacker's entry is the last the table forgets.
                entry.touched = tick;
                wait = Some(wait.map_or(this, |w| w.max(this)));
            }
        }
        if let Some(wait) = wait {
            return Err(wait.max(Duration::from_secs(1)));
        }
        let keys = [by_client, Some(pair), Some(Key::Name(name))];
        self.make_room(&mut table, now, keys.iter().flatten().count());
        for key in keys.iter().flatten() {
            let entry = table
                .entries
                .entry(*key)
                .or_insert_with(|| Entry::new(now, tick));
            entry.pending = entry.pending.saturating_add(1);
            entry.touched = tick;
        }
        Ok(Attempt {
            throttle: self,
            keys,
            settled: false,
        })
    }

    /// A place in the hashing queue, or `Busy` at once when this router's places are all taken.
    pub(crate) fn admit(&self) -> Result<Admission, HashError> {
        self.queue.admit()
    }

    /// Frees room for `need` new entries: first what is drained, then the longest-untouched
    /// eighth. Entries with attempts in flight stay, so the table may pass its capacity by those.
    fn make_room(&self, table: &mut Table, now: Instant, need: usize) {
        let entries = &mut table.entries;
        if entries.len() + need <= CAPACITY {
            return;
        }
        entries.retain(|key, e| {
            e.pending > 0 || e.trusted(now) || e.level(now, self.limit(key)) > 0.0
        });
        if entries.len() + need <= CAPACITY {
            return;
        }
        let mut oldest: Vec<(u64, Key)> = entries
            .iter()
            .filter(|(_, e)| e.pending == 0)
            .map(|(k, e)| (e.touched, *k))
            .collect();
        let evict = (CAPACITY / 8).max(need).min(oldest.len());
        if evict == 0 {
            return;
        }
        oldest.select_nth_unstable_by_key(evict - 1, |&(touched, _)| touched);
        for (_, key) in &oldest[..evict] {
            entries.remove(key);
        }
        tracing::debug!(
            evicted = evict,
            "login throttle table full: forgot the longest-untouched entries"
        );
    }

    fn settle(&self, keys: &[Option<Key>; 3], failed: Option<bool>) {
        let now = Instant::now();
        let mut table = self.lock();
        let tick = table.tick();
        for key in keys.iter().flatten() {
            let limit = self.limit(key);
            // Gone only if evicted while in flight, which `make_room` avoids.
            let Some(entry) = table.entries.get_mut(key) else {
                continue;
            };
            entry.pending = entry.pending.saturating_sub(1);
            entry.touched = tick;
            match failed {
                Some(true) => {
                    entry.level = entry.level(now, limit) + 1.0;
                    entry.at = now;
                }
                Some(false) if matches!(key, Key::Pair(..)) => {
                    entry.level = 0.0;
                    entry.at = now;
                    entry.trusted_until = Some(now + TRUSTED_FOR);
                }
                _ => {}
            }
        }
    }

    /// Entries held, for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

impl fmt::Debug for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("entries", &self.lock().entries.len())
            .field("in_flight_per_client", &self.in_flight_per_client)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Attempt<'_> {
    /// The password was wrong, the user unknown or disabled: counts against address, pair, name.
    pub(crate) fn failed(mut self) {
        self.settled = true;
        self.throttle.settle(&self.keys, Some(true));
    }

    /// The login succeeded: counts nothing, clears the pair's failures and trusts the pair.
    pub(crate) fn succeeded(mut self) {
        self.settled = true;
        self.throttle.settle(&self.keys, Some(false));
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.throttle.settle(&self.keys, None);
        }
    }
}

impl fmt::Debug for Attempt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    /// Limits over a 60-second window, a queue of 64 (16 in flight per address).
    fn throttle(per_client: u32, per_user_and_client: u32, per_user: u32) -> Throttle {
        let limits = LoginLimits {
            per_client,
            per_user_and_client,
            per_user,
            window: Duration::from_secs(60),
        };
        Throttle::new(limits, Some(64), DEFAULT_TIMEOUT)
    }

    fn fail(t: &Throttle, name: &str, client: Option<IpAddr>) {
        t.attempt(name, client).expect("admitted").failed();
    }

    /// The wait of a refused attempt, in whole milliseconds.
    fn refused(t: &Throttle, name: &str, client: Option<IpAddr>) -> u128 {
        t.attempt(name, client)
            .map(drop)
            .expect_err("refused")
            .as_millis()
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_is_refused_from_the_address_that_failed_not_from_others() {
        let t = throttle(100, 2, 100);
        fail(&t, "alice", ip(1));
        fail(&t, "alice", ip(1));
        // One failure drains in window / limit = 30 s.
        assert_eq!(refused(&t, "alice", ip(1)), 30_000);
        assert!(t.attempt("alice", ip(2)).is_ok(), "the victim's address");
        assert!(t.attempt("bob", ip(1)).is_ok(), "other names from there");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(t.attempt("alice", ip(1)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_is_refused_whatever_names_it_tries() {
        let t = throttle(3, 100, 100);
        for n in 0..3 {
            fail(&t, &format!("user{n}"), ip(1));
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        // One of three failures drains in 20 s; 5 have passed.
        assert!((14_999..=15_000).contains(&refused(&t, "someone else", ip(1))));
        assert!(t.attempt("someone else", ip(2)).is_ok());
        tokio::time::advance(Duration::from_secs(15)).await;
        assert!(t.attempt("someone else", ip(1)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_in_flight_count_until_settled() {
        let t = throttle(2, 100, 100);
        let a = t.attempt("a", ip(1)).expect("admitted");
        let b = t.attempt("b", ip(1)).expect("admitted");
        assert_eq!(refused(&t, "c", ip(1)), 1_000);
        // Dropped unsettled (busy): counts as nothing.
        drop(a);
        b.succeeded();
        for _ in 0..5 {
            t.attempt("c", ip(1)).expect("admitted").succeeded();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_address_holds_at_most_a_quarter_of_the_queue() {
        let limits = LoginLimits::default();
        let t = Throttle::new(limits, Some(8), DEFAULT_TIMEOUT);
        let a = t.attempt("a", ip(1)).expect("admitted");
        let b = t.attempt("b", ip(1)).expect("admitted");
        assert_eq!(refused(&t, "c", ip(1)), 1_000);
        assert!(t.attempt("c", ip(2)).is_ok());
        // Nothing is counted for the crowded attempt: once one settles, the next passes.
        a.succeeded();
        assert!(t.attempt("c", ip(1)).is_ok());
        drop(b);
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_failing_from_everywhere_is_refused_everywhere_but_where_it_logged_in() {
        let t = throttle(100, 2, 4);
        t.attempt("victim", ip(9)).expect("admitted").succeeded();
        for n in 1..=4 {
            fail(&t, "victim", ip(n));
        }
        assert!(t.attempt("victim", ip(5)).is_err());
        assert!(t.attempt("victim", None).is_err());
        assert!(t.attempt("other", ip(5)).is_ok());
        // The address it logged in from is held to the pair's own limit only.
        t.attempt("victim", ip(9)).expect("exempt").succeeded();
        fail(&t, "victim", ip(9));
        fail(&t, "victim", ip(9));
        assert!(t.attempt("victim", ip(9)).is_err(), "the pair's own limit");
        // The exemption ends.
        tokio::time::advance(TRUSTED_FOR).await;
        for n in 1..=4 {
            fail(&t, "victim", ip(n));
        }
        assert!(t.attempt("victim", ip(9)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_clears_its_own_pair_only() {
        let t = throttle(3, 2, 100);
        fail(&t, "alice", ip(1));
        fail(&t, "alice", ip(1));
        assert!(t.attempt("alice", ip(1)).is_err());
        tokio::time::advance(Duration::from_secs(30)).await;
        t.attempt("alice", ip(1)).expect("drained").succeeded();
        fail(&t, "alice", ip(1));
        assert!(t.attempt("alice", ip(1)).is_ok(), "the pair starts over");
        // The address keeps its failures: 0.5 left of the first two, then two more.
        fail(&t, "bob", ip(1));
        assert!(t.attempt("carol", ip(1)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_address_a_name_is_limited_as_from_one_address() {
        let t = throttle(1, 2, 100);
        fail(&t, "a", None);
        // No per-address limit for the unknown address: another name still passes.
        fail(&t, "b", None);
        fail(&t, "a", None);
        assert!(t.attempt("a", None).is_err());
        assert!(t.attempt("c", None).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn names_compare_exactly_and_ipv6_counts_per_64() {
        let t = throttle(100, 1, 100);
        fail(&t, "Admin", ip(1));
        assert!(t.attempt("admin", ip(1)).is_ok());
        assert!(t.attempt("Admin", ip(1)).is_err());
        let t = throttle(1, 100, 100);
        let v6 = |subnet: u16, last: u16| {
            Some(IpAddr::V6(Ipv6Addr::new(
                0x2001, 0xdb8, 0, subnet, 0, 0, 0, last,
            )))
        };
        fail(&t, "a", v6(1, 1));
        assert!(t.attempt("b", v6(1, 2)).is_err());
        assert!(t.attempt("b", v6(2, 1)).is_ok());
        // An IPv4-mapped address is its IPv4 address.
        let t = throttle(1, 100, 100);
        fail(&t, "a", ip(7));
        let mapped = Some(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped()));
        assert!(t.attempt("b", mapped).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn rotating_long_names_never_grows_the_table_past_its_capacity() {
        // Each name adds two entries (its own and its pair's), each the same size however long.
        let t = throttle(u32::MAX, 100, 100);
        let long = "x".repeat(256);
        for n in 0..20_000u32 {
            fail(&t, &format!("{long}{n}"), ip(1));
            assert!(t.len() <= CAPACITY, "{} entries after {n}", t.len());
        }
        // The attacker's own address entry is touched on every attempt and is never forgotten.
        let t = throttle(20_000, 100, 100);
        for n in 0..20_000u32 {
            fail(&t, &format!("name{n}"), ip(1));
        }
        assert!(t.attempt("name-next", ip(1)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn drained_entries_are_dropped_first_when_the_table_is_full() {
        let t = throttle(100, 1, 100);
        let fill = CAPACITY / 2 - 1;
        for n in 0..fill as u32 {
            fail(&t, &format!("old{n}"), None);
        }
        assert_eq!(t.len(), 2 * fill);
        tokio::time::advance(Duration::from_secs(61)).await;
        // Full: the sweep drops the drained entries, and keeps what comes after.
        fail(&t, "recent", ip(100));
        fail(&t, "new", ip(101));
        assert_eq!(t.len(), 6);
        assert!(t.attempt("recent", ip(100)).is_err());
    }
}
