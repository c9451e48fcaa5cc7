//! Key lifecycle through the server: expiry and its warning, rotation with a grace period, last
//! use written in batches, rate limits per verified identity.

// Helpers outside `#[test]` functions are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use common::*;
use tower_api_key::{KeyFormat, KeyRing, MemoryStore, RateLimit};

const CREATE: &str = "description=lifecycle&scopes=rest";

fn date(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().unwrap(), &Rfc3339).unwrap()
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap().replace('+', "%2B")
}

/// `Sunset`'s HTTP date, read back.
fn sunset(reply: &Reply) -> Option<OffsetDateTime> {
    let text = reply.headers.get("sunset")?.to_str().unwrap();
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    Some(
        time::PrimitiveDateTime::parse(text, format)
            .unwrap()
            .assume_utc(),
    )
}

fn whole_seconds(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(0).unwrap()
}

#[tokio::test]
async fn keys_expire_on_time_and_warn_in_their_last_week() {
    let store = MemoryStore::new();
    let server = start_with(store.clone(), |admin| {
        admin.with_max_key_lifetime(Duration::from_secs(30 * 86_400))
    })
    .await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let uid = server.admin_uid.clone();
    let keys = format!("/api/v3/users/{uid}/logins/apikey");
    let now = OffsetDateTime::now_utc();

    // Without a date: the server's longest lifetime, and no warning a month ahead.
    let reply = server
        .post(&format!("{keys}?{CREATE}"), Some(&admin.access))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    let expires = date(&reply.json["data"]["expirationDate"]);
    let lifetime = expires - now;
    assert!(
        lifetime > time::Duration::days(30) - time::Duration::minutes(1)
            && lifetime <= time::Duration::days(30) + time::Duration::minutes(1),
        "{lifetime}"
    );
    let month = reply.json["data"]["parameters"]
        .as_str()
        .unwrap()
        .to_owned();
    let used = server.get("/app", Some(&month)).await;
    assert_eq!(used.status, StatusCode::OK);
    assert!(used.headers.get("sunset").is_none());

    // Three days ahead: a warning with the date, to the second.
    let soon = now + time::Duration::days(3);
    let reply = server
        .post(
            &format!("{keys}?{CREATE}&expirationDate={}", rfc3339(soon)),
            Some(&admin.access),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    assert_eq!(date(&reply.json["data"]["expirationDate"]), soon);
    let three = reply.json["data"]["parameters"]
        .as_str()
        .unwrap()
        .to_owned();
    let used = server.get("/app", Some(&three)).await;
    assert_eq!(used.status, StatusCode::OK);
    assert_eq!(sunset(&used), Some(whole_seconds(soon)));

    // Dates the server refuses, each naming the parameter.
    for bad in [
        rfc3339(now + time::Duration::days(31)),
        rfc3339(now - time::Duration::minutes(1)),
        "tomorrow".to_owned(),
    ] {
        let reply = server
            .post(
                &format!("{keys}?{CREATE}&expirationDate={bad}"),
                Some(&admin.access),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.error()["parameterName"], "expirationDate", "{bad}");
    }

    // A key that expires in two seconds: accepted, then refused like any bad key, here and on a
    // node that never saw it.
    let at = OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let (short, _) = server
        .create_key(
            &admin.access,
            &uid,
            &format!("{CREATE}&expirationDate={}", rfc3339(at)),
        )
        .await;
    assert_eq!(
        server.get("/app", Some(&short)).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let expired = server.get("/app", Some(&short)).await;
    let unknown = server
        .get(
            "/app",
            Some(KeyFormat::default().generate().unwrap().expose()),
        )
        .await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.json, unknown.json);
    assert_eq!(expired.challenge(), unknown.challenge());
    let other = start_with(store, |admin| admin).await;
    assert_eq!(
        other.get("/app", Some(&short)).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The other keys still work.
    assert_eq!(
        server.get("/app", Some(&three)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn rotation_hands_out_a_successor_and_the_old_key_lives_out_its_grace() {
    let server = start_with(MemoryStore::new(), |admin| admin.with_max_keys_per_user(3)).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let uid = server.admin_uid.clone();
    let (old, old_id) = server
        .create_key(
            &admin.access,
            &uid,
            "description=deploy&scopes=rest,integration&isReadAccessOnly=true",
        )
        .await;
    let rotate = |id: u64, grace: &str| format!("/api/v3/users/{uid}/logins/{id}/rotate{grace}");

    let reply = server
        .post(&rotate(old_id, "?gracePeriod=3600"), Some(&admin.access))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    assert_eq!(reply.headers["cache-control"], "no-store");
    let new = &reply.json["data"];
    let new_key = new["parameters"].as_str().unwrap().to_owned();
    let new_id = new["id"].as_u64().unwrap();
    assert_ne!(new_id, old_id);
    assert_eq!(new["description"], "deploy");
    assert_eq!(new["isReadAccessOnly"], true);
    assert_eq!(new["scopes"], serde_json::json!(["rest", "integration"]));
    assert_eq!(new["deprecationDate"], Value::Null);

    // Both work; the old one says it is deprecated and when it stops.
    let rotated_at = OffsetDateTime::now_utc();
    let by_old = server.get("/app", Some(&old)).await;
    assert_eq!(by_old.status, StatusCode::OK);
    let deprecation = by_old.headers["deprecation"].to_str().unwrap();
    let since: i64 = deprecation.strip_prefix('@').unwrap().parse().unwrap();
    assert!(
        (since - rotated_at.unix_timestamp()).abs() <= 5,
        "{deprecation}"
    );
    let ends = sunset(&by_old).unwrap();
    assert!((ends - (rotated_at + time::Duration::hours(1))).abs() <= time::Duration::seconds(5));
    let by_new = server.get("/app", Some(&new_key)).await;
    assert_eq!(by_new.status, StatusCode::OK);
    assert!(by_new.headers.get("deprecation").is_none() && by_new.headers.get("sunset").is_none());
    let listed = server
        .get(
            &format!("/api/v3/users/{uid}/logins/{old_id}"),
            Some(&admin.access),
        )
        .await;
    assert_eq!(
        date(&listed.json["data"]["expirationDate"]).unix_timestamp(),
        ends.unix_timestamp()
    );
    assert!(listed.json["data"]["deprecationDate"].is_string());

    // A key is replaced once: rotating it again would multiply live keys.
    let again = server
        .post(&rotate(old_id, "?gracePeriod=60"), Some(&admin.access))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    // Grace periods the server refuses.
    for bad in [
        "?gracePeriod=-1",
        "?gracePeriod=2592001",
        "?gracePeriod=soon",
        "?gracePeriod=1&gracePeriod=2",
    ] {
        let reply = server.post(&rotate(new_id, bad), Some(&admin.access)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(reply.error()["parameterName"], "gracePeriod", "{bad}");
    }

    // Three keys held (the old one in grace): a rotation with grace would make four.
    server.create_key(&admin.access, &uid, CREATE).await;
    let full = server
        .post(&rotate(new_id, "?gracePeriod=60"), Some(&admin.access))
        .await;
    assert_eq!(full.status, StatusCode::CONFLICT, "{:?}", full.json);
    // A leaked key: no grace, it is gone at once and the count stays.
    let reply = server.post(&rotate(new_id, ""), Some(&admin.access)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    let third = reply.json["data"]["parameters"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        server.get("/app", Some(&new_key)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server
            .get(
                &format!("/api/v3/users/{uid}/logins/{new_id}"),
                Some(&admin.access)
            )
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server.get("/app", Some(&third)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_rotation_never_extends_a_key_nor_frees_it_from_an_administrators_lock() {
    let server = start(MemoryStore::new()).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let user = server
        .create_user(&admin.access, "rotator", serde_json::json!({}))
        .await;
    let own = server.login("rotator", "rotator password").await;
    let expires = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let (_, id) = server
        .create_key(
            &own.access,
            &user,
            &format!("{CREATE}&expirationDate={}", rfc3339(expires)),
        )
        .await;
    let path = |id: u64| format!("/api/v3/users/{user}/logins/{id}");

    // A week of grace on a key with an hour left: the old key keeps its hour, the new one gets it.
    let reply = server
        .post(
            &format!("{}/rotate?gracePeriod=604800", path(id)),
            Some(&own.access),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    let successor = reply.json["data"]["id"].as_u64().unwrap();
    assert_eq!(date(&reply.json["data"]["expirationDate"]), expires);
    let old = server.get(&path(id), Some(&own.access)).await;
    assert_eq!(date(&old.json["data"]["expirationDate"]), expires);

    // Another user's key is not theirs to rotate, nor to learn of.
    let admins = server
        .create_key(&admin.access, &server.admin_uid, CREATE)
        .await
        .1;
    let foreign = server
        .post(
            &format!("/api/v3/users/{}/logins/{admins}/rotate", server.admin_uid),
            Some(&own.access),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    let mismatched = server
        .post(
            &format!("/api/v3/users/{user}/logins/{admins}/rotate"),
            Some(&own.access),
        )
        .await;
    assert_eq!(mismatched.status, StatusCode::NOT_FOUND);

    // An administrator disables the successor; the owner's rotation carries the lock over.
    let disable = replace("/status", Value::from("disabled"));
    let reply = server
        .patch(&path(successor), Some(&admin.access), disable)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    let reply = server
        .post(&format!("{}/rotate", path(successor)), Some(&own.access))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    assert_eq!(reply.json["data"]["status"], "disabled");
    let heir = reply.json["data"]["id"].as_u64().unwrap();
    let key = reply.json["data"]["parameters"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        server.get("/app", Some(&key)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let enable = replace("/status", Value::from("enabled"));
    let reply = server.patch(&path(heir), Some(&own.access), enable).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.json);
}

#[tokio::test]
async fn last_use_is_written_in_batches_and_finds_keys_nobody_uses() {
    let store = MemoryStore::new();
    let ring = KeyRing::builder(store.clone())
        .track_last_used(Duration::from_millis(200))
        .build();
    let server = start_on(ring, store, |admin| admin).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let uid = server.admin_uid.clone();
    let (used, used_id) = server
        .create_key(&admin.access, &uid, "description=used&scopes=rest")
        .await;
    let (_, idle_id) = server
        .create_key(&admin.access, &uid, "description=idle&scopes=rest")
        .await;
    let key = |id: u64| format!("/api/v3/users/{uid}/logins/{id}");
    assert_eq!(
        server.get(&key(used_id), Some(&admin.access)).await.json["data"]["lastUsedDate"],
        Value::Null
    );

    let before = OffsetDateTime::now_utc();
    for _ in 0..20 {
        assert_eq!(server.get("/app", Some(&used)).await.status, StatusCode::OK);
    }
    // Written by the ring's own task, one interval later (the wait is bounded, not timed).
    let mut last_used = Value::Null;
    for _ in 0..100 {
        last_used = server.get(&key(used_id), Some(&admin.access)).await.json["data"]
            ["lastUsedDate"]
            .clone();
        if !last_used.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at = date(&last_used);
    assert!(at >= before && at <= OffsetDateTime::now_utc(), "{at}");
    assert_eq!(
        server.get(&key(idle_id), Some(&admin.access)).await.json["data"]["lastUsedDate"],
        Value::Null
    );

    // Keys not used since a date: never used, or last used before it.
    let unused_since = |since: OffsetDateTime| {
        format!(
            "/api/v3/users/logins?filter=[{{\"property\":\"lastUsedDate\",\"operation\":\"lessThan\",\"value\":\"{}\"}}]",
            since.format(&Rfc3339).unwrap()
        )
    };
    let ids = |reply: Reply| -> Vec<u64> {
        reply.json["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_u64().unwrap())
            .collect()
    };
    let stale = ids(server.get(&unused_since(before), Some(&admin.access)).await);
    assert!(
        stale.contains(&idle_id) && !stale.contains(&used_id),
        "{stale:?}"
    );
    let later = OffsetDateTime::now_utc() + time::Duration::minutes(1);
    let all = ids(server.get(&unused_since(later), Some(&admin.access)).await);
    assert!(all.contains(&idle_id) && all.contains(&used_id), "{all:?}");
    let bad = server
        .get(
            "/api/v3/users/logins?filter=[{\"property\":\"lastUsedDate\",\"operation\":\"lessThan\",\"value\":\"soon\"}]",
            Some(&admin.access),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn rate_limits_count_verified_identities_and_never_a_victims_name() {
    let server = start_with(MemoryStore::new(), |admin| {
        admin.with_rate_limit(RateLimit::per_minute(5))
    })
    .await;
    // The login itself is not behind the layer; the key creation below spends one request.
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let uid = server.admin_uid.clone();
    let (victim, victim_id) = server.create_key(&admin.access, &uid, CREATE).await;

    // Someone who knows the key's id but not its secret: refused, and spending nothing.
    let forged = with_other_secret(&victim);
    for _ in 0..50 {
        let reply = server.get("/app", Some(&forged)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(reply.headers.get("ratelimit").is_none());
    }
    // The holder has the whole quota: five requests, counting down.
    for left in (0..5).rev() {
        let reply = server.get("/app", Some(&victim)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers["ratelimit-policy"], "\"default\";q=5;w=60");
        let limit = reply.headers["ratelimit"].to_str().unwrap();
        assert!(
            limit.starts_with(&format!("\"default\";r={left};t=")),
            "{limit}"
        );
    }
    let over = server.get("/app", Some(&victim)).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(over.error()["code"], 429);
    let retry: u64 = over.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(over.challenge().is_none());
    for value in over.headers.values() {
        let value = value.to_str().unwrap();
        assert!(
            !value.contains(&victim_id.to_string()) && !value.contains(&victim),
            "{value}"
        );
    }
    // Another identity has its own quota: the admin's token spent one request (the creation).
    let reply = server.get("/api/v3/users/me", Some(&admin.access)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"default\";r=3;"));
}
