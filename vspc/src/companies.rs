//! Companies: `/organizations/companies`, `/organizations/companies/{companyUid}`.

use axum::extract::State;
use axum::response::Response;
use serde_json::{Map, Value};

use super::error::{ApiError, Errors};
use super::extract::{JsonBody, PathParams, QueryPairs};
use super::input::{self, CompanyInputDoc};
use super::model::{collection, data, Collection, CompanyBody, Data};
use super::password;
use super::patch::{self, settable_status, PatchOperation};
use super::query::{paging, PagingParams};
use super::rights::Act;
use super::state::{AppState, Caller};
use super::users;
use tower_api_key::store::{ChangeEvent, Company, Role, UserProfile};
use tower_api_key::Status;

const COMPANY_UID: &str = "companyUid";

/// `POST /organizations/companies` (portal administrators and operators): VSPC's `CompanyInput`,
/// `{"organizationInput": {"name", …}, "ownerCredentials": {"userName", "password"}, …}`, which
/// also creates the company's `CompanyOwner`; or earlier versions' `{"name", "status"}`, which
/// creates the company alone.
#[utoipa::path(
    post,
    path = "/organizations/companies",
    tag = "Companies",
    operation_id = "createCompany",
    summary = "Create a company and its owner",
    request_body(content = CompanyInputDoc, content_type = "application/json"),
    responses(
        (status = 200, description = "The new company.", body = Data<CompanyBody<'static>>),
        (status = 409, description = "The company name or the owner's user name is taken.", body = Errors<'static>),
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
    caller.require_company("", Act::Manage)?;
    let body = input::object(body)?;
    let organization = input::object_property(&body, "organizationInput")?;
    let (name, mut profile) = match organization {
        Some(organization) => (
            input::company_name(input::string_property(organization, "name")?)?,
            input::company_profile(organization, &body)?,
        ),
        None => (
            input::company_name(input::string_property(&body, "name")?)?,
            input::company_profile(&Map::new(), &body)?,
        ),
    };
    let owner = match input::object_property(&body, "ownerCredentials")? {
        Some(_) => {
            let owner = input::credentials(&body, "ownerCredentials", None)?;
            if password::check_policy(&owner.password).is_err() {
                return Err(ApiError::bad_property(
                    "ownerCredentials.password",
                    "The password must be 8 to 1024 characters.",
                ));
            }
            // The owner opens every scope a login does: so must whoever creates them.
            caller.require_may_create(Role::CompanyOwner, "")?;
            if state
                .accounts
                .user_by_name(&owner.user_name)
                .await?
                .is_some()
            {
                return Err(ApiError::conflict(
                    owner.name_property,
                    "A user with this user name already exists.",
                ));
            }
            Some(owner)
        }
        None if organization.is_some() => {
            return Err(ApiError::bad_property(
                "ownerCredentials",
                "ownerCredentials is required.",
            ))
        }
        None => None,
    };
    let status = match body.get("status") {
        None | Some(Value::Null) => Status::Enabled,
        Some(v) => settable_status(v)?,
    };
    profile.owner_user_name = owner.as_ref().map(|o| o.user_name.clone());
    let company = Company {
        uid: uuid::Uuid::new_v4().to_string(),
        name,
        status,
        profile,
        token_generation: 0,
    };
    state
        .accounts
        .create_company(company.clone())
        .await
        .map_err(|e| {
            if e.is_conflict() {
                ApiError::conflict("name", "A company with this name already exists.")
            } else {
                ApiError::from(e)
            }
        })?;
    if let Some(owner) = owner {
        users::new_user(
            &state,
            owner,
            Role::CompanyOwner,
            company.uid.clone(),
            UserProfile::default(),
            Status::Enabled,
        )
        .await?;
    }
    tracing::info!(company_uid = %company.uid, by = %caller.user.uid, "company created");
    Ok(data(CompanyBody::from(&company)))
}

/// `GET /organizations/companies`: portal roles see every company, others their own.
#[utoipa::path(
    get,
    path = "/organizations/companies",
    tag = "Companies",
    operation_id = "listCompanies",
    summary = "The companies the caller may see",
    params(PagingParams),
    responses(
        (status = 200, description = "One page of companies.", body = Collection<'static, CompanyBody<'static>>),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let paging = paging(&query)?;
    let (companies, total) = if caller.reads_everyone() {
        let page = state
            .accounts
            .list_companies(paging.offset, paging.limit)
            .await?;
        (page.items, page.total)
    } else {
        let own: Vec<Company> = state
            .accounts
            .company(&caller.user.company_id)
            .await?
            .into_iter()
            .collect();
        let total = own.len() as u64;
        let own = if paging.offset == 0 { own } else { Vec::new() };
        (own, total)
    };
    let companies: Vec<CompanyBody<'_>> = companies.iter().map(CompanyBody::from).collect();
    Ok(collection(&companies, total, paging.offset))
}

/// `GET /organizations/companies/{companyUid}`: portal roles, or users of the company.
#[utoipa::path(
    get,
    path = "/organizations/companies/{companyUid}",
    tag = "Companies",
    operation_id = "getCompany",
    summary = "One company",
    params(("companyUid" = String, Path, description = "The company's `instanceUid`.")),
    responses(
        (status = 200, description = "The company.", body = Data<CompanyBody<'static>>),
        (status = 404, description = "No such company.", body = Errors<'static>),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    path: PathParams,
) -> Result<Response, ApiError> {
    let uid = path.get(COMPANY_UID)?;
    caller.require_company(uid, Act::Read)?;
    let company = state.company_or_404(uid, COMPANY_UID).await?;
    Ok(data(CompanyBody::from(&company)))
}

/// `PATCH /organizations/companies/{companyUid}` (portal administrators and operators): JSON Patch
/// `replace` on `/status`. Disabling a company disables every key of its users at once
/// (`disabledDueToCompany`) and ends their access and refresh tokens for good.
#[utoipa::path(
    patch,
    path = "/organizations/companies/{companyUid}",
    tag = "Companies",
    operation_id = "patchCompany",
    summary = "Enable or disable a company",
    params(("companyUid" = String, Path, description = "The company's `instanceUid`.")),
    request_body(content = Vec<PatchOperation>, description = "JSON Patch `replace` on `/status` (`Active`, `Disabled`).", content_type = "application/json"),
    responses(
        (status = 200, description = "The company after the change.", body = Data<CompanyBody<'static>>),
        (status = 404, description = "No such company.", body = Errors<'static>),
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
    let uid = path.get(COMPANY_UID)?;
    caller.require_company(uid, Act::Manage)?;
    let status = patch::status_only(document)?;
    let company = state.company_or_404(uid, COMPANY_UID).await?;
    let Some(status) = status else {
        return Ok(data(CompanyBody::from(&company)));
    };
    // Nobody locks themselves out: nobody else might be able to undo it.
    if uid == caller.user.company_id && !status.is_enabled() {
        return Err(ApiError::bad_property(
            "status",
            "Administrators cannot disable their own company.",
        ));
    }
    state.ring.set_company_status(uid, status).await?;
    if !status.is_enabled() {
        state.accounts.revoke_company_tokens(uid).await?;
        state.ring.apply(&ChangeEvent::Company {
            company_id: uid.to_owned(),
            status: Status::Unknown,
        });
    }
    tracing::info!(company_uid = uid, status = status.as_str(), by = %caller.user.uid, "company status changed");
    let company = state.company_or_404(uid, COMPANY_UID).await?;
    Ok(data(CompanyBody::from(&company)))
}
