//! Users, companies and refresh tokens: what the management API keeps beside the keys.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Page, StoreError};
use crate::identity::Status;
use crate::key::SecretDigest;

/// A user's role: VSPC's `UserRole`, for the portal and company roles this crate models.
///
/// Portal roles act across every company; company roles act inside their own company only. The
/// read-only roles get read-only credentials whatever they ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum Role {
    /// Manages every user, company and key, administrators included.
    PortalAdministrator,
    /// Manages companies and the users of companies; not portal users other than themselves.
    PortalOperator,
    /// Reads everything a portal operator can manage; every credential is read-only.
    PortalReadonlyOperator,
    /// Manages the users of their own company, its administrators included.
    CompanyOwner,
    /// Manages the users of their own company below administrator.
    CompanyAdministrator,
    /// Manages the location users of their own company.
    CompanyLocationAdministrator,
    /// A user of a company: manages their own keys.
    CompanyLocationUser,
    /// Reads their own company's invoices; every credential is read-only.
    CompanyInvoiceAuditor,
    /// A subtenant of a company's backup resources: manages their own keys.
    CompanySubtenant,
}

impl Role {
    /// Every role, strongest first.
    pub const ALL: [Role; 9] = [
        Role::PortalAdministrator,
        Role::PortalOperator,
        Role::PortalReadonlyOperator,
        Role::CompanyOwner,
        Role::CompanyAdministrator,
        Role::CompanyLocationAdministrator,
        Role::CompanyLocationUser,
        Role::CompanyInvoiceAuditor,
        Role::CompanySubtenant,
    ];

    /// The role's name as stored and serialized (VSPC's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PortalAdministrator => "PortalAdministrator",
            Role::PortalOperator => "PortalOperator",
            Role::PortalReadonlyOperator => "PortalReadonlyOperator",
            Role::CompanyOwner => "CompanyOwner",
            Role::CompanyAdministrator => "CompanyAdministrator",
            Role::CompanyLocationAdministrator => "CompanyLocationAdministrator",
            Role::CompanyLocationUser => "CompanyLocationUser",
            Role::CompanyInvoiceAuditor => "CompanyInvoiceAuditor",
            Role::CompanySubtenant => "CompanySubtenant",
        }
    }

    /// Parses [`Role::as_str`]'s names, ASCII case-insensitive, and the names of earlier versions:
    /// `administrator` (a portal administrator) and `user` (a company location user).
    pub fn parse(name: &str) -> Option<Role> {
        if name.eq_ignore_ascii_case("administrator") {
            return Some(Role::PortalAdministrator);
        }
        if name.eq_ignore_ascii_case("user") {
            return Some(Role::CompanyLocationUser);
        }
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether the role acts across companies.
    pub fn is_portal(self) -> bool {
        matches!(
            self,
            Role::PortalAdministrator | Role::PortalOperator | Role::PortalReadonlyOperator
        )
    }

    /// Whether every credential of the role is read-only.
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            Role::PortalReadonlyOperator | Role::CompanyInvoiceAuditor
        )
    }
}

/// The personal details VSPC keeps of a user (`UserProfile`). Every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserProfile {
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Title: `Mr`, `Miss`, `Mrs`, `Ms` or `Unknown`.
    pub title: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Postal address.
    pub address: Option<String>,
    /// Telephone number.
    pub phone: Option<String>,
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
    /// Personal details.
    pub profile: UserProfile,
    /// Moves on every revocation of the user's tokens: access and refresh tokens carry the value
    /// they were issued under and stop working once it moved. Starts at 0.
    pub token_generation: u64,
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
            .field("profile", &self.profile)
            .field("token_generation", &self.token_generation)
            .finish()
    }
}

