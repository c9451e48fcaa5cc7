//! The management API over real HTTP: a server on 127.0.0.1, a hyper client, every flow a client
//! walks through.

// Helpers outside `#[test]` functions are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use tower_api_key::{MemoryStore, SqliteStore};
use tower_api_key_vspc::LoginLimits;

mod common;
use common::*;

#[tokio::test]
async fn key_lifecycle_from_token_to_delete() {
    let server = start(MemoryStore::new()).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let uid = server.admin_uid.clone();
    let me = server.get("/api/v3/users/me", Some(&admin.access)).await;
    assert_eq!(me.json["data"]["instanceUid"], uid.as_str());
    assert_eq!(me.json["data"]["role"], "PortalAdministrator");

    let reply = server
        .post(
            &format!("/api/v3/users/{uid}/logins/apikey?description=Portal%20Operator%20API%20Key&scopes=%5B%22integration%22,%22rest%22%5D"),
            Some(&admin.access),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    assert_eq!(reply.headers["cache-control"], "no-store");
    let login = &reply.json["data"];
    let key = login["parameters"].as_str().unwrap().to_owned();
    let id = login["id"].as_u64().unwrap();
    assert!(key.starts_with("tak_"));
    assert_eq!(login["identityProviderName"], "AK");
    assert_eq!(login["userName"], "admin");
    assert_eq!(login["companyName"], "Default");
    assert_eq!(login["description"], "Portal Operator API Key");
    assert_eq!(login["scopes"], json!(["rest", "integration"]));
    assert_eq!(login["isReadAccessOnly"], false);
    assert_eq!(login["status"], "enabled");
    assert_eq!(login["identifierInProvider"], id);

    // The key works in place of the token, and is never shown again.
    let path = format!("/api/v3/users/{uid}/logins/{id}");
    let reply = server.get(&path, Some(&key)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["data"]["parameters"], "");

    // A read-only key reads, and the layer refuses it anything else.
    let (read_only, _) = server
        .create_key(
            &key,
            &uid,
            "description=ro&scopes=rest&isReadAccessOnly=true",
        )
        .await;
    assert_eq!(
        server
            .get("/api/v3/users/logins", Some(&read_only))
            .await
            .status,
        StatusCode::OK
    );
    let reply = server
        .post(
            &format!("/api/v3/users/{uid}/logins/apikey?description=x&scopes=rest"),
            Some(&read_only),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.challenge().unwrap().contains("insufficient_scope"));
    assert_eq!(reply.error()["type"], "security");

    // Disable → 401 at once; enable → 200; delete → 401.
    let reply = server
        .patch(
            &path,
            Some(&admin.access),
            replace("/status", json!("disabled")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    assert_eq!(reply.json["data"]["status"], "disabled");
    let reply = server.get("/api/v3/users/logins", Some(&key)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.challenge().unwrap().contains("invalid_token"));

    let reply = server
        .patch(
            &path,
            Some(&admin.access),
            replace("/Status", json!("enabled")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        server.get("/api/v3/users/logins", Some(&key)).await.status,
        StatusCode::OK
    );

    let reply = server
        .patch(&path, Some(&key), replace("/DESCRIPTION", json!("renamed")))
        .await;
    assert_eq!(reply.json["data"]["description"], "renamed");

    let reply = server.delete(&path, Some(&admin.access)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json, json!({ "data": true }));
    assert_eq!(
        server.get("/api/v3/users/logins", Some(&key)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.get(&path, Some(&admin.access)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn scopes_are_read_as_repeated_keys_json_arrays_and_lists() {
    let server = start(MemoryStore::new()).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let uid = server.admin_uid.clone();
    for query in [
        "scopes=rest&scopes=integration",
        "scopes=[\"integration\",\"rest\"]",
        "scopes=%5B%22integration%22%2C%22rest%22%5D",
        "scopes=rest,integration",
        "Scopes=REST&scopes=Integration",
    ] {
        let reply = server
            .post(
                &format!("/api/v3/users/{uid}/logins/apikey?description=s&{query}"),
                Some(&admin.access),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {:?}", reply.json);
        assert_eq!(
            reply.json["data"]["scopes"],
            json!(["rest", "integration"]),
            "{query}"
        );
    }
    // A key without `rest` is refused by the management API itself (scope required by the layer).
    let (ui_only, _) = server
        .create_key(&admin.access, &uid, "description=ui&scopes=ui")
        .await;
    let reply = server.get("/api/v3/users/logins", Some(&ui_only)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.challenge().unwrap().contains("scope=\"rest\""));
    // A key cannot hand out a scope it does not hold.
    let (rest_only, _) = server
        .create_key(&admin.access, &uid, "description=r&scopes=rest")
        .await;
    let reply = server
        .post(
            &format!("/api/v3/users/{uid}/logins/apikey?description=x&scopes=integration"),
            Some(&rest_only),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error()["parameterName"], "scopes");
}

#[tokio::test]
async fn refresh_tokens_rotate_and_can_be_revoked() {
    let server = start(MemoryStore::new()).await;
    let first = server.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(first.refresh.len(), 43);

    let reply = server
        .token_request(&format!(
            "grant_type=refresh_token&refresh_token={}",
            first.refresh
        ))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    let second = Tokens::from(reply);
    assert_ne!(second.refresh, first.refresh);
    assert_eq!(
        server
            .get("/api/v3/users", Some(&second.access))
            .await
            .status,
        StatusCode::OK
    );

    // The used refresh token is gone.
    let reply = server
        .token_request(&format!(
            "grant_type=refresh_token&refresh_token={}",
            first.refresh
        ))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json["error"], "invalid_grant");

    // Revocation kills every outstanding refresh token of the user.
    let third = server.login("admin", ADMIN_PASSWORD).await;
    let uid = server.admin_uid.clone();
    let reply = server
        .delete(&format!("/api/v3/users/{uid}/tokens"), Some(&third.access))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json, json!({ "data": true }));
    for refresh in [&second.refresh, &third.refresh] {
        let reply = server
            .token_request(&format!("grant_type=refresh_token&refresh_token={refresh}"))
            .await;
        assert_eq!(reply.json["error"], "invalid_grant");
    }
}

#[tokio::test]
async fn read_only_tokens_stay_read_only_across_refresh() {
    let server = start(MemoryStore::new()).await;
    let tokens = server
        .login_with("admin", ADMIN_PASSWORD, "&readOnly=true")
        .await;
    let uid = server.admin_uid.clone();
    let create = format!("/api/v3/users/{uid}/logins/apikey?description=x&scopes=rest");
    assert_eq!(
        server
            .get("/api/v3/users/logins", Some(&tokens.access))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        server.post(&create, Some(&tokens.access)).await.status,
        StatusCode::FORBIDDEN
    );
    let reply = server
        .token_request(&format!(
            "grant_type=refresh_token&refresh_token={}&readOnly=false",
            tokens.refresh
        ))
        .await;
    let refreshed = Tokens::from(reply);
    assert_eq!(
        server.post(&create, Some(&refreshed.access)).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn token_endpoint_answers_in_oauth_form() {
    let server = start(MemoryStore::new()).await;
    let cases = [
        (
            "grant_type=password&username=admin&password=wrong",
            "invalid_grant",
        ),
        (
            "grant_type=password&username=nobody&password=whatever1",
            "invalid_grant",
        ),
        ("grant_type=password&username=admin", "invalid_request"),
        ("username=admin&password=x", "invalid_request"),
        ("grant_type=client_credentials", "unsupported_grant_type"),
        (
            "grant_type=refresh_token&refresh_token=made-up",
            "invalid_grant",
        ),
        ("grant_type=refresh_token", "invalid_request"),
        (
            "grant_type=password&grant_type=password&username=admin&password=x",
            "invalid_request",
        ),
        (
            "grant_type=password&username=admin&password=x&readOnly=maybe",
            "invalid_request",
        ),
    ];
    for (form, error) in cases {
        let reply = server.token_request(form).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{form}");
        assert_eq!(reply.json["error"], error, "{form}");
        assert!(reply.json["error_description"].is_string(), "{form}");
        assert_eq!(reply.headers["cache-control"], "no-store");
    }
    // The wrong password and the unknown user get the same words.
    let a = server.token_request(cases[0].0).await;
    let b = server.token_request(cases[1].0).await;
    assert_eq!(a.json, b.json);

    for (content_type, body) in [
        ("application/json", r#"{"grant_type":"password"}"#),
        (
            "text/plain",
            "grant_type=password&username=admin&password=x",
        ),
    ] {
        let reply = server
            .call(
                Method::POST,
                "/api/v3/token",
                None,
                Body::Raw(content_type, body),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{content_type}");
        assert_eq!(reply.json["error"], "invalid_request");
    }
    let reply = server
        .call(Method::POST, "/api/v3/token", None, Body::None)
        .await;
    assert_eq!(reply.json["error"], "invalid_request");
}

#[tokio::test]
async fn bad_input_gets_the_vspc_envelope_with_the_parameter_named() {
    let server = start(MemoryStore::new()).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let auth = Some(admin.access.as_str());
    let uid = server.admin_uid.clone();
    let (_, id) = server
        .create_key(&admin.access, &uid, "description=k&scopes=rest")
        .await;
    let long = "x".repeat(129);

    // (method, path, status, parameterName)
    let cases: Vec<(Method, String, u16, &str)> = vec![
        (Method::POST, format!("/api/v3/users/{uid}/logins/apikey?scopes=rest"), 400, "description"),
        (Method::POST, format!("/api/v3/users/{uid}/logins/apikey?description=&scopes=rest"), 400, "description"),
        (Method::POST, format!("/api/v3/users/{uid}/logins/apikey?description={long}&scopes=rest"), 400, "description"),
        (Method::POST, format!("/api/v3/users/{uid}/logins/apikey?description=a%3Cb&scopes=rest"), 400, "description"),
        (Method::POST, format!("/api/v3/users/{uid}/logins/apikey?description=a%3Db&scopes=rest"), 400, "description"),
        (Method::POST, format!("/api/v3/users/{uid}/logins/apikey?description=a&description=b&scopes=rest"), 400, "description"),
        (Method::POST, format!("/api/v3/users/{uid}/logins/apikey?description=ok&scopes=nope"), 400, "scopes"),
        (Method::POST, format!("/api/v3/users/{uid}/logins/apikey?description=ok&scopes=[\"rest\""), 400, "scopes"),
        (Method::POST, format!("/api/v3/users/{uid}/logins/apikey?description=ok"), 400, "scopes"),
        (Method::POST, format!("/api/v3/users/{uid}/logins/apikey?description=ok&scopes=rest&isReadAccessOnly=maybe"), 400, "isReadAccessOnly"),
        (Method::POST, "/api/v3/users/no-such-user/logins/apikey?description=ok&scopes=rest".to_owned(), 404, "userUid"),
        (Method::GET, "/api/v3/users/logins?limit=0".to_owned(), 400, "limit"),
        (Method::GET, "/api/v3/users/logins?limit=501".to_owned(), 400, "limit"),
        (Method::GET, "/api/v3/users/logins?limit=ten".to_owned(), 400, "limit"),
        (Method::GET, "/api/v3/users/logins?offset=-1".to_owned(), 400, "offset"),
        (Method::GET, "/api/v3/users/logins?sort=colour".to_owned(), 400, "sort"),
        (Method::GET, "/api/v3/users/logins?filter=status".to_owned(), 400, "filter"),
        (Method::GET, format!("/api/v3/users/{uid}/logins?limit=1000"), 400, "limit"),
        (Method::GET, "/api/v3/users?limit=0".to_owned(), 400, "limit"),
        (Method::GET, "/api/v3/users/no-such-user/logins".to_owned(), 404, "userUid"),
        (Method::GET, "/api/v3/users/no-such-user".to_owned(), 404, "userUid"),
        (Method::GET, format!("/api/v3/users/{uid}/logins/abc"), 400, "userLoginId"),
        (Method::GET, format!("/api/v3/users/{uid}/logins/12345"), 404, "userLoginId"),
        (Method::GET, format!("/api/v3/users/{uid}/logins/0"), 404, "userLoginId"),
        (Method::DELETE, format!("/api/v3/users/{uid}/logins/12345"), 404, "userLoginId"),
        (Method::DELETE, "/api/v3/users/no-such-user/tokens".to_owned(), 404, "userUid"),
        (Method::GET, "/api/v3/organizations/companies/no-such-company".to_owned(), 404, "companyUid"),
    ];
    for (method, path, status, parameter) in cases {
        let reply = server.call(method.clone(), &path, auth, Body::None).await;
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{method} {path}: {:?}",
            reply.json
        );
        assert_eq!(reply.error()["code"], status, "{path}");
        assert_eq!(reply.error()["parameterName"], parameter, "{method} {path}");
        assert!(reply.error()["message"].is_string());
        let kind = if status == 404 {
            "notFound"
        } else {
            "validation"
        };
        assert_eq!(reply.error()["type"], kind, "{path}");
    }

    // JSON Patch: malformed documents are 400 and change nothing.
    let key_path = format!("/api/v3/users/{uid}/logins/{id}");
    let patches: Vec<(Value, Option<&str>)> = vec![
        (
            json!({ "op": "replace", "path": "/status", "value": "disabled" }),
            None,
        ),
        (
            json!([{ "op": "add", "path": "/status", "value": "disabled" }]),
            Some("op"),
        ),
        (
            json!([{ "op": "remove", "path": "/description" }]),
            Some("op"),
        ),
        (
            json!([{ "op": "replace", "path": "/scopes", "value": ["ui"] }]),
            Some("path"),
        ),
        (
            json!([{ "op": "replace", "path": "/status" }]),
            Some("value"),
        ),
        (
            json!([{ "op": "replace", "path": "/status", "value": "paused" }]),
            Some("status"),
        ),
        (
            json!([{ "op": "replace", "path": "/status", "value": "disabledDueToUser" }]),
            Some("status"),
        ),
        (
            json!([{ "op": "replace", "path": "/description", "value": "a>b" }]),
            Some("description"),
        ),
        (
            json!([
                { "op": "replace", "path": "/status", "value": "disabled" },
                { "op": "replace", "path": "/description", "value": "" }
            ]),
            Some("description"),
        ),
    ];
    for (document, property) in patches {
        let reply = server.patch(&key_path, auth, document.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{document}");
        assert_eq!(reply.error()["type"], "validation");
        match property {
            Some(p) => assert_eq!(reply.error()["propertyName"], p, "{document}"),
            None => assert!(reply.error().get("propertyName").is_none()),
        }
    }
    let unchanged = server.get(&key_path, auth).await;
    assert_eq!(unchanged.json["data"]["status"], "enabled");
    assert_eq!(unchanged.json["data"]["description"], "k");

    // Media types and unparseable bodies.
    let raw = [
        (
            Method::PATCH,
            key_path.as_str(),
            "text/plain",
            r#"[{"op":"replace","path":"/status","value":"disabled"}]"#,
            415,
        ),
        (
            Method::PATCH,
            key_path.as_str(),
            "application/json",
            "[{",
            400,
        ),
        (
            Method::POST,
            "/api/v3/users",
            "application/x-www-form-urlencoded",
            "userName=x",
            415,
        ),
        (
            Method::POST,
            "/api/v3/users",
            "application/json",
            "{nope",
            400,
        ),
        (
            Method::POST,
            "/api/v3/organizations/companies",
            "text/plain",
            "{}",
            415,
        ),
    ];
    for (method, path, content_type, body, status) in raw {
        let reply = server
            .call(method.clone(), path, auth, Body::Raw(content_type, body))
            .await;
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{method} {path} {content_type}"
        );
        assert_eq!(reply.error()["code"], status);
    }
    // JSON Patch's own media type is welcome.
    let reply = server
        .call(
            Method::PATCH,
            &key_path,
            auth,
            Body::Raw(
                "application/json-patch+json",
                r#"[{"op":"replace","path":"/description","value":"patched"}]"#,
            ),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    // Users and companies name the body property at fault.
    let bodies = [
        (
            "/api/v3/users",
            json!({ "credentials": { "password": "long enough" } }),
            400,
            "credentials.userName",
        ),
        (
            "/api/v3/users",
            json!({ "userName": " padded", "credentials": { "password": "long enough" } }),
            400,
            "userName",
        ),
        (
            "/api/v3/users",
            json!({ "userName": "dora" }),
            400,
            "credentials.password",
        ),
        (
            "/api/v3/users",
            json!({ "userName": "dora", "credentials": { "password": "short" } }),
            400,
            "credentials.password",
        ),
        (
            "/api/v3/users",
            json!({ "userName": "dora", "credentials": { "password": "long enough" }, "role": "king" }),
            400,
            "role",
        ),
        (
            "/api/v3/users",
            json!({ "userName": "dora", "credentials": { "password": "long enough" }, "organizationUid": "none" }),
            400,
            "organizationUid",
        ),
        (
            "/api/v3/users",
            json!({ "userName": "admin", "credentials": { "password": "long enough" } }),
            409,
            "userName",
        ),
        ("/api/v3/organizations/companies", json!({}), 400, "name"),
        (
            "/api/v3/organizations/companies",
            json!({ "name": "Default" }),
            409,
            "name",
        ),
        (
            "/api/v3/organizations/companies",
            json!({ "name": "Gamma", "status": "gone" }),
            400,
            "status",
        ),
    ];
    for (path, body, status, property) in bodies {
        let reply = server
            .call(Method::POST, path, auth, Body::Json(body.clone()))
            .await;
        assert_eq!(reply.status.as_u16(), status, "{body}: {:?}", reply.json);
        assert_eq!(reply.error()["propertyName"], property, "{body}");
    }
    // Nothing of the refused users was written.
    let users = server.get("/api/v3/users", auth).await;
    assert_eq!(users.json["meta"]["pagingInfo"]["total"], 1);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_and_health_is_open() {
    let server = start(MemoryStore::new()).await;
    let reply = server.get("/health", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json, json!({ "status": "ok" }));

    let reply = server.get("/api/v3/nothing-here", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error()["type"], "notFound");

    let reply = server.get("/api/v3/token", None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.error()["code"], 405);

    // Without credentials the protected endpoints answer with the layer's challenge.
    let reply = server.get("/api/v3/users", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.challenge(), Some("Bearer realm=\"api\""));
    assert_eq!(reply.error()["type"], "security");
    let reply = server.get("/api/v3/users", Some("not-a-valid-token")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.challenge().unwrap().contains("invalid_token"));
}

#[tokio::test]
async fn disabling_a_user_disables_their_keys_and_tokens_until_enabled() {
    let server = start(MemoryStore::new()).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let bob_uid = server.create_user(&admin.access, "bob", json!({})).await;
    let bob = server.login("bob", "bob password").await;
    let (key, id) = server
        .create_key(&bob.access, &bob_uid, "description=bob&scopes=rest")
        .await;
    let (key2, _) = server
        .create_key(&bob.access, &bob_uid, "description=bob2&scopes=rest")
        .await;
    let own = format!("/api/v3/users/{bob_uid}/logins");
    assert_eq!(server.get(&own, Some(&key)).await.status, StatusCode::OK);

    let user_path = format!("/api/v3/users/{bob_uid}");
    let reply = server
        .patch(
            &user_path,
            Some(&admin.access),
            replace("/status", json!("disabled")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    assert_eq!(reply.json["data"]["status"], "Disabled");
    for credential in [&key, &key2, &bob.access] {
        let reply = server.get(&own, Some(credential)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(reply.challenge().unwrap().contains("invalid_token"));
    }
    let listing = server.get(&own, Some(&admin.access)).await;
    for login in listing.json["data"].as_array().unwrap() {
        assert_eq!(login["status"], "disabledDueToUser");
    }
    let reply = server
        .token_request("grant_type=password&username=bob&password=bob%20password")
        .await;
    assert_eq!(reply.json["error"], "invalid_grant");
    let reply = server
        .token_request(&format!(
            "grant_type=refresh_token&refresh_token={}",
            bob.refresh
        ))
        .await;
    assert_eq!(reply.json["error"], "invalid_grant");

    server
        .patch(
            &user_path,
            Some(&admin.access),
            replace("/status", json!("enabled")),
        )
        .await;
    assert_eq!(server.get(&own, Some(&key)).await.status, StatusCode::OK);
    let reply = server.get(&format!("{own}/{id}"), Some(&key2)).await;
    assert_eq!(reply.json["data"]["status"], "enabled");
    server.login("bob", "bob password").await;

    // An administrator cannot lock themselves out.
    let admin_uid = server.admin_uid.clone();
    let reply = server
        .patch(
            &format!("/api/v3/users/{admin_uid}"),
            Some(&admin.access),
            replace("/status", json!("disabled")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error()["propertyName"], "status");
}

#[tokio::test]
async fn disabling_a_company_disables_every_key_of_its_users() {
    let server = start(MemoryStore::new()).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let reply = server
        .call(
            Method::POST,
            "/api/v3/organizations/companies",
            Some(&admin.access),
            Body::Json(json!({ "name": "Beta" })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    assert_eq!(reply.json["data"]["status"], "Active");
    let beta = reply.json["data"]["instanceUid"]
        .as_str()
        .unwrap()
        .to_owned();
    let carol_uid = server
        .create_user(&admin.access, "carol", json!({ "organizationUid": beta }))
        .await;
    let carol = server.login("carol", "carol password").await;
    let (key, _) = server
        .create_key(&carol.access, &carol_uid, "description=c&scopes=rest")
        .await;
    let own = format!("/api/v3/users/{carol_uid}/logins");
    let reply = server.get(&own, Some(&key)).await;
    assert_eq!(reply.json["data"][0]["companyName"], "Beta");

    let company_path = format!("/api/v3/organizations/companies/{beta}");
    let reply = server
        .patch(
            &company_path,
            Some(&admin.access),
            replace("/status", json!("disabled")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    assert_eq!(reply.json["data"]["status"], "Disabled");
    assert_eq!(
        server.get(&own, Some(&key)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.get(&own, Some(&carol.access)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let listing = server
        .get("/api/v3/users/logins?filter=[{\"property\":\"status\",\"operation\":\"equals\",\"value\":\"disabledDueToCompany\"}]", Some(&admin.access))
        .await;
    assert_eq!(listing.json["meta"]["pagingInfo"]["total"], 1);
    assert_eq!(listing.json["data"][0]["userUid"], carol_uid.as_str());
    let reply = server
        .token_request("grant_type=password&username=carol&password=carol%20password")
        .await;
    assert_eq!(reply.json["error"], "invalid_grant");

    server
        .patch(
            &company_path,
            Some(&admin.access),
            replace("/status", json!("enabled")),
        )
        .await;
    let reply = server.get(&own, Some(&key)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["data"][0]["status"], "enabled");

    // The administrator's own company cannot be disabled.
    let companies = server
        .get("/api/v3/organizations/companies", Some(&admin.access))
        .await;
    assert_eq!(companies.json["meta"]["pagingInfo"]["total"], 2);
    let default = companies.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Default")
        .unwrap()["instanceUid"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = server
        .patch(
            &format!("/api/v3/organizations/companies/{default}"),
            Some(&admin.access),
            replace("/status", json!("disabled")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn who_may_do_what() {
    let server = start(MemoryStore::new()).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let alice_uid = server.create_user(&admin.access, "alice", json!({})).await;
    let bob_uid = server.create_user(&admin.access, "bob", json!({})).await;
    let alice = server.login("alice", "alice password").await;
    let bob = server.login("bob", "bob password").await;
    let (_, key_id) = server
        .create_key(&alice.access, &alice_uid, "description=k&scopes=rest")
        .await;
    let (read_only, _) = server
        .create_key(
            &alice.access,
            &alice_uid,
            "description=ro&scopes=rest&isReadAccessOnly=true",
        )
        .await;
    // A key that was disabled is refused on every endpoint, with the layer's 401.
    let (disabled, disabled_id) = server
        .create_key(&alice.access, &alice_uid, "description=off&scopes=rest")
        .await;
    let reply = server
        .patch(
            &format!("/api/v3/users/{alice_uid}/logins/{disabled_id}"),
            Some(&alice.access),
            replace("/status", json!("disabled")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = server
        .call(
            Method::POST,
            "/api/v3/organizations/companies",
            Some(&admin.access),
            Body::Json(json!({ "name": "Beta" })),
        )
        .await;
    let beta = reply.json["data"]["instanceUid"]
        .as_str()
        .unwrap()
        .to_owned();

    let key = format!("/api/v3/users/{alice_uid}/logins/{key_id}");
    let describe = replace("/description", json!("changed"));
    let keep_enabled = replace("/status", json!("enabled"));
    let new_user = |n: &str| json!({ "userName": n, "credentials": { "password": "long enough" } });
    // (method, path, body, [admin, alice (owner), bob (other), read-only key of alice, anonymous,
    //  a disabled key of alice])
    let table: Vec<(Method, String, Option<Value>, [u16; 6])> = vec![
        (
            Method::GET,
            "/api/v3/users/logins".into(),
            None,
            [200, 200, 200, 200, 401, 401],
        ),
        (
            Method::GET,
            format!("/api/v3/users/{alice_uid}/logins"),
            None,
            [200, 200, 403, 200, 401, 401],
        ),
        (
            Method::POST,
            format!("/api/v3/users/{alice_uid}/logins/apikey?description=t&scopes=rest"),
            None,
            [200, 200, 403, 403, 401, 401],
        ),
        (
            Method::GET,
            key.clone(),
            None,
            [200, 200, 403, 200, 401, 401],
        ),
        (
            Method::PATCH,
            key.clone(),
            Some(describe),
            [200, 200, 403, 403, 401, 401],
        ),
        (
            Method::GET,
            "/api/v3/users".into(),
            None,
            [200, 200, 200, 200, 401, 401],
        ),
        (
            Method::GET,
            "/api/v3/users/me".into(),
            None,
            [200, 200, 200, 200, 401, 401],
        ),
        (
            Method::POST,
            "/api/v3/users".into(),
            Some(new_user("u1")),
            [200, 403, 403, 403, 401, 401],
        ),
        (
            Method::GET,
            format!("/api/v3/users/{alice_uid}"),
            None,
            [200, 200, 403, 200, 401, 401],
        ),
        (
            Method::PATCH,
            format!("/api/v3/users/{alice_uid}"),
            Some(keep_enabled.clone()),
            [200, 403, 403, 403, 401, 401],
        ),
        (
            Method::GET,
            "/api/v3/organizations/companies".into(),
            None,
            [200, 200, 200, 200, 401, 401],
        ),
        (
            Method::POST,
            "/api/v3/organizations/companies".into(),
            Some(json!({ "name": "Gamma" })),
            [200, 403, 403, 403, 401, 401],
        ),
        (
            Method::GET,
            format!("/api/v3/organizations/companies/{beta}"),
            None,
            [200, 403, 403, 403, 401, 401],
        ),
        (
            Method::PATCH,
            format!("/api/v3/organizations/companies/{beta}"),
            Some(keep_enabled),
            [200, 403, 403, 403, 401, 401],
        ),
    ];
    let callers = [
        Some(admin.access.as_str()),
        Some(alice.access.as_str()),
        Some(bob.access.as_str()),
        Some(read_only.as_str()),
        None,
        Some(disabled.as_str()),
    ];
    for (method, path, body, expected) in table {
        for (who, (caller, status)) in callers.iter().zip(expected).enumerate() {
            // Creating the same user or company twice would be a 409, not what is tested here.
            let body = match (&body, who) {
                (Some(b), 0) => Body::Json(b.clone()),
                (Some(b), _) if b.get("userName").is_some() => {
                    Body::Json(new_user(&format!("u{who}x")))
                }
                (Some(b), _) if b.get("name").is_some() => {
                    Body::Json(json!({ "name": format!("C{who}") }))
                }
                (Some(b), _) => Body::Json(b.clone()),
                (None, _) => Body::None,
            };
            let reply = server.call(method.clone(), &path, *caller, body).await;
            assert_eq!(
                reply.status.as_u16(),
                status,
                "caller {who}: {method} {path}: {:?}",
                reply.json
            );
            if status == 403 && who == 3 && method != Method::GET {
                // The read-only refusal is the layer's, with its challenge.
                assert!(
                    reply.challenge().unwrap().contains("insufficient_scope"),
                    "{method} {path}"
                );
            } else if status == 403 {
                assert!(reply.challenge().is_none(), "{method} {path}");
                assert_eq!(reply.error()["type"], "security");
            }
        }
    }

    // Revoking alice's tokens ends the token alice calls with: those who may not go first.
    let revoke = format!("/api/v3/users/{alice_uid}/tokens");
    for (caller, status) in [
        (Some(bob.access.as_str()), 403),
        (Some(read_only.as_str()), 403),
        (None, 401),
        (Some(disabled.as_str()), 401),
        (Some(alice.access.as_str()), 200),
        (Some(admin.access.as_str()), 200),
    ] {
        let reply = server.delete(&revoke, caller).await;
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{caller:?}: {:?}",
            reply.json
        );
    }
    let alice = server.login("alice", "alice password").await;

    // Listings show each user their own keys only.
    let reply = server.get("/api/v3/users/logins", Some(&bob.access)).await;
    assert_eq!(reply.json["meta"]["pagingInfo"]["total"], 0);
    let reply = server.get("/api/v3/users", Some(&bob.access)).await;
    assert_eq!(reply.json["meta"]["pagingInfo"]["total"], 1);
    assert_eq!(reply.json["data"][0]["userName"], "bob");
    // Naming alice's key under bob's own UID is "not found", never "forbidden".
    let reply = server
        .get(
            &format!("/api/v3/users/{bob_uid}/logins/{key_id}"),
            Some(&bob.access),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // Deleting: others and read-only identities are refused; the owner and an administrator may.
    let (_, second) = server
        .create_key(&alice.access, &alice_uid, "description=d&scopes=rest")
        .await;
    let second = format!("/api/v3/users/{alice_uid}/logins/{second}");
    assert_eq!(
        server.delete(&second, Some(&bob.access)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        server.delete(&second, Some(&read_only)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        server.delete(&second, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.delete(&second, Some(&alice.access)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.delete(&key, Some(&admin.access)).await.status,
        StatusCode::OK
    );
    // Administrators issue keys for others.
    let (for_bob, _) = server
        .create_key(&admin.access, &bob_uid, "description=b&scopes=rest")
        .await;
    let reply = server
        .get(&format!("/api/v3/users/{bob_uid}/logins"), Some(&for_bob))
        .await;
    assert_eq!(reply.json["data"][0]["userName"], "bob");
}

#[tokio::test]
async fn listings_page_sort_and_filter() {
    let server = start(MemoryStore::new()).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let auth = Some(admin.access.as_str());
    let uid = server.admin_uid.clone();
    let mut ids = Vec::new();
    for d in [
        "delta", "alpha", "echo", "charlie", "bravo", "foxtrot", "golf",
    ] {
        ids.push(
            server
                .create_key(&admin.access, &uid, &format!("description={d}&scopes=rest"))
                .await
                .1,
        );
    }
    let descriptions = |reply: &Reply| -> Vec<String> {
        reply.json["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["description"].as_str().unwrap().to_owned())
            .collect()
    };

    let reply = server
        .get("/api/v3/users/logins?limit=3&sort=description", auth)
        .await;
    assert_eq!(
        reply.json["meta"]["pagingInfo"],
        json!({ "total": 7, "count": 3, "offset": 0 })
    );
    assert_eq!(descriptions(&reply), ["alpha", "bravo", "charlie"]);
    let reply = server
        .get(
            "/api/v3/users/logins?limit=3&offset=6&sort=description",
            auth,
        )
        .await;
    assert_eq!(
        reply.json["meta"]["pagingInfo"],
        json!({ "total": 7, "count": 1, "offset": 6 })
    );
    assert_eq!(descriptions(&reply), ["golf"]);
    let reply = server.get("/api/v3/users/logins?offset=100", auth).await;
    assert_eq!(
        reply.json["meta"]["pagingInfo"],
        json!({ "total": 7, "count": 0, "offset": 100 })
    );

    for sort in [
        "-description",
        "[\"-description\"]",
        "[{\"property\":\"description\",\"direction\":\"descending\"}]",
    ] {
        let reply = server
            .get(&format!("/api/v3/users/logins?limit=2&sort={sort}"), auth)
            .await;
        assert_eq!(descriptions(&reply), ["golf", "foxtrot"], "{sort}");
    }
    // Creation order is the order the keys were made in.
    let reply = server
        .get("/api/v3/users/logins?sort=creationDate", auth)
        .await;
    assert_eq!(
        descriptions(&reply),
        ["delta", "alpha", "echo", "charlie", "bravo", "foxtrot", "golf"]
    );
    let reply = server
        .get("/api/v3/users/logins?sort=-creationDate&limit=1", auth)
        .await;
    assert_eq!(descriptions(&reply), ["golf"]);

    for id in &ids[..2] {
        server
            .patch(
                &format!("/api/v3/users/{uid}/logins/{id}"),
                auth,
                replace("/status", json!("disabled")),
            )
            .await;
    }
    let disabled = r#"[{"property":"status","operation":"equals","value":"disabled"}]"#;
    let reply = server
        .get(
            &format!("/api/v3/users/logins?sort=description&filter={disabled}"),
            auth,
        )
        .await;
    assert_eq!(descriptions(&reply), ["alpha", "delta"]);
    let contains = r#"[{"property":"description","operation":"contains","value":"O"},{"property":"status","operation":"equals","value":"enabled"}]"#;
    let reply = server
        .get(
            &format!("/api/v3/users/{uid}/logins?sort=description&filter={contains}"),
            auth,
        )
        .await;
    assert_eq!(descriptions(&reply), ["bravo", "echo", "foxtrot", "golf"]);
    assert_eq!(reply.json["meta"]["pagingInfo"]["total"], 4);
    let other_user = r#"[{"property":"userUid","operation":"equals","value":"someone-else"}]"#;
    let reply = server
        .get(
            &format!("/api/v3/users/{uid}/logins?filter={other_user}"),
            auth,
        )
        .await;
    assert_eq!(reply.json["meta"]["pagingInfo"]["total"], 0);
}

#[tokio::test]
async fn keys_survive_a_restart_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("tower-api-key-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("restart.db");
    let _ = std::fs::remove_file(&file);
    let url = format!("sqlite:{}", file.display());

    let (uid, kept, disabled) = {
        let store = SqliteStore::connect(&url).await.unwrap();
        let server = start(store.clone()).await;
        let admin = server.login("admin", ADMIN_PASSWORD).await;
        let uid = server.admin_uid.clone();
        let (kept, _) = server
            .create_key(&admin.access, &uid, "description=kept&scopes=rest")
            .await;
        let (disabled, id) = server
            .create_key(&admin.access, &uid, "description=off&scopes=rest")
            .await;
        server
            .patch(
                &format!("/api/v3/users/{uid}/logins/{id}"),
                Some(&admin.access),
                replace("/status", json!("disabled")),
            )
            .await;
        assert_eq!(
            server
                .get("/api/v3/users/logins", Some(&disabled))
                .await
                .status,
            StatusCode::UNAUTHORIZED
        );
        server.stop().await;
        store.close().await;
        (uid, kept, disabled)
    };

    let store = SqliteStore::connect(&url).await.unwrap();
    let server = start(store.clone()).await;
    // The administrator from the first start is kept, password and all.
    assert_eq!(server.admin_uid, uid);
    server.login("admin", ADMIN_PASSWORD).await;
    let reply = server
        .get("/api/v3/users/logins?sort=description", Some(&kept))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["meta"]["pagingInfo"]["total"], 2);
    assert_eq!(reply.json["data"][0]["description"], "kept");
    assert_eq!(reply.json["data"][1]["status"], "disabled");
    assert_eq!(
        server
            .get("/api/v3/users/logins", Some(&disabled))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    server.stop().await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Requests race a disable over HTTP: every request that starts after the management call has
/// answered is refused; none is accepted late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_is_accepted_after_the_disable_has_answered() {
    let server = Arc::new(start(MemoryStore::new()).await);
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let uid = server.admin_uid.clone();
    for round in 0..5 {
        let (key, id) = server
            .create_key(
                &admin.access,
                &uid,
                &format!("description=race{round}&scopes=rest"),
            )
            .await;
        let probe = format!("/api/v3/users/{uid}/logins/{id}");
        assert_eq!(server.get(&probe, Some(&key)).await.status, StatusCode::OK);

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut callers = Vec::new();
        for _ in 0..4 {
            let (server, key, probe, stop) =
                (server.clone(), key.clone(), probe.clone(), stop.clone());
            callers.push(tokio::spawn(async move {
                // (start, status) of every request until told to stop.
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = std::time::Instant::now();
                    let status = server.get(&probe, Some(&key)).await.status;
                    seen.push((started, status));
                }
                seen
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let reply = server
            .patch(
                &probe,
                Some(&admin.access),
                replace("/status", json!("disabled")),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        let answered = std::time::Instant::now();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);

        let mut after = 0;
        for caller in callers {
            for (started, status) in caller.await.unwrap() {
                if started > answered {
                    after += 1;
                    assert_eq!(
                        status,
                        StatusCode::UNAUTHORIZED,
                        "accepted after the disable"
                    );
                }
            }
        }
        assert!(
            after > 0,
            "no request ran after the disable; the race was not exercised"
        );
    }
}

/// Creates a company as `auth`; returns its UID.
async fn create_company(server: &Server, auth: &str, body: Value) -> String {
    let reply = server
        .call(
            Method::POST,
            "/api/v3/organizations/companies",
            Some(auth),
            Body::Json(body),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    reply.json["data"]["instanceUid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn app_routes_behind_the_layer_refuse_a_disabled_users_token_for_good() {
    let store = MemoryStore::new();
    let server = start(store.clone()).await;
    // A second node over the same store: it hears of changes only through the store.
    let other = start(store).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let bob_uid = server.create_user(&admin.access, "bob", json!({})).await;
    let bob = server.login("bob", "bob password").await;
    for node in [&server, &other] {
        let reply = node.get("/app", Some(&bob.access)).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        assert_eq!(reply.json["userUid"], bob_uid.as_str());
    }
    let user_path = format!("/api/v3/users/{bob_uid}");
    let reply = server
        .patch(
            &user_path,
            Some(&admin.access),
            replace("/status", json!("Disabled")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    for node in [&server, &other] {
        let reply = node.get("/app", Some(&bob.access)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(reply.challenge().unwrap().contains("invalid_token"));
    }
    // Enabled again, the user logs in anew; the tokens of before stay dead.
    server
        .patch(
            &user_path,
            Some(&admin.access),
            replace("/status", json!("Enabled")),
        )
        .await;
    for node in [&server, &other] {
        assert_eq!(
            node.get("/app", Some(&bob.access)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let reply = server
        .token_request(&format!(
            "grant_type=refresh_token&refresh_token={}",
            bob.refresh
        ))
        .await;
    assert_eq!(reply.json["error"], "invalid_grant");
    let again = server.login("bob", "bob password").await;
    assert_eq!(
        other.get("/app", Some(&again.access)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn app_routes_refuse_the_tokens_of_a_disabled_company_on_every_node() {
    let store = MemoryStore::new();
    let server = start(store.clone()).await;
    let other = start(store).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let beta = create_company(&server, &admin.access, json!({ "name": "Beta" })).await;
    server
        .create_user(&admin.access, "carol", json!({ "organizationUid": beta }))
        .await;
    let carol = server.login("carol", "carol password").await;
    assert_eq!(
        other.get("/app", Some(&carol.access)).await.status,
        StatusCode::OK
    );
    let company_path = format!("/api/v3/organizations/companies/{beta}");
    let reply = server
        .patch(
            &company_path,
            Some(&admin.access),
            replace("/status", json!("Disabled")),
        )
        .await;
    assert_eq!(reply.json["data"]["status"], "Disabled");
    for node in [&server, &other] {
        assert_eq!(
            node.get("/app", Some(&carol.access)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    server
        .patch(
            &company_path,
            Some(&admin.access),
            replace("/status", json!("Active")),
        )
        .await;
    assert_eq!(
        other.get("/app", Some(&carol.access)).await.status,
        StatusCode::UNAUTHORIZED,
        "a company's disable ends its users' tokens for good"
    );
    let reply = server
        .token_request(&format!(
            "grant_type=refresh_token&refresh_token={}",
            carol.refresh
        ))
        .await;
    assert_eq!(reply.json["error"], "invalid_grant");
    let again = server.login("carol", "carol password").await;
    assert_eq!(
        other.get("/app", Some(&again.access)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn revoking_a_users_tokens_ends_their_access_tokens_too() {
    let store = MemoryStore::new();
    let server = start(store.clone()).await;
    let other = start(store).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let bob_uid = server.create_user(&admin.access, "bob", json!({})).await;
    let bob = server.login("bob", "bob password").await;
    let (key, _) = server
        .create_key(&bob.access, &bob_uid, "description=k&scopes=rest")
        .await;
    let reply = server
        .delete(
            &format!("/api/v3/users/{bob_uid}/tokens"),
            Some(&bob.access),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    for node in [&server, &other] {
        assert_eq!(
            node.get("/app", Some(&bob.access)).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            node.get("/api/v3/users/me", Some(&bob.access)).await.status,
            StatusCode::UNAUTHORIZED
        );
        // API keys are not tokens.
        assert_eq!(node.get("/app", Some(&key)).await.status, StatusCode::OK);
    }
    let fresh = server.login("bob", "bob password").await;
    assert_eq!(
        other.get("/app", Some(&fresh.access)).await.status,
        StatusCode::OK
    );
    // The administrator's own tokens are untouched.
    assert_eq!(
        server.get("/app", Some(&admin.access)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_replayed_refresh_token_revokes_its_whole_family() {
    let server = start(MemoryStore::new()).await;
    let first = server.login("admin", ADMIN_PASSWORD).await;
    let elsewhere = server.login("admin", ADMIN_PASSWORD).await;
    let refresh = |token: &str| format!("grant_type=refresh_token&refresh_token={token}");
    let reply = server.token_request(&refresh(&first.refresh)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    let second = Tokens::from(reply);
    // Someone replays the first token: it fails, and so does the one that replaced it.
    let reply = server.token_request(&refresh(&first.refresh)).await;
    assert_eq!(reply.json["error"], "invalid_grant");
    let reply = server.token_request(&refresh(&second.refresh)).await;
    assert_eq!(reply.json["error"], "invalid_grant");
    // Another login is another family.
    let reply = server.token_request(&refresh(&elsewhere.refresh)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
}

#[tokio::test]
async fn nobody_creates_a_principal_stronger_than_themselves() {
    let server = start(MemoryStore::new()).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let uid = server.admin_uid.clone();
    // A `rest`-only administrator key cannot mint a login that opens every scope.
    let (rest_key, _) = server
        .create_key(&admin.access, &uid, "description=rest&scopes=rest")
        .await;
    for role in ["PortalAdministrator", "CompanyLocationUser"] {
        let reply = server
            .call(
                Method::POST,
                "/api/v3/users",
                Some(&rest_key),
                Body::Json(json!({
                    "organizationUid": null, "role": role, "profile": {},
                    "credentials": { "userName": format!("evil-{role}"), "password": "evil password" }
                })),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{role}: {:?}",
            reply.json
        );
    }
    let reply = server
        .token_request(
            "grant_type=password&username=evil-PortalAdministrator&password=evil%20password",
        )
        .await;
    assert_eq!(
        reply.json["error"], "invalid_grant",
        "the user was not created"
    );

    // Roles: each creates only below itself and inside its reach.
    let acme = create_company(&server, &admin.access, json!({ "name": "Acme" })).await;
    let beta = create_company(&server, &admin.access, json!({ "name": "Beta" })).await;
    let with = |name: &str, role: &str, company: &str| {
        let company = if company.is_empty() {
            Value::Null
        } else {
            json!(company)
        };
        json!({ "organizationUid": company, "role": role, "profile": {},
                "credentials": { "userName": name, "password": format!("{name} password") } })
    };
    let owner_uid = server
        .create_user(&admin.access, "", with("owner", "CompanyOwner", &acme))
        .await;
    let owner = server.login("owner", "owner password").await;
    let operator_uid = server
        .create_user(&admin.access, "", with("operator", "PortalOperator", ""))
        .await;
    let _ = operator_uid;
    let operator = server.login("operator", "operator password").await;
    let cases = [
        (
            &owner.access,
            with("o-admin", "CompanyAdministrator", &acme),
            200,
        ),
        (&owner.access, with("o-owner", "CompanyOwner", &acme), 403),
        (
            &owner.access,
            with("o-beta", "CompanyLocationUser", &beta),
            403,
        ),
        (
            &owner.access,
            with("o-portal", "PortalReadonlyOperator", &acme),
            403,
        ),
        (
            &operator.access,
            with("op-owner", "CompanyOwner", &beta),
            200,
        ),
        (
            &operator.access,
            with("op-admin", "PortalAdministrator", ""),
            403,
        ),
        (&operator.access, with("op-op", "PortalOperator", ""), 403),
    ];
    for (auth, body, status) in cases {
        let reply = server
            .call(
                Method::POST,
                "/api/v3/users",
                Some(auth),
                Body::Json(body.clone()),
            )
            .await;
        assert_eq!(reply.status.as_u16(), status, "{body}: {:?}", reply.json);
    }
    let company_admin = server.login("o-admin", "o-admin password").await;
    let reply = server
        .call(
            Method::POST,
            "/api/v3/users",
            Some(&company_admin.access),
            Body::Json(with("ca-user", "CompanyLocationUser", &acme)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    let user_uid = reply.json["data"]["instanceUid"]
        .as_str()
        .unwrap()
        .to_owned();
    // A company administrator makes keys for the users below them, not for their owner.
    let path = |uid: &str| format!("/api/v3/users/{uid}/logins/apikey?description=k&scopes=rest");
    assert_eq!(
        server
            .post(&path(&user_uid), Some(&company_admin.access))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        server
            .post(&path(&owner_uid), Some(&company_admin.access))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Nor may they disable their owner.
    let reply = server
        .patch(
            &format!("/api/v3/users/{owner_uid}"),
            Some(&company_admin.access),
            replace("/status", json!("Disabled")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn read_only_roles_get_read_only_credentials_whatever_they_ask() {
    let server = start(MemoryStore::new()).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let reader_uid = server
        .create_user(
            &admin.access,
            "reader",
            json!({ "role": "PortalReadonlyOperator" }),
        )
        .await;
    let reader = server.login("reader", "reader password").await;
    assert_eq!(
        server
            .get("/api/v3/users", Some(&reader.access))
            .await
            .status,
        StatusCode::OK
    );
    let reply = server
        .post(
            &format!("/api/v3/users/{reader_uid}/logins/apikey?description=k&scopes=rest"),
            Some(&reader.access),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.challenge().unwrap().contains("insufficient_scope"));
    // An administrator's key for them reads only too.
    let (key, _) = server
        .create_key(&admin.access, &reader_uid, "description=k&scopes=rest")
        .await;
    let reply = server
        .delete(&format!("/api/v3/users/{reader_uid}/tokens"), Some(&key))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_key_an_administrator_disabled_stays_disabled_for_its_owner() {
    let server = start(MemoryStore::new()).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let bob_uid = server.create_user(&admin.access, "bob", json!({})).await;
    let bob = server.login("bob", "bob password").await;
    let (key, id) = server
        .create_key(&bob.access, &bob_uid, "description=k&scopes=rest")
        .await;
    let path = format!("/api/v3/users/{bob_uid}/logins/{id}");
    let reply = server
        .patch(
            &path,
            Some(&admin.access),
            replace("/status", json!("disabled")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = server
        .patch(
            &path,
            Some(&bob.access),
            replace("/status", json!("enabled")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.json);
    assert_eq!(reply.error()["propertyName"], "status");
    assert_eq!(
        server.get("/app", Some(&key)).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The owner may still describe it.
    let reply = server
        .patch(
            &path,
            Some(&bob.access),
            replace("/description", json!("mine")),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    // Once an administrator enables it again, the owner has it back.
    server
        .patch(
            &path,
            Some(&admin.access),
            replace("/status", json!("enabled")),
        )
        .await;
    for status in ["disabled", "enabled"] {
        let reply = server
            .patch(&path, Some(&bob.access), replace("/status", json!(status)))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    }
    assert_eq!(server.get("/app", Some(&key)).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_holds_at_most_the_configured_number_of_keys_even_when_racing() {
    // SQLite, so that the count and the insert really wait on I/O and requests interleave.
    let dir = std::env::temp_dir().join(format!("tower-api-key-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("limit.db");
    let _ = std::fs::remove_file(&file);
    let store = SqliteStore::connect(&format!("sqlite:{}", file.display()))
        .await
        .unwrap();
    let server = Arc::new(start_with(store, |a| a.with_max_keys_per_user(3)).await);
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let uid = server.admin_uid.clone();
    let mut racers = Vec::new();
    for i in 0..10 {
        let (server, auth, uid) = (server.clone(), admin.access.clone(), uid.clone());
        racers.push(tokio::spawn(async move {
            server
                .post(
                    &format!("/api/v3/users/{uid}/logins/apikey?description=k{i}&scopes=rest"),
                    Some(&auth),
                )
                .await
                .status
        }));
    }
    let mut statuses = Vec::new();
    for racer in racers {
        statuses.push(racer.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 3);
    assert!(statuses
        .iter()
        .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT));
    let listing = server
        .get(&format!("/api/v3/users/{uid}/logins"), Some(&admin.access))
        .await;
    assert_eq!(listing.json["meta"]["pagingInfo"]["total"], 3);
}

#[tokio::test]
async fn names_and_descriptions_refuse_invisible_characters() {
    let server = start(MemoryStore::new()).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let uid = server.admin_uid.clone();
    for name in [
        "ad\u{202E}nimda",
        "admin\u{200B}",
        "a\u{2066}b",
        "tab\tname",
    ] {
        let reply = server
            .call(
                Method::POST,
                "/api/v3/users",
                Some(&admin.access),
                Body::Json(
                    json!({ "userName": name, "credentials": { "password": "long enough" } }),
                ),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{name:?}");
        assert_eq!(reply.error()["propertyName"], "userName");
        let reply = server
            .call(
                Method::POST,
                "/api/v3/organizations/companies",
                Some(&admin.access),
                Body::Json(json!({ "name": name })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{name:?}");
    }
    for description in ["%E2%80%AEexe", "zero%E2%80%8Bwidth", "line%0Abreak"] {
        let reply = server
            .post(
                &format!("/api/v3/users/{uid}/logins/apikey?description={description}&scopes=rest"),
                Some(&admin.access),
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{description}");
        assert_eq!(reply.error()["parameterName"], "description");
    }
}

/// What a client generated from VSPC's OpenAPI 3.6 reads: required properties are not optional
/// and enums are closed, so an answer of another shape fails to decode.
mod vspc {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct User {
        pub(super) instance_uid: String,
        pub(super) organization_uid: String,
        pub(super) user_name: String,
        pub(super) status: UserStatus,
        pub(super) role: UserRole,
        pub(super) profile: UserProfile,
        pub(super) credentials: Option<Credentials>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    pub(super) enum UserStatus {
        Unknown,
        Enabled,
        Disabled,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    pub(super) enum UserRole {
        Unknown,
        PortalAdministrator,
        PortalOperator,
        PortalReadonlyOperator,
        SiteAdministrator,
        CompanyLocationAdministrator,
        CompanyLocationUser,
        CompanyOwner,
        CompanyAdministrator,
        CompanyInvoiceAuditor,
        CompanySubtenant,
        ResellerOwner,
        ResellerOperator,
        ResellerUser,
        ResellerInvoiceAuditor,
        ResellerAdministrator,
        CompanyTenant,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct UserProfile {
        pub(super) first_name: Option<String>,
        pub(super) last_name: Option<String>,
        pub(super) title: Title,
        pub(super) email: Option<String>,
        pub(super) address: Option<String>,
        pub(super) phone: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    pub(super) enum Title {
        Unknown,
        Mr,
        Miss,
        Mrs,
        Ms,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Credentials {
        pub(super) user_name: String,
        pub(super) password: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Company {
        pub(super) instance_uid: String,
        pub(super) name: String,
        pub(super) status: CompanyStatus,
        pub(super) subscription_plan_uid: Option<String>,
        pub(super) is_rest_access_enabled: bool,
        pub(super) owner_credentials: Credentials,
        #[serde(rename = "_embedded")]
        pub(super) embedded: Embedded,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    pub(super) enum CompanyStatus {
        Unknown,
        Active,
        Disabled,
    }

    #[derive(Debug, Deserialize)]
    pub(super) struct Embedded {
        pub(super) organization: Organization,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Organization {
        pub(super) name: String,
        pub(super) alias: Option<String>,
        pub(super) tax_id: Option<String>,
        pub(super) city: Option<String>,
        pub(super) state: Option<i32>,
    }

    /// `{"data": T, "meta": …}`.
    #[derive(Debug, Deserialize)]
    pub(super) struct Envelope<T> {
        pub(super) data: T,
    }
}

#[tokio::test]
async fn a_vspc_client_creates_a_user_and_a_company_and_reads_them_back() {
    let server = start(MemoryStore::new()).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let decode = |reply: &Reply| reply.json.clone();

    // CreateCompany: CompanyInput, with the owner it creates.
    let reply = server
        .call(
            Method::POST,
            "/api/v3/organizations/companies",
            Some(&admin.access),
            Body::Json(json!({
                "organizationInput": {
                    "name": "Exon", "alias": "exon", "taxId": "DE123", "email": "it@exon.example",
                    "phone": "301 329 9338", "country": 1, "state": 5, "city": "Springfield",
                    "street": "1 Main St", "zipCode": "12345", "website": "exon.example",
                    "notes": "customer since 2020"
                },
                "subscriptionPlanUid": null,
                "isRestAccessEnabled": true,
                "isAlarmDetectEnabled": false,
                "ownerCredentials": { "userName": "exon-owner", "password": "Password1 long" }
            })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    let created: vspc::Envelope<vspc::Company> = serde_json::from_value(decode(&reply)).unwrap();
    let company = created.data;
    assert_eq!(company.name, "Exon");
    assert_eq!(company.status, vspc::CompanyStatus::Active);
    assert!(company.is_rest_access_enabled);
    assert_eq!(company.subscription_plan_uid, None);
    assert_eq!(company.owner_credentials.user_name, "exon-owner");
    assert_eq!(company.owner_credentials.password, None);
    assert_eq!(company.embedded.organization.alias.as_deref(), Some("exon"));
    assert_eq!(company.embedded.organization.state, Some(5));
    let reply = server
        .get(
            &format!("/api/v3/organizations/companies/{}", company.instance_uid),
            Some(&admin.access),
        )
        .await;
    let read: vspc::Envelope<vspc::Company> = serde_json::from_value(decode(&reply)).unwrap();
    assert_eq!(
        read.data.embedded.organization.tax_id.as_deref(),
        Some("DE123")
    );
    assert_eq!(
        read.data.embedded.organization.city.as_deref(),
        Some("Springfield")
    );
    assert_eq!(read.data.embedded.organization.name, "Exon");

    // The owner logs in as a company owner.
    let owner = server.login("exon-owner", "Password1 long").await;
    let reply = server.get("/api/v3/users/me", Some(&owner.access)).await;
    let me: vspc::Envelope<vspc::User> = serde_json::from_value(decode(&reply)).unwrap();
    assert_eq!(me.data.role, vspc::UserRole::CompanyOwner);
    assert_eq!(me.data.organization_uid, company.instance_uid);

    // CreateUser: UserInput.
    let reply = server
        .call(
            Method::POST,
            "/api/v3/users",
            Some(&owner.access),
            Body::Json(json!({
                "organizationUid": company.instance_uid,
                "role": "CompanyAdministrator",
                "mfaPolicyStatus": "Disabled",
                "profile": {
                    "firstName": "John", "lastName": "Brown", "title": "Mr",
                    "email": "j.brown@exon.example", "address": null, "phone": "301 329 9338"
                },
                "credentials": { "userName": "jbrown", "password": "Password1 long" }
            })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    let created: vspc::Envelope<vspc::User> = serde_json::from_value(decode(&reply)).unwrap();
    let user = created.data;
    assert_eq!(user.user_name, "jbrown");
    assert_eq!(user.status, vspc::UserStatus::Enabled);
    assert_eq!(user.role, vspc::UserRole::CompanyAdministrator);
    assert_eq!(user.profile.title, vspc::Title::Mr);
    assert_eq!(user.credentials.as_ref().unwrap().user_name, "jbrown");
    assert_eq!(user.credentials.as_ref().unwrap().password, None);
    let reply = server
        .get(
            &format!("/api/v3/users/{}", user.instance_uid),
            Some(&owner.access),
        )
        .await;
    let read: vspc::Envelope<vspc::User> = serde_json::from_value(decode(&reply)).unwrap();
    assert_eq!(read.data.profile, user.profile);
    assert_eq!(
        read.data.profile.email.as_deref(),
        Some("j.brown@exon.example")
    );

    // PatchUser: JSON Patch on the profile, as VSPC's example sends it.
    let reply = server
        .patch(
            &format!("/api/v3/users/{}", user.instance_uid),
            Some(&owner.access),
            json!([
                { "value": "Jack", "path": "/profile/firstName", "op": "replace" },
                { "value": "Smith", "path": "/profile/lastName", "op": "replace" }
            ]),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    let patched: vspc::Envelope<vspc::User> = serde_json::from_value(decode(&reply)).unwrap();
    assert_eq!(patched.data.profile.first_name.as_deref(), Some("Jack"));
    assert_eq!(patched.data.profile.last_name.as_deref(), Some("Smith"));
    assert_eq!(patched.data.profile.phone.as_deref(), Some("301 329 9338"));

    // GetUsers: the owner sees the users of their company.
    let reply = server.get("/api/v3/users", Some(&owner.access)).await;
    let all: vspc::Envelope<Vec<vspc::User>> = serde_json::from_value(decode(&reply)).unwrap();
    let mut names: Vec<&str> = all.data.iter().map(|u| u.user_name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["exon-owner", "jbrown"]);
}

fn limits(per_client: u32, per_user_and_client: u32, per_user: u32) -> LoginLimits {
    LoginLimits {
        per_client,
        per_user_and_client,
        per_user,
        window: std::time::Duration::from_secs(600),
    }
}

fn password_form(user: &str, password: &str) -> String {
    format!(
        "grant_type=password&username={user}&password={}",
        password.replace(' ', "%20")
    )
}

#[tokio::test]
async fn failed_logins_are_throttled_per_name_and_address_not_the_victim_elsewhere() {
    let server = start_with(MemoryStore::new(), |a| {
        a.with_login_limits(limits(4, 2, 100))
    })
    .await;
    let attacker = [127, 0, 0, 1];
    let victim = [127, 0, 0, 2];
    for _ in 0..2 {
        let reply = server
            .token_request_from(attacker, &password_form("admin", "wrong password"))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.json["error"], "invalid_grant");
    }
    // Over the limit: refused before the password is looked at, even the right one.
    for password in ["wrong password", ADMIN_PASSWORD] {
        let reply = server
            .token_request_from(attacker, &password_form("admin", password))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{:?}",
            reply.json
        );
        assert_eq!(reply.json["error"], "invalid_request");
        let retry: u64 = reply.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=600).contains(&retry), "{retry}");
    }
    // The owner of the name, from their own address, is not locked out.
    let reply = server
        .token_request_from(victim, &password_form("admin", ADMIN_PASSWORD))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    // The attacker's address runs out whatever names it tries.
    for name in ["nobody-1", "nobody-2"] {
        let reply = server
            .token_request_from(attacker, &password_form(name, "wrong password"))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    }
    let reply = server
        .token_request_from(attacker, &password_form("nobody-3", "wrong password"))
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_name_failing_from_many_addresses_is_throttled_everywhere() {
    let server = start_with(MemoryStore::new(), |a| {
        a.with_login_limits(limits(100, 100, 3))
    })
    .await;
    for n in 10..13 {
        let reply = server
            .token_request_from([127, 0, 0, n], &password_form("admin", "wrong password"))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    }
    let reply = server
        .token_request_from([127, 0, 0, 20], &password_form("admin", "wrong password"))
        .await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn successful_logins_never_count_against_their_holder() {
    let server = start_with(MemoryStore::new(), |a| a.with_login_limits(limits(2, 1, 2))).await;
    for _ in 0..6 {
        let reply = server
            .token_request_from([127, 0, 0, 1], &password_form("admin", ADMIN_PASSWORD))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
    }
    // A failure, then a success, forgives that name from that address.
    let reply = server
        .token_request_from([127, 0, 0, 1], &password_form("admin", "wrong password"))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = server
        .token_request_from([127, 0, 0, 3], &password_form("admin", ADMIN_PASSWORD))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn the_right_password_of_a_disabled_user_answers_like_a_wrong_one() {
    let server = start(MemoryStore::new()).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let bob_uid = server.create_user(&admin.access, "bob", json!({})).await;
    let beta = create_company(&server, &admin.access, json!({ "name": "Beta" })).await;
    let carol_uid = server
        .create_user(&admin.access, "carol", json!({ "organizationUid": beta }))
        .await;
    let _ = carol_uid;
    server
        .patch(
            &format!("/api/v3/users/{bob_uid}"),
            Some(&admin.access),
            replace("/status", json!("Disabled")),
        )
        .await;
    server
        .patch(
            &format!("/api/v3/organizations/companies/{beta}"),
            Some(&admin.access),
            replace("/status", json!("Disabled")),
        )
        .await;
    let wrong = server
        .token_request(&password_form("bob", "not bob's password"))
        .await;
    for (user, password) in [("bob", "bob password"), ("carol", "carol password")] {
        let right = server.token_request(&password_form(user, password)).await;
        assert_eq!(right.status, wrong.status, "{user}");
        assert_eq!(right.json, wrong.json, "{user}");
        let names = |r: &Reply| {
            let mut names: Vec<(String, String)> = r
                .headers
                .iter()
                .filter(|(n, _)| *n != http::header::DATE)
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(&right), names(&wrong), "{user}");
    }
}

#[tokio::test]
async fn refused_logins_are_logged_with_name_and_address_never_the_password() {
    use tracing_subscriber::util::SubscriberInitExt;

    #[derive(Clone, Default)]
    struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    // The server runs on this test's thread: a thread's default subscriber sees its events.
    let _guard = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish()
        .set_default();
    let server = start_with(MemoryStore::new(), |a| {
        a.with_login_limits(limits(100, 1, 100))
    })
    .await;
    for _ in 0..2 {
        server
            .token_request_from(
                [127, 0, 0, 7],
                &password_form("mallory\nforged", "hunter2 secret"),
            )
            .await;
    }
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("login refused"))
        .collect();
    assert_eq!(refused.len(), 2, "{log}");
    assert!(refused[0].contains("wrong_credentials"), "{log}");
    assert!(refused[1].contains("throttled"), "{log}");
    for line in &refused {
        assert!(line.contains("127.0.0.7"), "{line}");
        // The name is quoted and escaped: a newline in it cannot start a forged line.
        assert!(line.contains(r#""mallory\nforged""#), "{line}");
    }
    assert!(!log.contains("hunter2"), "the password reached the log");
}
