//! What the layer adds to the answer of a request it let through: `Sunset` (RFC 8594) for a key
//! that expires soon, `Deprecation` (RFC 9745) for a key a rotation replaced, and the rate-limit
//! fields. A request with nothing to add allocates nothing for it.

use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use crate::identity::Identity;
use crate::rate::Standing;
use crate::ring::unix_now;

/// `Sunset`: when the key stops working, as an HTTP date.
pub const SUNSET: HeaderName = HeaderName::from_static("sunset");
/// `Deprecation`: since when the key is replaced, as a structured date (`@` and Unix seconds).
pub const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");

/// How long before its expiry a key's answers carry `Sunset`, unless the layer says otherwise.
pub(crate) const DEFAULT_EXPIRY_NOTICE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// IMF-fixdate (RFC 9110 §5.6.7).
const HTTP_DATE: &[BorrowedFormatItem<'_>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// The fields for one answer.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    sunset: Option<HeaderValue>,
    deprecation: Option<HeaderValue>,
    rate: Option<Standing>,
}

impl Notes {
    /// What `identity`'s answer gets: `None`, without a clock read or an allocation, for a key that
    /// never expires and was not replaced, when no rate limit applies.
    #[inline]
    pub(crate) fn of(
        identity: &Identity,
        notice: Duration,
        rate: Option<Standing>,
    ) -> Option<Box<Notes>> {
        let (expires, deprecated) = identity.lifecycle();
        if expires == 0 && !deprecated && rate.is_none() {
            return None;
        }
        Some(Box::new(Self::build(
            identity, expires, deprecated, notice, rate,
        )))
    }

    #[cold]
    fn build(
        identity: &Identity,
        expires: u64,
        deprecated: bool,
        notice: Duration,
        rate: Option<Standing>,
    ) -> Notes {
        let mut notes = Notes {
            rate,
            ..Notes::default()
        };
        let due = deprecated || expires.saturating_sub(unix_now()) <= notice.as_secs();
        if expires != 0 && due {
            notes.sunset = identity
                .expires()
                .and_then(|at| at.format(HTTP_DATE).ok())
                .and_then(|text| HeaderValue::try_from(text).ok());
        }
        if deprecated {
            // The date is not in the index slot: read it from the cold record, only for keys in
            // their grace period.
            notes.deprecation = identity
                .login()
                .and_then(|login| login.deprecation_date)
                .and_then(|at: OffsetDateTime| {
                    HeaderValue::try_from(format!("@{}", at.unix_timestamp())).ok()
                });
        }
        notes
    }

    pub(crate) fn write(&self, headers: &mut HeaderMap) {
        if let Some(sunset) = &self.sunset {
            headers.insert(SUNSET, sunset.clone());
        }
        if let Some(deprecation) = &self.deprecation {
            headers.insert(DEPRECATION, deprecation.clone());
        }
        if let Some(rate) = &self.rate {
            rate.write(headers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_imf_fixdates() {
        let at = time::macros::datetime!(1994-11-06 08:49:37 UTC);
        assert_eq!(
            at.format(HTTP_DATE).expect("formats"),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }
}
