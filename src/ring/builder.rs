//! [`KeyRingBuilder`]: the prefix, timeout and limits a [`KeyRing`] is built with.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};

use super::{Inner, KeyRing};
use crate::index::Index;
use crate::key::KeyFormat;
use crate::store::KeyStore;

const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_MAX_INFLIGHT: usize = 256;
const DEFAULT_NEGATIVE_CAPACITY: usize = 65_536;

impl KeyRing {
    /// A builder to set the prefix, timeout and limits.
    pub fn builder<S: KeyStore>(store: S) -> KeyRingBuilder {
        KeyRingBuilder {
            store: Arc::new(store),
            format: KeyFormat::default(),
            lookup_timeout: DEFAULT_LOOKUP_TIMEOUT,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            negative_capacity: DEFAULT_NEGATIVE_CAPACITY,
            track_last_used: None,
        }
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
    track_last_used: Option<Duration>,
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

    /// Records when each key was last used ([`KeyRecord::last_used`](crate::store::KeyRecord)),
    /// writing the keys used in each `interval` to the store in one batch at its end: at most one
    /// write per key per interval, none on the request path (a request only notes its key in
    /// memory). Uses not yet written when the ring is dropped are lost; call
    /// [`KeyRing::write_uses`] before a graceful shutdown. Default: not tracked.
    pub fn track_last_used(mut self, interval: Duration) -> Self {
        self.track_last_used = Some(interval);
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
                uses: self
                    .track_last_used
                    .map(|interval| Box::new(super::uses::Uses::new(interval))),
            }),
        };
        ring.ensure_following();
        ring
    }
}

impl fmt::Debug for KeyRingBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRingBuilder")
            .field("format", &self.format)
            .field("lookup_timeout", &self.lookup_timeout)
            .field("max_inflight", &self.max_inflight)
            .field("negative_capacity", &self.negative_capacity)
            .field("track_last_used", &self.track_last_used)
            .finish()
    }
}
