//! What only `PostgresStore` does: migrations, triggers that announce changes made with plain SQL,
//! corrupt rows, passwords kept out of sight. The behaviour it shares with every store is in
//! `conformance.rs`. Needs `TOWER_API_KEY_POSTGRES_URL` (`scripts/services`).

#[path = "common/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use sqlx::Connection;

use time::macros::datetime;
use tower_api_key::key::SecretDigest;
use tower_api_key::store::{
    AccountStore, ChangeEvent, ChangeStream, KeyRecord, KeyUpdate, ListQuery, RefreshToken,
    RefreshUse, Role, UserProfile,
};
use tower_api_key::{
    KeyId, KeyRing, KeyStore, NewKey, Owner, PostgresStore, Scope, Scopes, Status, VerifyError,
};

use servers::PgDatabase;

fn owner() -> Owner {
    Owner {
        user_uid: "u-alice".into(),
        user_name: "alice".into(),
        company_id: "c-alpha".into(),
        company_name: "Alpha".into(),
    }
}

fn id(raw: u64) -> KeyId {
    KeyId::new(raw).expect("valid id")
}

fn key(raw: u64) -> KeyRecord {
    KeyRecord {
        id: id(raw),
        digest: SecretDigest::from_bytes([raw as u8; 32]),
        owner: owner(),
        description: "CI".into(),
        read_only: false,
        scopes: Scopes::from([Scope::REST]),
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

async fn open(db: &PgDatabase) -> PostgresStore {
    PostgresStore::connect(db.url()).await.expect("connects")
}

/// `url` with `password` in its user part.
fn with_password(url: &str, password: &str) -> String {
    url.replacen("postgres@", &format!("postgres:{password}@"), 1)
}

#[tokio::test]
async fn urls_that_name_no_postgres_database_are_refused() {
    for url in [
        "sqlite::memory:",
        "redis://127.0.0.1/",
        "keys.db",
        "postgres://[::1",
    ] {
        let err = PostgresStore::connect(url).await.expect_err(url);
        assert!(!err.to_string().contains("[::1"), "{err}");
    }
}

#[tokio::test]
async fn passwords_stay_out_of_debug_output_and_errors() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    // The test server trusts local logins, so any password is accepted and must not show.
    let url = with_password(db.url(), "s3cret-pw");
    let store = PostgresStore::connect(&url).await.expect("connects");
    let text = format!("{store:?}");
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");

    let unreachable = "postgres://postgres:s3cret-pw@127.0.0.1:1/nowhere";
    let err = PostgresStore::connect(unreachable)
        .await
        .expect_err("nothing listens on port 1");
    assert!(!format!("{err} {err:?}").contains("s3cret-pw"), "{err:?}");
}

#[tokio::test]
async fn migrations_run_once_in_their_own_schema_and_a_newer_schema_is_refused() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    // Nodes starting together migrate one after the other.
    let (a, b, c) = tokio::join!(open(&db), open(&db), open(&db));
    a.insert(key(7)).await.expect("inserted");
    drop((a, b, c));
    // `connect` can run in a spawned task: its future is `Send`.
    let url = db.url().to_owned();
    let store = tokio::spawn(async move { PostgresStore::connect(&url).await })
        .await
        .expect("task")
        .expect("connects");
    assert_eq!(store.get(id(7)).await.expect("read"), Some(key(7)));

    let mut conn = sqlx::PgConnection::connect(db.url())
        .await
        .expect("connects");
    let versions: Vec<i32> =
        sqlx::query_scalar("SELECT version FROM tower_api_key.schema_version ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .expect("versions");
    assert_eq!(versions, [1, 2, 3, 4]);
    let public: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("count");
    assert_eq!(public, 0, "the application's schema is left alone");

    // The purge of expired refresh tokens and the account listings, as the store writes them,
    // can use their indexes.
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut conn)
        .await
        .expect("set");
    let cases = [
        (
            "DELETE FROM tower_api_key.refresh_tokens WHERE expires COLLATE \"C\" <= $1",
            "refresh_tokens_expires",
        ),
        (
            "SELECT * FROM tower_api_key.users WHERE company_id = $1 \
             ORDER BY user_name COLLATE \"C\", uid COLLATE \"C\" LIMIT 10",
            "users_company_id",
        ),
        (
            "SELECT * FROM tower_api_key.users WHERE uid <> $1 \
             ORDER BY user_name COLLATE \"C\", uid COLLATE \"C\" LIMIT 10",
            "users_by_name",
        ),
        (
            "SELECT * FROM tower_api_key.companies WHERE uid <> $1 \
             ORDER BY name COLLATE \"C\", uid COLLATE \"C\" LIMIT 10",
            "companies_by_name",
        ),
    ];
    for (statement, index) in cases {
        let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {statement}"))
            .bind("x")
            .fetch_all(&mut conn)
            .await
            .expect("explained");
        assert!(
            plan.iter().any(|line| line.contains(index))
                && !plan.iter().any(|l| l.contains("Sort")),
            "{statement}: {plan:?}"
        );
    }

    db.exec("INSERT INTO tower_api_key.schema_version VALUES (999, 'later')")
        .await;
    let err = PostgresStore::connect(db.url())
        .await
        .expect_err("newer schema refused");
    assert!(err.to_string().contains("999"), "{err}");
}

