//! One suite for every store: the same test functions run, unchanged, against `MemoryStore`,
//! `SqliteStore`, `PostgresStore` and `RedisStore`. `MemoryStore` is the reference: where a result
//! is compared, it is compared with what a `MemoryStore` given the same calls answers.
//!
//! A "node" is what one process of a service holds: a store connection and a `KeyRing` over it.
//! For PostgreSQL and Redis a second node is a second connection to the same database (or key
//! prefix); for SQLite it is a second connection to the same file; for memory it is a second ring
//! over the same `MemoryStore`. Nodes that cached a key hear of its revocation through
//! `KeyStore::subscribe`; SQLite has no such channel (it is one process's file), so the tests of
//! what a second node that cached a key sees skip it and say so.
//!
//! PostgreSQL and Redis come from `TOWER_API_KEY_POSTGRES_URL` and `TOWER_API_KEY_REDIS_URL`
//! (`scripts/services`); each test gets a database or key prefix of its own. Without them, their
//! tests print `SKIPPED` and pass, except in CI, where they fail.

#[path = "common/servers.rs"]
mod servers;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use time::macros::datetime;
use time::OffsetDateTime;
use tower_api_key::key::{KeyFormat, SecretDigest};
use tower_api_key::store::{
    AccountStore, ChangeEvent, Company, CompanyProfile, KeyRecord, KeyUpdate, ListQuery,
    RefreshToken, RefreshUse, Role, SortField, User, UserProfile,
};
use tower_api_key::{
    KeyId, KeyRing, KeyStore, MemoryStore, NewKey, Owner, PostgresStore, RedisStore, Scope, Scopes,
    SqliteStore, Status, VerifyError,
};

use servers::{PgDatabase, RedisPrefix};

/// How long a second node may take to hear of a change.
const PROPAGATION: Duration = Duration::from_secs(2);

// --- Backends ------------------------------------------------------------------------------------

/// A store kind under test: where its data lives for one test, and how a node connects to it.
/// (`?Send`: the tests drive these futures on their own task; nothing spawns them.)
#[async_trait(?Send)]
trait Backend: Sized + Send + Sync + 'static {
    type Store: KeyStore + AccountStore + Clone;

    /// The backend's name in messages.
    const NAME: &'static str;

    /// Whether a node hears of changes other nodes make (`KeyStore::subscribe`).
    const NOTIFIES: bool;

    /// Fresh, empty data for one test; `None` when the server is not configured (test skipped).
    async fn open() -> Option<Self>;

    /// A new connection to this test's data: what one node holds.
    async fn node(&self) -> Self::Store;

    /// Drops every node's change-notification connection, as a network failure would.
    async fn drop_change_channels(&self) {}
}

struct Memory(MemoryStore);

#[async_trait(?Send)]
impl Backend for Memory {
    type Store = MemoryStore;
    const NAME: &'static str = "memory";
    const NOTIFIES: bool = true;

    async fn open() -> Option<Self> {
        Some(Memory(MemoryStore::new()))
    }

    async fn node(&self) -> MemoryStore {
        // Clones share the records: one process's picture of one database.
        self.0.clone()
    }
}

/// A directory under the system temp dir, removed when dropped.
struct Sqlite(PathBuf);

impl Drop for Sqlite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[async_trait(?Send)]
impl Backend for Sqlite {
    type Store = SqliteStore;
    const NAME: &'static str = "sqlite";
    const NOTIFIES: bool = false;

    async fn open() -> Option<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(servers::unique_name(&format!(
            "tower-api-key-conformance-{nanos}"
        )));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Some(Sqlite(dir))
    }

    async fn node(&self) -> SqliteStore {
        let url = format!("sqlite://{}", self.0.join("keys.db").display());
        SqliteStore::connect(&url).await.expect("sqlite opens")
    }
}

struct Postgres(PgDatabase);

#[async_trait(?Send)]
impl Backend for Postgres {
    type Store = PostgresStore;
    const NAME: &'static str = "postgres";
    const NOTIFIES: bool = true;

    async fn open() -> Option<Self> {
        PgDatabase::create().await.map(Postgres)
    }

    async fn node(&self) -> PostgresStore {
        PostgresStore::connect(self.0.url())
            .await
            .expect("postgres connects")
    }

    async fn drop_change_channels(&self) {
        self.0
            .exec(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() \
                 AND application_name = 'tower-api-key listener'",
            )
            .await;
    }
}

struct Redis(RedisPrefix);

#[async_trait(?Send)]
impl Backend for Redis {
    type Store = RedisStore;
    const NAME: &'static str = "redis";
    const NOTIFIES: bool = true;

    async fn open() -> Option<Self> {
        RedisPrefix::create().map(Redis)
    }

    async fn node(&self) -> RedisStore {
        RedisStore::connect_with_prefix(self.0.url(), self.0.prefix())
            .await
            .expect("redis connects")
    }

    async fn drop_change_channels(&self) {
        // Every subscriber on the server, other tests' too: they resync and carry on.
        self.0.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    }
}

async fn run<B, F, Fut>(test: F)
where
    B: Backend,
    F: FnOnce(B) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Some(backend) = B::open().await {
        test(backend).await;
    }
}

/// Instantiates each test function once per backend: `memory::name`, `sqlite::name`, ….
macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        conformance!(@backend memory, Memory, $($test),*);
        conformance!(@backend sqlite, Sqlite, $($test),*);
        conformance!(@backend postgres, Postgres, $($test),*);
        conformance!(@backend redis, Redis, $($test),*);
    };
    (@backend $module:ident, $backend:ident, $($test:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::run::<super::$backend, _, _>(super::$test).await;
                }
            )*
        }
    };
}

conformance!(
    keys_are_created_read_changed_and_deleted,
    listing_filters_sorts_and_pages_like_the_reference,
    listings_of_many_keys_page_like_the_reference,
    a_key_status_lock_round_trips_and_starts_unlocked,
    expiry_retirement_and_last_use_round_trip_like_the_reference,
    a_last_use_is_no_change_another_node_hears_of,
    key_user_and_company_status_combine_like_the_reference,
    accounts_and_refresh_tokens_behave_like_the_reference,
    expired_refresh_tokens_are_gone_once_another_is_stored,
    revocation_is_refused_on_the_same_node_before_the_call_returns,
    a_second_node_that_has_not_cached_a_key_sees_its_revocation_at_once,
    a_second_node_that_cached_a_key_refuses_it_soon_after_revocation,
    a_key_issued_on_one_node_evicts_the_other_nodes_negative_entry,
    a_lost_change_channel_never_leaves_a_revoked_key_usable,
    concurrent_issue_revoke_and_verify_never_accept_after_revocation,
);

// --- Fixtures ------------------------------------------------------------------------------------

fn owner(user: &str, company: &str) -> Owner {
    Owner {
        user_uid: format!("u-{user}"),
        user_name: user.to_owned(),
        company_id: format!("c-{company}"),
        company_name: company.to_owned(),
    }
}

