//! A tonic gRPC server behind the API-key layer, serving the standard health service
//! (`grpc.health.v1.Health`, from `tonic-health`, so no `.proto` compiler is needed).
//!
//! ```sh
//! cargo run --example tonic                 # 127.0.0.1:50051; or PORT=…, or `-- PORT`
//! grpcurl -plaintext -H "authorization: Bearer <the key it printed>" \
//!     127.0.0.1:50051 grpc.health.v1.Health/Check      # {"status": "SERVING"}
//! ```
//!
//! Refusals are answered the gRPC way ([`grpc_rejection`]): HTTP 200 with `grpc-status` and
//! `grpc-message` headers and no body, so gRPC clients see a status instead of a transport error.
//!
//! The scope: every call needs the application's own `grpc` scope (registered at start), so a key
//! issued for the REST API (`rest`) or the web UI (`ui`) does not open the gRPC services.
//!
//! Read-only keys: the layer lets them use `GET` and `HEAD` only, and every gRPC call is an HTTP
//! `POST`, so a read-only key is refused every call (`PERMISSION_DENIED`), even one that only
//! reads. A gRPC client that should only read gets a key that is not read-only, with a scope that
//! opens only the reading services (`ApiKeyLayer::scope_from` can pick the scope from the request
//! path, `/package.Service/Method`).

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Code, Status};
use tower_api_key::{
    ApiKeyLayer, IssueError, IssuedKey, KeyRing, MemoryStore, NewKey, Owner, Rejection,
    RejectionKind, Scope,
};

const DEFAULT_PORT: u16 = 50051;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = KeyRing::new(MemoryStore::new());
    let issued = issue_key(&keys, grpc_scope(), false).await?;
    let port = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
        .map_or(Ok(DEFAULT_PORT), |p| p.parse())?;
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("gRPC on {}", listener.local_addr()?);
    println!("key {} (shown once): {}", issued.id(), issued.key());
    serve(listener, keys).await?;
    Ok(())
}

/// The scope every gRPC call needs.
pub(crate) fn grpc_scope() -> Scope {
    // A valid name, registered once per process: the same scope on every call.
    Scope::register("grpc").expect("`grpc` is a valid scope name")
}

/// Issues one key with `scope` to a demonstration user.
pub(crate) async fn issue_key(
    keys: &KeyRing,
    scope: Scope,
    read_only: bool,
) -> Result<IssuedKey, IssueError> {
    let owner = Owner {
        user_uid: "955b0b80-03b2-49fd-bf38-14785ecff0a8".into(),
        user_name: "demo".into(),
        company_id: "3b139961-6b11-4fd8-9e87-c2be1b0e9ca8".into(),
        company_name: "Demo".into(),
    };
    keys.issue(
        NewKey::new(owner)
            .description("tonic example")
            .scope(scope)
            .read_only(read_only),
    )
    .await
}

/// The gRPC answer to a refusal: what `tonic::Status` turns into on the wire (HTTP 200,
/// `content-type: application/grpc`, `grpc-status`, `grpc-message`). The message is fixed per
/// kind: never the presented key, never the internal reason (which would tell which keys exist).
pub(crate) fn grpc_rejection(rejection: Rejection) -> http::Response<Body> {
    let status = match rejection.kind() {
        RejectionKind::MissingCredentials => {
            Status::unauthenticated("an API key is required: authorization: Bearer <key>")
        }
        RejectionKind::InvalidToken => Status::unauthenticated("the API key is invalid"),
        RejectionKind::InvalidRequest => {
            Status::invalid_argument("the authorization metadata is malformed")
        }
        RejectionKind::InsufficientScope => {
            Status::permission_denied("the API key may not call this method")
        }
        RejectionKind::Unavailable => Status::unavailable("authorization is unavailable"),
        // `RejectionKind` may grow; a kind this code does not know refuses as unauthenticated.
        _ => Status::new(Code::Unauthenticated, "the request is refused"),
    };
    status.into_http()
}

/// Serves gRPC on `listener`: the health service, every call behind the layer.
pub(crate) async fn serve(
    listener: TcpListener,
    keys: KeyRing,
) -> Result<(), tonic::transport::Error> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let auth = ApiKeyLayer::new(keys)
        .require_scope(grpc_scope())
        .on_rejection(grpc_rejection);
    Server::builder()
        .layer(auth)
        .add_service(health)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
}
