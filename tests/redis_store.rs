//! What only `RedisStore` does: its key layout under a prefix, corrupt hashes, passwords kept out
//! of sight, listing indexes built for records of the earlier layout, refresh tokens of that layout. The behaviour it shares with every store is in `conformance.rs`. Needs
//! `TOWER_API_KEY_REDIS_URL` (`scripts/services`).

#[path = "common/servers.rs"]
mod servers;

use time::macros::datetime;
use tower_api_key::key::SecretDigest;
use tower_api_key::store::{
    AccountStore, Company, KeyRecord, ListQuery, Page, RefreshToken, RefreshUse, Role, SortField,
    User,
};
use tower_api_key::{KeyId, KeyStore, MemoryStore, Owner, RedisStore, Scope, Scopes, Status};

use servers::RedisPrefix;

fn id(raw: u64) -> KeyId {
    KeyId::new(raw).expect("valid id")
}

fn key(raw: u64) -> KeyRecord {
    KeyRecord {
        id: id(raw),
        digest: SecretDigest::from_bytes([raw as u8; 32]),
        owner: Owner {
            user_uid: "u-alice".into(),
            user_name: "alice".into(),
            company_id: "c-alpha".into(),
            company_name: "Alpha".into(),
        },
        description: "CI".into(),
        read_only: true,
        scopes: Scopes::from([Scope::REST, Scope::UI]),
        status: Status::Enabled,
        user_status: Status::Enabled,
        company_status: Status::Enabled,
        created: datetime!(2024-05-01 12:00:00.123456789 UTC),
        status_locked: false,
        expires: None,
        deprecated: None,
        last_used: None,
    }
}

async fn open(redis: &RedisPrefix) -> RedisStore {
    RedisStore::connect_with_prefix(redis.url(), redis.prefix())
        .await
        .expect("connects")
}

fn integer(value: redis::Value) -> i64 {
    match value {
        redis::Value::Int(n) => n,
        other => panic!("not an integer: {other:?}"),
    }
}

#[tokio::test]
async fn urls_that_name_no_redis_server_are_refused() {
    for url in [
        "postgres://localhost/x",
        "sqlite::memory:",
        "127.0.0.1:6379",
    ] {
        assert!(RedisStore::connect(url).await.is_err(), "{url}");
    }
}

#[tokio::test]
async fn keys_live_under_the_prefix_and_prefixes_keep_stores_apart() {
    let (Some(a), Some(b)) = (RedisPrefix::create(), RedisPrefix::create()) else {
        return;
    };
    let store_a = open(&a).await;
    let store_b = open(&b).await;
    assert_eq!(store_a.prefix(), a.prefix());
    store_a.insert(key(7)).await.expect("inserted");
    assert_eq!(store_a.get(id(7)).await.expect("read"), Some(key(7)));
    assert_eq!(store_b.get(id(7)).await.expect("read"), None);
    assert_eq!(
        store_b
            .list(&ListQuery::default())
            .await
            .expect("listed")
            .total,
        0
    );

    let p = a.prefix();
    assert_eq!(integer(a.command(&["EXISTS", &format!("{p}key:7")])), 1);
    assert_eq!(
        integer(a.command(&["SISMEMBER", &format!("{p}keys"), "7"])),
        1
    );
    assert_eq!(
        integer(a.command(&["SISMEMBER", &format!("{p}user-keys:u-alice"), "7"])),
        1
    );
    assert!(store_a.delete(id(7)).await.expect("deleted"));
    assert_eq!(integer(a.command(&["EXISTS", &format!("{p}key:7")])), 0);
    assert_eq!(integer(a.command(&["SCARD", &format!("{p}keys")])), 0);
    assert_eq!(
        integer(a.command(&["SCARD", &format!("{p}user-keys:u-alice")])),
        0
    );
    assert!(RedisStore::DEFAULT_PREFIX.ends_with(':'));
}

