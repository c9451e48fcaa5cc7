//! Users, companies and refresh tokens: what the management API keeps beside the keys.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Page, StoreError};
use crate::identity::Status;
use crate::key::SecretDigest;

/// What a user may do in the management API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum Role {
    /// Manages every user, company and key.
    Administrator,
    /// Manages their own keys.
    User,
}

impl Role {
    /// The role's name as stored and serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::User => "user",
        }
    }

    /// Parses [`Role::as_str`]'s names (ASCII case-insensitive).
    pub fn parse(name: &str) -> Option<Role> {
        [Role::Administrator, Role::User]
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(name))
    }
}

/// A user account.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// User UID.
    pub uid: String,
    /// Login name, unique.
    pub user_name: String,
    /// Argon2id hash of the password in PHC string form; never the password.
    pub password_hash: String,
    /// Role.
    pub role: Role,
    /// UID of the user's company.
    pub company_id: String,
    /// The user's own status (keys see it through [`KeyRecord::user_status`](super::KeyRecord)).
    pub status: Status,
    /// When the user was created.
    pub created: OffsetDateTime,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("uid", &self.uid)
            .field("user_name", &self.user_name)
            .field("password_hash", &"<redacted>")
            .field("role", &self.role)
            .field("company_id", &self.company_id)
            .field("status", &self.status)
            .field("created", &self.created)
            .finish()
    }
}

/// A company.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Company {
    /// Company UID.
    pub uid: String,
    /// Name, unique.
    pub name: String,
    /// Status (keys of its users see it through [`KeyRecord::company_status`](super::KeyRecord)).
    pub status: Status,
}

/// A refresh token as stored: its digest, never the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshToken {
    /// `SHA-256` of the token.
    pub digest: SecretDigest,
    /// The user it was issued to.
    pub user_uid: String,
    /// Whether access tokens minted from it are read-only.
    pub read_only: bool,
    /// When it stops being accepted.
    pub expires: OffsetDateTime,
}

/// Users, companies and refresh tokens. Backends that implement [`KeyStore`](super::KeyStore) keep these
/// in the same database, so the status a user or company has here is the one their keys see.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Adds a company. `Err` with [`StoreError::conflict`] when the UID or name is taken.
    async fn create_company(&self, company: Company) -> Result<(), StoreError>;

    /// The company with that UID: `Ok(None)` when there is none.
    async fn company(&self, uid: &str) -> Result<Option<Company>, StoreError>;

    /// One page of companies, ordered by name.
    async fn list_companies(&self, offset: u64, limit: u64) -> Result<Page<Company>, StoreError>;

    /// Adds a user. `Err` with [`StoreError::conflict`] when the UID or user name is taken.
    async fn create_user(&self, user: User) -> Result<(), StoreError>;

    /// The user with that UID: `Ok(None)` when there is none.
    async fn user(&self, uid: &str) -> Result<Option<User>, StoreError>;

    /// The user with that login name (exact match): `Ok(None)` when there is none.
    async fn user_by_name(&self, user_name: &str) -> Result<Option<User>, StoreError>;

    /// One page of users, ordered by user name.
    async fn list_users(&self, offset: u64, limit: u64) -> Result<Page<User>, StoreError>;

    /// Stores a refresh token's digest.
    async fn put_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError>;

    /// Removes and returns the refresh token with that digest, so it can be used once:
    /// `Ok(None)` when there is none.
    async fn take_refresh_token(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<RefreshToken>, StoreError>;

    /// Removes every refresh token of a user; returns how many there were.
    async fn revoke_refresh_tokens(&self, user_uid: &str) -> Result<u64, StoreError>;
}
