//! `SqliteStore` driven the way applications use it: through a `KeyRing`, on a file that outlives
//! the process's stores.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use time::macros::datetime;
use tower_api_key::key::SecretDigest;
use tower_api_key::store::{
    AccountStore, Company, KeyRecord, KeyUpdate, ListQuery, Page, RefreshToken, RefreshUse, Role,
    SortField, User,
};
use tower_api_key::{KeyRing, NewKey, Owner, Scope, Scopes, SqliteStore, Status, VerifyError};

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "tower-api-key-sqlite-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("temp dir is created");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.join("keys.db").display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::connect(&dir.url())
        .await
        .expect("database opens")
}

fn owner(user: &str, company: &str) -> Owner {
    Owner {
        user_uid: format!("u-{user}"),
        user_name: user.to_owned(),
        company_id: format!("c-{company}"),
        company_name: company.to_owned(),
    }
}

fn key_for(user: &str, company: &str, description: &str) -> NewKey {
    NewKey::new(owner(user, company)).description(description)
}

fn account(user: &str, company: &str) -> User {
    User {
        uid: format!("u-{user}"),
        user_name: user.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        role: Role::CompanyLocationUser,
        company_id: format!("c-{company}"),
        status: Status::Enabled,
        created: datetime!(2024-01-01 0:00 UTC),
        profile: Default::default(),
        token_generation: 0,
    }
}

fn company(name: &str) -> Company {
    Company {
        uid: format!("c-{name}"),
        name: name.to_owned(),
        status: Status::Enabled,
        profile: Default::default(),
        token_generation: 0,
    }
}

#[tokio::test]
async fn issued_key_verifies_with_its_scopes_and_read_only_flag() {
    let dir = TempDir::new("issue");
    let ring = KeyRing::new(open(&dir).await);
    let issued = ring
        .issue(
            key_for("alice", "Alpha", "CI pipeline")
                .scopes([Scope::REST, Scope::INTEGRATION])
                .read_only(true),
        )
        .await
        .expect("issued");

    let identity = ring.verify(issued.key()).await.expect("valid");
    assert_eq!(identity.key_id(), Some(issued.id()));
    assert!(identity.has_scope(Scope::REST));
    assert!(identity.has_scope(Scope::INTEGRATION));
    assert!(!identity.has_scope(Scope::UI));
    assert!(identity.is_read_only());
    let login = identity.login().expect("indexed");
    assert_eq!(login.user_name, "alice");
    assert_eq!(login.company_name, "Alpha");
    assert_eq!(login.description, "CI pipeline");
    assert_eq!(login.status, Status::Enabled);

    let record = ring.get(issued.id()).await.expect("read").expect("stored");
    assert_eq!(
        record.scopes,
        Scopes::from([Scope::REST, Scope::INTEGRATION])
    );
    assert!(record.read_only);
    assert_eq!(record.to_login(), *issued.login());

    assert_eq!(
        ring.verify("not-a-key").await.unwrap_err(),
        VerifyError::NotAKey
    );
}

#[tokio::test]
async fn disable_enable_and_delete_reach_the_file() {
    let dir = TempDir::new("lifecycle");
    let store = open(&dir).await;
    let ring = KeyRing::new(store.clone());
    let issued = ring
        .issue(key_for("alice", "Alpha", "deploy"))
        .await
        .expect("issued");
    assert!(ring.verify(issued.key()).await.is_ok());

    let record = ring
        .update(issued.id(), KeyUpdate::status(Status::Disabled))
        .await
        .expect("updated")
        .expect("exists");
    assert_eq!(record.status, Status::Disabled);
    assert_eq!(
        ring.verify(issued.key()).await.unwrap_err(),
        VerifyError::Invalid
    );
    // A ring with an empty index reads the store, so this proves the file holds the change.
    let fresh = KeyRing::new(store.clone());
    assert_eq!(
        fresh.verify(issued.key()).await.unwrap_err(),
        VerifyError::Invalid
    );

    ring.update(issued.id(), KeyUpdate::status(Status::Enabled))
        .await
        .expect("updated");
    assert!(ring.verify(issued.key()).await.is_ok());
    assert!(KeyRing::new(store.clone())
        .verify(issued.key())
        .await
        .is_ok());

    let renamed = ring
        .update(issued.id(), KeyUpdate::description("deploy (prod)"))
        .await
        .expect("updated")
        .expect("exists");
    assert_eq!(renamed.description, "deploy (prod)");
    assert_eq!(renamed.status, Status::Enabled);

    assert!(ring.delete(issued.id()).await.expect("deleted"));
    assert!(!ring.delete(issued.id()).await.expect("deleted"));
    assert_eq!(
        ring.verify(issued.key()).await.unwrap_err(),
        VerifyError::Invalid
    );
    assert_eq!(
        KeyRing::new(store).verify(issued.key()).await.unwrap_err(),
        VerifyError::Invalid
    );
}