#[tokio::test]
async fn corrupt_hashes_are_reported_as_corrupt_and_name_the_key() {
    let Some(redis) = RedisPrefix::create() else {
        return;
    };
    let store = open(&redis).await;
    let k = format!("{}key:7", redis.prefix());
    let cases: [&[&str]; 8] = [
        &["HSET", &k, "digest", "short"],
        &["HSET", &k, "scopes", "rest,no-such-scope"],
        &["HSET", &k, "created", "yesterday"],
        &["HSET", &k, "status", "bogus"],
        &["HSET", &k, "read_only", "yes"],
        &["HDEL", &k, "user_name"],
        &[
            "HSET",
            &format!("{}user-status", redis.prefix()),
            "u-alice",
            "bogus",
        ],
        &[
            "HSET",
            &format!("{}company-status", redis.prefix()),
            "c-alpha",
            "",
        ],
    ];
    for case in cases {
        redis.command(&["DEL", &k, &format!("{}user-status", redis.prefix())]);
        redis.command(&["DEL", &format!("{}company-status", redis.prefix())]);
        redis.command(&["SREM", &format!("{}keys", redis.prefix()), "7"]);
        store.insert(key(7)).await.expect("inserted");
        assert_eq!(store.get(id(7)).await.expect("read"), Some(key(7)));
        redis.command(case);
        let err = store.get(id(7)).await.expect_err(case[0]);
        assert!(err.is_corrupt(), "{case:?}: {err}");
        assert!(err.to_string().contains("key 7"), "{case:?}: {err}");
        let err = store.list(&ListQuery::default()).await.expect_err(case[0]);
        assert!(err.is_corrupt(), "{case:?}: {err}");
    }

    // A listed id whose hash is gone is corrupt too, not silently skipped.
    redis.command(&["DEL", &k]);
    assert_eq!(store.get(id(7)).await.expect("read"), None);
    let err = store
        .list(&ListQuery::default())
        .await
        .expect_err("dangling id");
    assert!(
        err.is_corrupt() && err.to_string().contains("key 7"),
        "{err}"
    );
}

#[tokio::test]
async fn passwords_stay_out_of_debug_output_and_errors() {
    let Some(redis) = RedisPrefix::create() else {
        return;
    };
    let user = redis.prefix().trim_end_matches(':').to_owned();
    redis.command(&[
        "ACL",
        "SETUSER",
        &user,
        "on",
        ">s3cret-pw",
        "~*",
        "&*",
        "+@all",
    ]);
    let url = redis
        .url()
        .replacen("redis://", &format!("redis://{user}:s3cret-pw@"), 1);
    let store = RedisStore::connect_with_prefix(&url, redis.prefix()).await;
    let wrong = url.replacen("s3cret-pw", "wrong-pw", 1);
    let refused = RedisStore::connect_with_prefix(&wrong, redis.prefix()).await;
    redis.command(&["ACL", "DELUSER", &user]);

    let store = store.expect("connects with the password");
    let text = format!("{store:?}");
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");
    let err = refused.expect_err("wrong password");
    assert!(!format!("{err} {err:?}").contains("wrong-pw"), "{err:?}");
}

fn account(uid: &str, name: &str, company: &str) -> User {
    User {
        uid: uid.to_owned(),
        user_name: name.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        role: Role::CompanyLocationUser,
        company_id: company.to_owned(),
        status: Status::Enabled,
        created: datetime!(2024-01-01 0:00 UTC),
        profile: Default::default(),
        token_generation: 0,
    }
}

fn company(uid: &str, name: &str) -> Company {
    Company {
        uid: uid.to_owned(),
        name: name.to_owned(),
        status: Status::Enabled,
        profile: Default::default(),
        token_generation: 0,
    }
}

/// Every listing the indexes serve, as one value to compare.
async fn listings(
    store: &RedisStore,
) -> (Vec<Page<KeyRecord>>, Page<User>, Page<User>, Page<Company>) {
    let mut keys = Vec::new();
    for sort in [SortField::Id, SortField::Description, SortField::UserName] {
        let mut query = ListQuery::default();
        query.sort = sort;
        keys.push(store.list(&query).await.expect("listed"));
    }
    (
        keys,
        store.list_users(None, 0, 10).await.expect("listed"),
        store.list_users(Some("c-a"), 0, 10).await.expect("listed"),
        store.list_companies(0, 10).await.expect("listed"),
    )
}

