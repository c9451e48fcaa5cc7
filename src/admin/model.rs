//! The shapes of VSPC's resources and envelopes, serialized straight from structs so properties keep
//! VSPC's order.

use axum::response::Response;
use http::StatusCode;
use serde::Serialize;

use super::error::json_response;
use crate::identity::Status;
use crate::store::{Company, User};

/// `{"data": …}`.
#[derive(Serialize)]
struct Data<T> {
    data: T,
}

/// A 200 answer `{"data": value}`.
pub(crate) fn data<T: Serialize>(value: T) -> Response {
    json_response(StatusCode::OK, &Data { data: value })
}

/// `{"data":[…],"meta":{"pagingInfo":{"total","count","offset"}}}`.
#[derive(Serialize)]
struct Collection<'a, T> {
    data: &'a [T],
    meta: Meta,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    paging_info: PagingInfo,
}

#[derive(Serialize)]
struct PagingInfo {
    total: u64,
    count: usize,
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

/// A user as the API shows it, with VSPC's property names; never the password hash.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserBody<'a> {
    instance_uid: &'a str,
    organization_uid: &'a str,
    user_name: &'a str,
    role: &'static str,
    status: Status,
}

impl<'a> From<&'a User> for UserBody<'a> {
    fn from(user: &'a User) -> Self {
        Self {
            instance_uid: &user.uid,
            organization_uid: &user.company_id,
            user_name: &user.user_name,
            role: user.role.as_str(),
            status: user.status,
        }
    }
}

/// A company as the API shows it, with VSPC's property names.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CompanyBody<'a> {
    instance_uid: &'a str,
    name: &'a str,
    status: Status,
}

impl<'a> From<&'a Company> for CompanyBody<'a> {
    fn from(company: &'a Company) -> Self {
        Self {
            instance_uid: &company.uid,
            name: &company.name,
            status: company.status,
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
        };
        let body = text(data(CompanyBody::from(&company))).await;
        assert_eq!(
            body,
            r#"{"data":{"instanceUid":"c","name":"Alpha","status":"enabled"}}"#
        );
    }
}
