//! The shapes of VSPC's resources and envelopes, serialized straight from structs so properties keep
//! VSPC's order.
//!
//! The answer types are only serialized; `#[serde(deny_unknown_fields)]` on them closes their
//! OpenAPI schemas (`additionalProperties: false`): an answer has these properties and no others.

use axum::response::Response;
use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::json_response;
use tower_api_key::store::{Company, CompanyProfile, Role, User};
use tower_api_key::Status;

/// `{"data": …}`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Data<T> {
    data: T,
}

/// A 200 answer `{"data": value}`.
pub(crate) fn data<T: Serialize>(value: T) -> Response {
    json_response(StatusCode::OK, &Data { data: value })
}

/// `{"data":[…],"meta":{"pagingInfo":{"total","count","offset"}}}`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Collection<'a, T> {
    data: &'a [T],
    meta: Meta,
}

/// What a collection says about itself.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
struct Meta {
    paging_info: PagingInfo,
}

/// Where the page sits in the whole collection.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PagingInfo {
    /// How many items the whole collection holds.
    total: u64,
    /// How many items this page holds.
    count: usize,
    /// The `offset` the page starts at.
    offset: u64,
}

/// A 200 answer with one page of a collection.
pub(crate) fn collection<T: Serialize>(items: &[T], total: u64, offset: u64) -> Response {
    json_response(
        StatusCode::OK,
        &Collection {
            data: items,
            meta: Meta {
                paging_info: PagingInfo {
                    total,
                    count: items.len(),
                    offset,
                },
            },
        },
    )
}

/// VSPC's `UserStatus`.
#[derive(Serialize, ToSchema)]
enum UserStatus {
    Enabled,
    Disabled,
}

impl From<Status> for UserStatus {
    fn from(status: Status) -> Self {
        if status.is_enabled() {
            Self::Enabled
        } else {
            Self::Disabled
        }
    }
}

/// VSPC's `CompanyStatus`.
#[derive(Serialize, ToSchema)]
enum CompanyStatus {
    Active,
    Disabled,
}

impl From<Status> for CompanyStatus {
    fn from(status: Status) -> Self {
        if status.is_enabled() {
            Self::Active
        } else {
            Self::Disabled
        }
    }
}

/// VSPC's `User`; never the password hash.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = User)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserBody<'a> {
    instance_uid: &'a str,
    /// The UID of the user's company.
    organization_uid: &'a str,
    user_name: &'a str,
    status: UserStatus,
    /// Always `Disabled`: this server has no multi-factor authentication.
    mfa_policy_status: &'static str,
    /// Always `NotConfigured`.
    mfa_policy_configuration_status: &'static str,
    role: Role,
    profile: ProfileBody<'a>,
    credentials: CredentialsBody<'a>,
}

/// VSPC's `UserProfile`, with its `title` default.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = UserProfile)]
#[serde(deny_unknown_fields)]
struct ProfileBody<'a> {
    first_name: Option<&'a str>,
    last_name: Option<&'a str>,
    title: &'a str,
    email: Option<&'a str>,
    address: Option<&'a str>,
    phone: Option<&'a str>,
}

/// VSPC's credentials in an answer: the login name, never a password.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Credentials)]
#[serde(deny_unknown_fields)]
struct CredentialsBody<'a> {
    user_name: &'a str,
    /// Always null in answers.
    password: Option<&'a str>,
}

impl<'a> From<&'a User> for UserBody<'a> {
    fn from(user: &'a User) -> Self {
        let p = &user.profile;
        Self {
            instance_uid: &user.uid,
            organization_uid: &user.company_id,
            user_name: &user.user_name,
            status: user.status.into(),
            mfa_policy_status: "Disabled",
            mfa_policy_configuration_status: "NotConfigured",
            role: user.role,
            profile: ProfileBody {
                first_name: p.first_name.as_deref(),
                last_name: p.last_name.as_deref(),
                title: p.title.as_deref().unwrap_or("Unknown"),
                email: p.email.as_deref(),
                address: p.address.as_deref(),
                phone: p.phone.as_deref(),
            },
            credentials: CredentialsBody {
                user_name: &user.user_name,
                password: None,
            },
        }
    }
}

/// VSPC's `Company`, with its `Organization` embedded.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Company)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompanyBody<'a> {
    instance_uid: &'a str,
    name: &'a str,
    status: CompanyStatus,
    reseller_uid: Option<&'a str>,
    subscription_plan_uid: Option<&'a str>,
    is_rest_access_enabled: bool,
    is_alarm_detect_enabled: bool,
    login_url: Option<&'a str>,
    owner_credentials: CredentialsBody<'a>,
    #[serde(rename = "_embedded")]
    embedded: Embedded<'a>,
}

