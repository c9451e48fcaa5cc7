//! API keys as VSPC user identities: `/users/{userUid}/logins…` and `/users/logins`.

use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::error::{no_store, ApiError, Errors};
use super::extract::{JsonBody, PathParams, QueryPairs};
use super::model::{collection, data, Collection, Data};
use super::patch::{self, settable_status, PatchOperation};
use super::query::{key_query, KeyListParams};
use super::rights::Act;
use super::state::{AppState, Caller, Shared};
use tower_api_key::store::{KeyRecord, KeyUpdate, ListQuery, Owner};
use tower_api_key::KeyId;
use tower_api_key::UserLogin;
use tower_api_key::{validate_description, IssueError, NewKey};
use tower_api_key::{Scope, Scopes};

const USER_UID: &str = "userUid";
const LOGIN_ID: &str = "userLoginId";

/// `POST /users/{userUid}/logins/apikey?description=…&scopes=…&isReadAccessOnly=…&expirationDate=…`
#[utoipa::path(
    post,
    path = "/users/{userUid}/logins/apikey",
    tag = "API keys",
    operation_id = "createApiKey",
    summary = "Create an API key",
    params(
        ("userUid" = String, Path, description = "The user's `instanceUid`."),
        ("description" = String, Query, description = "1 to 128 characters without <, >, =, control or format characters."),
        ("scopes" = Vec<String>, Query, explode, description = "Repeated (`scopes=rest&scopes=ui`), a JSON array or comma-separated: ui, rest, integration; none the caller lacks."),
        ("isReadAccessOnly" = Option<bool>, Query, description = "A key that may only read; always so for read-only roles."),
        ("expirationDate" = Option<String>, Query, format = DateTime, description = "RFC 3339, in the future and within the server's longest key lifetime; without it, a key lives that long (or until disabled or deleted when the server sets none)."),
    ),
    responses(
        (status = 200, description = "The key's identity with the key in `parameters`, the only time it is shown; never cached.", body = Data<UserLogin>),
        (status = 404, description = "No such user.", body = Errors<'static>),
        (status = 409, description = "The user holds the most keys allowed.", body = Errors<'static>),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    path: PathParams,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let user_uid = path.get(USER_UID)?;
    let user = caller
        .user_to(&state, user_uid, Act::Manage, USER_UID)
        .await?;

    // Every parameter is checked before anything is written.
    let description = query
        .single("description")?
        .ok_or_else(|| ApiError::bad_parameter("description", "description is required."))?;
    validate_description(description).map_err(|_| bad_description_parameter())?;
    let scopes = parse_scopes(&query)?;
    // A key of a read-only role reads only, whatever was asked.
    let read_only = query.flag("isReadAccessOnly", false)? || user.role.is_read_only();
    may_issue(&caller, scopes, read_only, "scopes")?;
    let expires = expiration(&state, &query)?;

    // One creation per user at a time on this node, so concurrent requests cannot both pass the
    // count.
    let _guard = state.key_creation_lock(&user.uid).lock().await;
    room_for_a_key(&state, &user.uid, "").await?;
    let company_name = state
        .accounts
        .company(&user.company_id)
        .await?
        .map(|c| c.name)
        .unwrap_or_default();
    let owner = Owner {
        user_uid: user.uid,
        user_name: user.user_name,
        company_id: user.company_id,
        company_name,
    };
    let mut new = NewKey::new(owner)
        .description(description)
        .scopes(scopes)
        .read_only(read_only);
    if let Some(at) = expires {
        new = new.expires(at);
    }
    let issued = state.ring.issue(new).await.map_err(|e| match e {
        IssueError::InvalidDescription => bad_description_parameter(),
        IssueError::Expired => past_expiration(),
        IssueError::Store(e) => ApiError::from(e),
        _ => ApiError::unavailable(),
    })?;
    tracing::info!(key_id = %issued.id(), user_uid, by = %caller.user.uid, "API key issued");
    // The only response that ever carries the key.
    let (login, _key) = issued.login_with_key();
    Ok(no_store(data(login)))
}

/// A key never opens more than the identity that creates it; a refusal names `parameter`.
fn may_issue(
    caller: &Caller,
    scopes: Scopes,
    read_only: bool,
    parameter: &'static str,
) -> Result<(), ApiError> {
    if !caller.identity.scopes().contains_all(scopes) {
        return Err(ApiError::forbidden_parameter(
            parameter,
            "A key cannot be given scopes the caller does not hold.",
        ));
    }
    caller.require_covers(scopes, read_only)
}

/// 409 when user `user_uid` holds the most keys allowed; `advice` ends the message. Call it with
/// the user's key-creation lock held, so the count and the insert after it agree.
async fn room_for_a_key(state: &Shared, user_uid: &str, advice: &str) -> Result<(), ApiError> {
    let held = state
        .ring
        .list(&ListQuery::default().of_user(user_uid).with_limit(1))
        .await?
        .total;
    if held >= state.max_keys_per_user {
        return Err(ApiError::conflict(
            USER_UID,
            format!(
                "The user already has {held} API keys, the most allowed ({}){advice}.",
                state.max_keys_per_user
            ),
        ));
    }
    Ok(())
}

const EXPIRATION: &str = "expirationDate";
/// The longest grace period a rotation may give the key it replaces.
const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

fn past_expiration() -> ApiError {
    ApiError::bad_parameter(EXPIRATION, "expirationDate must be in the future.")
}

/// The expiry of a new key: `expirationDate` (RFC 3339), within the server's longest lifetime,
/// which is also the expiry of a key created without one.
fn expiration(state: &Shared, query: &QueryPairs) -> Result<Option<OffsetDateTime>, ApiError> {
    let now = OffsetDateTime::now_utc();
    let latest = state.max_key_lifetime.map(|max| {
        now.saturating_add(time::Duration::try_from(max).unwrap_or(time::Duration::MAX))
    });
    let Some(raw) = query.single(EXPIRATION)? else {
        return Ok(latest);
    };
    let at = OffsetDateTime::parse(raw, &Rfc3339).map_err(|_| {
        ApiError::bad_parameter(
            EXPIRATION,
            "expirationDate must be an RFC 3339 date and time.",
        )
    })?;
    if at <= now {
        return Err(past_expiration());
    }
    if latest.is_some_and(|latest| at > latest) {
        return Err(ApiError::bad_parameter(
            EXPIRATION,
            "expirationDate is later than the longest key lifetime this server allows.",
        ));
    }
    Ok(Some(at))
}

/// `POST /users/{userUid}/logins/{userLoginId}/rotate?gracePeriod=…`: a new key with the old
/// one's settings, shown once; the old one works for `gracePeriod` seconds more (default 0: it is
/// deleted at once, as for a leaked key; at most 30 days), answering meanwhile with `Deprecation`
/// and `Sunset`.
#[utoipa::path(
    post,
    path = "/users/{userUid}/logins/{userLoginId}/rotate",
    tag = "API keys",
    operation_id = "rotateApiKey",
    summary = "Replace an API key by a new one with the same settings",
    params(
        ("userUid" = String, Path, description = "The user's `instanceUid`."),
        ("userLoginId" = u64, Path, description = "The key id."),
        ("gracePeriod" = Option<u64>, Query, minimum = 0, maximum = 2592000, description = "Seconds the old key keeps working, answering with `Deprecation` and `Sunset`; never past its own expiry. 0 (the default) deletes it at once."),
    ),
    responses(
        (status = 200, description = "The successor's identity with the key in `parameters`, the only time it is shown; never cached.", body = Data<UserLogin>),
        (status = 404, description = "No such user, or the key is not this user's.", body = Errors<'static>),
        (status = 409, description = "The key has expired or was already replaced, or a grace period would take the user past the most keys allowed.", body = Errors<'static>),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    path: PathParams,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let record = owned_key(&state, &caller, &path, Act::Manage).await?;
    let grace = match query.single("gracePeriod")? {
        None => Duration::ZERO,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
            .filter(|g| *g <= MAX_GRACE)
            .ok_or_else(|| {
                ApiError::bad_parameter(
                    "gracePeriod",
                    "gracePeriod must be a whole number of seconds from 0 to 2592000 (30 days).",
                )
            })?,
    };
    // The successor opens what the old key opens: the caller must be able to create it.
    may_issue(&caller, record.scopes, record.read_only, LOGIN_ID)?;
    let _guard = state.key_creation_lock(&record.owner.user_uid).lock().await;
    if !grace.is_zero() {
        // Both keys live through the grace period: the pair counts against the user's limit.
        room_for_a_key(
            &state,
            &record.owner.user_uid,
            ": rotate with gracePeriod=0 or delete a key first",
        )
        .await?;
    }
    let issued = state
        .ring
        .rotate(record.id, grace)
        .await
        .map_err(|e| match e {
            IssueError::Expired => {
                ApiError::conflict(LOGIN_ID, "The key has expired; create a new one.")
            }
            IssueError::Replaced => {
                ApiError::conflict(LOGIN_ID, "The key was already replaced by a rotation.")
            }
            IssueError::Store(e) => ApiError::from(e),
            _ => ApiError::unavailable(),
        })?
        .ok_or_else(|| ApiError::not_found(LOGIN_ID, "The user identity does not exist."))?;
    tracing::info!(
        key_id = %issued.id(),
        replaces = %record.id,
        grace_secs = grace.as_secs(),
        by = %caller.user.uid,
        "API key rotated"
    );
    let (login, _key) = issued.login_with_key();
    Ok(no_store(data(login)))
}

const DESCRIPTION_RULE: &str =
    "description must be 1 to 128 characters without <, >, =, control or format characters.";

fn bad_description_parameter() -> ApiError {
    ApiError::bad_parameter("description", DESCRIPTION_RULE)
}

fn bad_description_property() -> ApiError {
    ApiError::bad_property("description", DESCRIPTION_RULE)
}

/// The scopes of a creation request: repeated `scopes=a&scopes=b`, a JSON array `scopes=["a","b"]`,
/// or comma-separated `scopes=a,b`.
fn parse_scopes(query: &QueryPairs) -> Result<Scopes, ApiError> {
    let mut names = Vec::new();
    for value in query.all("scopes") {
        let value = value.trim();
        if value.starts_with('[') {
            let list: Vec<String> = serde_json::from_str(value).map_err(|_| {
                ApiError::bad_parameter("scopes", "scopes must be a JSON array of scope names.")
            })?;
            names.extend(list);
        } else {
            names.extend(value.split(',').map(str::to_owned));
        }
    }
    let mut scopes = Scopes::EMPTY;
    for name in &names {
        let scope = Scope::lookup(name.trim()).ok_or_else(|| {
            let shown: String = name.chars().take(64).collect();
            ApiError::bad_parameter("scopes", format!("Unknown scope `{shown}`."))
        })?;
        scopes.insert(scope);
    }
    if scopes.is_empty() {
        return Err(ApiError::bad_parameter(
            "scopes",
            "scopes is required: at least one of ui, rest, integration.",
        ));
    }
    Ok(scopes)
}

/// `GET /users/logins`: every key the caller may see (administrators: all; others: their own).
#[utoipa::path(
    get,
    path = "/users/logins",
    tag = "API keys",
    operation_id = "listApiKeys",
    summary = "Every API key the caller may see",
    params(KeyListParams),
    responses(
        (status = 200, description = "One page of keys; portal roles see all, others their own.", body = Collection<'static, UserLogin>),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_all(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let restrict = (!caller.reads_everyone()).then_some(caller.user.uid.as_str());
    list(&state, &query, restrict).await
}

/// `GET /users/{userUid}/logins`.
#[utoipa::path(
    get,
    path = "/users/{userUid}/logins",
    tag = "API keys",
    operation_id = "listUserApiKeys",
    summary = "A user's API keys",
    params(("userUid" = String, Path, description = "The user's `instanceUid`."), KeyListParams),
    responses(
        (status = 200, description = "One page of the user's keys.", body = Collection<'static, UserLogin>),
        (status = 404, description = "No such user.", body = Errors<'static>),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list_for_user(
    State(state): State<AppState>,
    caller: Caller,
    path: PathParams,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let user_uid = path.get(USER_UID)?;
    caller
        .user_to(&state, user_uid, Act::Read, USER_UID)
        .await?;
    list(&state, &query, Some(user_uid)).await
}

async fn list(
    state: &Shared,
    query: &QueryPairs,
    user_uid: Option<&str>,
) -> Result<Response, ApiError> {
    let mut list = key_query(query)?;
    if let Some(uid) = user_uid {
        // A filter on another user than the one allowed matches nothing.
        if list.user_uid.as_deref().is_some_and(|f| f != uid) {
            return Ok(collection::<UserLogin>(&[], 0, list.offset));
        }
        list.user_uid = Some(uid.to_owned());
    }
    let page = state.ring.list(&list).await?;
    let logins: Vec<UserLogin> = page.items.iter().map(KeyRecord::to_login).collect();
    Ok(collection(&logins, page.total, list.offset))
}

/// The key named by the path, if the caller may act for its user and it belongs to them.
async fn owned_key(
    state: &Shared,
    caller: &Caller,
    path: &PathParams,
    act: Act,
) -> Result<KeyRecord, ApiError> {
    let user_uid = path.get(USER_UID)?;
    caller.user_to(state, user_uid, act, USER_UID).await?;
    let raw = path.get(LOGIN_ID)?;
    let id: u64 = raw
        .parse()
        .map_err(|_| ApiError::bad_parameter(LOGIN_ID, "userLoginId must be a decimal number."))?;
    let not_found = || ApiError::not_found(LOGIN_ID, "The user identity does not exist.");
    let id = KeyId::new(id).ok_or_else(not_found)?;
    // Another user's key is "not found" here, not "forbidden": ids of others' keys stay unconfirmed.
    state
        .ring
        .get(id)
        .await?
        .filter(|record| record.owner.user_uid == user_uid)
        .ok_or_else(not_found)
}

/// `GET /users/{userUid}/logins/{userLoginId}`.
#[utoipa::path(
    get,
    path = "/users/{userUid}/logins/{userLoginId}",
    tag = "API keys",
    operation_id = "getApiKey",
    summary = "One API key",
    params(("userUid" = String, Path, description = "The user's `instanceUid`."), ("userLoginId" = u64, Path, description = "The key id.")),
    responses(
        (status = 200, description = "The key's identity; `parameters` is empty.", body = Data<UserLogin>),
        (status = 404, description = "No such user, or the key is not this user's.", body = Errors<'static>),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    path: PathParams,
) -> Result<Response, ApiError> {
    let record = owned_key(&state, &caller, &path, Act::Read).await?;
    Ok(data(record.to_login()))
}

/// `PATCH /users/{userUid}/logins/{userLoginId}`: JSON Patch `replace` on `/status`, `/description`.
#[utoipa::path(
    patch,
    path = "/users/{userUid}/logins/{userLoginId}",
    tag = "API keys",
    operation_id = "patchApiKey",
    summary = "Enable, disable or describe an API key",
    params(("userUid" = String, Path, description = "The user's `instanceUid`."), ("userLoginId" = u64, Path, description = "The key id.")),
    request_body(content = Vec<PatchOperation>, description = "JSON Patch `replace` on `/status` (`enabled`, `disabled`) and `/description`.", content_type = "application/json"),
    responses(
        (status = 200, description = "The key after the change.", body = Data<UserLogin>),
        (status = 404, description = "No such user, or the key is not this user's.", body = Errors<'static>),
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
    let record = owned_key(&state, &caller, &path, Act::Manage).await?;
    let mut update = KeyUpdate::default();
    for op in patch::parse(document, &["status", "description"])? {
        match op.property {
            "status" => {
                let status = settable_status(&op.value)?;
                if caller.user.uid == record.owner.user_uid {
                    // A key someone above its owner disabled stays so until they say otherwise.
                    if record.status_locked && status != record.status {
                        return Err(ApiError::forbidden_property(
                            "status",
                            "The key's status was set by an administrator; only an administrator can change it.",
                        ));
                    }
                } else {
                    update.status_locked = Some(!status.is_enabled());
                }
                update.status = Some(status);
            }
            _ => {
                let description = op
                    .value
                    .as_str()
                    .filter(|d| validate_description(d).is_ok());
                let Some(description) = description else {
                    return Err(bad_description_property());
                };
                update.description = Some(description.to_owned());
            }
        }
    }
    if update == KeyUpdate::default() {
        return Ok(data(record.to_login()));
    }
    let updated = state
        .ring
        .update(record.id, update)
        .await
        .map_err(|e| match e {
            IssueError::InvalidDescription => bad_description_property(),
            IssueError::Store(e) => ApiError::from(e),
            _ => ApiError::unavailable(),
        })?
        .ok_or_else(|| ApiError::not_found(LOGIN_ID, "The user identity does not exist."))?;
    tracing::info!(key_id = %updated.id, by = %caller.user.uid, "API key changed");
    Ok(data(updated.to_login()))
}

/// `DELETE /users/{userUid}/logins/{userLoginId}` → `{"data": true}`.
#[utoipa::path(
    delete,
    path = "/users/{userUid}/logins/{userLoginId}",
    tag = "API keys",
    operation_id = "deleteApiKey",
    summary = "Delete an API key",
    params(("userUid" = String, Path, description = "The user's `instanceUid`."), ("userLoginId" = u64, Path, description = "The key id.")),
    responses(
        (status = 200, description = "Deleted: refused from now on, on every node.", body = Data<bool>),
        (status = 404, description = "No such user, or the key is not this user's.", body = Errors<'static>),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    path: PathParams,
) -> Result<Response, ApiError> {
    let record = owned_key(&state, &caller, &path, Act::Manage).await?;
    if !state.ring.delete(record.id).await? {
        return Err(ApiError::not_found(
            LOGIN_ID,
            "The user identity does not exist.",
        ));
    }
    tracing::info!(key_id = %record.id, by = %caller.user.uid, "API key deleted");
    Ok(data(true))
}
