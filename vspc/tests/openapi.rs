//! The OpenAPI document against the server it describes: fetched from a real server on 127.0.0.1,
//! then every answer of a walk through the API is checked against the schema the document
//! declares for its path, method and status.

// Helpers outside `#[test]` functions are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use http::{Method, StatusCode};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use common::{replace, Body, Reply, SECRET};
use tower_api_key::store::AccountStore;
use tower_api_key::{KeyRing, MemoryStore};
use tower_api_key_vspc::Admin;

/// The routes `Admin::router` registers (vspc/src/lib.rs), method and path.
const ROUTES: [(&str, &str); 19] = [
    ("post", "/api/v3/token"),
    ("get", "/api/v3/openapi.json"),
    ("get", "/api/v3/users"),
    ("post", "/api/v3/users"),
    ("get", "/api/v3/users/me"),
    ("get", "/api/v3/users/logins"),
    ("get", "/api/v3/users/{userUid}"),
    ("patch", "/api/v3/users/{userUid}"),
    ("delete", "/api/v3/users/{userUid}/tokens"),
    ("get", "/api/v3/users/{userUid}/logins"),
    ("post", "/api/v3/users/{userUid}/logins/apikey"),
    (
        "post",
        "/api/v3/users/{userUid}/logins/{userLoginId}/rotate",
    ),
    ("get", "/api/v3/users/{userUid}/logins/{userLoginId}"),
    ("patch", "/api/v3/users/{userUid}/logins/{userLoginId}"),
    ("delete", "/api/v3/users/{userUid}/logins/{userLoginId}"),
    ("get", "/api/v3/organizations/companies"),
    ("post", "/api/v3/organizations/companies"),
    ("get", "/api/v3/organizations/companies/{companyUid}"),
    ("patch", "/api/v3/organizations/companies/{companyUid}"),
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

// ---------------------------------------------------------------------------------------------
// A JSON Schema validator for the subset the document uses. Keywords it does not know make it
// fail, so the document cannot grow a constraint that goes unchecked here.

/// Keywords that only annotate.
const ANNOTATIONS: [&str; 6] = [
    "description",
    "title",
    "example",
    "examples",
    "default",
    "deprecated",
];

struct Validator<'a> {
    doc: &'a Value,
}

impl<'a> Validator<'a> {
    fn new(doc: &'a Value) -> Self {
        Self { doc }
    }