fn id(raw: u64) -> KeyId {
    KeyId::new(raw).expect("valid key id")
}

fn record(raw: u64, owner: Owner, description: &str, created: OffsetDateTime) -> KeyRecord {
    KeyRecord {
        id: id(raw),
        digest: SecretDigest::from_bytes([raw as u8; 32]),
        owner,
        description: description.to_owned(),
        read_only: raw.is_multiple_of(2),
        scopes: Scopes::from([Scope::REST]),
        status: Status::Enabled,
        user_status: Status::Enabled,
        company_status: Status::Enabled,
        created,
        status_locked: false,
        expires: None,
        deprecated: None,
        last_used: None,
    }
}

fn account(uid: &str, name: &str, company: &str, status: Status) -> User {
    User {
        uid: uid.to_owned(),
        user_name: name.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        role: if name.starts_with("admin") {
            Role::PortalAdministrator
        } else {
            Role::CompanyLocationUser
        },
        company_id: company.to_owned(),
        status,
        created: datetime!(2024-01-01 0:00:00.123456789 UTC),
        profile: Default::default(),
        token_generation: 0,
    }
}

fn company(uid: &str, name: &str, status: Status) -> Company {
    Company {
        uid: uid.to_owned(),
        name: name.to_owned(),
        status,
        profile: Default::default(),
        token_generation: 0,
    }
}

/// Keys that exercise every ordering: equal fields broken by id, case and accents, offsets,
/// nanoseconds, every status, ids up to 2^52.
fn varied_records() -> Vec<KeyRecord> {
    let t = datetime!(2024-05-01 12:00 UTC);
    let mut records = vec![
        record(40, owner("alice", "Alpha"), "CI", t),
        record(3, owner("alice", "Alpha"), "ci deploy", t),
        record(17, owner("bob", "Beta"), "Émile's key", t),
        record(
            9,
            owner("Émile", "Beta"),
            "ÉMILE backup",
            datetime!(2024-05-01 13:00 +01:00),
        ),
        record(
            25,
            owner("zoë", "Gamma"),
            "zeta",
            datetime!(2023-01-01 0:00 UTC),
        ),
        record(
            6,
            owner("carol", "Alpha"),
            "Alpha",
            datetime!(2025-02-03 4:05:06.7 UTC),
        ),
        record(
            12,
            owner("carol", "Alpha"),
            "alpha",
            datetime!(2025-02-03 4:05:06.700000001 UTC),
        ),
        record(1 << 52, owner("dave", "Delta"), "big id", t),
        record(
            31,
            owner("erin", "External"),
            "CI 100%",
            datetime!(2020-01-01 0:00 -05:00),
        ),
        record(8, owner("bob", "Beta"), "CI", t),
        record(44, owner("frank", "Alpha"), "under_score", t),
    ];
    records[1].status = Status::Disabled;
    records[4].status = Status::DisabledDueToSystem;
    records[6].status = Status::Unknown;
    records[7].scopes = Scopes::EMPTY;
    records[8].scopes = Scopes::from([Scope::UI, Scope::INTEGRATION]);
    records[10].status = Status::DisabledDueSystemComponentsRestrictions;
    records
}

/// The same calls on `store` and on the reference.
async fn both<S, F, Fut, T>(store: &S, reference: &MemoryStore, call: F) -> (T, T)
where
    S: KeyStore + AccountStore + Clone,
    F: Fn(Arc<dyn Stores>) -> Fut,
    Fut: Future<Output = T>,
{
    let got = call(Arc::new(store.clone())).await;
    let want = call(Arc::new(reference.clone())).await;
    (got, want)
}

/// Both traits behind one pointer, so one closure can drive any store.
trait Stores: KeyStore + AccountStore {}
impl<T: KeyStore + AccountStore> Stores for T {}

