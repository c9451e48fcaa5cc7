//! Reading VSPC's input bodies (`UserInput`, `CompanyInput`, profiles): every property checked for
//! its type, length and visible text before anything is written, each refusal naming it.

use serde_json::{Map, Value};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::error::ApiError;
use tower_api_key::store::{CompanyProfile, Role, UserProfile};
use tower_api_key::text;

/// Longest user or company name.
const MAX_NAME_CHARS: usize = 128;

/// A JSON object body, or a 400.
pub(crate) fn object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(object) => Ok(object),
        _ => Err(ApiError::bad_body(
            "The request body must be a JSON object.",
        )),
    }
}

/// A nested object property (`None` when absent or null).
pub(crate) fn object_property<'a>(
    object: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a Map<String, Value>>, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(ApiError::bad_property(
            name,
            "The property must be a JSON object.",
        )),
    }
}

/// A string property (`None` when absent or null).
pub(crate) fn string_property<'a>(
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

/// A boolean property (`None` when absent or null).
fn bool_property(
    object: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<bool>, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_property(
            name,
            "The property must be true or false.",
        )),
    }
}

/// Checks a user or company name: 1 to 128 visible characters (no control, format or separator
/// characters), no surrounding spaces.
pub(crate) fn valid_name(name: &str) -> bool {
    text::is_visible(name, MAX_NAME_CHARS) && name.trim() == name
}

/// A free-text property of at most `max` visible characters (`None` when absent or null).
fn text_property(
    object: &Map<String, Value>,
    name: &'static str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    let Some(value) = string_property(object, name)? else {
        return Ok(None);
    };
    if !text::is_visible(value, max) {
        return Err(ApiError::bad_property(
            name,
            format!("{name} must be 1 to {max} characters without control or format characters."),
        ));
    }
    Ok(Some(value.to_owned()))
}

/// An e-mail address: `local@domain.tld`, visible characters, no spaces.
fn email_property(
    object: &Map<String, Value>,
    name: &'static str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    let email = text_property(object, name, max)?;
    if let Some(email) = &email {
        let shaped = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        });
        if !shaped || email.contains(char::is_whitespace) {
            return Err(ApiError::bad_property(
                name,
                "The property must be an e-mail address.",
            ));
        }
    }
    Ok(email)
}

/// A positive system id (`None` when absent or null).
fn id_property(
    object: &Map<String, Value>,
    name: &'static str,
    max: i32,
) -> Result<Option<i32>, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| (1..=max).contains(n))
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_property(name, format!("{name} must be an integer from 1 to {max}."))
            }),
    }
}

const TITLES: [&str; 5] = ["Unknown", "Mr", "Miss", "Mrs", "Ms"];

/// VSPC's `UserProfile`.
pub(crate) fn user_profile(object: &Map<String, Value>) -> Result<UserProfile, ApiError> {
    let title = match string_property(object, "title")? {
        None => None,
        Some(t) => Some(
            TITLES
                .iter()
                .find(|known| known.eq_ignore_ascii_case(t))
                .map(|known| (*known).to_owned())
                .ok_or_else(|| {
                    ApiError::bad_property("title", "title must be Unknown, Mr, Miss, Mrs or Ms.")
                })?,
        ),
    };
    Ok(UserProfile {
        first_name: text_property(object, "firstName", 2048)?,
        last_name: text_property(object, "lastName", 2048)?,
        title,
        email: email_property(object, "email", 2048)?,
        address: text_property(object, "address", 2048)?,
        phone: text_property(object, "phone", 512)?,
    })
}

/// A company's name from VSPC's `OrganizationInput` rules: 1 to 128 visible characters, none of
/// `<`, `>`, `=`, `%`, `~`.
pub(crate) fn company_name(name: Option<&str>) -> Result<String, ApiError> {
    match name {
        Some(name) if valid_name(name) && !name.contains(['<', '>', '=', '%', '~']) => {
            Ok(name.to_owned())
        }
        _ => Err(ApiError::bad_property(
            "name",
            "name is required: 1 to 128 characters without <, >, =, %, ~, control or format characters, or surrounding spaces.",
        )),
    }
}

