//! axum extractors for the identity the layer resolved.

use std::convert::Infallible;
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::identity::{Identity, UserLogin};
use crate::rejection::{Reason, Rejection};

/// Refusal of the extractors: the request carries no identity (the route is not behind
/// [`ApiKeyLayer`](crate::ApiKeyLayer)), or its key was deleted while the request was in flight.
/// Answers 401 like the layer, failing closed.
#[derive(Debug)]
pub struct MissingIdentity(Reason);

impl IntoResponse for MissingIdentity {
    fn into_response(self) -> Response {
        Rejection::new(self.0).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = MissingIdentity;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .ok_or(MissingIdentity(Reason::NoCredentials))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Identity {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Identity>().cloned())
    }
}

/// The full VSPC identity of the request, fetched from the index on extraction.
///
/// ```
/// use tower_api_key::Login;
///
/// async fn whoami(Login(login): Login) -> String {
///     format!("{} ({})", login.user_name, login.company_name)
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Login(pub Arc<UserLogin>);

impl Deref for Login {
    type Target = UserLogin;

    fn deref(&self) -> &UserLogin {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Login {
    type Rejection = MissingIdentity;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let identity = <Identity as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        identity
            .login()
            .map(Login)
            .ok_or(MissingIdentity(Reason::UnknownKey))
    }
}
