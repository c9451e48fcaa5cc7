//! Users: `/users`, `/users/{userUid}`, `/users/{userUid}/tokens`.

use axum::extract::State;
use axum::response::Response;
use serde_json::Value;
use time::OffsetDateTime;

use super::error::{ApiError, Errors};
use super::extract::{JsonBody, PathParams, QueryPairs};
use super::input::{self, Credentials, UserInputDoc};
use super::model::{collection, data, Collection, Data, UserBody};
use super::password::{self, HashError};
use super::patch::{self, settable_status, PatchOperation};
use super::query::{paging, PagingParams};
use super::rights::Act;
use super::state::{AppState, Caller, Shared};
use tower_api_key::store::{ChangeEvent, Role, User, UserProfile};
use tower_api_key::Status;

const USER_UID: &str = "userUid";

/// `POST /users`: VSPC's `UserInput`:
/// `{"organizationUid", "role", "profile": {…}, "credentials": {"userName", "password"}, "status"}`.
/// Earlier versions' `{"userName", "credentials": {"password"}, "role": "user"|"administrator"}`
/// still works. Role defaults to `CompanyLocationUser`, the company to the caller's, the status to
/// `Enabled`. Nobody creates a user stronger than themselves: a role at or above their own, in a
/// company out of their reach, or through a credential that opens less than the new user's login.
#[utoipa::path(
    post,
    path = "/users",
    tag = "Users",
    operation_id = "createUser",
    summary = "Create a user",
    request_body(content = UserInputDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The new user.", body = Data<UserBody<'static>>),
        (status = 409, description = "The user name is taken.", body = Errors<'static>),
        (status = 413, description = "The body is too large.", body = Errors<'static>),
        (status = 415, description = "The body is not JSON.", body = Errors<'static>),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let body = input::object(body)?;
    let credentials = input::credentials(
        &body,
        "credentials",
        input::string_property(&body, "userName")?,
    )?;
    if password::check_policy(&credentials.password).is_err() {
        return Err(ApiError::bad_property(
            "credentials.password",
            "The password must be 8 to 1024 characters.",
        ));
    }
    let role = match input::string_property(&body, "role")? {
        None => Role::CompanyLocationUser,
        Some(r) => Role::parse(r).ok_or_else(|| {
            ApiError::bad_property(
                "role",
                "role must be one of PortalAdministrator, PortalOperator, PortalReadonlyOperator, CompanyOwner, CompanyAdministrator, CompanyLocationAdministrator, CompanyLocationUser, CompanyInvoiceAuditor, CompanySubtenant.",
            )
        })?,
    };
    let profile = match input::object_property(&body, "profile")? {
        None => UserProfile::default(),
        Some(p) => input::user_profile(p)?,
    };
    let status = match body.get("status") {
        None | Some(Value::Null) => Status::Enabled,
        Some(v) => settable_status(v)?,
    };
    let company_id = match input::string_property(&body, "organizationUid")? {
        None => caller.user.company_id.clone(),
        Some(uid) => uid.to_owned(),
    };
    // Rights first: whether the company exists is nobody's business who may not create in it.
    caller.require_may_create(role, &company_id)?;
    if company_id != caller.user.company_id {
        state.accounts.company(&company_id).await?.ok_or_else(|| {
            ApiError::bad_property("organizationUid", "The company does not exist.")
        })?;
    }
    let user = new_user(&state, credentials, role, company_id, profile, status).await?;
    tracing::info!(user_uid = %user.uid, role = role.as_str(), by = %caller.user.uid, "user created");
    Ok(data(UserBody::from(&user)))
}

/// Hashes the password and adds the user; 409 when the name is taken.
pub(crate) async fn new_user(
    state: &Shared,
    credentials: Credentials,
    role: Role,
    company_id: String,
    profile: UserProfile,
    status: Status,
) -> Result<User, ApiError> {
    let Credentials {
        user_name,
        password: secret,
        name_property,
    } = credentials;
    let taken = || ApiError::conflict(name_property, "A user with this user name already exists.");
    if state.accounts.user_by_name(&user_name).await?.is_some() {
        return Err(taken());
    }
    let password_hash = password::hash(secret).await.map_err(|e| match e {
        HashError::Policy => ApiError::bad_property(
            "credentials.password",
            "The password must be 8 to 1024 characters.",
        ),
        _ => ApiError::unavailable(),
    })?;
    let user = User {
        uid: uuid::Uuid::new_v4().to_string(),
        user_name,
        password_hash,
        role,
        company_id,
        status,
        created: OffsetDateTime::now_utc(),
        profile,
        token_generation: 0,
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
    Ok(user)
}

/// `GET /users`: portal roles see every user, company owners and administrators their company's,
/// others themselves.
#[utoipa::path(
    get,
    path = "/users",
    tag = "Users",
    operation_id = "listUsers",
    summary = "The users the caller may see",
    params(PagingParams),
    responses(
        (status = 200, description = "One page of users.", body = Collection<'static, UserBody<'static>>),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let paging = paging(&query)?;
    let company = match caller.user.role {
        _ if caller.reads_everyone() => Some(None),
        Role::CompanyOwner | Role::CompanyAdministrator => {
            Some(Some(caller.user.company_id.as_str()))
        }
        _ => None,
    };
    let (users, total) = match company {
        Some(company) => {
            let page = state
                .accounts
                .list_users(company, paging.offset, paging.limit)
                .await?;
            (page.items, page.total)
        }
        None => {
            let own = if paging.offset == 0 {
                vec![caller.user.clone()]
            } else {
                Vec::new()
            };
            (own, 1)
        }
    };
    let users: Vec<UserBody<'_>> = users.iter().map(UserBody::from).collect();
    Ok(collection(&users, total, paging.offset))
}

/// `GET /users/me`: the caller's own user (VSPC's "Get Current User"), to learn one's UID.
#[utoipa::path(
    get,
    path = "/users/me",
    tag = "Users",
    operation_id = "getCurrentUser",
    summary = "The caller's own user",
    responses(
        (status = 200, description = "The caller's user; its `instanceUid` is the `userUid` of the other paths.", body = Data<UserBody<'static>>),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn me(caller: Caller) -> Response {
    data(UserBody::from(&caller.user))
}

/// `GET /users/{userUid}`.
#[utoipa::path(
    get,
    path = "/users/{userUid}",
    tag = "Users",
    operation_id = "getUser",
    summary = "One user",
    params(("userUid" = String, Path, description = "The user's `instanceUid`.")),
    responses(
        (status = 200, description = "The user.", body = Data<UserBody<'static>>),
        (status = 404, description = "No such user.", body = Errors<'static>),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    path: PathParams,
) -> Result<Response, ApiError> {
    let uid = path.get(USER_UID)?;
    let user = caller.user_to(&state, uid, Act::Read, USER_UID).await?;
    Ok(data(UserBody::from(&user)))
}

/// What `PATCH /users/{userUid}` may replace.
const PATCHABLE: &[&str] = &[
    "status",
    "profile/firstName",
    "profile/lastName",
    "profile/title",
    "profile/email",
    "profile/address",
    "profile/phone",
];

/// `PATCH /users/{userUid}`: JSON Patch `replace` on `/status` (by those who manage the user, not
/// the user themselves) and on `/profile/…`. Disabling a user disables every key of theirs at once
/// (`disabledDueToUser`) and ends their access and refresh tokens for good.
#[utoipa::path(
    patch,
    path = "/users/{userUid}",
    tag = "Users",
    operation_id = "patchUser",
    summary = "Enable or disable a user, or change their profile",
    params(("userUid" = String, Path, description = "The user's `instanceUid`.")),
    request_body(content = Vec<PatchOperation>, description = "JSON Patch `replace` on `/status` and `/profile/firstName`, `lastName`, `title`, `email`, `address`, `phone`.", content_type = "application/json"),
    responses(
        (status = 200, description = "The user after the change.", body = Data<UserBody<'static>>),
        (status = 404, description = "No such user.", body = Errors<'static>),
        (status = 413, description = "The body is too large.", body = Errors<'static>),
        (status = 415, description = "The body is not JSON.", body = Errors<'static>),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    path: PathParams,
    JsonBody(document): JsonBody,
) -> Result<Response, ApiError> {
    let uid = path.get(USER_UID)?;
    let operations = patch::parse(document, PATCHABLE)?;
    let user = caller.user_to(&state, uid, Act::Manage, USER_UID).await?;
    let mut status = None;
    let mut profile = serde_json::to_value(&user.profile).map_err(|_| ApiError::unavailable())?;
    for op in operations {
        match op.property.strip_prefix("profile/") {
            None => status = Some(settable_status(&op.value)?),
            Some(field) => profile[field] = op.value,
        }
    }
    let profile = input::user_profile(&input::object(profile)?)?;
    if let Some(status) = status {
        if uid == caller.user.uid {
            // A status is set from above; an administrator who disabled themselves might leave
            // nobody to undo it.
            return Err(if caller.user.role == Role::PortalAdministrator {
                ApiError::bad_property("status", "Administrators cannot disable their own user.")
            } else {
                ApiError::forbidden_property("status", "Users cannot change their own status.")
            });
        }
        set_status(&state, uid, status).await?;
        tracing::info!(user_uid = uid, status = status.as_str(), by = %caller.user.uid, "user status changed");
    }
    if profile != user.profile {
        state.accounts.update_user_profile(uid, profile).await?;
    }
    let user = state.user_or_404(uid, USER_UID).await?;
    Ok(data(UserBody::from(&user)))
}

/// Sets a user's status; disabling also ends their tokens, here before this returns and on other
/// nodes when they hear of it.
async fn set_status(state: &Shared, uid: &str, status: Status) -> Result<(), ApiError> {
    state.ring.set_user_status(uid, status).await?;
    if !status.is_enabled() {
        revoke(state, uid).await?;
    }
    Ok(())
}

/// Ends every access and refresh token of `uid`.
async fn revoke(state: &Shared, uid: &str) -> Result<(), ApiError> {
    state.accounts.revoke_user_tokens(uid).await?;
    // The store tells every node, this one too, but only after this returns: forget now.
    state.ring.apply(&ChangeEvent::User {
        user_uid: uid.to_owned(),
        status: Status::Unknown,
    });
    Ok(())
}

/// `DELETE /users/{userUid}/tokens`: ends every access and refresh token of the user, on every
/// node. API keys are not tokens: they stay.
#[utoipa::path(
    delete,
    path = "/users/{userUid}/tokens",
    tag = "Users",
    operation_id = "revokeUserTokens",
    summary = "End a user's access and refresh tokens",
    params(("userUid" = String, Path, description = "The user's `instanceUid`.")),
    responses(
        (status = 200, description = "Ended, on every node; API keys stay.", body = Data<bool>),
        (status = 404, description = "No such user.", body = Errors<'static>),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn revoke_tokens(
    State(state): State<AppState>,
    caller: Caller,
    path: PathParams,
) -> Result<Response, ApiError> {
    let uid = path.get(USER_UID)?;
    caller.user_to(&state, uid, Act::Manage, USER_UID).await?;
    revoke(&state, uid).await?;
    tracing::info!(user_uid = uid, by = %caller.user.uid, "tokens revoked");
    Ok(data(true))
}