/// VSPC's `OrganizationInput` beside the name, and the company settings of `CompanyInput`.
pub(crate) fn company_profile(
    organization: &Map<String, Value>,
    company: &Map<String, Value>,
) -> Result<CompanyProfile, ApiError> {
    let alias = text_property(organization, "alias", 32)?;
    if alias
        .as_deref()
        .is_some_and(|a| a.contains(['<', '>', '=', '%', '~']))
    {
        return Err(ApiError::bad_property(
            "alias",
            "alias must not contain <, >, =, % or ~.",
        ));
    }
    let subscription_plan_uid = text_property(company, "subscriptionPlanUid", 64)?;
    Ok(CompanyProfile {
        alias,
        tax_id: text_property(organization, "taxId", 100)?,
        email: email_property(organization, "email", 128)?,
        phone: text_property(organization, "phone", 128)?,
        country: id_property(organization, "country", i32::MAX)?,
        state: id_property(organization, "state", 51)?,
        country_name: text_property(organization, "countryName", 128)?,
        region_name: text_property(organization, "regionName", 128)?,
        city: text_property(organization, "city", 128)?,
        street: text_property(organization, "street", 128)?,
        location_admin0_code: text_property(organization, "locationAdmin0Code", 32)?,
        location_admin1_code: text_property(organization, "locationAdmin1Code", 32)?,
        location_admin2_code: text_property(organization, "locationAdmin2Code", 32)?,
        zip_code: text_property(organization, "zipCode", 128)?,
        website: text_property(organization, "website", 128)?,
        notes: text_property(organization, "notes", 512)?,
        veeam_tenant_id: text_property(organization, "veeamTenantId", 128)?,
        company_id: text_property(organization, "companyId", 128)?,
        subscription_plan_uid,
        is_rest_access_enabled: bool_property(company, "isRestAccessEnabled")?.unwrap_or(false),
        is_alarm_detect_enabled: bool_property(company, "isAlarmDetectEnabled")?.unwrap_or(false),
        owner_user_name: None,
    })
}

/// Login credentials from a body: the user name, the password, and the property the name came
/// from (named in errors about it).
#[derive(Debug)]
pub(crate) struct Credentials {
    pub(crate) user_name: String,
    pub(crate) password: Zeroizing<String>,
    pub(crate) name_property: &'static str,
}

/// `credentials` / `ownerCredentials`: `{"userName", "password"}`; the user name may also come
/// from a top-level `userName` (`legacy_name`, as earlier versions of this API took it).
pub(crate) fn credentials(
    object: &Map<String, Value>,
    property: &'static str,
    legacy_name: Option<&str>,
) -> Result<Credentials, ApiError> {
    let (name_property, password_property) = match property {
        "ownerCredentials" => ("ownerCredentials.userName", "ownerCredentials.password"),
        _ => ("credentials.userName", "credentials.password"),
    };
    let credentials = object_property(object, property)?;
    let nested = credentials
        .map(|c| string_property(c, "userName"))
        .transpose()?
        .flatten();
    let (user_name, name_property) = match (nested, legacy_name) {
        (Some(name), _) => (name, name_property),
        (None, Some(name)) => (name, "userName"),
        (None, None) => {
            return Err(ApiError::bad_property(
                name_property,
                "The user name is required.",
            ))
        }
    };
    if !valid_name(user_name) {
        return Err(ApiError::bad_property(
            name_property,
            "The user name must be 1 to 128 characters without control or format characters or surrounding spaces.",
        ));
    }
    let password = match credentials.map(|c| c.get("password")) {
        Some(Some(Value::String(p))) => Zeroizing::new(p.clone()),
        _ => {
            return Err(ApiError::bad_property(
                password_property,
                "The password is required.",
            ))
        }
    };
    Ok(Credentials {
        user_name: user_name.to_owned(),
        password,
        name_property,
    })
}

// The bodies above, as the OpenAPI document describes them. The readers take them property by
// property, so that each refusal names its property; these types only document what they read.

/// VSPC's `UserInput`, the body of `POST /users`.
#[derive(ToSchema)]
#[schema(as = UserInput, rename_all = "camelCase")]
#[allow(dead_code)]
pub(crate) struct UserInputDoc {
    /// The user's company; the caller's when absent.
    organization_uid: Option<String>,
    /// `CompanyLocationUser` when absent; earlier versions' `administrator` and `user` are read too.
    role: Option<Role>,
    profile: Option<UserProfileDoc>,
    credentials: CredentialsDoc,
    /// `Enabled` (the default) or `Disabled`.
    status: Option<String>,
    /// Earlier versions' place for the user name, read when `credentials.userName` is absent.
    user_name: Option<String>,
}

/// VSPC's `UserProfile` in an input.
#[derive(ToSchema)]
#[schema(as = UserProfileInput, rename_all = "camelCase")]
#[allow(dead_code)]
struct UserProfileDoc {
    first_name: Option<String>,
    last_name: Option<String>,
    /// `Unknown`, `Mr`, `Miss`, `Mrs` or `Ms`.
    title: Option<String>,
    email: Option<String>,
    address: Option<String>,
    phone: Option<String>,
}

