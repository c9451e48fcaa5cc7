//! Users: `/users`, `/users/{userUid}`, `/users/{userUid}/tokens`.

use axum::extract::State;
use axum::response::Response;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::error::ApiError;
use super::extract::{JsonBody, PathParams, QueryPairs};
use super::model::{collection, data, UserBody};
use super::password::{self, HashError};
use super::patch::{self, settable_status};
use super::query::paging;
use super::state::{AppState, Caller};
use crate::identity::Status;
use crate::store::{Role, User};

const USER_UID: &str = "userUid";
const MAX_NAME_CHARS: usize = 128;

/// Checks a user or company name: 1 to 128 characters, no control characters, no surrounding
/// spaces.
pub(crate) fn valid_name(name: &str) -> bool {
    let chars = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&chars)
        && !name.chars().any(char::is_control)
        && name.trim() == name
}

fn string_property<'a>(
    object: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_property(
            name,
            "The property must be a string.",
        )),
    }
}

/// `POST /users` (administrators):
/// `{"userName": "…", "credentials": {"password": "…"}, "role": "user"|"administrator",
/// "organizationUid": "…", "status": "enabled"|"disabled"}`. Role defaults to `user`, the
/// company to the caller's, the status to `enabled`.
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let Value::Object(body) = body else {
        return Err(ApiError::bad_body(
            "The request body must be a JSON object.",
        ));
    };
    let user_name = string_property(&body, "userName")?
        .ok_or_else(|| ApiError::bad_property("userName", "userName is required."))?;
    if !valid_name(user_name) {
        return Err(ApiError::bad_property(
            "userName",
            "userName must be 1 to 128 characters without control characters or surrounding spaces.",
        ));
    }
    let secret = match body.get("credentials") {
        Some(Value::Object(credentials)) => match credentials.get("password") {
            Some(Value::String(p)) => Zeroizing::new(p.clone()),
            _ => {
                return Err(ApiError::bad_property(
                    "credentials.password",
                    "credentials.password is required.",
                ))
            }
        },
        _ => {
            return Err(ApiError::bad_property(
                "credentials.password",
                "credentials.password is required.",
            ))
        }
    };
    if password::check_policy(&secret).is_err() {
        return Err(ApiError::bad_property(
            "credentials.password",
            "The password must be 8 to 1024 characters.",
        ));
    }
    let role = match string_property(&body, "role")? {
        None => Role::User,
        Some(r) => Role::parse(r)
            .ok_or_else(|| ApiError::bad_property("role", "role must be user or administrator."))?,
    };
    let status = match body.get("status") {
        None | Some(Value::Null) => Status::Enabled,
        Some(v) => settable_status(v)?,
    };
    let company_id = match string_property(&body, "organizationUid")? {
        None => caller.user.company_id.clone(),
        Some(uid) => {
            state.accounts.company(uid).await?.ok_or_else(|| {
                ApiError::bad_property("organizationUid", "The company does not exist.")
            })?;
            uid.to_owned()
        }
    };
    let taken = || ApiError::conflict("userName", "A user with this user name already exists.");
    if state.accounts.user_by_name(user_name).await?.is_some() {
        return Err(taken());
    }
    let password_hash = password::hash(secret).await.map_err(|e| match e {
        HashError::Policy => ApiError::bad_property(
            "credentials.password",
            "The password must be 8 to 1024 characters.",
        ),
        HashError::Internal => ApiError::unavailable(),
    })?;
    let user = User {
        uid: uuid::Uuid::new_v4().to_string(),
        user_name: user_name.to_owned(),
        password_hash,
        role,
        company_id,
        status,
        created: OffsetDateTime::now_utc(),
    };
    state
        .accounts
        .create_user(user.clone())
        .await
        .map_err(|e| {
            if e.is_conflict() {
                taken()
            } else {
                ApiError::from(e)
            }
        })?;
    #[cfg(feature = "tracing")]
    tracing::info!(user_uid = %user.uid, role = role.as_str(), by = %caller.user.uid, "user created");
    Ok(data(UserBody::from(&user)))
}

/// `GET /users`: administrators see every user, others themselves.
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let paging = paging(&query)?;
    let (users, total) = if caller.is_admin() {
        let page = state
            .accounts
            .list_users(paging.offset, paging.limit)
            .await?;
        (page.items, page.total)
    } else {
        let own = if paging.offset == 0 {
            vec![caller.user.clone()]
        } else {
            Vec::new()
        };
        (own, 1)
    };
    let users: Vec<UserBody<'_>> = users.iter().map(UserBody::from).collect();
    Ok(collection(&users, total, paging.offset))
}

/// `GET /users/me`: the caller's own user (VSPC's "Get Current User"), to learn one's UID.
pub(crate) async fn me(caller: Caller) -> Response {
    data(UserBody::from(&caller.user))
}

/// `GET /users/{userUid}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    path: PathParams,
) -> Result<Response, ApiError> {
    let uid = path.get(USER_UID)?;
    caller.require_self_or_admin(uid)?;
    let user = state.user_or_404(uid, USER_UID).await?;
    Ok(data(UserBody::from(&user)))
}

/// `PATCH /users/{userUid}` (administrators): JSON Patch `replace` on `/status`. Every key of the
/// user follows at once (`disabledDueToUser`), and their access tokens stop working.
pub(crate) async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    path: PathParams,
    JsonBody(document): JsonBody,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let uid = path.get(USER_UID)?;
    let status = patch::status_only(document)?;
    let user = state.user_or_404(uid, USER_UID).await?;
    let Some(status) = status else {
        return Ok(data(UserBody::from(&user)));
    };
    // Administrators cannot lock themselves out: nobody could undo it through the API.
    if uid == caller.user.uid && !status.is_enabled() {
        return Err(ApiError::bad_property(
            "status",
            "Administrators cannot disable their own user.",
        ));
    }
    state.ring.set_user_status(uid, status).await?;
    #[cfg(feature = "tracing")]
    tracing::info!(user_uid = uid, status = status.as_str(), by = %caller.user.uid, "user status changed");
    let user = state.user_or_404(uid, USER_UID).await?;
    Ok(data(UserBody::from(&user)))
}

/// `DELETE /users/{userUid}/tokens`: revokes every refresh token of the user. Access tokens already
/// issued live until they expire (at most the access-token lifetime).
pub(crate) async fn revoke_tokens(
    State(state): State<AppState>,
    caller: Caller,
    path: PathParams,
) -> Result<Response, ApiError> {
    let uid = path.get(USER_UID)?;
    caller.require_self_or_admin(uid)?;
    state.user_or_404(uid, USER_UID).await?;
    let revoked = state.accounts.revoke_refresh_tokens(uid).await?;
    #[cfg(feature = "tracing")]
    tracing::info!(user_uid = uid, revoked, by = %caller.user.uid, "refresh tokens revoked");
    #[cfg(not(feature = "tracing"))]
    let _ = revoked;
    Ok(data(true))
}
