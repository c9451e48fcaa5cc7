//! API-key authorization for any [tower](https://docs.rs/tower) service.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
mod extract;
mod future;
mod header;
mod identity;
mod index;
pub mod key;
mod layer;
mod policy;
mod rejection;
mod ring;
mod scope;
mod service;
pub mod store;
pub mod token;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::{Login, MissingIdentity};
pub use future::ResponseFuture;
pub use identity::{Identity, IdentityKind, Status, UserLogin, API_KEY_PROVIDER};
pub use key::{KeyFormat, KeyId};
pub use layer::ApiKeyLayer;
pub use rejection::{DefaultRejection, ErrorBody, OnRejection, Reason, Rejection, RejectionKind};
pub use ring::{
    validate_description, IssueError, IssuedKey, KeyRing, KeyRingBuilder, NewKey, VerifyError,
};
pub use scope::{Scope, ScopeError, Scopes};
pub use service::ApiKey;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use store::SqliteStore;
pub use store::{KeyStore, MemoryStore, Owner};
pub use token::{TokenError, TokenValidator};