/// Polls `verify` on `ring` until it refuses `key` or `within` passes; how long it took.
async fn refused_within(ring: &KeyRing, key: &str, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    loop {
        match ring.verify(key).await {
            Err(VerifyError::Invalid) => return Some(start.elapsed()),
            Err(e) => panic!("verify failed: {e}"),
            Ok(_) if start.elapsed() > within => return None,
            Ok(_) => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

/// Polls `verify` on `ring` until it accepts `key` or `within` passes.
async fn accepted_within(ring: &KeyRing, key: &str, within: Duration) -> bool {
    let start = Instant::now();
    loop {
        match ring.verify(key).await {
            Ok(_) => return true,
            Err(VerifyError::Invalid) if start.elapsed() <= within => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(_) => return false,
        }
    }
}

/// Says, past the test harness's capture, that a test does not apply to a backend.
fn not_applicable<B: Backend>(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "not applicable to {}: {why}", B::NAME);
}

async fn refused_on_second_node<B: Backend>(ring: &KeyRing, key: &str, what: &str) {
    let waited = refused_within(ring, key, PROPAGATION).await;
    assert!(
        waited.is_some(),
        "{}: node B still accepts a key {what} on node A after {PROPAGATION:?}",
        B::NAME
    );
}

// --- Keys ----------------------------------------------------------------------------------------

async fn keys_are_created_read_changed_and_deleted<B: Backend>(backend: B) {
    let store = backend.node().await;
    let reference = MemoryStore::new();
    let records = varied_records();
    for r in &records {
        let (got, want) = both(&store, &reference, |s| {
            let r = r.clone();
            async move { s.insert(r).await.map_err(|e| e.to_string()) }
        })
        .await;
        assert_eq!(got, want);
    }
    for r in &records {
        let got = store.get(r.id).await.expect("read");
        assert_eq!(got.as_ref(), Some(r), "{}: read back as written", B::NAME);
        assert_eq!(got, reference.get(r.id).await.expect("read"));
    }
    assert_eq!(store.get(id(123_456)).await.expect("read"), None);

    // A taken id is a conflict and changes nothing.
    let mut again = records[0].clone();
    again.description = "other".into();
    let err = store.insert(again).await.expect_err("id taken");
    assert!(err.is_conflict(), "{}: {err}", B::NAME);
    assert_eq!(
        store.get(records[0].id).await.expect("read").as_ref(),
        Some(&records[0])
    );

    let changes = [
        (records[0].id, KeyUpdate::status(Status::Disabled)),
        (records[0].id, KeyUpdate::description("renamed: ÀÉ")),
        (
            records[3].id,
            KeyUpdate::status(Status::DisabledDueToTenant),
        ),
        (records[3].id, KeyUpdate::status(Status::Enabled)),
        (id(123_456), KeyUpdate::status(Status::Disabled)),
    ];
    for (key, change) in changes {
        let (got, want) = both(&store, &reference, |s| {
            let change = change.clone();
            async move { s.update(key, change).await.expect("update") }
        })
        .await;
        assert_eq!(got, want, "{}: update of {key}", B::NAME);
        assert_eq!(
            store.get(key).await.expect("read"),
            want,
            "{}: the update reached the store",
            B::NAME
        );
    }

    for key in [records[2].id, records[2].id, id(123_456)] {
        let (got, want) = both(&store, &reference, |s| async move {
            s.delete(key).await.expect("delete")
        })
        .await;
        assert_eq!(got, want, "{}: delete of {key}", B::NAME);
    }
    assert_eq!(store.get(records[2].id).await.expect("read"), None);

    // Another connection to the same data sees the same.
    let other = backend.node().await;
    for r in &records {
        assert_eq!(
            other.get(r.id).await.expect("read"),
            reference.get(r.id).await.expect("read"),
            "{}: second connection",
            B::NAME
        );
    }
}

async fn listing_filters_sorts_and_pages_like_the_reference<B: Backend>(backend: B) {
    let store = backend.node().await;
    let reference = MemoryStore::new();
    for s in [&store as &dyn Stores, &reference] {
        for r in varied_records() {
            s.insert(r).await.expect("inserted");
        }
        s.set_user_status("u-bob", Status::Disabled)
            .await
            .expect("set");
        s.set_company_status("c-Gamma", Status::Disabled)
            .await
            .expect("set");
        s.set_company_status("c-Delta", Status::DisabledDueToTenant)
            .await
            .expect("set");
        s.create_user(account("u-carol", "carol", "c-Alpha", Status::Disabled))
            .await
            .expect("created");
        s.create_company(company("c-Alpha", "Alpha", Status::Enabled))
            .await
            .expect("created");
    }

    let sorts = [
        SortField::Id,
        SortField::CreationDate,
        SortField::Description,
        SortField::UserName,
        SortField::Status,
    ];
    let with = |f: &dyn Fn(&mut ListQuery)| {
        let mut query = ListQuery::default();
        f(&mut query);
        query
    };
    let filters = [
        ListQuery::default(),
        with(&|q| q.user_uid = Some("u-alice".into())),
        with(&|q| q.user_uid = Some("u-bob".into())),
        with(&|q| q.user_uid = Some("u-nobody".into())),
        with(&|q| q.status = Some(Status::Enabled)),
        with(&|q| q.status = Some(Status::DisabledDueToUser)),
        with(&|q| q.status = Some(Status::DisabledDueToCompany)),
        with(&|q| q.status = Some(Status::Unknown)),
        with(&|q| q.description_contains = Some("émile".into())),
        with(&|q| q.description_contains = Some("_".into())),
        with(&|q| q.description_contains = Some("%".into())),
        with(&|q| q.description_contains = Some(String::new())),
        with(&|q| {
            q.description_contains = Some("CI".into());
            q.status = Some(Status::Enabled);
            q.user_uid = Some("u-alice".into());
        }),
    ];
    let pages = [
        (0, 100),
        (0, 3),
        (2, 4),
        (10, 5),
        (50, 5),
        (0, 0),
        (1, u64::MAX),
    ];
    let mut seen = 0;
    for filter in &filters {
        for sort in sorts {
            for descending in [false, true] {
                for (offset, limit) in pages {
                    let mut query = filter.clone();
                    query.sort = sort;
                    query.descending = descending;
                    query.offset = offset;
                    query.limit = limit;
                    let got = store.list(&query).await.expect("listed");
                    let want = reference.list(&query).await.expect("listed");
                    assert_eq!(got, want, "{}: {query:?}", B::NAME);
                    seen += got.items.len();
                }
            }
        }
    }
    assert!(seen > 1000, "the cases list something");
    let all = store.list(&ListQuery::default()).await.expect("listed");
    assert_eq!(all.total, varied_records().len() as u64);
}

/// More keys than a store reads in one batch, with fields that are prefixes of each other, so that
/// index orders, batch boundaries and pages far from the start are all crossed.
async fn listings_of_many_keys_page_like_the_reference<B: Backend>(backend: B) {
    let store = backend.node().await;
    let reference = MemoryStore::new();
    let descriptions = ["", "a", "a b", "ab", "A", "é", "ab c", "b"];
    let users = ["al", "alice", "Al", "bob", "al ice"];
    let records: Vec<KeyRecord> = (1..=600u64)
        .map(|raw| {
            let user = users[(raw as usize * 7) % users.len()];
            let company = if raw % 3 == 0 { "Beta" } else { "Alpha" };
            let created = datetime!(2024-05-01 12:00 UTC)
                + time::Duration::seconds((raw % 41) as i64)
                + time::Duration::nanoseconds((raw % 2) as i64);
            let mut r = record(
                raw * 1_000_003,
                owner(user, company),
                descriptions[(raw as usize * 5) % descriptions.len()],
                created,
            );
            if raw % 11 == 0 {
                r.status = Status::Disabled;
            }
            r
        })
        .collect();
    for s in [&store as &dyn Stores, &reference] {
        for r in &records {
            s.insert(r.clone()).await.expect("inserted");
        }
        s.set_user_status("u-bob", Status::Disabled)
            .await
            .expect("set");
        s.set_company_status("c-Beta", Status::DisabledDueToTenant)
            .await
            .expect("set");
    }
    let sorts = [
        SortField::Id,
        SortField::CreationDate,
        SortField::Description,
        SortField::UserName,
        SortField::Status,
    ];
    let with = |f: &dyn Fn(&mut ListQuery)| {
        let mut query = ListQuery::default();
        f(&mut query);
        query
    };
    let filters = [
        ListQuery::default(),
        with(&|q| q.status = Some(Status::Enabled)),
        with(&|q| q.status = Some(Status::DisabledDueToCompany)),
        with(&|q| q.description_contains = Some("A".into())),
        with(&|q| q.user_uid = Some("u-al".into())),
    ];
    let pages = [
        (0, 50),
        (250, 20),
        (255, 3),
        (511, 2),
        (590, 20),
        (700, 5),
        (0, 0),
        (0, u64::MAX),
    ];
    for filter in &filters {
        for sort in sorts {
            for descending in [false, true] {
                for (offset, limit) in pages {
                    let mut query = filter.clone();
                    query.sort = sort;
                    query.descending = descending;
                    query.offset = offset;
                    query.limit = limit;
                    let got = store.list(&query).await.expect("listed");
                    let want = reference.list(&query).await.expect("listed");
                    assert_eq!(got, want, "{}: {query:?}", B::NAME);
                }
            }
        }
    }
}

async fn a_key_status_lock_round_trips_and_starts_unlocked<B: Backend>(backend: B) {
    let store = backend.node().await;
    let reference = MemoryStore::new();
    let key = record(
        77,
        owner("alice", "Alpha"),
        "CI",
        datetime!(2024-05-01 12:00 UTC),
    );
    for s in [&store as &dyn Stores, &reference] {
        s.insert(key.clone()).await.expect("inserted");
    }
    let read = store.get(key.id).await.expect("read").expect("exists");
    assert!(!read.status_locked, "{}", B::NAME);
    let updates = [
        KeyUpdate::status(Status::Disabled).locked(true),
        // Fields the update leaves alone keep the lock.
        KeyUpdate::description("renamed"),
        KeyUpdate::status(Status::Enabled),
        KeyUpdate::default().locked(false),
        KeyUpdate::description("again").locked(true),
    ];
    let mut locks = Vec::new();
    for update in updates {
        let (got, want) = both(&store, &reference, |s| {
            let update = update.clone();
            async move { s.update(key.id, update).await.expect("updated") }
        })
        .await;
        assert_eq!(got, want, "{}: {update:?}", B::NAME);
        locks.push(got.expect("exists").status_locked);
        let read = store.get(key.id).await.expect("read");
        assert_eq!(
            read,
            reference.get(key.id).await.expect("read"),
            "{}",
            B::NAME
        );
    }
    assert_eq!(locks, [true, true, true, false, true], "{}", B::NAME);
    let listed = store.list(&ListQuery::default()).await.expect("listed");
    assert!(listed.items[0].status_locked, "{}", B::NAME);
}

async fn expiry_retirement_and_last_use_round_trip_like_the_reference<B: Backend>(backend: B) {
    let store = backend.node().await;
    let reference = MemoryStore::new();
    let created = datetime!(2024-05-01 12:00 UTC);
    let mut lasting = record(81, owner("alice", "Alpha"), "lasting", created);
    lasting.expires = Some(datetime!(2030-01-01 0:00:00.000000001 UTC));
    let forever = record(82, owner("alice", "Alpha"), "forever", created);
    let idle = record(83, owner("bob", "Beta"), "idle", created);
    for s in [&store as &dyn Stores, &reference] {
        for key in [&lasting, &forever, &idle] {
            s.insert(key.clone()).await.expect("inserted");
        }
    }
    let read = store.get(lasting.id).await.expect("read").expect("exists");
    assert_eq!(read.expires, lasting.expires, "{}", B::NAME);
    assert_eq!(
        (read.deprecated, read.last_used),
        (None, None),
        "{}",
        B::NAME
    );

    // A retirement never lengthens a life, and a second one keeps the first deprecation date.
    let retirements = [
        (
            forever.id,
            KeyUpdate::retire(
                datetime!(2025-01-01 0:00 UTC),
                datetime!(2025-02-01 0:00 UTC),
            ),
        ),
        (
            forever.id,
            KeyUpdate::retire(
                datetime!(2025-01-05 0:00 UTC),
                datetime!(2025-01-10 0:00 UTC),
            ),
        ),
        (
            forever.id,
            KeyUpdate::retire(
                datetime!(2025-01-06 0:00 UTC),
                datetime!(2026-01-01 0:00 UTC),
            ),
        ),
        (
            lasting.id,
            KeyUpdate::retire(
                datetime!(2025-01-01 0:00 UTC),
                datetime!(2031-01-01 0:00 UTC),
            ),
        ),
        (
            id(99),
            KeyUpdate::retire(
                datetime!(2025-01-01 0:00 UTC),
                datetime!(2025-01-02 0:00 UTC),
            ),
        ),
    ];
    for (key, update) in retirements {
        let (got, want) = both(&store, &reference, |s| {
            let update = update.clone();
            async move { s.update(key, update).await.expect("updated") }
        })
        .await;
        assert_eq!(got, want, "{}: {key} {update:?}", B::NAME);
    }
    let retired = store.get(forever.id).await.expect("read").expect("exists");
    assert_eq!(
        retired.deprecated,
        Some(datetime!(2025-01-01 0:00 UTC)),
        "{}",
        B::NAME
    );
    assert_eq!(
        retired.expires,
        Some(datetime!(2025-01-10 0:00 UTC)),
        "{}",
        B::NAME
    );
    let kept = store.get(lasting.id).await.expect("read").expect("exists");
    assert_eq!(kept.expires, lasting.expires, "{}", B::NAME);

    // Uses: the latest one stays, keys that do not exist are skipped.
    let uses = [
        vec![
            (lasting.id, datetime!(2025-03-01 10:00 UTC)),
            (id(99), datetime!(2025-03-01 10:00 UTC)),
        ],
        vec![
            (lasting.id, datetime!(2025-02-01 10:00 UTC)),
            (forever.id, datetime!(2025-02-01 10:00:00.5 UTC)),
        ],
    ];
    for batch in uses {
        for s in [&store as &dyn Stores, &reference] {
            s.record_use(&batch).await.expect("recorded");
        }
    }
    let used = store.get(lasting.id).await.expect("read").expect("exists");
    assert_eq!(
        used.last_used,
        Some(datetime!(2025-03-01 10:00 UTC)),
        "{}",
        B::NAME
    );
    assert!(
        store.get(id(99)).await.expect("read").is_none(),
        "{}",
        B::NAME
    );

    // Listings find the keys unused since a date; records and order match the reference.
    for since in [
        datetime!(2025-01-01 0:00 UTC),
        datetime!(2025-02-01 10:00:00.5 UTC),
        datetime!(2025-02-15 0:00 UTC),
        datetime!(2026-01-01 0:00 UTC),
    ] {
        let query = ListQuery::default().unused_since(since);
        let (got, want) = both(&store, &reference, |s| {
            let query = query.clone();
            async move { s.list(&query).await.expect("listed") }
        })
        .await;
        assert_eq!(got, want, "{}: unused since {since}", B::NAME);
    }
    let stale = ListQuery::default().unused_since(datetime!(2025-02-15 0:00 UTC));
    let ids: Vec<KeyId> = store
        .list(&stale)
        .await
        .expect("listed")
        .items
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [forever.id, idle.id], "{}", B::NAME);
}

async fn a_last_use_is_no_change_another_node_hears_of<B: Backend>(backend: B) {
    if !B::NOTIFIES {
        not_applicable::<B>("one process's file, no change channel to a second node");
        return;
    }
    let ring_a = KeyRing::new(backend.node().await);
    let ring_b = KeyRing::new(backend.node().await);
    let used = ring_a
        .issue(NewKey::new(owner("alice", "Alpha")).description("used"))
        .await
        .expect("issued");
    let marker = ring_a
        .issue(NewKey::new(owner("alice", "Alpha")).description("marker"))
        .await
        .expect("issued");
    // B must have heard every event of the issues before it caches the keys: a probe's change,
    // which comes after them, shows it has.
    let probe = ring_a
        .issue(NewKey::new(owner("alice", "Alpha")).description("probe"))
        .await
        .expect("issued");
    assert!(
        accepted_within(&ring_b, probe.key(), PROPAGATION).await,
        "{}",
        B::NAME
    );
    ring_a
        .update(probe.id(), KeyUpdate::status(Status::Disabled))
        .await
        .expect("updated");
    refused_on_second_node::<B>(&ring_b, probe.key(), "disabled").await;
    // A resync (B's channel reconnecting) makes B forget everything, which would hide what the
    // use did: such a round proves nothing and is run again.
    for round in 1..=5 {
        for key in [&used, &marker] {
            assert!(
                accepted_within(&ring_b, key.key(), PROPAGATION).await,
                "{}",
                B::NAME
            );
        }
        let epoch = ring_b.owners_epoch();
        let held = ring_b.stats().keys;
        ring_a
            .store()
            .record_use(&[(used.id(), OffsetDateTime::now_utc())])
            .await
            .expect("recorded");
        // Changes arrive in order: a change of the marker after the use. Had the use been
        // announced, B would forget both keys, the used one first.
        ring_a
            .update(
                marker.id(),
                KeyUpdate::description(format!("moved {round}")),
            )
            .await
            .expect("updated");
        let start = Instant::now();
        while ring_b.stats().keys == held && start.elapsed() < PROPAGATION {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Time for a second forgetting, had there been two events.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if ring_b.owners_epoch() != epoch {
            continue;
        }
        assert_eq!(
            ring_b.stats().keys,
            held - 1,
            "{}: node B must forget the changed key and keep the used one",
            B::NAME
        );
        return;
    }
    panic!("{}: node B resynced in every round", B::NAME);
}

async fn key_user_and_company_status_combine_like_the_reference<B: Backend>(backend: B) {
    let store = backend.node().await;
    let reference = MemoryStore::new();
    let key = record(
        5,
        owner("alice", "Alpha"),
        "k",
        datetime!(2024-05-01 0:00 UTC),
    );
    let check = |step: &'static str| {
        let (store, reference) = (store.clone(), reference.clone());
        async move {
            let got = store.get(id(5)).await.expect("read").expect("exists");
            let want = reference.get(id(5)).await.expect("read").expect("exists");
            assert_eq!(got, want, "{}: {step}", B::NAME);
            got.effective_status()
        }
    };
    for s in [&store as &dyn Stores, &reference] {
        s.insert(key.clone()).await.expect("inserted");
    }
    assert_eq!(check("fresh").await, Status::Enabled);

    // Owners without accounts: statuses are kept for them all the same.
    for s in [&store as &dyn Stores, &reference] {
        s.set_user_status("u-alice", Status::Disabled)
            .await
            .expect("set");
    }
    assert_eq!(check("user disabled").await, Status::DisabledDueToUser);
    for s in [&store as &dyn Stores, &reference] {
        s.set_company_status("c-Alpha", Status::DisabledDueToTenant)
            .await
            .expect("set");
    }
    assert_eq!(
        check("company disabled").await,
        Status::DisabledDueToCompany
    );
    for s in [&store as &dyn Stores, &reference] {
        s.update(id(5), KeyUpdate::status(Status::Disabled))
            .await
            .expect("updated");
    }
    assert_eq!(check("key disabled").await, Status::Disabled);

    // Creating the accounts: their own status wins over what was set for the owner before.
    for s in [&store as &dyn Stores, &reference] {
        s.update(id(5), KeyUpdate::status(Status::Enabled))
            .await
            .expect("updated");
        s.create_user(account("u-alice", "alice", "c-Alpha", Status::Enabled))
            .await
            .expect("created");
        s.create_company(company("c-Alpha", "Alpha", Status::Enabled))
            .await
            .expect("created");
    }
    assert_eq!(check("accounts created").await, Status::Enabled);

    for s in [&store as &dyn Stores, &reference] {
        s.set_user_status("u-alice", Status::Disabled)
            .await
            .expect("set");
    }
    assert_eq!(check("account disabled").await, Status::DisabledDueToUser);
    let user = store.user("u-alice").await.expect("read").expect("exists");
    assert_eq!(user.status, Status::Disabled);
    assert_eq!(Some(user), reference.user("u-alice").await.expect("read"));
    for s in [&store as &dyn Stores, &reference] {
        s.set_company_status("c-Alpha", Status::Disabled)
            .await
            .expect("set");
    }
    let alpha = store.company("c-Alpha").await.expect("read");
    assert_eq!(alpha, reference.company("c-Alpha").await.expect("read"));
    assert_eq!(alpha.map(|c| c.status), Some(Status::Disabled));
    assert_eq!(
        check("company account disabled").await,
        Status::DisabledDueToCompany
    );

    // A key issued for a disabled owner starts disabled.
    let later = record(
        6,
        owner("alice", "Alpha"),
        "later",
        datetime!(2024-06-01 0:00 UTC),
    );
    store.insert(later.clone()).await.expect("inserted");
    let read = store.get(id(6)).await.expect("read").expect("exists");
    assert_eq!(read.effective_status(), Status::DisabledDueToCompany);
}

// --- Accounts ------------------------------------------------------------------------------------

async fn accounts_and_refresh_tokens_behave_like_the_reference<B: Backend>(backend: B) {
    let store = backend.node().await;
    let reference = MemoryStore::new();
    let companies = [
        company("c-2", "Beta", Status::Enabled),
        company("c-1", "Alpha", Status::Disabled),
        company("c-3", "alpha", Status::Enabled),
        company("c-4", "Émile & Co", Status::Enabled),
    ];
    let users = [
        account("u-2", "bob", "c-1", Status::Enabled),
        account("u-1", "admin", "c-1", Status::Enabled),
        account("u-3", "Alice", "c-2", Status::DisabledDueToCompany),
        account("u-4", "zoë", "c-4", Status::Enabled),
    ];
    for c in &companies {
        let (got, want) = both(&store, &reference, |s| {
            let c = c.clone();
            async move { s.create_company(c).await.is_ok() }
        })
        .await;
        assert_eq!(got, want);
    }
    for u in &users {
        let (got, want) = both(&store, &reference, |s| {
            let u = u.clone();
            async move { s.create_user(u).await.is_ok() }
        })
        .await;
        assert_eq!(got, want);
    }
    // Taken ids and names are conflicts.
    let taken = [
        store
            .create_company(company("c-1", "New", Status::Enabled))
            .await,
        store
            .create_company(company("c-9", "Beta", Status::Enabled))
            .await,
        store
            .create_user(account("u-1", "new", "c-1", Status::Enabled))
            .await,
        store
            .create_user(account("u-9", "bob", "c-1", Status::Enabled))
            .await,
    ];
    for result in taken {
        assert!(result.is_err_and(|e| e.is_conflict()), "{}", B::NAME);
    }

    for uid in ["u-1", "u-3", "u-9"] {
        let (got, want) = both(&store, &reference, |s| async move {
            s.user(uid).await.expect("read")
        })
        .await;
        assert_eq!(got, want, "{}: user {uid}", B::NAME);
    }
    for name in ["Alice", "alice", "zoë"] {
        let (got, want) = both(&store, &reference, |s| async move {
            s.user_by_name(name).await.expect("read")
        })
        .await;
        assert_eq!(got, want, "{}: user named {name}", B::NAME);
    }
    for uid in ["c-1", "c-9"] {
        let (got, want) = both(&store, &reference, |s| async move {
            s.company(uid).await.expect("read")
        })
        .await;
        assert_eq!(got, want, "{}: company {uid}", B::NAME);
    }
    for (offset, limit) in [(0, 10), (1, 2), (3, 5), (9, 1), (0, 0)] {
        let (got, want) = both(&store, &reference, |s| async move {
            (
                s.list_users(None, offset, limit).await.expect("listed"),
                s.list_companies(offset, limit).await.expect("listed"),
            )
        })
        .await;
        assert_eq!(got, want, "{}: page {offset}+{limit}", B::NAME);
    }

    for company in ["c-1", "c-4", "c-9"] {
        let (got, want) = both(&store, &reference, |s| async move {
            s.list_users(Some(company), 0, 10).await.expect("listed")
        })
        .await;
        assert_eq!(got, want, "{}: users of {company}", B::NAME);
    }

    // Profiles round trip, and replace what was there.
    let user_profile = UserProfile {
        first_name: Some("Zoë".into()),
        title: Some("Ms".into()),
        email: Some("zoe@example.com".into()),
        ..UserProfile::default()
    };
    let company_profile = CompanyProfile {
        alias: Some("emile".into()),
        state: Some(5),
        is_rest_access_enabled: true,
        owner_user_name: Some("zoë".into()),
        ..CompanyProfile::default()
    };
    for uid in ["u-4", "u-9"] {
        let (got, want) = both(&store, &reference, |s| {
            let p = user_profile.clone();
            async move { s.update_user_profile(uid, p).await.expect("updated") }
        })
        .await;
        assert_eq!(got, want, "{}: profile of {uid}", B::NAME);
    }
    for uid in ["c-4", "c-9"] {
        let (got, want) = both(&store, &reference, |s| {
            let p = company_profile.clone();
            async move { s.update_company_profile(uid, p).await.expect("updated") }
        })
        .await;
        assert_eq!(got, want, "{}: profile of {uid}", B::NAME);
    }
    let read = store.user("u-4").await.expect("read").expect("exists");
    assert_eq!(read.profile, user_profile, "{}", B::NAME);
    let read = store.company("c-4").await.expect("read").expect("exists");
    assert_eq!(read.profile, company_profile, "{}", B::NAME);

    let token = |byte: u8, uid: &str, family: &str| RefreshToken {
        digest: SecretDigest::from_bytes([byte; 32]),
        user_uid: uid.to_owned(),
        read_only: byte.is_multiple_of(2),
        expires: datetime!(2030-01-01 0:00:00.5 +01:00),
        family: family.to_owned(),
        user_generation: u64::from(byte),
        company_generation: 3,
    };
    for s in [&store as &dyn Stores, &reference] {
        s.put_refresh_token(token(1, "u-1", "a"))
            .await
            .expect("put");
        s.put_refresh_token(token(2, "u-1", "a"))
            .await
            .expect("put");
        s.put_refresh_token(token(3, "u-2", "b"))
            .await
            .expect("put");
        // The same digest again replaces the token, owner included.
        s.put_refresh_token(token(3, "u-3", "c"))
            .await
            .expect("put");
        s.put_refresh_token(token(4, "u-2", "d"))
            .await
            .expect("put");
        s.put_refresh_token(token(5, "u-1", "e"))
            .await
            .expect("put");
    }
    // The first use is fresh, the next a replay; an unknown token is none.
    for byte in [1, 1, 9, 3, 2] {
        let digest = SecretDigest::from_bytes([byte; 32]);
        let (got, want) = both(&store, &reference, |s| async move {
            s.take_refresh_token(&digest).await.expect("take")
        })
        .await;
        assert_eq!(got, want, "{}: take {byte}", B::NAME);
    }
    // A family goes whole, and only it.
    for family in ["a", "a", "z"] {
        let (got, want) = both(&store, &reference, |s| async move {
            s.revoke_refresh_family(family).await.expect("revoke")
        })
        .await;
        assert_eq!(got, want, "{}: revoke family {family}", B::NAME);
    }
    let digest = SecretDigest::from_bytes([2; 32]);
    assert_eq!(store.take_refresh_token(&digest).await.expect("take"), None);

    // Revoking a user's tokens moves their generation and removes their refresh tokens only;
    // every node hears of it.
    // A disabled user's revocation is published with the status they have.
    for s in [&store as &dyn Stores, &reference] {
        s.set_user_status("u-4", Status::Disabled)
            .await
            .expect("set");
    }
    let mut changes = store.subscribe();
    if let Some(changes) = changes.as_mut() {
        // A network store's stream says `Resync` once it listens, and hears what is published
        // after that; the memory store's listens at once and says nothing.
        let next = std::future::poll_fn(|cx| changes.as_mut().poll_next(cx));
        let first = tokio::time::timeout(Duration::from_secs(3), next).await;
        assert!(
            matches!(first, Ok(Some(ChangeEvent::Resync)) | Err(_)),
            "{}: {first:?}",
            B::NAME
        );
    }
    for uid in ["u-1", "u-1", "u-9", "u-4"] {
        let (got, want) = both(&store, &reference, |s| async move {
            s.revoke_user_tokens(uid).await.expect("revoke")
        })
        .await;
        assert_eq!(got, want, "{}: revoke tokens of {uid}", B::NAME);
    }
    let read = store.user("u-1").await.expect("read").expect("exists");
    assert_eq!(read.token_generation, 2, "{}", B::NAME);
    for (byte, left) in [(5, false), (4, true)] {
        let digest = SecretDigest::from_bytes([byte; 32]);
        let taken = store.take_refresh_token(&digest).await.expect("take");
        assert_eq!(taken.is_some(), left, "{}: token {byte}", B::NAME);
    }
    for id in ["c-2", "c-9"] {
        let (got, want) = both(&store, &reference, |s| async move {
            s.revoke_company_tokens(id).await.expect("revoke")
        })
        .await;
        assert_eq!(got, want, "{}: revoke tokens of {id}", B::NAME);
    }
    let read = store.company("c-2").await.expect("read").expect("exists");
    assert_eq!(read.token_generation, 1, "{}", B::NAME);
    if let Some(changes) = changes.as_mut() {
        // Each with the account's current status, so that nodes forget it without changing it.
        let mut heard = Vec::new();
        while heard.len() < 4 {
            let next = std::future::poll_fn(|cx| changes.as_mut().poll_next(cx));
            let event = tokio::time::timeout(Duration::from_secs(5), next)
                .await
                .unwrap_or_else(|_| panic!("{}: revocation not published: {heard:?}", B::NAME))
                .expect("stream open");
            match event {
                ChangeEvent::User { .. } | ChangeEvent::Company { .. } => heard.push(event),
                ChangeEvent::Resync => {}
                other => panic!("{}: {other:?}", B::NAME),
            }
        }
        let user = |uid: &str, status| ChangeEvent::User {
            user_uid: uid.to_owned(),
            status,
        };
        let want = [
            user("u-1", Status::Enabled),
            user("u-1", Status::Enabled),
            user("u-4", Status::Disabled),
            ChangeEvent::Company {
                company_id: "c-2".to_owned(),
                status: Status::Enabled,
            },
        ];
        assert_eq!(heard, want, "{}", B::NAME);
    }

    // Uses at once, from tasks of their own on the runtime's threads: exactly one is fresh.
    for round in 0..20u8 {
        let byte = 100 + round;
        store
            .put_refresh_token(token(byte, "u-2", "race"))
            .await
            .expect("put");
        let digest = SecretDigest::from_bytes([byte; 32]);
        let takers: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.take_refresh_token(&digest).await })
            })
            .collect();
        let mut fresh = 0;
        for taker in takers {
            match taker.await.expect("task").expect("take") {
                Some(RefreshUse::Fresh(_)) => fresh += 1,
                Some(RefreshUse::Replayed(_)) => {}
                None => panic!("{}: token {byte} gone", B::NAME),
            }
        }
        assert_eq!(fresh, 1, "{}: round {round}", B::NAME);
    }
}