/// A user name and password.
#[derive(ToSchema)]
#[schema(as = CredentialsInput, rename_all = "camelCase")]
#[allow(dead_code)]
struct CredentialsDoc {
    /// 1 to 128 visible characters.
    user_name: Option<String>,
    /// 8 to 1024 characters.
    password: String,
}

/// VSPC's `CompanyInput`, the body of `POST /organizations/companies`; earlier versions' `{"name",
/// "status"}` creates a company without an owner.
#[derive(ToSchema)]
#[schema(as = CompanyInput, rename_all = "camelCase")]
#[allow(dead_code)]
pub(crate) struct CompanyInputDoc {
    organization_input: Option<OrganizationInputDoc>,
    /// The company's `CompanyOwner`, created with it; required with `organizationInput`.
    owner_credentials: Option<CredentialsDoc>,
    subscription_plan_uid: Option<String>,
    is_rest_access_enabled: Option<bool>,
    is_alarm_detect_enabled: Option<bool>,
    /// `Active` (the default) or `Disabled`.
    status: Option<String>,
    /// Earlier versions' company name, without `organizationInput`.
    name: Option<String>,
}

/// VSPC's `OrganizationInput`.
#[derive(ToSchema)]
#[schema(as = OrganizationInput, rename_all = "camelCase")]
#[allow(dead_code)]
struct OrganizationInputDoc {
    /// 1 to 128 visible characters, none of `<`, `>`, `=`, `%`, `~`.
    name: String,
    alias: Option<String>,
    tax_id: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    country: Option<i32>,
    /// 1 to 51.
    state: Option<i32>,
    country_name: Option<String>,
    region_name: Option<String>,
    city: Option<String>,
    street: Option<String>,
    location_admin0_code: Option<String>,
    location_admin1_code: Option<String>,
    location_admin2_code: Option<String>,
    zip_code: Option<String>,
    website: Option<String>,
    notes: Option<String>,
    veeam_tenant_id: Option<String>,
    company_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        object(value).expect("object")
    }

    #[test]
    fn names_refuse_hidden_characters() {
        assert!(valid_name("Ann Smith"));
        for bad in [
            "",
            " ann",
            "ann ",
            "a\u{200B}b",
            "ad\u{202E}nim",
            "a\nb",
            "a\u{FEFF}",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(company_name(Some("Acme 100%")).is_err());
        assert!(company_name(Some("Acme")).is_ok());
    }

    #[test]
    fn profiles_are_checked_property_by_property() {
        let profile = user_profile(&map(json!({
            "firstName": "Ann", "title": "mrs", "email": "ann@example.com", "phone": null
        })))
        .expect("valid");
        assert_eq!(profile.title.as_deref(), Some("Mrs"));
        assert_eq!(profile.phone, None);
        for bad in [
            json!({"firstName": 7}),
            json!({"title": "Sir"}),
            json!({"email": "not an address"}),
            json!({"email": "a@b"}),
            json!({"lastName": "x\u{202E}y"}),
            json!({"phone": "1".repeat(513)}),
        ] {
            assert!(user_profile(&map(bad.clone())).is_err(), "{bad}");
        }
        let company = company_profile(
            &map(json!({"alias": "ac", "state": 5, "country": 1})),
            &map(json!({"isRestAccessEnabled": true})),
        )
        .expect("valid");
        assert_eq!(company.state, Some(5));
        assert!(company.is_rest_access_enabled);
        assert!(company_profile(&map(json!({"state": 52})), &Map::new()).is_err());
        assert!(company_profile(&map(json!({"alias": "a~b"})), &Map::new()).is_err());
    }

    #[test]
    fn credentials_take_the_nested_or_the_earlier_top_level_name() {
        let body = map(json!({"credentials": {"userName": "ann", "password": "pw"}}));
        let c = credentials(&body, "credentials", None).expect("valid");
        assert_eq!((c.user_name.as_str(), c.password.as_str()), ("ann", "pw"));
        assert_eq!(c.name_property, "credentials.userName");
        let body = map(json!({"credentials": {"password": "pw"}}));
        let c = credentials(&body, "credentials", Some("bob")).expect("valid");
        assert_eq!((c.user_name.as_str(), c.name_property), ("bob", "userName"));
        assert!(credentials(&body, "credentials", None).is_err());
        assert!(credentials(&map(json!({})), "credentials", Some("bob")).is_err());
    }
}
