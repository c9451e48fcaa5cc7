//! What every handler shares, and who is calling.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use super::error::{invalid_identity, ApiError};
use super::rights::{self, Act};
use tower_api_key::store::{AccountStore, Company, Role, User};
use tower_api_key::token::JwtIssuer;
use tower_api_key::KeyRing;
use tower_api_key::Reason;
use tower_api_key::{Identity, Status};
use tower_api_key::{Scope, Scopes};

/// The state behind every handler of the router.
pub(crate) struct Shared {
    pub(crate) ring: KeyRing,
    pub(crate) accounts: Arc<dyn AccountStore>,
    pub(crate) issuer: JwtIssuer,
    pub(crate) access_ttl: Duration,
    pub(crate) refresh_ttl: Duration,
    pub(crate) max_keys_per_user: u64,
    pub(crate) max_key_lifetime: Option<Duration>,
    /// Key creations of one user run one at a time, so a count and the insert after it agree.
    /// Striped: bounded memory whatever the number of users.
    pub(crate) key_locks: [tokio::sync::Mutex<()>; KEY_LOCK_STRIPES],
    /// Failed password logins.
    pub(crate) throttle: super::throttle::Throttle,
    /// The OpenAPI document `GET /api/v3/openapi.json` answers, set once the routes are known.
    pub(crate) openapi: super::openapi::Document,
}

const KEY_LOCK_STRIPES: usize = 64;

pub(crate) type AppState = Arc<Shared>;

/// The scopes of every access token: what a VSPC password login grants.
pub(crate) const LOGIN_SCOPES: [Scope; 3] = [Scope::UI, Scope::REST, Scope::INTEGRATION];

impl Shared {
    /// The lock that key creations for `user_uid` take.
    pub(crate) fn key_creation_lock(&self, user_uid: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(user_uid);
        // The remainder is below KEY_LOCK_STRIPES, so it fits any usize.
        &self.key_locks[(hash % KEY_LOCK_STRIPES as u64) as usize]
    }

    /// The user with `uid`, or a 404 naming `parameter`.
    pub(crate) async fn user_or_404(
        &self,
        uid: &str,
        parameter: &'static str,
    ) -> Result<User, ApiError> {
        self.accounts
            .user(uid)
            .await?
            .ok_or_else(|| ApiError::not_found(parameter, "The user does not exist."))
    }

    /// The company with `uid`, or a 404 naming `parameter`.
    pub(crate) async fn company_or_404(
        &self,
        uid: &str,
        parameter: &'static str,
    ) -> Result<Company, ApiError> {
        self.accounts
            .company(uid)
            .await?
            .ok_or_else(|| ApiError::not_found(parameter, "The company does not exist."))
    }
}

/// The authenticated caller: the identity the layer admitted and the user account behind it.
///
/// The layer has already checked the credential, its scope and read-only against the method; this
/// adds what only the account store knows: the role, and whether the user and the company are still
/// enabled (an access token stays valid for its lifetime, a disabled user must not keep using it).
#[derive(Debug)]
pub(crate) struct Caller {
    pub(crate) user: User,
    pub(crate) identity: Identity,
}

impl Caller {
    /// Whether the caller reads every user and key: the portal roles.
    pub(crate) fn reads_everyone(&self) -> bool {
        self.user.role.is_portal()
    }

    /// The user `uid`, if the caller may `act` on them. Users out of reach get a 403 whether they
    /// exist or not, so the answer tells nothing about them; only a portal administrator, who
    /// reaches everyone, learns that a user does not exist (404 naming `parameter`).
    pub(crate) async fn user_to(
        &self,
        state: &Shared,
        uid: &str,
        act: Act,
        parameter: &'static str,
    ) -> Result<User, ApiError> {
        if uid == self.user.uid {
            return Ok(self.user.clone());
        }
        let target = state.accounts.user(uid).await?;
        match target {
            Some(target) if rights::on_user(&self.user, &target, act) => Ok(target),
            None if self.user.role == Role::PortalAdministrator => {
                Err(ApiError::not_found(parameter, "The user does not exist."))
            }
            _ => Err(ApiError::forbidden(
                "The caller's role does not allow this request for this user.",
            )),
        }
    }

    /// A 403 unless the caller may `act` on the company `uid`.
    pub(crate) fn require_company(&self, uid: &str, act: Act) -> Result<(), ApiError> {
        if rights::on_company(&self.user, uid, act) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "The caller's role does not allow this request for this company.",
            ))
        }
    }

    /// A 403 unless the caller may create a user with `role` in `company_id`, and the credential
    /// the request came with opens at least what a login of that user will: nobody makes a
    /// principal stronger than themselves.
    pub(crate) fn require_may_create(&self, role: Role, company_id: &str) -> Result<(), ApiError> {
        if !rights::may_assign(&self.user, role, company_id) {
            return Err(ApiError::forbidden_property(
                "role",
                "The caller's role may not create a user with this role in this company.",
            ));
        }
        self.require_covers(Scopes::from(LOGIN_SCOPES), role.is_read_only())
    }

    /// A 403 unless the caller's credential opens every scope in `granted`, and is not read-only
    /// unless `granted_read_only`.
    pub(crate) fn require_covers(
        &self,
        granted: Scopes,
        granted_read_only: bool,
    ) -> Result<(), ApiError> {
        if rights::credential_covers(
            self.identity.scopes(),
            self.identity.is_read_only(),
            granted,
            granted_read_only,
        ) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "The caller's credential opens less than the one this request would create.",
            ))
        }
    }
}

/// Why a [`Caller`] could not be extracted.
pub(crate) enum CallerRejection {
    /// The credential's user or company is gone or disabled: the layer's 401.
    Invalid(Reason),
    /// The store failed.
    Api(ApiError),
}

impl IntoResponse for CallerRejection {
    fn into_response(self) -> Response {
        match self {
            Self::Invalid(reason) => invalid_identity(reason),
            Self::Api(error) => error.into_response(),
        }
    }
}

impl From<ApiError> for CallerRejection {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = CallerRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Every route that extracts a caller sits behind the layer; missing means misconfigured,
        // and that fails closed.
        let identity = parts
            .extensions
            .get::<Identity>()
            .cloned()
            .ok_or(CallerRejection::Invalid(Reason::NoCredentials))?;
        // `None`: the key was deleted while this request was in flight.
        let login = identity
            .login()
            .ok_or(CallerRejection::Invalid(Reason::UnknownKey))?;
        let user = state
            .accounts
            .user(&login.user_uid)
            .await
            .map_err(ApiError::from)?
            .ok_or(CallerRejection::Invalid(Reason::InvalidToken))?;
        if !user.status.is_enabled() {
            return Err(CallerRejection::Invalid(Reason::Disabled(
                Status::DisabledDueToUser,
            )));
        }
        let company = state
            .accounts
            .company(&user.company_id)
            .await
            .map_err(ApiError::from)?;
        if company.is_some_and(|c| !c.status.is_enabled()) {
            return Err(CallerRejection::Invalid(Reason::Disabled(
                Status::DisabledDueToCompany,
            )));
        }
        Ok(Caller { user, identity })
    }
}