async fn expired_refresh_tokens_are_gone_once_another_is_stored<B: Backend>(backend: B) {
    let store = backend.node().await;
    let now = OffsetDateTime::now_utc();
    let token = |byte: u8, expires| RefreshToken {
        digest: SecretDigest::from_bytes([byte; 32]),
        user_uid: "u-1".to_owned(),
        read_only: false,
        expires,
        family: format!("f{byte}"),
        user_generation: 0,
        company_generation: 0,
    };
    // Used or not, an expired token cannot even be replayed: it is of no more use.
    store
        .put_refresh_token(token(1, now - Duration::from_secs(1)))
        .await
        .expect("put");
    store
        .put_refresh_token(token(2, now + Duration::from_millis(300)))
        .await
        .expect("put");
    let used = SecretDigest::from_bytes([2; 32]);
    assert!(
        matches!(
            store.take_refresh_token(&used).await.expect("take"),
            Some(RefreshUse::Fresh(_))
        ),
        "{}",
        B::NAME
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    store
        .put_refresh_token(token(3, now + Duration::from_secs(3600)))
        .await
        .expect("put");
    for (byte, left) in [(1, false), (2, false), (3, true)] {
        let digest = SecretDigest::from_bytes([byte; 32]);
        let taken = store.take_refresh_token(&digest).await.expect("take");
        assert_eq!(taken.is_some(), left, "{}: token {byte}", B::NAME);
    }
}

// --- Revocation ----------------------------------------------------------------------------------

async fn revocation_is_refused_on_the_same_node_before_the_call_returns<B: Backend>(backend: B) {
    let ring = KeyRing::new(backend.node().await);
    let new = || {
        NewKey::new(owner("alice", "Alpha"))
            .description("node A")
            .scope(Scope::REST)
    };
    let issued = ring.issue(new()).await.expect("issued");
    let key = issued.key();
    let id = issued.id();
    let identity = ring.verify(key).await.expect("accepted");
    assert!(identity.has_scope(Scope::REST));

    // Each refusal is checked once, right after the call returned: no waiting allowed.
    let refused = |what: &'static str| {
        let ring = ring.clone();
        let key = key.to_owned();
        async move {
            assert_eq!(
                ring.verify(&key).await.map(|_| ()),
                Err(VerifyError::Invalid),
                "{}: accepted after {what} returned",
                B::NAME
            );
        }
    };
    ring.update(id, KeyUpdate::status(Status::Disabled))
        .await
        .expect("updated");
    refused("disabling the key").await;
    ring.update(id, KeyUpdate::status(Status::Enabled))
        .await
        .expect("updated");
    assert!(ring.verify(key).await.is_ok());
    ring.set_user_status("u-alice", Status::Disabled)
        .await
        .expect("set");
    refused("disabling the user").await;
    ring.set_user_status("u-alice", Status::Enabled)
        .await
        .expect("set");
    assert!(ring.verify(key).await.is_ok());
    ring.set_company_status("c-Alpha", Status::Disabled)
        .await
        .expect("set");
    refused("disabling the company").await;
    ring.set_company_status("c-Alpha", Status::Enabled)
        .await
        .expect("set");
    assert!(ring.verify(key).await.is_ok());
    assert!(ring.delete(id).await.expect("deleted"));
    refused("deleting the key").await;
}

