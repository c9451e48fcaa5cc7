//! Companies: `/organizations/companies`, `/organizations/companies/{companyUid}`.

use axum::extract::State;
use axum::response::Response;
use serde_json::Value;

use super::error::ApiError;
use super::extract::{JsonBody, PathParams, QueryPairs};
use super::model::{collection, data, CompanyBody};
use super::patch::{self, settable_status};
use super::query::paging;
use super::state::{AppState, Caller};
use super::users::valid_name;
use crate::identity::Status;
use crate::store::Company;

const COMPANY_UID: &str = "companyUid";

/// `POST /organizations/companies` (administrators): `{"name": "…", "status": "enabled"|"disabled"}`.
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
    let name = match body.get("name") {
        Some(Value::String(name)) if valid_name(name) => name.clone(),
        _ => {
            return Err(ApiError::bad_property(
                "name",
                "name is required: 1 to 128 characters without control characters or surrounding spaces.",
            ))
        }
    };
    let status = match body.get("status") {
        None | Some(Value::Null) => Status::Enabled,
        Some(v) => settable_status(v)?,
    };
    let company = Company {
        uid: uuid::Uuid::new_v4().to_string(),
        name,
        status,
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
    #[cfg(feature = "tracing")]
    tracing::info!(company_uid = %company.uid, by = %caller.user.uid, "company created");
    Ok(data(CompanyBody::from(&company)))
}

/// `GET /organizations/companies`: administrators see every company, others their own.
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: QueryPairs,
) -> Result<Response, ApiError> {
    let paging = paging(&query)?;
    let (companies, total) = if caller.is_admin() {
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

/// `GET /organizations/companies/{companyUid}`: administrators, or members of the company.
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    path: PathParams,
) -> Result<Response, ApiError> {
    let uid = path.get(COMPANY_UID)?;
    if !caller.is_admin() && caller.user.company_id != uid {
        return Err(ApiError::forbidden(
            "Only administrators and members of the company may read it.",
        ));
    }
    let company = state.company_or_404(uid, COMPANY_UID).await?;
    Ok(data(CompanyBody::from(&company)))
}

/// `PATCH /organizations/companies/{companyUid}` (administrators): JSON Patch `replace` on `/status`.
/// Every key of every user of the company follows at once (`disabledDueToCompany`).
pub(crate) async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    path: PathParams,
    JsonBody(document): JsonBody,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let uid = path.get(COMPANY_UID)?;
    let status = patch::status_only(document)?;
    let company = state.company_or_404(uid, COMPANY_UID).await?;
    let Some(status) = status else {
        return Ok(data(CompanyBody::from(&company)));
    };
    // Administrators cannot lock themselves out: nobody could undo it through the API.
    if uid == caller.user.company_id && !status.is_enabled() {
        return Err(ApiError::bad_property(
            "status",
            "Administrators cannot disable their own company.",
        ));
    }
    state.ring.set_company_status(uid, status).await?;
    #[cfg(feature = "tracing")]
    tracing::info!(company_uid = uid, status = status.as_str(), by = %caller.user.uid, "company status changed");
    let company = state.company_or_404(uid, COMPANY_UID).await?;
    Ok(data(CompanyBody::from(&company)))
}