#[tokio::test]
async fn disabled_user_or_company_kills_all_their_keys() {
    let dir = TempDir::new("owners");
    let store = open(&dir).await;
    let ring = KeyRing::new(store.clone());

    // An owner with no account row, as for keys issued to users of another system.
    let external = ring
        .issue(key_for("erin", "External", "import"))
        .await
        .expect("issued");
    ring.set_user_status("u-erin", Status::Disabled)
        .await
        .expect("set");
    assert!(ring.verify(external.key()).await.is_err());
    assert!(KeyRing::new(store.clone())
        .verify(external.key())
        .await
        .is_err());
    let record = ring
        .get(external.id())
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(record.effective_status(), Status::DisabledDueToUser);
    ring.set_user_status("u-erin", Status::Enabled)
        .await
        .expect("set");
    assert!(ring.verify(external.key()).await.is_ok());

    // An owner with user and company rows: the account store sees the same status.
    store
        .create_company(company("Alpha"))
        .await
        .expect("created");
    store
        .create_user(account("alice", "Alpha"))
        .await
        .expect("created");
    let first = ring
        .issue(key_for("alice", "Alpha", "one"))
        .await
        .expect("issued");
    let second = ring
        .issue(key_for("alice", "Alpha", "two"))
        .await
        .expect("issued");
    ring.set_company_status("c-Alpha", Status::Disabled)
        .await
        .expect("set");
    for key in [&first, &second] {
        assert!(ring.verify(key.key()).await.is_err());
        assert!(KeyRing::new(store.clone()).verify(key.key()).await.is_err());
    }
    let alpha = store
        .company("c-Alpha")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(alpha.status, Status::Disabled);
    // A key issued while the company is disabled starts disabled too.
    let third = ring
        .issue(key_for("alice", "Alpha", "three"))
        .await
        .expect("issued");
    assert_eq!(third.login().status, Status::DisabledDueToCompany);
    assert!(ring.verify(third.key()).await.is_err());

    ring.set_company_status("c-Alpha", Status::Enabled)
        .await
        .expect("set");
    ring.set_user_status("u-alice", Status::Disabled)
        .await
        .expect("set");
    let alice = store.user("u-alice").await.expect("read").expect("exists");
    assert_eq!(alice.status, Status::Disabled);
    assert!(ring.verify(first.key()).await.is_err());
    ring.set_user_status("u-alice", Status::Enabled)
        .await
        .expect("set");
    for key in [&first, &second, &third] {
        assert!(ring.verify(key.key()).await.is_ok());
    }
}

#[tokio::test]
async fn keys_and_statuses_survive_a_restart() {
    let dir = TempDir::new("restart");
    let billing = Scope::register("sqlite-store.billing").expect("registers");
    let (enabled, disabled, of_disabled_user, with_app_scope) = {
        let ring = KeyRing::new(open(&dir).await);
        let enabled = ring
            .issue(key_for("alice", "Alpha", "stays").scope(Scope::REST))
            .await
            .expect("issued");
        let disabled = ring
            .issue(key_for("alice", "Alpha", "disabled"))
            .await
            .expect("issued");
        ring.update(disabled.id(), KeyUpdate::status(Status::Disabled))
            .await
            .expect("updated");
        let of_disabled_user = ring
            .issue(key_for("bob", "Beta", "bob's"))
            .await
            .expect("issued");
        ring.set_user_status("u-bob", Status::Disabled)
            .await
            .expect("set");
        let with_app_scope = ring
            .issue(key_for("carol", "Alpha", "billing").scope(billing))
            .await
            .expect("issued");
        (
            enabled.key().to_owned(),
            disabled.key().to_owned(),
            of_disabled_user.key().to_owned(),
            with_app_scope.key().to_owned(),
        )
        // The ring and its store are dropped here.
    };

    let ring = KeyRing::new(open(&dir).await);
    let identity = ring.verify(&enabled).await.expect("still valid");
    assert!(identity.has_scope(Scope::REST));
    assert_eq!(
        ring.verify(&disabled).await.unwrap_err(),
        VerifyError::Invalid
    );
    assert_eq!(
        ring.verify(&of_disabled_user).await.unwrap_err(),
        VerifyError::Invalid
    );
    let identity = ring.verify(&with_app_scope).await.expect("still valid");
    assert!(identity.has_scope(billing));
    assert_eq!(
        ring.list(&ListQuery::default())
            .await
            .expect("listed")
            .total,
        4
    );
}

