//! What every handler shares, and who is calling.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use super::error::{invalid_identity, ApiError};
use crate::identity::{Identity, Status};
use crate::rejection::Reason;
use crate::ring::KeyRing;
use crate::store::{AccountStore, Company, Role, User};
use crate::token::JwtIssuer;

/// The state behind every handler of the router.
pub(crate) struct Shared {
    pub(crate) ring: KeyRing,
    pub(crate) accounts: Arc<dyn AccountStore>,
    pub(crate) issuer: JwtIssuer,
    pub(crate) access_ttl: Duration,
    pub(crate) refresh_ttl: Duration,
}

pub(crate) type AppState = Arc<Shared>;

impl Shared {
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
    pub(crate) fn is_admin(&self) -> bool {
        self.user.role == Role::Administrator
    }

    /// Whether the caller may act for user `uid`: themselves, or anyone when administrator.
    pub(crate) fn may_act_for(&self, uid: &str) -> bool {
        self.is_admin() || self.user.uid == uid
    }

    /// Administrators only.
    pub(crate) fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "Only administrators may perform this request.",
            ))
        }
    }

    /// The caller themselves or an administrator; others get a 403 whether `uid` exists or not, so
    /// the answer tells nothing about other users.
    pub(crate) fn require_self_or_admin(&self, uid: &str) -> Result<(), ApiError> {
        if self.may_act_for(uid) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "Only the user themselves or an administrator may perform this request.",
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
