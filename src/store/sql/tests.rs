//! The shared SQL store's behaviour, checked on SQLite in memory against `MemoryStore`, and the
//! fixtures every SQL test uses.

use time::macros::datetime;
use time::OffsetDateTime;

use crate::identity::Status;
use crate::key::{KeyId, SecretDigest};
use crate::scope::{Scope, Scopes};
use crate::store::{
    AccountStore, Company, KeyRecord, KeyStore, KeyUpdate, ListQuery, MemoryStore, Owner,
    RefreshToken, RefreshUse, Role, SortField, SqliteStore, User,
};

pub(crate) async fn memory() -> SqliteStore {
    SqliteStore::connect("sqlite::memory:")
        .await
        .expect("in-memory database opens")
}

pub(crate) fn owner(user: &str, company: &str) -> Owner {
    Owner {
        user_uid: format!("u-{user}"),
        user_name: user.to_owned(),
        company_id: format!("c-{company}"),
        company_name: company.to_owned(),
    }
}

pub(crate) fn id(raw: u64) -> KeyId {
    KeyId::new(raw).expect("valid key id")
}

pub(crate) fn record(
    raw: u64,
    owner: Owner,
    description: &str,
    created: OffsetDateTime,
) -> KeyRecord {
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

pub(crate) fn alice_key(raw: u64) -> KeyRecord {
    record(
        raw,
        owner("alice", "Alpha"),
        "CI",
        datetime!(2024-05-01 12:00 UTC),
    )
}

pub(crate) fn user(uid: &str, name: &str, status: Status) -> User {
    User {
        uid: uid.to_owned(),
        user_name: name.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        role: Role::CompanyLocationUser,
        company_id: "c-Alpha".to_owned(),
        status,
        created: datetime!(2024-01-01 0:00 UTC),
        profile: Default::default(),
        token_generation: 0,
    }
}

pub(crate) async fn exec(store: &SqliteStore, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(&store.sql.pool)
        .await
        .expect("raw statement runs");
}

#[tokio::test]
async fn missing_keys_are_reported_as_absent() {
    let store = memory().await;
    assert_eq!(store.get(id(1)).await.expect("read"), None);
    assert_eq!(
        store
            .update(id(1), KeyUpdate::status(Status::Disabled))
            .await
            .expect("update"),
        None
    );
    assert!(!store.delete(id(1)).await.expect("delete"));
    store.insert(alice_key(1)).await.expect("inserted");
    assert!(store.delete(id(1)).await.expect("delete"));
    assert!(!store.delete(id(1)).await.expect("delete"));
}

#[tokio::test]
async fn taken_ids_and_names_are_conflicts() {
    let store = memory().await;
    store.insert(alice_key(7)).await.expect("inserted");
    let mut again = alice_key(7);
    again.description = "other".into();
    assert!(store.insert(again).await.unwrap_err().is_conflict());
    assert_eq!(store.get(id(7)).await.expect("read"), Some(alice_key(7)));

    let company = Company {
        uid: "c-Alpha".into(),
        name: "Alpha".into(),
        status: Status::Enabled,
        profile: Default::default(),
        token_generation: 0,
    };
    store
        .create_company(company.clone())
        .await
        .expect("created");
    let same_name = Company {
        uid: "c-other".into(),
        ..company.clone()
    };
    assert!(store
        .create_company(same_name)
        .await
        .unwrap_err()
        .is_conflict());
    assert!(store
        .create_company(company)
        .await
        .unwrap_err()
        .is_conflict());

    store
        .create_user(user("u-alice", "alice", Status::Enabled))
        .await
        .expect("created");
    assert!(store
        .create_user(user("u-alice", "alice2", Status::Enabled))
        .await
        .unwrap_err()
        .is_conflict());
    assert!(store
        .create_user(user("u-other", "alice", Status::Enabled))
        .await
        .unwrap_err()
        .is_conflict());
}

#[tokio::test]
async fn a_failed_create_user_leaves_the_owner_status_in_place() {
    let store = memory().await;
    store
        .create_user(user("u-alice", "alice", Status::Enabled))
        .await
        .expect("created");
    store
        .set_user_status("u-bob", Status::Disabled)
        .await
        .expect("set");
    // Name taken: the insert fails, so the status must not move out of `owner_status`.
    let err = store
        .create_user(user("u-bob", "alice", Status::Enabled))
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    store
        .insert(record(
            3,
            owner("bob", "Alpha"),
            "x",
            datetime!(2024-05-01 0:00 UTC),
        ))
        .await
        .expect("inserted");
    let key = store.get(id(3)).await.expect("read").expect("exists");
    assert_eq!(key.user_status, Status::Disabled);
}

#[tokio::test]
async fn owner_status_moves_into_accounts_created_later() {
    let store = memory().await;
    let oracle = MemoryStore::new();
    let key = alice_key(5);
    for s in [&store as &dyn KeyStore, &oracle] {
        s.insert(key.clone()).await.expect("inserted");
        s.set_user_status("u-alice", Status::Disabled)
            .await
            .expect("set");
        s.set_company_status("c-Alpha", Status::DisabledDueToTenant)
            .await
            .expect("set");
    }
    assert_eq!(
        store.get(key.id).await.expect("read"),
        oracle.get(key.id).await.expect("read")
    );

    // The account's own status wins over what was set for the owner before it existed.
    let alice = user("u-alice", "alice", Status::Enabled);
    let alpha = Company {
        uid: "c-Alpha".into(),
        name: "Alpha".into(),
        status: Status::Enabled,
        profile: Default::default(),
        token_generation: 0,
    };
    store.create_user(alice.clone()).await.expect("created");
    oracle.create_user(alice.clone()).await.expect("created");
    store.create_company(alpha.clone()).await.expect("created");
    oracle.create_company(alpha.clone()).await.expect("created");
    let read = store.get(key.id).await.expect("read").expect("exists");
    assert_eq!(read.user_status, Status::Enabled);
    assert_eq!(read.company_status, Status::Enabled);
    assert_eq!(Some(read), oracle.get(key.id).await.expect("read"));
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM owner_status")
        .fetch_one(&store.sql.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);

    store
        .set_user_status("u-alice", Status::Disabled)
        .await
        .expect("set");
    oracle
        .set_user_status("u-alice", Status::Disabled)
        .await
        .expect("set");
    let account = store.user("u-alice").await.expect("read").expect("exists");
    assert_eq!(account.status, Status::Disabled);
    assert_eq!(Some(account), oracle.user("u-alice").await.expect("read"));
    assert_eq!(
        store.get(key.id).await.expect("read"),
        oracle.get(key.id).await.expect("read")
    );
}

#[tokio::test]
async fn an_update_that_cannot_be_read_back_changes_nothing() {
    let store = memory().await;
    store.insert(alice_key(7)).await.expect("inserted");
    exec(&store, "UPDATE api_keys SET scopes = 'no-such-scope'").await;
    let err = store
        .update(id(7), KeyUpdate::status(Status::Disabled))
        .await
        .unwrap_err();
    assert!(err.is_corrupt());
    let status: String = sqlx::query_scalar("SELECT status FROM api_keys WHERE id = 7")
        .fetch_one(&store.sql.pool)
        .await
        .expect("read");
    assert_eq!(status, "enabled");
}

#[tokio::test]
async fn refresh_tokens_are_used_once_and_replays_recognised() {
    let store = memory().await;
    let token = |byte: u8, uid: &str, family: &str| RefreshToken {
        digest: SecretDigest::from_bytes([byte; 32]),
        user_uid: uid.to_owned(),
        read_only: byte.is_multiple_of(2),
        expires: datetime!(2030-01-01 0:00:00.5 +01:00),
        family: family.into(),
        user_generation: u64::from(byte),
        company_generation: 7,
    };
    store
        .put_refresh_token(token(1, "u-a", "a"))
        .await
        .expect("put");
    store
        .put_refresh_token(token(2, "u-a", "a"))
        .await
        .expect("put");
    store
        .put_refresh_token(token(3, "u-b", "b"))
        .await
        .expect("put");
    // Putting the same digest again replaces the token.
    store
        .put_refresh_token(token(3, "u-c", "c"))
        .await
        .expect("put");

    let digest = SecretDigest::from_bytes([1; 32]);
    let taken = store.take_refresh_token(&digest).await.expect("take");
    assert_eq!(taken, Some(RefreshUse::Fresh(token(1, "u-a", "a"))));
    let again = store.take_refresh_token(&digest).await.expect("take");
    assert_eq!(again, Some(RefreshUse::Replayed(token(1, "u-a", "a"))));
    assert_eq!(store.revoke_refresh_family("a").await.expect("revoke"), 2);
    assert_eq!(store.revoke_refresh_family("b").await.expect("revoke"), 0);
    assert_eq!(store.take_refresh_token(&digest).await.expect("take"), None);
    let third = store
        .take_refresh_token(&SecretDigest::from_bytes([3; 32]))
        .await
        .expect("take");
    assert_eq!(third, Some(RefreshUse::Fresh(token(3, "u-c", "c"))));
}

/// Keys that exercise every ordering: equal fields broken by id, case and accents, offsets.
fn oracle_records() -> Vec<KeyRecord> {
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
            datetime!(2025-02-03 4:05:06.7 UTC),
        ),
        record(1 << 52, owner("dave", "Delta"), "big id", t),
        record(
            31,
            owner("erin", "External"),
            "CI",
            datetime!(2020-01-01 0:00 -05:00),
        ),
        record(8, owner("bob", "Beta"), "CI", t),
    ];
    records[1].status = Status::Disabled;
    records[4].status = Status::DisabledDueToSystem;
    records[6].status = Status::Unknown;
    records[7].scopes = Scopes::EMPTY;
    records[8].scopes = Scopes::from([Scope::UI, Scope::INTEGRATION]);
    records
}

