//! The harness of the management API's tests: a server on 127.0.0.1 over any store, and a hyper
//! client that speaks to it as an application would.

// Each test file uses a part of the harness.
#![allow(dead_code)]
// Helpers outside `#[test]` functions are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use tower_api_key::store::{AccountStore, KeyStore};
use tower_api_key::KeyRing;
use tower_api_key_vspc::{bootstrap_admin, Admin};

pub(crate) const ADMIN_PASSWORD: &str = "admin password for tests";
pub(crate) const SECRET: &[u8] = b"a JWT secret for the admin API tests, 32+ bytes";

/// A running server and a client for it. Dropping it shuts the server down.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) client: Client<HttpConnector, Full<Bytes>>,
    pub(crate) shutdown: Option<oneshot::Sender<()>>,
    pub(crate) task: Option<JoinHandle<()>>,
    pub(crate) admin_uid: String,
}

/// What the server answered.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) json: Value,
}

impl Reply {
    pub(crate) fn error(&self) -> &Value {
        &self.json["errors"][0]
    }

    pub(crate) fn challenge(&self) -> Option<&str> {
        self.headers
            .get(http::header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap())
    }
}

/// A request body.
pub(crate) enum Body<'a> {
    None,
    Json(Value),
    Form(&'a str),
    Raw(&'a str, &'a str),
}

pub(crate) async fn start<S>(store: S) -> Server
where
    S: KeyStore + AccountStore + Clone,
{
    start_with(store, |admin| admin).await
}

/// A server whose [`Admin`] `configure` adjusts. Beside the management API it serves `/app`, an
/// application route behind [`Admin::layer`] that answers the caller's user UID.
pub(crate) async fn start_with<S>(store: S, configure: impl FnOnce(Admin) -> Admin) -> Server
where
    S: KeyStore + AccountStore + Clone,
{
    start_on(KeyRing::new(store.clone()), store, configure).await
}

/// A server over `ring`, whose store is `accounts`' too.
pub(crate) async fn start_on<S>(
    ring: KeyRing,
    accounts: S,
    configure: impl FnOnce(Admin) -> Admin,
) -> Server
where
    S: AccountStore,
{
    let accounts: Arc<dyn AccountStore> = Arc::new(accounts);
    let boot = bootstrap_admin(accounts.as_ref(), Some(ADMIN_PASSWORD))
        .await
        .unwrap();
    let admin = configure(Admin::new(ring, accounts, SECRET));
    let own = axum::Router::new()
        .route(
            "/app",
            axum::routing::get(|login: tower_api_key::Login| async move {
                axum::Json(json!({ "userUid": login.user_uid }))
            }),
        )
        .layer(admin.layer());
    let app = admin.router().merge(own);
    serve(app, boot.user_uid()).await
}

/// `app` on 127.0.0.1, with the client addresses the token endpoint throttles by.
pub(crate) async fn serve(app: axum::Router, admin_uid: &str) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Server {
        addr,
        client: Client::builder(TokioExecutor::new()).build_http(),
        shutdown: Some(tx),
        task: Some(task),
        admin_uid: admin_uid.to_owned(),
    }
}