async fn a_second_node_that_has_not_cached_a_key_sees_its_revocation_at_once<B: Backend>(
    backend: B,
) {
    let ring_a = KeyRing::new(backend.node().await);
    let issued = ring_a
        .issue(NewKey::new(owner("alice", "Alpha")).description("x"))
        .await
        .expect("issued");
    ring_a
        .update(issued.id(), KeyUpdate::status(Status::Disabled))
        .await
        .expect("updated");
    // A node that starts after the change reads the store on its first lookup.
    let ring_b = KeyRing::new(backend.node().await);
    assert_eq!(
        ring_b.verify(issued.key()).await.map(|_| ()),
        Err(VerifyError::Invalid),
        "{}",
        B::NAME
    );
    ring_a
        .update(issued.id(), KeyUpdate::status(Status::Enabled))
        .await
        .expect("updated");
    let ring_c = KeyRing::new(backend.node().await);
    assert!(ring_c.verify(issued.key()).await.is_ok(), "{}", B::NAME);
}

async fn a_second_node_that_cached_a_key_refuses_it_soon_after_revocation<B: Backend>(backend: B) {
    if !B::NOTIFIES {
        not_applicable::<B>("one process's file, no change channel to a second node");
        return;
    }
    let ring_a = KeyRing::new(backend.node().await);
    let ring_b = KeyRing::new(backend.node().await);
    let issued = ring_a
        .issue(NewKey::new(owner("alice", "Alpha")).description("x"))
        .await
        .expect("issued");
    let key = issued.key();
    let cache_on_b = || async {
        assert!(
            accepted_within(&ring_b, key, PROPAGATION).await,
            "{}: node B accepts the key",
            B::NAME
        );
    };

    cache_on_b().await;
    ring_a
        .update(issued.id(), KeyUpdate::status(Status::Disabled))
        .await
        .expect("updated");
    refused_on_second_node::<B>(&ring_b, key, "disabled").await;

    ring_a
        .update(issued.id(), KeyUpdate::status(Status::Enabled))
        .await
        .expect("updated");
    cache_on_b().await;
    ring_a
        .set_user_status("u-alice", Status::Disabled)
        .await
        .expect("set");
    refused_on_second_node::<B>(&ring_b, key, "whose user was disabled").await;

    ring_a
        .set_user_status("u-alice", Status::Enabled)
        .await
        .expect("set");
    cache_on_b().await;
    ring_a
        .set_company_status("c-Alpha", Status::Disabled)
        .await
        .expect("set");
    refused_on_second_node::<B>(&ring_b, key, "whose company was disabled").await;

    ring_a
        .set_company_status("c-Alpha", Status::Enabled)
        .await
        .expect("set");
    cache_on_b().await;
    assert!(ring_a.delete(issued.id()).await.expect("deleted"));
    refused_on_second_node::<B>(&ring_b, key, "deleted").await;
}