#[tokio::test]
async fn records_written_before_the_listing_indexes_existed_are_listed() {
    let Some(redis) = RedisPrefix::create() else {
        return;
    };
    let store = open(&redis).await;
    for raw in [7, 3, 12] {
        let mut k = key(raw);
        k.description = format!("key {}", 20 - raw);
        store.insert(k).await.expect("inserted");
    }
    store
        .create_company(company("c-a", "A"))
        .await
        .expect("created");
    store
        .create_company(company("c-b", "B"))
        .await
        .expect("created");
    for (uid, name, company) in [
        ("u-2", "bob", "c-a"),
        ("u-1", "al", "c-b"),
        ("u-3", "cy", "c-a"),
    ] {
        store
            .create_user(account(uid, name, company))
            .await
            .expect("created");
    }
    let before = listings(&store).await;
    assert_eq!(before.0[0].total, 3);
    assert_eq!(before.2.total, 2);

    // The layout of the version before the indexes: the records and their sets alone.
    let p = redis.prefix();
    let indexes = [
        "keys-by-id",
        "keys-by-created",
        "keys-by-description",
        "keys-by-user-name",
        "user-by-name",
        "company-by-name",
        "company-users:c-a",
        "company-users:c-b",
        "listing-index",
    ]
    .map(|name| format!("{p}{name}"));
    let mut del = vec!["DEL"];
    del.extend(indexes.iter().map(String::as_str));
    assert_eq!(integer(redis.command(&del)), indexes.len() as i64);

    assert_eq!(listings(&store).await, before);
    assert_eq!(integer(redis.command(&["ZCARD", &indexes[0]])), 3);
    assert_eq!(integer(redis.command(&["ZCARD", &indexes[6]])), 2);
    assert_eq!(integer(redis.command(&["EXISTS", &indexes[8]])), 1);
}

#[tokio::test]
async fn an_index_that_holds_keys_deleted_by_an_older_version_is_rebuilt() {
    let Some(redis) = RedisPrefix::create() else {
        return;
    };
    let store = open(&redis).await;
    for raw in [7, 3, 12] {
        store.insert(key(raw)).await.expect("inserted");
    }
    assert_eq!(
        store
            .list(&ListQuery::default())
            .await
            .expect("listed")
            .total,
        3
    );
    // What the earlier delete script did: the hash and its sets, not the indexes.
    let p = redis.prefix();
    redis.command(&["DEL", &format!("{p}key:3")]);
    redis.command(&["SREM", &format!("{p}keys"), "3"]);
    redis.command(&["SREM", &format!("{p}user-keys:u-alice"), "3"]);
    for sort in [
        SortField::Id,
        SortField::CreationDate,
        SortField::Description,
    ] {
        let mut query = ListQuery::default();
        query.sort = sort;
        let page = store.list(&query).await.expect("listed");
        let ids: Vec<u64> = page.items.iter().map(|r| r.id.get()).collect();
        assert_eq!((page.total, ids), (2, vec![7, 12]), "{sort:?}");
    }
}