#[tokio::test]
async fn list_agrees_with_list_query_apply() {
    let store = memory().await;
    let oracle = MemoryStore::new();
    for s in [&store as &dyn KeyStore, &oracle] {
        for r in oracle_records() {
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
    }
    for a in [&store as &dyn AccountStore, &oracle] {
        a.create_user(user("u-carol", "carol", Status::Disabled))
            .await
            .expect("created");
        a.create_company(Company {
            uid: "c-Alpha".into(),
            name: "Alpha".into(),
            status: Status::Enabled,
            profile: Default::default(),
            token_generation: 0,
        })
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
    let filters = [
        ListQuery::default(),
        ListQuery {
            user_uid: Some("u-alice".into()),
            ..ListQuery::default()
        },
        ListQuery {
            user_uid: Some("u-nobody".into()),
            ..ListQuery::default()
        },
        ListQuery {
            status: Some(Status::Enabled),
            ..ListQuery::default()
        },
        ListQuery {
            status: Some(Status::DisabledDueToUser),
            ..ListQuery::default()
        },
        ListQuery {
            status: Some(Status::DisabledDueToCompany),
            ..ListQuery::default()
        },
        ListQuery {
            status: Some(Status::Unknown),
            ..ListQuery::default()
        },
        ListQuery {
            description_contains: Some("émile".into()),
            ..ListQuery::default()
        },
        ListQuery {
            description_contains: Some("CI".into()),
            status: Some(Status::Enabled),
            ..ListQuery::default()
        },
        ListQuery {
            description_contains: Some(String::new()),
            ..ListQuery::default()
        },
        ListQuery {
            description_contains: Some("%".into()),
            ..ListQuery::default()
        },
    ];
    let pages = [
        (0, 100),
        (0, 3),
        (2, 4),
        (9, 5),
        (50, 5),
        (0, 0),
        (1, u64::MAX),
    ];
    let mut checked = 0;
    for filter in &filters {
        for sort in sorts {
            for descending in [false, true] {
                for (offset, limit) in pages {
                    let query = ListQuery {
                        sort,
                        descending,
                        offset,
                        limit,
                        ..filter.clone()
                    };
                    let got = store.list(&query).await.expect("listed");
                    let want = oracle.list(&query).await.expect("listed");
                    assert_eq!(got, want, "{query:?}");
                    checked += got.items.len();
                }
            }
        }
    }
    assert!(checked > 0);
}