async fn a_key_issued_on_one_node_evicts_the_other_nodes_negative_entry<B: Backend>(backend: B) {
    if !B::NOTIFIES {
        not_applicable::<B>("one process's file, no change channel to a second node");
        return;
    }
    let store_a = backend.node().await;
    let _ring_a = KeyRing::new(store_a.clone());
    let ring_b = KeyRing::new(backend.node().await);
    // A key whose id node B is asked about before the key exists: B remembers "no such key".
    let key = KeyFormat::default().generate().expect("rng");
    // Past node B's first subscription, whose resync would clear the entry this test is about.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ring_b.verify(key.expose()).await.map(|_| ()),
        Err(VerifyError::Invalid)
    );
    let stats = ring_b.stats();
    assert_eq!((stats.keys, stats.unknown_ids), (0, 1), "{}", B::NAME);
    let mut issued = record(
        1,
        owner("alice", "Alpha"),
        "late",
        OffsetDateTime::now_utc(),
    );
    issued.id = key.id();
    issued.digest = key.digest();
    store_a.insert(issued).await.expect("inserted");
    assert!(
        accepted_within(&ring_b, key.expose(), PROPAGATION).await,
        "{}: node B still answers from its negative entry",
        B::NAME
    );
}

async fn a_lost_change_channel_never_leaves_a_revoked_key_usable<B: Backend>(backend: B) {
    if !B::NOTIFIES {
        not_applicable::<B>("one process's file, no change channel to lose");
        return;
    }
    let ring_a = KeyRing::new(backend.node().await);
    let ring_b = KeyRing::new(backend.node().await);
    let first = ring_a
        .issue(NewKey::new(owner("alice", "Alpha")).description("first"))
        .await
        .expect("issued");
    assert!(accepted_within(&ring_b, first.key(), PROPAGATION).await);

    // The revocation is written while node B's channel is down: its notification may be lost.
    backend.drop_change_channels().await;
    ring_a
        .update(first.id(), KeyUpdate::status(Status::Disabled))
        .await
        .expect("updated");
    refused_on_second_node::<B>(&ring_b, first.key(), "disabled while B's channel was down").await;

    // Node B listens again: a later revocation reaches it too.
    let second = ring_a
        .issue(NewKey::new(owner("alice", "Alpha")).description("second"))
        .await
        .expect("issued");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(accepted_within(&ring_b, second.key(), PROPAGATION).await);
    ring_a
        .update(second.id(), KeyUpdate::status(Status::Disabled))
        .await
        .expect("updated");
    refused_on_second_node::<B>(&ring_b, second.key(), "disabled after B reconnected").await;
}