impl Server {
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Body<'_>,
    ) -> Reply {
        self.call_with(&self.client, method, path, auth, body).await
    }

    /// A client whose connections come from `ip` (any address of 127.0.0.0/8 is this machine).
    pub(crate) fn client_from(ip: [u8; 4]) -> Client<HttpConnector, Full<Bytes>> {
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(std::net::IpAddr::from(ip)));
        Client::builder(TokioExecutor::new()).build(connector)
    }

    /// `POST /token` with `form` from the address `ip`.
    pub(crate) async fn token_request_from(&self, ip: [u8; 4], form: &str) -> Reply {
        let client = Self::client_from(ip);
        self.call_with(
            &client,
            Method::POST,
            "/api/v3/token",
            None,
            Body::Form(form),
        )
        .await
    }

    pub(crate) async fn call_with(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Body<'_>,
    ) -> Reply {
        let (status, headers, body) = self.send_with(client, method, path, auth, body).await;
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&body)))
        };
        Reply {
            status,
            headers,
            json,
        }
    }

    /// `GET path` without credentials, the body as text: for answers that are not JSON.
    pub(crate) async fn text(&self, path: &str) -> (StatusCode, http::HeaderMap, String) {
        let (status, headers, body) = self
            .send_with(&self.client, Method::GET, path, None, Body::None)
            .await;
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    /// The request as `call_with` sends it; the answer's status, headers and body.
    pub(crate) async fn send_with(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Body<'_>,
    ) -> (StatusCode, http::HeaderMap, Bytes) {
        let mut builder = Request::builder().method(method).uri(format!(
            "http://{}{}",
            self.addr,
            uri_safe(path)
        ));
        if let Some(credential) = auth {
            builder = builder.header("authorization", format!("Bearer {credential}"));
        }
        let bytes = match body {
            Body::None => Bytes::new(),
            Body::Json(v) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            Body::Form(f) => {
                builder = builder.header("content-type", "application/x-www-form-urlencoded");
                Bytes::from(f.to_owned())
            }
            Body::Raw(content_type, text) => {
                builder = builder.header("content-type", content_type);
                Bytes::from(text.to_owned())
            }
        };
        let response = client
            .request(builder.body(Full::new(bytes)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    }

    pub(crate) async fn get(&self, path: &str, auth: Option<&str>) -> Reply {
        self.call(Method::GET, path, auth, Body::None).await
    }

    pub(crate) async fn post(&self, path: &str, auth: Option<&str>) -> Reply {
        self.call(Method::POST, path, auth, Body::None).await
    }

    pub(crate) async fn delete(&self, path: &str, auth: Option<&str>) -> Reply {
        self.call(Method::DELETE, path, auth, Body::None).await
    }

    pub(crate) async fn patch(&self, path: &str, auth: Option<&str>, patch: Value) -> Reply {
        self.call(Method::PATCH, path, auth, Body::Json(patch))
            .await
    }

    /// `POST /token` with a password grant; panics unless it succeeds.
    pub(crate) async fn login(&self, user: &str, password: &str) -> Tokens {
        self.login_with(user, password, "").await
    }

    pub(crate) async fn login_with(&self, user: &str, password: &str, extra: &str) -> Tokens {
        let password = password.replace(' ', "%20");
        let form = format!("grant_type=password&username={user}&password={password}{extra}");
        let reply = self
            .call(Method::POST, "/api/v3/token", None, Body::Form(&form))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        Tokens::from(reply)
    }

    pub(crate) async fn token_request(&self, form: &str) -> Reply {
        self.call(Method::POST, "/api/v3/token", None, Body::Form(form))
            .await
    }

    /// Creates a user (as `admin_token`); returns its UID.
    pub(crate) async fn create_user(&self, admin_token: &str, name: &str, extra: Value) -> String {
        let mut body =
            json!({ "userName": name, "credentials": { "password": format!("{name} password") } });
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        let reply = self
            .call(
                Method::POST,
                "/api/v3/users",
                Some(admin_token),
                Body::Json(body),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        reply.json["data"]["instanceUid"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Creates a key for `user_uid`; returns (key, id).
    pub(crate) async fn create_key(
        &self,
        auth: &str,
        user_uid: &str,
        query: &str,
    ) -> (String, u64) {
        let reply = self
            .post(
                &format!("/api/v3/users/{user_uid}/logins/apikey?{query}"),
                Some(auth),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json);
        let data = &reply.json["data"];
        (
            data["parameters"].as_str().unwrap().to_owned(),
            data["id"].as_u64().unwrap(),
        )
    }
}

/// Percent-encodes what an HTTP request target cannot carry raw (JSON quotes, spaces), as a client
/// library would; the server reads both forms the same.
pub(crate) fn uri_safe(path: &str) -> String {
    path.replace('"', "%22")
        .replace(' ', "%20")
        .replace('<', "%3C")
        .replace('>', "%3E")
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub(crate) struct Tokens {
    pub(crate) access: String,
    pub(crate) refresh: String,
}

impl From<Reply> for Tokens {
    fn from(reply: Reply) -> Self {
        assert_eq!(reply.json["token_type"], "bearer");
        assert_eq!(reply.json["expires_in"], 3600);
        assert_eq!(reply.headers["cache-control"], "no-store");
        Tokens {
            access: reply.json["access_token"].as_str().unwrap().to_owned(),
            refresh: reply.json["refresh_token"].as_str().unwrap().to_owned(),
        }
    }
}

pub(crate) fn replace(path: &str, value: Value) -> Value {
    json!([{ "op": "replace", "path": path, "value": value }])
}

/// The same key id with another secret and a matching checksum: passes every offline check.
pub(crate) fn with_other_secret(key: &str) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body_end = key.len() - 6;
    let mut body = key.as_bytes()[..body_end].to_vec();
    body[body_end - 1] = if body[body_end - 1] == b'a' {
        b'b'
    } else {
        b'a'
    };
    let mut crc = u64::from(crc32fast::hash(&body));
    let mut tail = [0u8; 6];
    for slot in tail.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    body.extend_from_slice(&tail);
    let forged = String::from_utf8(body).unwrap();
    let format = tower_api_key::KeyFormat::default();
    assert_eq!(
        format.parse(&forged).unwrap().id(),
        format.parse(key).unwrap().id(),
        "the forged key keeps the id"
    );
    forged
}

/// The key with its last checksum character changed.
pub(crate) fn with_bad_checksum(key: &str) -> String {
    let mut bytes = key.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
    String::from_utf8(bytes).unwrap()
}