    /// `Ok` when `value` matches `schema`; otherwise the first mismatch, with its JSON path.
    fn validate(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let schema = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Err(format!("{at}: no value is allowed")),
            Value::Object(schema) => schema,
            _ => return Err(format!("{at}: the schema is not an object: {schema}")),
        };
        for (keyword, rule) in schema {
            match keyword.as_str() {
                "$ref" => {
                    let target = rule.as_str().unwrap();
                    let resolved = target
                        .strip_prefix('#')
                        .and_then(|pointer| self.doc.pointer(pointer))
                        .ok_or_else(|| format!("{at}: unresolved $ref {target}"))?;
                    self.validate(resolved, value, at)?;
                }
                "type" => {
                    let types: Vec<&str> = match rule {
                        Value::String(t) => vec![t.as_str()],
                        Value::Array(ts) => ts.iter().map(|t| t.as_str().unwrap()).collect(),
                        _ => return Err(format!("{at}: bad type keyword {rule}")),
                    };
                    if !types.iter().any(|t| has_type(value, t)) {
                        return Err(format!("{at}: {value} is not of type {types:?}"));
                    }
                }
                "enum" => {
                    if !rule.as_array().unwrap().contains(value) {
                        return Err(format!("{at}: {value} is not one of {rule}"));
                    }
                }
                "const" => {
                    if rule != value {
                        return Err(format!("{at}: {value} is not {rule}"));
                    }
                }
                "properties" => {
                    if let Value::Object(object) = value {
                        for (name, property) in rule.as_object().unwrap() {
                            if let Some(v) = object.get(name) {
                                self.validate(property, v, &format!("{at}.{name}"))?;
                            }
                        }
                    }
                }
                "required" => {
                    if let Value::Object(object) = value {
                        for name in rule.as_array().unwrap() {
                            let name = name.as_str().unwrap();
                            if !object.contains_key(name) {
                                return Err(format!("{at}: required property {name} is missing"));
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Value::Object(object) = value {
                        let known = schema.get("properties").and_then(Value::as_object);
                        for (name, v) in object {
                            if known.is_some_and(|k| k.contains_key(name)) {
                                continue;
                            }
                            self.validate(rule, v, &format!("{at}.{name}"))
                                .map_err(|e| format!("{e} (property {name} is not declared)"))?;
                        }
                    }
                }
                "items" => {
                    if let Value::Array(items) = value {
                        for (i, item) in items.iter().enumerate() {
                            self.validate(rule, item, &format!("{at}[{i}]"))?;
                        }
                    }
                }
                "uniqueItems" => {
                    if let (Some(true), Value::Array(items)) = (rule.as_bool(), value) {
                        for (i, item) in items.iter().enumerate() {
                            if items[..i].contains(item) {
                                return Err(format!("{at}: {item} appears twice"));
                            }
                        }
                    }
                }
                "oneOf" => {
                    let matching = rule
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|s| self.validate(s, value, at).is_ok())
                        .count();
                    if matching != 1 {
                        return Err(format!(
                            "{at}: {value} matches {matching} schemas of oneOf, not one"
                        ));
                    }
                }
                "anyOf" => {
                    let alternatives = rule.as_array().unwrap();
                    if !alternatives
                        .iter()
                        .any(|s| self.validate(s, value, at).is_ok())
                    {
                        return Err(format!("{at}: {value} matches no schema of anyOf"));
                    }
                }
                "allOf" => {
                    for s in rule.as_array().unwrap() {
                        self.validate(s, value, at)?;
                    }
                }
                "minimum" | "maximum" => {
                    if let (Some(bound), Some(n)) = (rule.as_f64(), value.as_f64()) {
                        let ok = if keyword == "minimum" {
                            n >= bound
                        } else {
                            n <= bound
                        };
                        if !ok {
                            return Err(format!("{at}: {value} is out of its {keyword} {bound}"));
                        }
                    }
                }
                "format" => {
                    if let Value::String(text) = value {
                        check_format(rule.as_str().unwrap(), text)
                            .map_err(|e| format!("{at}: {e}"))?;
                    }
                }
                other if ANNOTATIONS.contains(&other) => {}
                other => return Err(format!("{at}: the validator does not know `{other}`")),
            }
        }
        Ok(())
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => false,
    }
}

/// The formats whose strings have a syntax; integer formats (`int32`, `uint64`, …) say nothing a
/// string could break.
fn check_format(format: &str, text: &str) -> Result<(), String> {
    match format {
        "date-time" => OffsetDateTime::parse(text, &Rfc3339)
            .map(drop)
            .map_err(|e| format!("{text:?} is not an RFC 3339 date-time: {e}")),
        "int32" | "int64" | "uint32" | "uint64" | "int8" | "uint8" | "int16" | "uint16" => Ok(()),
        other => Err(format!("the validator does not know the format `{other}`")),
    }
}

// ---------------------------------------------------------------------------------------------
// The document's view of an operation.

/// `paths[template][method]`.
fn operation<'a>(doc: &'a Value, method: &str, template: &str) -> &'a Value {
    doc["paths"]
        .get(template)
        .and_then(|item| item.get(method))
        .unwrap_or_else(|| panic!("the document has no {method} {template}"))
}

/// The JSON schema of the body the document declares for `status`; `None` for an answer without
/// a body. Panics when the status is not declared at all.
fn response_schema<'a>(
    doc: &'a Value,
    method: &str,
    template: &str,
    status: u16,
) -> Option<&'a Value> {
    let responses = &operation(doc, method, template)["responses"];
    let response = responses
        .get(status.to_string())
        .or_else(|| responses.get("default"))
        .unwrap_or_else(|| panic!("{method} {template} does not declare status {status}"));
    response
        .get("content")
        .map(|content| &content["application/json"]["schema"])
}

/// Every (method, path) of the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut set = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                set.insert((method.to_owned(), path.clone()));
            }
        }
    }
    set
}