/// A key issued so far, and whether its revocation call has returned.
type Issued = (String, Arc<AtomicBool>);

async fn concurrent_issue_revoke_and_verify_never_accept_after_revocation<B: Backend>(backend: B) {
    const KEYS: usize = 40;
    const VERIFIERS: usize = 4;
    let ring_a = KeyRing::new(backend.node().await);
    let ring_b = KeyRing::new(backend.node().await);
    let keys: Arc<std::sync::Mutex<Vec<Issued>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let stale = Arc::new(AtomicUsize::new(0));
    let checks = Arc::new(AtomicUsize::new(0));

    let mut verifiers = Vec::new();
    for n in 0..VERIFIERS {
        let (ring, keys, done, stale, checks) = (
            ring_a.clone(),
            keys.clone(),
            done.clone(),
            stale.clone(),
            checks.clone(),
        );
        verifiers.push(tokio::spawn(async move {
            let mut i = n;
            while !done.load(Ordering::SeqCst) {
                let picked = {
                    let keys = keys.lock().expect("lock");
                    (!keys.is_empty()).then(|| keys[i % keys.len()].clone())
                };
                i += 7;
                let Some((key, revoked)) = picked else {
                    tokio::task::yield_now().await;
                    continue;
                };
                // Read before the call: a revocation that returned before it started must hold.
                let was_revoked = revoked.load(Ordering::SeqCst);
                let accepted = ring.verify(&key).await.is_ok();
                checks.fetch_add(1, Ordering::Relaxed);
                if was_revoked && accepted {
                    stale.fetch_add(1, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
            }
        }));
    }

    let mut issuers = Vec::new();
    for worker in 0..4 {
        let (ring_a, ring_b, keys) = (ring_a.clone(), ring_b.clone(), keys.clone());
        issuers.push(tokio::spawn(async move {
            let mut revoked_keys = Vec::new();
            for n in 0..KEYS / 4 {
                let issued = ring_a
                    .issue(
                        NewKey::new(owner(&format!("user{worker}"), "Alpha"))
                            .description(format!("key {n}")),
                    )
                    .await
                    .expect("issued");
                let revoked = Arc::new(AtomicBool::new(false));
                keys.lock()
                    .expect("lock")
                    .push((issued.key().to_owned(), revoked.clone()));
                assert!(ring_a.verify(issued.key()).await.is_ok());
                let _ = ring_b.verify(issued.key()).await;
                tokio::task::yield_now().await;
                ring_a
                    .update(issued.id(), KeyUpdate::status(Status::Disabled))
                    .await
                    .expect("updated");
                revoked.store(true, Ordering::SeqCst);
                assert_eq!(
                    ring_a.verify(issued.key()).await.map(|_| ()),
                    Err(VerifyError::Invalid)
                );
                revoked_keys.push(issued.key().to_owned());
            }
            revoked_keys
        }));
    }
    let mut revoked_keys = Vec::new();
    for issuer in issuers {
        revoked_keys.extend(issuer.await.expect("issuer"));
    }
    done.store(true, Ordering::SeqCst);
    for verifier in verifiers {
        verifier.await.expect("verifier");
    }
    assert_eq!(
        stale.load(Ordering::SeqCst),
        0,
        "{}: node A accepted a key after its revocation returned ({} checks)",
        B::NAME,
        checks.load(Ordering::Relaxed)
    );
    assert!(checks.load(Ordering::Relaxed) > 0);
    if B::NOTIFIES {
        for key in &revoked_keys {
            refused_on_second_node::<B>(&ring_b, key, "disabled").await;
        }
    }
    let mut disabled = ListQuery::default();
    disabled.status = Some(Status::Disabled);
    let listed = ring_a.list(&disabled).await.expect("listed");
    assert_eq!(listed.total, KEYS as u64, "{}", B::NAME);
}