#[tokio::test]
async fn corrupt_rows_are_reported_as_corrupt_and_name_the_key() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let store = open(&db).await;
    let cases = [
        "UPDATE tower_api_key.api_keys SET digest = '\\x00ff'",
        "UPDATE tower_api_key.api_keys SET scopes = 'rest,no-such-scope'",
        "UPDATE tower_api_key.api_keys SET scopes = 'rest,'",
        "UPDATE tower_api_key.api_keys SET created = 'yesterday'",
        "UPDATE tower_api_key.api_keys SET status = 'bogus'",
        "INSERT INTO tower_api_key.owner_status VALUES ('user', 'u-alice', 'bogus')",
        "INSERT INTO tower_api_key.owner_status VALUES ('company', 'c-alpha', '')",
    ];
    let seed = format!(
        "TRUNCATE tower_api_key.api_keys; TRUNCATE tower_api_key.owner_status; \
         INSERT INTO tower_api_key.api_keys VALUES (7, '\\x{}', 'u-alice', 'alice', 'c-alpha', \
         'Alpha', 'CI', 'ci', false, 'rest', 'enabled', '2024-05-01T12:00:00.123456789Z')",
        "07".repeat(32)
    );
    for sql in cases {
        db.exec(&seed).await;
        assert_eq!(store.get(id(7)).await.expect(sql), Some(key(7)), "{sql}");
        db.exec(sql).await;
        let err = store.get(id(7)).await.expect_err(sql);
        assert!(err.is_corrupt(), "{sql}: {err}");
        assert!(err.to_string().contains("key 7"), "{sql}: {err}");
        let err = store.list(&ListQuery::default()).await.expect_err(sql);
        assert!(err.is_corrupt(), "{sql}: {err}");
    }

    // An update whose result cannot be read back is not made either.
    db.exec(
        "TRUNCATE tower_api_key.owner_status; \
         UPDATE tower_api_key.api_keys SET status = 'enabled', scopes = 'no-such-scope'",
    )
    .await;
    let err = store
        .update(id(7), KeyUpdate::status(Status::Disabled))
        .await
        .expect_err("corrupt");
    assert!(err.is_corrupt());
    let mut conn = sqlx::PgConnection::connect(db.url())
        .await
        .expect("connects");
    let status: String = sqlx::query_scalar("SELECT status FROM tower_api_key.api_keys")
        .fetch_one(&mut conn)
        .await
        .expect("read");
    assert_eq!(status, "enabled");

    // A refresh token that cannot be decoded stays, to be looked at.
    let digest = SecretDigest::from_bytes([9; 32]);
    store
        .put_refresh_token(RefreshToken {
            digest,
            user_uid: "u-alice".into(),
            read_only: false,
            expires: datetime!(2030-01-01 0:00 UTC),
            family: "f".into(),
            user_generation: 0,
            company_generation: 0,
        })
        .await
        .expect("stored");
    db.exec("UPDATE tower_api_key.refresh_tokens SET expires = 'soon'")
        .await;
    assert!(store
        .take_refresh_token(&digest)
        .await
        .expect_err("corrupt")
        .is_corrupt());
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tower_api_key.refresh_tokens")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(left, 1);
}

