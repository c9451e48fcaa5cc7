//! Failed logins, counted per client address, per user name, and per both: over its limit, a key
//! is refused before any password is hashed, until enough time has passed.
//!
//! Each key holds a level that one failure raises by one and that drains at `limit / window` per
//! second: `limit` failures in a burst, then one more every `window / limit`. Only failures count,
//! so a holder of the right password is never slowed by their own logins, and a success clears
//! the failures of that user name from that address.
//!
//! The limits trade guessing against lock-out. An address is refused after
//! [`LoginLimits::per_client`] failures whatever names it tries; a user name from one address after
//! [`LoginLimits::per_user_and_client`]. A user name from every address together is refused only
//! after the much higher [`LoginLimits::per_user`], so an attacker who fails on a victim's name
//! from one address locks out that address, not the victim; many addresses together can still
//! slow the victim down, which is the price of capping a distributed guess on one account.
//!
//! Each table is bounded ([`CAPACITY`] keys): when full, drained keys go first, then the one
//! least recently failed.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::password::{self, Admission, HashError, LoginQueue};

/// Keys each table holds at most.
pub(crate) const CAPACITY: usize = 10_000;

/// Queued logins per hashing thread: at 20 to 30 ms per hash, a login waits at most about a
/// quarter of a second behind the others.
pub(crate) const QUEUE_PER_WORKER: usize = 8;

/// How long a login may take from entering the queue to its answer.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// How many failed logins are tolerated, and over what time they are forgiven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures from one client address, whatever the user names.
    pub per_client: u32,
    /// Failures for one user name from one client address.
    pub per_user_and_client: u32,
    /// Failures for one user name from all addresses together.
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

#[derive(Clone, Copy)]
struct Level {
    value: f64,
    at: Instant,
}

impl Level {
    /// The level at `now`, drained at `rate` per second.
    fn at(self, now: Instant, rate: f64) -> f64 {
        (self.value - now.saturating_duration_since(self.at).as_secs_f64() * rate).max(0.0)
    }
}

/// One bounded table of levels.
struct Table<K> {
    limit: f64,
    rate: f64,
    levels: HashMap<K, Level>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(limit: u32, window: Duration) -> Self {
        let limit = f64::from(limit.max(1));
        Self {
            limit,
            rate: limit / window.as_secs_f64().max(1.0),
            levels: HashMap::new(),
        }
    }

    /// How long `key` must wait before another attempt, if it is over its limit.
    fn wait(&self, key: &K, now: Instant) -> Option<Duration> {
        let level = self.levels.get(key)?.at(now, self.rate);
        // Refused while another failure would take it past the limit.
        let excess = level + 1.0 - self.limit;
        (excess > 0.0).then(|| Duration::from_secs_f64(excess / self.rate))
    }

    fn fail(&mut self, key: K, now: Instant) {
        if !self.levels.contains_key(&key) && self.levels.len() >= CAPACITY {
            self.make_room(now);
        }
        let rate = self.rate;
        let level = self.levels.entry(key).or_insert(Level {
            value: 0.0,
            at: now,
        });
        *level = Level {
            value: level.at(now, rate) + 1.0,
            at: now,
        };
    }

    fn forget(&mut self, key: &K) {
        self.levels.remove(key);
    }

    fn make_room(&mut self, now: Instant) {
        let rate = self.rate;
        self.levels.retain(|_, l| l.at(now, rate) > 0.0);
        if self.levels.len() >= CAPACITY {
            let oldest = self
                .levels
                .iter()
                .min_by_key(|(_, l)| l.at)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.levels.remove(&oldest);
            }
        }
    }
}

struct Tables {
    client: Table<IpAddr>,
    user_and_client: Table<(String, IpAddr)>,
    user: Table<String>,
}

/// The failed-login counters and the hashing queue of one management API.
pub(crate) struct Throttle {
    tables: Mutex<Tables>,
    queue: LoginQueue,
}

impl Throttle {
    /// Counters for `limits`; `queue` places in the hashing queue (default: 8 per hashing thread)
    /// and `timeout` from entering it to the answer.
    pub(crate) fn new(limits: LoginLimits, queue: Option<usize>, timeout: Duration) -> Self {
        let queue = queue.unwrap_or_else(|| QUEUE_PER_WORKER * password::workers());
        Self {
            tables: Mutex::new(Tables {
                client: Table::new(limits.per_client, limits.window),
                user_and_client: Table::new(limits.per_user_and_client, limits.window),
                user: Table::new(limits.per_user, limits.window),
            }),
            queue: LoginQueue::new(queue, timeout),
        }
    }