#[tokio::test]
async fn the_file_holds_digests_never_keys() {
    let dir = TempDir::new("digests");
    let store = open(&dir).await;
    let ring = KeyRing::new(store.clone());
    let issued = ring
        .issue(key_for("alice", "Alpha", "secret keeper"))
        .await
        .expect("issued");
    let key = issued.key().as_bytes();
    let secret_start = ring.format().prefix().len() + 1 + 11;
    let secret = &key[secret_start..secret_start + 43];
    store.close().await;

    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).expect("listed") {
        // SQLite may remove its -wal and -shm files while the last connection finishes closing.
        let bytes = match std::fs::read(entry.expect("entry").path()) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("read: {e}"),
        };
        files += 1;
        for needle in [key, secret] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "a database file holds key material"
            );
        }
    }
    assert!(files >= 1);
}

fn descriptions(page: &Page<KeyRecord>) -> Vec<&str> {
    page.items.iter().map(|r| r.description.as_str()).collect()
}

#[tokio::test]
async fn listing_filters_sorts_and_pages() {
    let dir = TempDir::new("list");
    let ring = KeyRing::new(open(&dir).await);
    let mut ids = Vec::new();
    for (user, description) in [
        ("alice", "Nightly build"),
        ("alice", "deploy"),
        ("bob", "Deploy staging"),
        ("bob", "metrics"),
        ("alice", "backup"),
    ] {
        let issued = ring
            .issue(key_for(user, "Alpha", description))
            .await
            .expect("issued");
        ids.push(issued.id());
    }
    ring.update(ids[3], KeyUpdate::status(Status::Disabled))
        .await
        .expect("updated");

    let mut query = ListQuery::default();
    query.user_uid = Some("u-alice".into());
    query.sort = SortField::Description;
    let page = ring.list(&query).await.expect("listed");
    assert_eq!(page.total, 3);
    assert_eq!(descriptions(&page), ["Nightly build", "backup", "deploy"]);

    let mut query = ListQuery::default();
    query.description_contains = Some("DEPLOY".into());
    query.sort = SortField::UserName;
    query.descending = true;
    let page = ring.list(&query).await.expect("listed");
    assert_eq!(descriptions(&page), ["Deploy staging", "deploy"]);

    let mut query = ListQuery::default();
    query.status = Some(Status::Disabled);
    let page = ring.list(&query).await.expect("listed");
    assert_eq!(descriptions(&page), ["metrics"]);

    let mut query = ListQuery::default();
    query.sort = SortField::CreationDate;
    query.offset = 1;
    query.limit = 2;
    let page = ring.list(&query).await.expect("listed");
    assert_eq!(page.total, 5);
    assert_eq!(page.items.len(), 2);
    let mut by_id = ids.clone();
    by_id.sort();
    let mut query = ListQuery::default();
    query.limit = 10;
    let page = ring.list(&query).await.expect("listed");
    let listed: Vec<_> = page.items.iter().map(|r| r.id).collect();
    assert_eq!(listed, by_id);
}

