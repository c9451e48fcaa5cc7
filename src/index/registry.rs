//! Every live index by id, so an identity can find the index that authorized it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};

use super::Index;

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