// ---------------------------------------------------------------------------------------------
// A server and a client that checks every answer.

/// The harness's server (`tests/common`) with the document it serves and what the walk covered.
struct Server {
    http: common::Server,
    admin_uid: String,
    doc: Value,
    /// (method, path template) of every answer checked with a 2xx status.
    succeeded: Mutex<BTreeSet<(String, String)>>,
    /// Statuses checked, for the errors the walk must see.
    statuses: Mutex<BTreeSet<u16>>,
}

async fn start() -> Server {
    let http = common::start(MemoryStore::new()).await;
    let reply = http.get("/api/v3/openapi.json", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    Server {
        admin_uid: http.admin_uid.clone(),
        doc: reply.json,
        http,
        succeeded: Mutex::default(),
        statuses: Mutex::default(),
    }
}

impl Server {
    /// Sends a request to the operation `method template` (path parameters from `params`, then
    /// `query`), checks a JSON body against the declared request body and the answer against the
    /// schema declared for its status, and returns the answer.
    async fn call(
        &self,
        method: Method,
        template: &str,
        params: &[(&str, &str)],
        query: &str,
        auth: Option<&str>,
        body: Body<'_>,
    ) -> Reply {
        let name = method.as_str().to_ascii_lowercase();
        let validator = Validator::new(&self.doc);
        if let Body::Json(value) = &body {
            let schema = &operation(&self.doc, &name, template)["requestBody"]["content"]
                ["application/json"]["schema"];
            assert!(!schema.is_null(), "{name} {template} declares no JSON body");
            validator
                .validate(schema, value, "request")
                .unwrap_or_else(|e| panic!("{name} {template}: request body: {e}"));
        }
        let mut path = template.to_owned();
        for (param, value) in params {
            path = path.replace(&format!("{{{param}}}"), value);
        }
        assert!(!path.contains('{'), "unfilled parameter in {path}");
        if !query.is_empty() {
            path = format!("{path}?{query}");
        }
        let reply = self.http.call(method, &path, auth, body).await;
        let status = reply.status.as_u16();
        match response_schema(&self.doc, &name, template, status) {
            Some(schema) => {
                assert_eq!(
                    reply.headers["content-type"], "application/json",
                    "{name} {template} {status}"
                );
                validator
                    .validate(schema, &reply.json, "response")
                    .unwrap_or_else(|e| {
                        panic!("{name} {template} {status}: {e}\nbody: {}", reply.json)
                    });
            }
            None => assert!(reply.json.is_null(), "{name} {template} {status}: a body"),
        }
        if reply.status.is_success() {
            self.succeeded
                .lock()
                .unwrap()
                .insert((name, template.to_owned()));
        }
        self.statuses.lock().unwrap().insert(status);
        reply
    }

    async fn token(&self, form: &'static str) -> Reply {
        self.call(
            Method::POST,
            "/api/v3/token",
            &[],
            "",
            None,
            Body::Form(form),
        )
        .await
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn document_is_openapi_3_1_and_lists_exactly_the_routes() {
    let server = start().await;
    let doc = &server.doc;
    assert_eq!(doc["openapi"], "3.1.0");
    let login = &doc["components"]["schemas"]["UserLogin"]["properties"];
    for date in [
        "creationDate",
        "expirationDate",
        "deprecationDate",
        "lastUsedDate",
    ] {
        assert_eq!(login[date]["format"], "date-time", "UserLogin.{date}");
    }
    assert_eq!(doc["info"]["title"], "tower-api-key-vspc");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearer"]["description"]})
    );
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .chain([("get", "/health")].iter())
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented(doc), routes);

    // The document is the library's own: what `Admin::openapi` returns is what the server serves.
    let store = MemoryStore::new();
    let accounts: Arc<dyn AccountStore> = Arc::new(store.clone());
    let admin = Admin::new(KeyRing::new(store), accounts, SECRET);
    assert_eq!(&serde_json::to_value(admin.openapi()).unwrap(), doc);

    // Every documented operation is served: without a credential each answers with a status it
    // declares (401 behind the layer), never the fallback's 404 or 405.
    for (method, template) in documented(doc) {
        let params = [
            ("userUid", server.admin_uid.as_str()),
            ("userLoginId", "1"),
            ("companyUid", "x"),
        ];
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let reply = server
            .call(method.clone(), &template, &params, "", None, Body::None)
            .await;
        assert!(
            ![StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&reply.status),
            "{method} {template}: {}",
            reply.status
        );
        let secured = operation(doc, &method.as_str().to_ascii_lowercase(), &template)
            .get("security")
            .is_some();
        if secured {
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{method} {template}"
            );
        }
    }
}