/// What VSPC embeds in a `Company`.
#[derive(Serialize, ToSchema)]
#[schema(as = CompanyEmbedded)]
#[serde(deny_unknown_fields)]
struct Embedded<'a> {
    organization: OrganizationBody<'a>,
}

/// VSPC's `Organization` of a company.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Organization)]
#[serde(deny_unknown_fields)]
struct OrganizationBody<'a> {
    instance_uid: &'a str,
    name: &'a str,
    /// Always `Company`.
    #[serde(rename = "type")]
    kind: &'static str,
    alias: Option<&'a str>,
    tax_id: Option<&'a str>,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    country: Option<i32>,
    state: Option<i32>,
    country_name: Option<&'a str>,
    region_name: Option<&'a str>,
    city: Option<&'a str>,
    street: Option<&'a str>,
    location_admin0_code: Option<&'a str>,
    location_admin1_code: Option<&'a str>,
    location_admin2_code: Option<&'a str>,
    zip_code: Option<&'a str>,
    website: Option<&'a str>,
    notes: Option<&'a str>,
    veeam_tenant_id: Option<&'a str>,
    company_id: Option<&'a str>,
}

impl<'a> OrganizationBody<'a> {
    fn of(company: &'a Company) -> Self {
        let p: &'a CompanyProfile = &company.profile;
        Self {
            instance_uid: &company.uid,
            name: &company.name,
            kind: "Company",
            alias: p.alias.as_deref(),
            tax_id: p.tax_id.as_deref(),
            email: p.email.as_deref(),
            phone: p.phone.as_deref(),
            country: p.country,
            state: p.state,
            country_name: p.country_name.as_deref(),
            region_name: p.region_name.as_deref(),
            city: p.city.as_deref(),
            street: p.street.as_deref(),
            location_admin0_code: p.location_admin0_code.as_deref(),
            location_admin1_code: p.location_admin1_code.as_deref(),
            location_admin2_code: p.location_admin2_code.as_deref(),
            zip_code: p.zip_code.as_deref(),
            website: p.website.as_deref(),
            notes: p.notes.as_deref(),
            veeam_tenant_id: p.veeam_tenant_id.as_deref(),
            company_id: p.company_id.as_deref(),
        }
    }
}

impl<'a> From<&'a Company> for CompanyBody<'a> {
    fn from(company: &'a Company) -> Self {
        let p = &company.profile;
        Self {
            instance_uid: &company.uid,
            name: &company.name,
            status: company.status.into(),
            reseller_uid: None,
            subscription_plan_uid: p.subscription_plan_uid.as_deref(),
            is_rest_access_enabled: p.is_rest_access_enabled,
            is_alarm_detect_enabled: p.is_alarm_detect_enabled,
            login_url: None,
            owner_credentials: CredentialsBody {
                user_name: p.owner_user_name.as_deref().unwrap_or(""),
                password: None,
            },
            embedded: Embedded {
                organization: OrganizationBody::of(company),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(response: Response) -> String {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn envelopes_keep_vspc_property_order() {
        let body = text(collection(&[1, 2], 7, 4)).await;
        assert_eq!(
            body,
            r#"{"data":[1,2],"meta":{"pagingInfo":{"total":7,"count":2,"offset":4}}}"#
        );
        let company = Company {
            uid: "c".into(),
            name: "Alpha".into(),
            status: Status::Enabled,
            profile: CompanyProfile::default(),
            token_generation: 0,
        };
        let body: serde_json::Value =
            serde_json::from_str(&text(data(CompanyBody::from(&company))).await).expect("json");
        assert_eq!(body["data"]["instanceUid"], "c");
        assert_eq!(body["data"]["status"], "Active");
        assert_eq!(
            body["data"]["ownerCredentials"]["password"],
            serde_json::Value::Null
        );
        assert_eq!(body["data"]["_embedded"]["organization"]["name"], "Alpha");
        assert_eq!(body["data"]["_embedded"]["organization"]["type"], "Company");
        // Company settings are the company's, not its organization's.
        let organization = body["data"]["_embedded"]["organization"]
            .as_object()
            .expect("object");
        for setting in [
            "isRestAccessEnabled",
            "subscriptionPlanUid",
            "ownerUserName",
        ] {
            assert!(!organization.contains_key(setting), "{setting}");
        }
    }
}