#[tokio::test]
async fn accounts_and_refresh_tokens_survive_a_restart() {
    let dir = TempDir::new("accounts");
    let digest = SecretDigest::from_bytes([7; 32]);
    {
        let store = open(&dir).await;
        store
            .create_company(company("Beta"))
            .await
            .expect("created");
        store
            .create_company(company("Alpha"))
            .await
            .expect("created");
        let mut admin = account("root", "Alpha");
        admin.role = Role::PortalAdministrator;
        store.create_user(admin).await.expect("created");
        store
            .create_user(account("alice", "Alpha"))
            .await
            .expect("created");
        assert!(store
            .create_user(account("alice", "Beta"))
            .await
            .unwrap_err()
            .is_conflict());
        store
            .put_refresh_token(RefreshToken {
                digest,
                user_uid: "u-alice".into(),
                read_only: true,
                expires: datetime!(2030-06-01 12:00 UTC),
                family: "f".into(),
                user_generation: 0,
                company_generation: 0,
            })
            .await
            .expect("stored");
    }

    let store = open(&dir).await;
    let companies = store.list_companies(0, 10).await.expect("listed");
    assert_eq!(companies.total, 2);
    assert_eq!(companies.items[0].name, "Alpha");
    let users = store.list_users(None, 1, 10).await.expect("listed");
    assert_eq!(users.total, 2);
    assert_eq!(users.items.len(), 1);
    assert_eq!(users.items[0].user_name, "root");
    assert_eq!(users.items[0].role, Role::PortalAdministrator);
    let alice = store
        .user_by_name("alice")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(alice, account("alice", "Alpha"));
    assert_eq!(store.user_by_name("Alice").await.expect("read"), None);

    let Some(RefreshUse::Fresh(token)) = store.take_refresh_token(&digest).await.expect("taken")
    else {
        panic!("the stored token is fresh");
    };
    assert_eq!(token.user_uid, "u-alice");
    assert!(token.read_only);
    assert_eq!(token.expires, datetime!(2030-06-01 12:00 UTC));
    // Used once, it is kept to recognise a replay.
    assert!(matches!(
        store.take_refresh_token(&digest).await.expect("taken"),
        Some(RefreshUse::Replayed(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_one_file_all_succeed() {
    let dir = TempDir::new("concurrent");
    let first = open(&dir).await;
    let second = open(&dir).await;
    let mut tasks = Vec::new();
    for task in 0..8 {
        let store = if task % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            let ring = KeyRing::new(store);
            let user = format!("user{task}");
            for n in 0..5 {
                let issued = ring
                    .issue(key_for(&user, "Alpha", &format!("key {n}")))
                    .await
                    .expect("issued");
                ring.update(issued.id(), KeyUpdate::description(format!("key {n}!")))
                    .await
                    .expect("updated");
                ring.set_user_status(&format!("u-{user}"), Status::Enabled)
                    .await
                    .expect("set");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task finished");
    }
    let page = KeyRing::new(first)
        .list(&ListQuery::default())
        .await
        .expect("listed");
    assert_eq!(page.total, 40);
}

/// Rows as version 1 of the schema wrote them: roles by their earlier names, no profiles,
/// generations, families or status locks.
const VERSION_1_ROWS: &str = "
INSERT INTO companies (uid, name, status) VALUES ('c-Alpha', 'Alpha', 'enabled');
INSERT INTO users (uid, user_name, password_hash, role, company_id, status, created) VALUES
  ('u-root', 'root', 'hash', 'administrator', 'c-Alpha', 'enabled', '2024-01-01T00:00:00.000000000Z'),
  ('u-alice', 'alice', 'hash', 'user', 'c-Alpha', 'disabled', '2024-01-02T00:00:00.000000000Z');
INSERT INTO api_keys (id, digest, user_uid, user_name, company_id, company_name, description,
  description_folded, read_only, scopes, status, created) VALUES
  (7, zeroblob(32), 'u-alice', 'alice', 'c-Alpha', 'Alpha', 'CI', 'ci', 1, 'rest', 'enabled',
   '2024-05-01T12:00:00.000000000Z');
INSERT INTO refresh_tokens (digest, user_uid, read_only, expires) VALUES
  (zeroblob(32), 'u-alice', 0, '2030-01-01T00:00:00.000000000Z');
";

#[tokio::test]
async fn a_version_1_file_upgrades_and_its_rows_still_load() {
    use sqlx::Connection;
    use tower_api_key::KeyStore;

    let dir = TempDir::new("version-1");
    let mut conn = sqlx::SqliteConnection::connect(&format!("{}?mode=rwc", dir.url()))
        .await
        .expect("file created");
    sqlx::raw_sql(include_str!("../migrations/sqlite/0001_schema.sql"))
        .execute(&mut conn)
        .await
        .expect("version 1 schema");
    sqlx::raw_sql(
        "CREATE TABLE schema_version (version INTEGER NOT NULL PRIMARY KEY, applied TEXT NOT NULL);
         INSERT INTO schema_version VALUES (1, '2024-01-01T00:00:00.000000000Z');",
    )
    .execute(&mut conn)
    .await
    .expect("version 1 recorded");
    sqlx::raw_sql(VERSION_1_ROWS)
        .execute(&mut conn)
        .await
        .expect("version 1 rows");
    conn.close().await.expect("closed");

    let store = open(&dir).await;
    let root = store.user("u-root").await.expect("read").expect("exists");
    assert_eq!(root.role, Role::PortalAdministrator);
    assert_eq!(root.profile, Default::default());
    assert_eq!(root.token_generation, 0);
    let alice = store
        .user_by_name("alice")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(alice.role, Role::CompanyLocationUser);
    assert_eq!(alice.status, Status::Disabled);
    let users = store
        .list_users(Some("c-Alpha"), 0, 10)
        .await
        .expect("listed");
    assert_eq!(users.total, 2);
    let alpha = store
        .company("c-Alpha")
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        (alpha.profile, alpha.token_generation),
        (Default::default(), 0)
    );

    let key = store
        .get(tower_api_key::KeyId::new(7).expect("id"))
        .await
        .expect("read")
        .expect("exists");
    assert!(!key.status_locked);
    assert_eq!(key.user_status, Status::Disabled);

    // A token issued before families is a family of its own: its digest in hex.
    let digest = SecretDigest::from_bytes([0; 32]);
    let Some(RefreshUse::Fresh(token)) = store.take_refresh_token(&digest).await.expect("take")
    else {
        panic!("the token is fresh");
    };
    assert_eq!(token.family, "00".repeat(32));
    assert_eq!((token.user_generation, token.company_generation), (0, 0));
    assert!(matches!(
        store.take_refresh_token(&digest).await.expect("take"),
        Some(RefreshUse::Replayed(_))
    ));
    assert_eq!(
        store
            .revoke_refresh_family(&token.family)
            .await
            .expect("revoked"),
        1
    );

    // Revocation moves generations on from the defaults the upgrade gave.
    assert_eq!(
        store.revoke_user_tokens("u-root").await.expect("revoked"),
        Some(1)
    );
    assert_eq!(
        store
            .revoke_company_tokens("c-Alpha")
            .await
            .expect("revoked"),
        Some(1)
    );
    assert_eq!(
        store.revoke_user_tokens("u-nobody").await.expect("revoked"),
        None
    );
}

#[tokio::test]
async fn corrupt_profiles_and_generations_are_corrupt_records() {
    use sqlx::Connection;

    let dir = TempDir::new("corrupt-profile");
    let store = open(&dir).await;
    store
        .create_company(company("Alpha"))
        .await
        .expect("created");
    store
        .create_user(account("alice", "Alpha"))
        .await
        .expect("created");
    let cases = [
        "UPDATE users SET profile = '{'",
        "UPDATE users SET profile = '[1]'",
        "UPDATE users SET profile = '{\"firstName\": 5}'",
        "UPDATE users SET token_generation = -1",
        "UPDATE users SET role = 'root'",
        "UPDATE companies SET profile = 'null'",
        "UPDATE companies SET token_generation = -3",
    ];
    for sql in cases {
        let mut conn = sqlx::SqliteConnection::connect(&dir.url())
            .await
            .expect("opens");
        let mut tx = conn.begin().await.expect("begins");
        sqlx::raw_sql(sql).execute(&mut *tx).await.expect(sql);
        tx.commit().await.expect("commits");
        if sql.contains("users") {
            assert!(
                store.user("u-alice").await.unwrap_err().is_corrupt(),
                "{sql}"
            );
            let listed = store.list_users(None, 0, 10).await;
            assert!(listed.unwrap_err().is_corrupt(), "{sql}");
            sqlx::raw_sql(
                "UPDATE users SET profile = '{}', token_generation = 0, role = 'companyOwner'",
            )
            .execute(&mut conn)
            .await
            .expect("restored");
        } else {
            assert!(
                store.company("c-Alpha").await.unwrap_err().is_corrupt(),
                "{sql}"
            );
            let listed = store.list_companies(0, 10).await;
            assert!(listed.unwrap_err().is_corrupt(), "{sql}");
            sqlx::raw_sql("UPDATE companies SET profile = '{}', token_generation = 0")
                .execute(&mut conn)
                .await
                .expect("restored");
        }
        assert!(store.user("u-alice").await.is_ok() && store.company("c-Alpha").await.is_ok());
    }
}