/// Polls until `ring` answers `verify(key)` as `accepted` says, for up to two seconds.
async fn eventually(ring: &KeyRing, key: &str, accepted: bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let result = ring.verify(key).await;
        assert_ne!(result.as_ref().err(), Some(&VerifyError::Unavailable));
        if result.is_ok() == accepted {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test]
async fn changes_made_with_plain_sql_reach_every_node() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let ring = KeyRing::new(open(&db).await);
    let issued = ring
        .issue(NewKey::new(owner()).description("ops"))
        .await
        .expect("issued");
    let k = issued.key();
    assert!(ring.verify(k).await.is_ok());
    let statements = [
        (
            "UPDATE tower_api_key.api_keys SET status = 'disabled'",
            false,
        ),
        ("UPDATE tower_api_key.api_keys SET status = 'enabled'", true),
        (
            "INSERT INTO tower_api_key.owner_status VALUES ('user', 'u-alice', 'disabled')",
            false,
        ),
        ("DELETE FROM tower_api_key.owner_status", true),
        (
            "INSERT INTO tower_api_key.companies VALUES ('c-alpha', 'Alpha', 'disabled')",
            false,
        ),
        (
            "UPDATE tower_api_key.companies SET status = 'enabled'",
            true,
        ),
        ("TRUNCATE tower_api_key.companies", true),
        ("DELETE FROM tower_api_key.api_keys", false),
    ];
    for (sql, accepted) in statements {
        db.exec(sql).await;
        assert!(
            eventually(&ring, k, accepted).await,
            "after `{sql}` the ring should {} the key",
            if accepted { "accept" } else { "refuse" }
        );
    }
}

/// The next change `changes` yields, within five seconds.
async fn next_change(changes: &mut ChangeStream) -> Option<ChangeEvent> {
    let next = std::future::poll_fn(|cx| changes.as_mut().poll_next(cx));
    tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("a change within five seconds")
}