#[tokio::test]
async fn descriptions_with_nul_bytes_sort_by_their_bytes() {
    let Some(redis) = RedisPrefix::create() else {
        return;
    };
    let store = open(&redis).await;
    let reference = MemoryStore::new();
    let descriptions = [
        "a", "a\0", "a\0b", "a\u{1}", "", "\0", "\0\0", "a\u{ff}", "ab",
    ];
    for (i, description) in descriptions.iter().enumerate() {
        let mut k = key(i as u64 + 1);
        k.description = (*description).to_owned();
        k.owner.user_name = (*description).to_owned();
        store.insert(k.clone()).await.expect("inserted");
        reference.insert(k).await.expect("inserted");
    }
    for sort in [SortField::Description, SortField::UserName] {
        for descending in [false, true] {
            for (offset, limit) in [(0, 100), (2, 3)] {
                let mut query = ListQuery::default();
                query.sort = sort;
                query.descending = descending;
                query.offset = offset;
                query.limit = limit;
                assert_eq!(
                    store.list(&query).await.expect("listed"),
                    reference.list(&query).await.expect("listed"),
                    "{query:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn refresh_tokens_of_the_earlier_layout_are_used_once_and_expire() {
    let Some(redis) = RedisPrefix::create() else {
        return;
    };
    let store = open(&redis).await;
    // As the version before families stored a token: no used mark, family, generations or TTL.
    let p = redis.prefix();
    let hex = "09".repeat(32);
    let digest = "\t".repeat(32);
    redis.command(&[
        "HSET",
        &format!("{p}refresh:{hex}"),
        "digest",
        &digest,
        "user_uid",
        "u-alice",
        "read_only",
        "1",
        "expires",
        "2030-01-01T00:00:00.000000000Z",
    ]);
    redis.command(&["SADD", &format!("{p}user-refresh:u-alice"), &hex]);
    let digest = SecretDigest::from_bytes([9; 32]);
    let want = RefreshToken {
        digest,
        user_uid: "u-alice".into(),
        read_only: true,
        expires: datetime!(2030-01-01 0:00 UTC),
        family: hex.clone(),
        user_generation: 0,
        company_generation: 0,
    };
    let taken = store.take_refresh_token(&digest).await.expect("taken");
    assert_eq!(taken, Some(RefreshUse::Fresh(want.clone())));
    let ttl = integer(redis.command(&["PTTL", &format!("{p}refresh:{hex}")]));
    assert!(ttl > 0, "{ttl}");
    let again = store.take_refresh_token(&digest).await.expect("taken");
    assert_eq!(again, Some(RefreshUse::Replayed(want)));
    assert_eq!(store.revoke_refresh_family(&hex).await.expect("revoked"), 1);
    assert_eq!(
        store.take_refresh_token(&digest).await.expect("taken"),
        None
    );
}

#[tokio::test]
async fn corrupt_account_hashes_are_reported_as_corrupt() {
    let Some(redis) = RedisPrefix::create() else {
        return;
    };
    let store = open(&redis).await;
    store
        .create_company(company("c-a", "A"))
        .await
        .expect("created");
    store
        .create_user(account("u-1", "al", "c-a"))
        .await
        .expect("created");
    let p = redis.prefix();
    let cases: [&[&str]; 5] = [
        &["HSET", &format!("{p}user:u-1"), "profile", "{"],
        &["HSET", &format!("{p}user:u-1"), "profile", "[1]"],
        &["HSET", &format!("{p}user:u-1"), "token_generation", "-1"],
        &["HSET", &format!("{p}user:u-1"), "role", "root"],
        &["HSET", &format!("{p}company:c-a"), "profile", "\"text\""],
    ];
    for case in cases {
        let (hash, field) = (case[1], case[2]);
        let saved = redis.command(&["HGET", hash, field]);
        let redis::Value::BulkString(saved) = saved else {
            panic!("{case:?}: {saved:?}");
        };
        let saved = String::from_utf8(saved).expect("text");
        redis.command(case);
        if hash.ends_with("user:u-1") {
            assert!(
                store.user("u-1").await.unwrap_err().is_corrupt(),
                "{case:?}"
            );
            let listed = store.list_users(Some("c-a"), 0, 10).await;
            assert!(listed.unwrap_err().is_corrupt(), "{case:?}");
        } else {
            assert!(
                store.company("c-a").await.unwrap_err().is_corrupt(),
                "{case:?}"
            );
            assert!(
                store.list_companies(0, 10).await.unwrap_err().is_corrupt(),
                "{case:?}"
            );
        }
        redis.command(&["HSET", hash, field, &saved]);
        assert!(store.user("u-1").await.is_ok() && store.company("c-a").await.is_ok());
    }
}
