//! What only `RedisStore` does: its key layout under a prefix, corrupt hashes, passwords kept out
//! of sight. The behaviour it shares with every store is in `conformance.rs`. Needs
//! `TOWER_API_KEY_REDIS_URL` (`scripts/services`).

#[path = "common/servers.rs"]
mod servers;

use time::macros::datetime;
use tower_api_key::key::SecretDigest;
use tower_api_key::store::{KeyRecord, ListQuery};
use tower_api_key::{KeyId, KeyStore, Owner, RedisStore, Scope, Scopes, Status};

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