#[tokio::test]
async fn a_version_1_database_upgrades_and_its_rows_still_load() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    // Schema version 1 with rows as it wrote them: roles by their earlier names, no profiles,
    // generations, families or status locks.
    db.exec(&format!(
        "CREATE SCHEMA tower_api_key; {} \
         CREATE TABLE tower_api_key.schema_version (version INTEGER NOT NULL PRIMARY KEY, \
           applied TEXT NOT NULL); \
         INSERT INTO tower_api_key.schema_version VALUES (1, '2024-01-01T00:00:00.000000000Z');",
        include_str!("../migrations/postgres/0001_schema.sql")
    ))
    .await;
    db.exec(&format!(
        "INSERT INTO tower_api_key.companies VALUES ('c-alpha', 'Alpha', 'enabled'); \
         INSERT INTO tower_api_key.users VALUES \
           ('u-root', 'root', 'hash', 'administrator', 'c-alpha', 'enabled', \
            '2024-01-01T00:00:00.000000000Z'), \
           ('u-alice', 'alice', 'hash', 'user', 'c-alpha', 'disabled', \
            '2024-01-02T00:00:00.000000000Z'); \
         INSERT INTO tower_api_key.api_keys VALUES (7, '\\x{keys}', 'u-alice', 'alice', \
           'c-alpha', 'Alpha', 'CI', 'ci', false, 'rest', 'enabled', \
           '2024-05-01T12:00:00.123456789Z'); \
         INSERT INTO tower_api_key.refresh_tokens VALUES ('\\x{tokens}', 'u-alice', false, \
           '2030-01-01T00:00:00.000000000Z');",
        keys = "07".repeat(32),
        tokens = "09".repeat(32),
    ))
    .await;

    let store = open(&db).await;
    let root = store.user("u-root").await.expect("read").expect("exists");
    assert_eq!(root.role, Role::PortalAdministrator);
    assert_eq!(
        (root.profile, root.token_generation),
        (UserProfile::default(), 0)
    );
    let alice = store
        .user_by_name("alice")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(alice.role, Role::CompanyLocationUser);
    assert_eq!(
        store
            .list_users(Some("c-alpha"), 0, 10)
            .await
            .expect("listed")
            .total,
        2
    );
    let alpha = store
        .company("c-alpha")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(alpha.token_generation, 0);
    let mut want = key(7);
    want.user_status = Status::Disabled;
    assert_eq!(store.get(id(7)).await.expect("read"), Some(want));

    // A token issued before families is a family of its own: its digest in hex.
    let digest = SecretDigest::from_bytes([9; 32]);
    let Some(RefreshUse::Fresh(token)) = store.take_refresh_token(&digest).await.expect("take")
    else {
        panic!("the token is fresh");
    };
    assert_eq!(token.family, "09".repeat(32));
    assert!(matches!(
        store.take_refresh_token(&digest).await.expect("take"),
        Some(RefreshUse::Replayed(_))
    ));

    // The upgraded triggers announce a revocation with the account's status.
    let mut changes = store.subscribe().expect("a change stream");
    assert_eq!(next_change(&mut changes).await, Some(ChangeEvent::Resync));
    assert_eq!(
        store.revoke_user_tokens("u-alice").await.expect("revoked"),
        Some(1)
    );
    assert_eq!(
        next_change(&mut changes).await,
        Some(ChangeEvent::User {
            user_uid: "u-alice".into(),
            status: Status::Disabled
        })
    );
    assert_eq!(store.take_refresh_token(&digest).await.expect("take"), None);
}

#[tokio::test]
async fn corrupt_profiles_and_generations_are_corrupt_records() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let store = open(&db).await;
    db.exec(
        "INSERT INTO tower_api_key.companies (uid, name, status) VALUES ('c-alpha', 'Alpha', 'enabled'); \
         INSERT INTO tower_api_key.users (uid, user_name, password_hash, role, company_id, status, \
           created) VALUES ('u-alice', 'alice', 'hash', 'companyOwner', 'c-alpha', 'enabled', \
           '2024-01-02T00:00:00.000000000Z')",
    )
    .await;
    assert!(store.user("u-alice").await.expect("read").is_some());
    let cases = [
        "UPDATE tower_api_key.users SET profile = '{'",
        "UPDATE tower_api_key.users SET profile = '{\"email\": []}'",
        "UPDATE tower_api_key.users SET token_generation = -1",
        "UPDATE tower_api_key.companies SET profile = 'null'",
        "UPDATE tower_api_key.companies SET token_generation = -3",
    ];
    for sql in cases {
        db.exec(sql).await;
        if sql.contains(".users") {
            assert!(
                store.user("u-alice").await.unwrap_err().is_corrupt(),
                "{sql}"
            );
            let listed = store.list_users(None, 0, 10).await;
            assert!(listed.unwrap_err().is_corrupt(), "{sql}");
        } else {
            assert!(
                store.company("c-alpha").await.unwrap_err().is_corrupt(),
                "{sql}"
            );
            let listed = store.list_companies(0, 10).await;
            assert!(listed.unwrap_err().is_corrupt(), "{sql}");
        }
        db.exec(
            "UPDATE tower_api_key.users SET profile = '{}', token_generation = 0; \
             UPDATE tower_api_key.companies SET profile = '{}', token_generation = 0",
        )
        .await;
        assert!(store.user("u-alice").await.is_ok() && store.company("c-alpha").await.is_ok());
    }
}