    /// A place in the hashing queue, or `Busy` at once when this router's places are all taken.
    pub(crate) fn admit(&self) -> Result<Admission, HashError> {
        self.queue.admit()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // Counters hold no invariant a panic could break halfway.
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a login for `user_name` from `client` must wait, if any of its keys is over its
    /// limit.
    pub(crate) fn wait(
        &self,
        user_name: &str,
        client: Option<IpAddr>,
        now: Instant,
    ) -> Option<Duration> {
        let tables = self.lock();
        let name = user_name.to_owned();
        let by_name = tables.user.wait(&name, now);
        let by_client = client.and_then(|ip| {
            let pair = tables.user_and_client.wait(&(name, ip), now);
            pair.max(tables.client.wait(&ip, now))
        });
        by_name.max(by_client)
    }

    /// Counts a failed login.
    pub(crate) fn fail(&self, user_name: &str, client: Option<IpAddr>, now: Instant) {
        let mut tables = self.lock();
        tables.user.fail(user_name.to_owned(), now);
        if let Some(ip) = client {
            tables.user_and_client.fail((user_name.to_owned(), ip), now);
            tables.client.fail(ip, now);
        }
    }

    /// A login succeeded: the failures of that user name from that address are forgiven.
    pub(crate) fn succeed(&self, user_name: &str, client: Option<IpAddr>) {
        if let Some(ip) = client {
            self.lock()
                .user_and_client
                .forget(&(user_name.to_owned(), ip));
        }
    }
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tables = self.lock();
        f.debug_struct("Throttle")
            .field("clients", &tables.client.levels.len())
            .field("users", &tables.user.levels.len())
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    fn limits() -> LoginLimits {
        LoginLimits {
            per_client: 4,
            per_user_and_client: 2,
            per_user: 6,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_name_is_refused_from_the_address_that_failed_not_from_others() {
        let t = Throttle::new(limits(), None, DEFAULT_TIMEOUT);
        let now = Instant::now();
        assert_eq!(t.wait("alice", Some(A), now), None);
        t.fail("alice", Some(A), now);
        assert_eq!(t.wait("alice", Some(A), now), None);
        t.fail("alice", Some(A), now);
        let wait = t.wait("alice", Some(A), now).expect("refused");
        // The pair's table is the tightest: one failure drains in window / limit = 30 s.
        assert!(
            wait > Duration::from_secs(29) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(t.wait("alice", Some(B), now), None, "the victim's address");
        assert_eq!(t.wait("bob", Some(A), now), None, "other names from A");
        // Time drains it.
        assert_eq!(
            t.wait("alice", Some(A), now + Duration::from_secs(31)),
            None
        );
    }

    #[test]
    fn an_address_is_refused_whatever_names_it_tries() {
        let t = Throttle::new(limits(), None, DEFAULT_TIMEOUT);
        let now = Instant::now();
        for name in ["a", "b", "c", "d"] {
            assert_eq!(t.wait(name, Some(A), now), None);
            t.fail(name, Some(A), now);
        }
        assert!(t.wait("e", Some(A), now).is_some());
        assert_eq!(t.wait("e", Some(B), now), None);
    }

    #[test]
    fn a_name_failing_from_everywhere_is_refused_everywhere() {
        let t = Throttle::new(limits(), None, DEFAULT_TIMEOUT);
        let now = Instant::now();
        for n in 0..6u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, n));
            t.fail("alice", Some(ip), now);
        }
        assert!(t.wait("alice", Some(B), now).is_some());
        assert!(t.wait("alice", None, now).is_some());
        assert_eq!(t.wait("bob", Some(B), now), None);
    }

    #[test]
    fn success_forgives_its_own_pair_only() {
        let t = Throttle::new(limits(), None, DEFAULT_TIMEOUT);
        let now = Instant::now();
        t.fail("alice", Some(A), now);
        t.fail("alice", Some(A), now);
        assert!(t.wait("alice", Some(A), now).is_some());
        t.succeed("alice", Some(A));
        assert_eq!(t.wait("alice", Some(A), now), None);
    }

    #[test]
    fn tables_stay_bounded_when_names_rotate() {
        let t = Throttle::new(LoginLimits::default(), None, DEFAULT_TIMEOUT);
        let now = Instant::now();
        for n in 0..(CAPACITY + 500) {
            t.fail(&format!("user-{n}"), None, now);
        }
        let tables = t.lock();
        assert!(tables.user.levels.len() <= CAPACITY);
        // The newest failure is still counted.
        assert!(tables
            .user
            .levels
            .contains_key(&format!("user-{}", CAPACITY + 499)));
    }
}