/// What VSPC keeps of a company beside its name and status: its `Organization` details and its
/// settings. Every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CompanyProfile {
    /// Short name.
    pub alias: Option<String>,
    /// Tax identification number.
    pub tax_id: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Telephone number.
    pub phone: Option<String>,
    /// System id of the country.
    pub country: Option<i32>,
    /// System id of the US state.
    pub state: Option<i32>,
    /// Country name.
    pub country_name: Option<String>,
    /// Region name.
    pub region_name: Option<String>,
    /// City.
    pub city: Option<String>,
    /// Street address.
    pub street: Option<String>,
    /// Location codes, most general first.
    pub location_admin0_code: Option<String>,
    /// Second-level location code.
    pub location_admin1_code: Option<String>,
    /// Third-level location code.
    pub location_admin2_code: Option<String>,
    /// Postal code.
    pub zip_code: Option<String>,
    /// Web site.
    pub website: Option<String>,
    /// Free-form notes.
    pub notes: Option<String>,
    /// Tenant id in Veeam's cloud products.
    pub veeam_tenant_id: Option<String>,
    /// Id of the company in third-party applications.
    pub company_id: Option<String>,
    /// UID of the company's subscription plan.
    pub subscription_plan_uid: Option<String>,
    /// Whether the company's users may use the REST API.
    pub is_rest_access_enabled: bool,
    /// Whether alarm detection is on for the company.
    pub is_alarm_detect_enabled: bool,
    /// Login name of the user created as the company's owner with it.
    pub owner_user_name: Option<String>,
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
    /// Organization details.
    pub profile: CompanyProfile,
    /// Moves on every revocation of the tokens of all the company's users (see
    /// [`User::token_generation`]). Starts at 0.
    pub token_generation: u64,
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
    /// The login this token descends from: every refresh hands the family on to the new token,
    /// and a replayed token revokes its whole family (RFC 9700 §4.14.2).
    pub family: String,
    /// The user's [`User::token_generation`] when the family began.
    pub user_generation: u64,
    /// The company's [`Company::token_generation`] when the family began.
    pub company_generation: u64,
}

/// What [`AccountStore::take_refresh_token`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshUse {
    /// The token had not been used: it is now marked used, and this is its one use.
    Fresh(RefreshToken),
    /// The token had been used before: someone replays it.
    Replayed(RefreshToken),
}

/// Users, companies and refresh tokens. Backends that implement [`KeyStore`](super::KeyStore) keep these
/// in the same database, so the status a user or company has here is the one their keys see.
///
/// Every change that can end a user's access (a revocation of tokens) is published on the
/// backend's change stream as [`ChangeEvent::User`](super::ChangeEvent) or
/// [`ChangeEvent::Company`](super::ChangeEvent), with the current status, so that every node
/// forgets what it cached of that user or company.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Adds a company. `Err` with [`StoreError::conflict`] when the UID or name is taken.
    async fn create_company(&self, company: Company) -> Result<(), StoreError>;

    /// The company with that UID: `Ok(None)` when there is none.
    async fn company(&self, uid: &str) -> Result<Option<Company>, StoreError>;

    /// One page of companies, ordered by name.
    async fn list_companies(&self, offset: u64, limit: u64) -> Result<Page<Company>, StoreError>;

    /// Replaces a company's profile: `Ok(None)` when there is no such company.
    async fn update_company_profile(
        &self,
        uid: &str,
        profile: CompanyProfile,
    ) -> Result<Option<Company>, StoreError>;

    /// Adds a user. `Err` with [`StoreError::conflict`] when the UID or user name is taken.
    async fn create_user(&self, user: User) -> Result<(), StoreError>;

    /// The user with that UID: `Ok(None)` when there is none.
    async fn user(&self, uid: &str) -> Result<Option<User>, StoreError>;

    /// The user with that login name (exact match): `Ok(None)` when there is none.
    async fn user_by_name(&self, user_name: &str) -> Result<Option<User>, StoreError>;

    /// One page of users, ordered by user name; with `company_id`, only that company's users.
    async fn list_users(
        &self,
        company_id: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<Page<User>, StoreError>;

    /// Replaces a user's profile: `Ok(None)` when there is no such user.
    async fn update_user_profile(
        &self,
        uid: &str,
        profile: UserProfile,
    ) -> Result<Option<User>, StoreError>;

    /// Stores a refresh token's digest.
    async fn put_refresh_token(&self, token: RefreshToken) -> Result<(), StoreError>;

    /// Marks the refresh token with that digest used, atomically, and says whether it was used
    /// before: `Ok(None)` when there is none. Used tokens are kept until they expire, so that a
    /// replay is recognised.
    async fn take_refresh_token(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<RefreshUse>, StoreError>;

    /// Removes every refresh token of a family; returns how many there were.
    async fn revoke_refresh_family(&self, family: &str) -> Result<u64, StoreError>;

    /// Ends every token of a user: moves [`User::token_generation`] on, removes the user's refresh
    /// tokens, and publishes the change. Returns the new generation; `Ok(None)` when there is no
    /// such user.
    async fn revoke_user_tokens(&self, user_uid: &str) -> Result<Option<u64>, StoreError>;

    /// Ends every token of every user of a company: moves [`Company::token_generation`] on and
    /// publishes the change. Returns the new generation; `Ok(None)` when there is no such company.
    async fn revoke_company_tokens(&self, company_id: &str) -> Result<Option<u64>, StoreError>;
}
