//! A plain hyper 1 server behind the API-key layer: `ApiKey` in front of a `service_fn` whose
//! handler reads the [`Identity`] the layer put into the request extensions.
//!
//! ```sh
//! cargo run --example hyper                 # 127.0.0.1:3001; or PORT=4000, or `-- 4000`
//! curl -s http://127.0.0.1:3001/ -H "Authorization: Bearer <the key it printed>"
//! # hello, key 1234… (scopes: rest, read-only: false)
//! curl -si http://127.0.0.1:3001/           # 401 with WWW-Authenticate: Bearer realm="api"
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_api_key::{
    ApiKeyLayer, Identity, IssueError, IssuedKey, KeyRing, MemoryStore, NewKey, Owner, Scope,
};

const DEFAULT_PORT: u16 = 3001;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = KeyRing::new(MemoryStore::new());
    let issued = issue_key(&keys).await?;
    let port = port_from(std::env::args().nth(1), std::env::var("PORT").ok())?;
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("listening on http://{}", listener.local_addr()?);
    println!("key {} (shown once): {}", issued.id(), issued.key());
    serve(listener, keys).await?;
    Ok(())
}

/// The port from the first argument, else `PORT`, else 3001.
fn port_from(arg: Option<String>, env: Option<String>) -> Result<u16, std::num::ParseIntError> {
    arg.or(env).map_or(Ok(DEFAULT_PORT), |p| p.parse())
}

/// Issues one key with the `rest` scope to a demonstration user.
pub(crate) async fn issue_key(keys: &KeyRing) -> Result<IssuedKey, IssueError> {
    let owner = Owner {
        user_uid: "955b0b80-03b2-49fd-bf38-14785ecff0a8".into(),
        user_name: "demo".into(),
        company_id: "3b139961-6b11-4fd8-9e87-c2be1b0e9ca8".into(),
        company_name: "Demo".into(),
    };
    keys.issue(
        NewKey::new(owner)
            .description("hyper example")
            .scope(Scope::REST),
    )
    .await
}

/// Serves HTTP/1 on `listener`, one task per connection, every request behind the layer.
pub(crate) async fn serve(listener: TcpListener, keys: KeyRing) -> std::io::Result<()> {
    let auth = ApiKeyLayer::new(keys).require_scope(Scope::REST);
    loop {
        let (stream, _) = listener.accept().await?;
        let service = ServiceBuilder::new().layer(auth.clone()).service_fn(hello);
        tokio::spawn(async move {
            // A client that hangs up mid-request ends its connection, not the server.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .await;
        });
    }
}

/// Only requests the layer let through get here, each with its `Identity`.
async fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = match request.extensions().get::<Identity>() {
        Some(identity) => format!(
            "hello, key {} (scopes: {}, read-only: {})\n",
            identity
                .key_id()
                .map_or_else(|| "from a token".to_owned(), |id| id.to_string()),
            identity.scopes(),
            identity.is_read_only(),
        ),
        // Unreachable behind the layer; said plainly should the service be mounted without it.
        None => "no identity\n".to_owned(),
    };
    Ok(Response::new(Full::new(Bytes::from(text))))
}