#[tokio::test]
async fn every_answer_of_a_walk_matches_its_documented_schema() {
    let server = start().await;
    let admin_uid = server.admin_uid.clone();
    let uid = admin_uid.as_str();

    // Tokens, and the token endpoint's refusals.
    let reply = server
        .token("grant_type=password&username=admin&password=admin%20password%20for%20tests")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let admin = reply.json["access_token"].as_str().unwrap().to_owned();
    let admin = admin.as_str();
    let reply = server
        .token("grant_type=password&username=admin&password=wrong")
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json["error"], "invalid_grant");

    let health = server
        .call(Method::GET, "/health", &[], "", None, Body::None)
        .await;
    assert_eq!(health.status, StatusCode::OK);

    // Users.
    let me = server
        .call(
            Method::GET,
            "/api/v3/users/me",
            &[],
            "",
            Some(admin),
            Body::None,
        )
        .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json["data"]["instanceUid"], uid);
    let users = server
        .call(
            Method::GET,
            "/api/v3/users",
            &[],
            "limit=5",
            Some(admin),
            Body::None,
        )
        .await;
    assert_eq!(users.status, StatusCode::OK);

    // A company and its owner, then a user of the company.
    let company = server
        .call(
            Method::POST,
            "/api/v3/organizations/companies",
            &[],
            "",
            Some(admin),
            Body::Json(json!({
                "organizationInput": {"name": "Exon", "city": "Springfield", "state": 5},
                "ownerCredentials": {"userName": "exon-owner", "password": "a long owner password"},
                "isRestAccessEnabled": true
            })),
        )
        .await;
    assert_eq!(company.status, StatusCode::OK);
    let company_uid = company.json["data"]["instanceUid"]
        .as_str()
        .unwrap()
        .to_owned();
    let user = server
        .call(
            Method::POST,
            "/api/v3/users",
            &[],
            "",
            Some(admin),
            Body::Json(json!({
                "organizationUid": company_uid,
                "role": "CompanyLocationUser",
                "profile": {"firstName": "Ann", "title": "Ms", "email": "ann@example.com"},
                "credentials": {"userName": "ann", "password": "a long password for ann"}
            })),
        )
        .await;
    assert_eq!(user.status, StatusCode::OK);
    let ann = user.json["data"]["instanceUid"]
        .as_str()
        .unwrap()
        .to_owned();
    let taken = server
        .call(
            Method::POST,
            "/api/v3/users",
            &[],
            "",
            Some(admin),
            Body::Json(json!({"credentials": {"userName": "ann", "password": "another password"}})),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    let one = [("userUid", ann.as_str())];
    let reply = server
        .call(
            Method::GET,
            "/api/v3/users/{userUid}",
            &one,
            "",
            Some(admin),
            Body::None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = server
        .call(
            Method::PATCH,
            "/api/v3/users/{userUid}",
            &one,
            "",
            Some(admin),
            Body::Json(replace("/profile/lastName", json!("Smith"))),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["data"]["profile"]["lastName"], "Smith");

    let companies = server
        .call(
            Method::GET,
            "/api/v3/organizations/companies",
            &[],
            "",
            Some(admin),
            Body::None,
        )
        .await;
    assert_eq!(companies.status, StatusCode::OK);
    let exon = [("companyUid", company_uid.as_str())];
    let reply = server
        .call(
            Method::GET,
            "/api/v3/organizations/companies/{companyUid}",
            &exon,
            "",
            Some(admin),
            Body::None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    // Keys: create, list, get, patch, delete.
    let mine = [("userUid", uid)];
    let created = server
        .call(
            Method::POST,
            "/api/v3/users/{userUid}/logins/apikey",
            &mine,
            "description=CI&scopes=rest&scopes=integration",
            Some(admin),
            Body::None,
        )
        .await;
    assert_eq!(created.status, StatusCode::OK);
    let key = created.json["data"]["parameters"]
        .as_str()
        .unwrap()
        .to_owned();
    let key_id = created.json["data"]["id"].as_u64().unwrap().to_string();
    let read_only = server
        .call(
            Method::POST,
            "/api/v3/users/{userUid}/logins/apikey",
            &mine,
            "description=Dashboard&scopes=%5B%22rest%22%5D&isReadAccessOnly=true",
            Some(admin),
            Body::None,
        )
        .await;
    assert_eq!(read_only.status, StatusCode::OK);
    let read_only = read_only.json["data"]["parameters"]
        .as_str()
        .unwrap()
        .to_owned();

    let all = server
        .call(
            Method::GET,
            "/api/v3/users/logins",
            &[],
            "sort=-creationDate",
            Some(&key),
            Body::None,
        )
        .await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.json["meta"]["pagingInfo"]["total"], 2);

    // A key with an expiry, rotated with a grace period: both answers carry the lifecycle dates.
    let expiring = server
        .call(
            Method::POST,
            "/api/v3/users/{userUid}/logins/apikey",
            &mine,
            &format!(
                "description=Expiring&scopes=rest&expirationDate={}",
                (OffsetDateTime::now_utc() + time::Duration::days(3))
                    .format(&Rfc3339)
                    .unwrap()
            ),
            Some(admin),
            Body::None,
        )
        .await;
    assert_eq!(expiring.status, StatusCode::OK);
    assert!(expiring.json["data"]["expirationDate"].is_string());
    let expiring_id = expiring.json["data"]["id"].as_u64().unwrap().to_string();
    let rotated = server
        .call(
            Method::POST,
            "/api/v3/users/{userUid}/logins/{userLoginId}/rotate",
            &[("userUid", uid), ("userLoginId", expiring_id.as_str())],
            "gracePeriod=60",
            Some(admin),
            Body::None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK);
    let again = server
        .call(
            Method::POST,
            "/api/v3/users/{userUid}/logins/{userLoginId}/rotate",
            &[("userUid", uid), ("userLoginId", expiring_id.as_str())],
            "",
            Some(admin),
            Body::None,
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let old = server
        .call(
            Method::GET,
            "/api/v3/users/{userUid}/logins/{userLoginId}",
            &[("userUid", uid), ("userLoginId", expiring_id.as_str())],
            "",
            Some(admin),
            Body::None,
        )
        .await;
    assert!(old.json["data"]["deprecationDate"].is_string());
    for id in [
        expiring_id,
        rotated.json["data"]["id"].as_u64().unwrap().to_string(),
    ] {
        let gone = server
            .call(
                Method::DELETE,
                "/api/v3/users/{userUid}/logins/{userLoginId}",
                &[("userUid", uid), ("userLoginId", id.as_str())],
                "",
                Some(admin),
                Body::None,
            )
            .await;
        assert_eq!(gone.status, StatusCode::OK);
    }
    let listed = server
        .call(
            Method::GET,
            "/api/v3/users/{userUid}/logins",
            &mine,
            "limit=1",
            Some(&key),
            Body::None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json["meta"]["pagingInfo"]["count"], 1);

    let this = [("userUid", uid), ("userLoginId", key_id.as_str())];
    let template = "/api/v3/users/{userUid}/logins/{userLoginId}";
    let got = server
        .call(Method::GET, template, &this, "", Some(&key), Body::None)
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json["data"]["parameters"], "");
    let patched = server
        .call(
            Method::PATCH,
            template,
            &this,
            "",
            Some(admin),
            Body::Json(replace("/status", json!("disabled"))),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.json["data"]["status"], "disabled");

    // Refusals, each in the envelope the document declares.
    let no_key = server
        .call(
            Method::GET,
            "/api/v3/users/logins",
            &[],
            "",
            None,
            Body::None,
        )
        .await;
    assert_eq!(no_key.status, StatusCode::UNAUTHORIZED);
    let disabled = server
        .call(
            Method::GET,
            "/api/v3/users/logins",
            &[],
            "",
            Some(&key),
            Body::None,
        )
        .await;
    assert_eq!(disabled.status, StatusCode::UNAUTHORIZED);
    let writes = server
        .call(
            Method::POST,
            "/api/v3/users/{userUid}/logins/apikey",
            &mine,
            "description=x&scopes=rest",
            Some(&read_only),
            Body::None,
        )
        .await;
    assert_eq!(writes.status, StatusCode::FORBIDDEN);
    let bad_limit = server
        .call(
            Method::GET,
            "/api/v3/users/logins",
            &[],
            "limit=0",
            Some(admin),
            Body::None,
        )
        .await;
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_limit.json["errors"][0]["parameterName"], "limit");
    let unknown = [("userUid", uid), ("userLoginId", "999999")];
    let missing = server
        .call(Method::GET, template, &unknown, "", Some(admin), Body::None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let deleted = server
        .call(Method::DELETE, template, &this, "", Some(admin), Body::None)
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(deleted.json["data"], true);

    // A company disabled, then its user's tokens ended.
    let reply = server
        .call(
            Method::PATCH,
            "/api/v3/organizations/companies/{companyUid}",
            &exon,
            "",
            Some(admin),
            Body::Json(replace("/status", json!("disabled"))),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json["data"]["status"], "Disabled");
    let reply = server
        .call(
            Method::DELETE,
            "/api/v3/users/{userUid}/tokens",
            &one,
            "",
            Some(admin),
            Body::None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = server
        .call(
            Method::GET,
            "/api/v3/openapi.json",
            &[],
            "",
            None,
            Body::None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    // The walk reached every operation, and each error status asked for.
    let succeeded = server.succeeded.lock().unwrap().clone();
    assert_eq!(succeeded, documented(&server.doc));
    let statuses = server.statuses.lock().unwrap().clone();
    for status in [400, 401, 403, 404, 409] {
        assert!(statuses.contains(&status), "no {status} was checked");
    }
}

#[test]
fn validator_refuses_bodies_that_break_the_schema() {
    let doc = json!({
        "components": {"schemas": {
            "Login": {
                "type": "object",
                "required": ["id", "status", "creationDate", "scopes"],
                "properties": {
                    "id": {"type": "integer", "format": "int64", "minimum": 0},
                    "status": {"type": "string", "enum": ["enabled", "disabled"]},
                    "creationDate": {"type": "string", "format": "date-time"},
                    "expirationDate": {"type": ["string", "null"], "format": "date-time"},
                    "scopes": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
                    "owner": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Owner"}]}
                },
                "additionalProperties": false
            },
            "Owner": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
        }}
    });
    let validator = Validator::new(&doc);
    let schema = json!({"$ref": "#/components/schemas/Login"});
    let good = json!({
        "id": 7, "status": "enabled", "creationDate": "2020-08-18T16:02:26.0136931Z",
        "expirationDate": null, "scopes": ["rest"], "owner": {"name": "ann"}
    });
    validator.validate(&schema, &good, "body").unwrap();
    let broken = [
        ("id", json!("7")),
        ("id", json!(-1)),
        ("id", json!(1.5)),
        ("status", json!("Enabled")),
        ("creationDate", json!("2020-08-18 16:02:26")),
        ("creationDate", json!(null)),
        ("expirationDate", json!("yesterday")),
        ("scopes", json!("rest")),
        ("scopes", json!(["rest", "rest"])),
        ("scopes", json!([1])),
        ("owner", json!({"nom": "ann"})),
        ("surprise", json!(true)),
    ];
    for (property, value) in broken {
        let mut body = good.clone();
        body[property] = value.clone();
        assert!(
            validator.validate(&schema, &body, "body").is_err(),
            "{property} = {value} passed"
        );
    }
    let mut body = good.clone();
    body.as_object_mut().unwrap().remove("creationDate");
    assert!(validator.validate(&schema, &body, "body").is_err());
    assert!(validator.validate(&schema, &json!([good]), "body").is_err());
    // A keyword it cannot check is an error, not a pass.
    assert!(validator
        .validate(&json!({"pattern": "^a"}), &json!("b"), "body")
        .is_err());
}
