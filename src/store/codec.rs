//! How the SQL and network backends write fields as text and read them back: dates, statuses, scopes,
//! digests, profiles, counters. What cannot be read back is a corrupt record, never a guess.

use time::format_description::well_known::Rfc3339;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use super::StoreError;
use crate::identity::Status;
use crate::key::SecretDigest;
use crate::scope::{Scope, Scopes};

/// UTC with exactly nine fractional digits: the byte order of stored dates is their time order, and
/// nanoseconds survive (PostgreSQL's `timestamptz` keeps microseconds).
const DATE_FORMAT: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// A profile (of a user or a company) as JSON text.
pub(crate) fn format_profile<T: serde::Serialize>(profile: &T) -> Result<String, StoreError> {
    serde_json::to_string(profile).map_err(StoreError::backend)
}

/// A profile read back from [`format_profile`]'s text.
pub(crate) fn parse_profile<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::corrupt(format!("profile: {e}")))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
/// A token generation as a 64-bit SQL integer (saturating: nothing revokes 2^63 times).
pub(crate) fn format_generation(generation: u64) -> i64 {
    i64::try_from(generation).unwrap_or(i64::MAX)
}

/// A stored token generation; a negative one is corrupt.
pub(crate) fn parse_generation(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::corrupt(format!("token generation {value}")))
}

pub(crate) fn format_date(date: OffsetDateTime) -> Result<String, StoreError> {
    let utc = date
        .checked_to_offset(UtcOffset::UTC)
        .filter(|d| (0..=9999).contains(&d.year()))
        .ok_or_else(|| StoreError::backend("date outside the years 0000 to 9999"))?;
    utc.format(DATE_FORMAT).map_err(StoreError::backend)
}

pub(crate) fn parse_date(text: &str) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| StoreError::corrupt(format!("date `{text}`: {e}")))
}

pub(crate) fn parse_status(text: &str) -> Result<Status, StoreError> {
    Status::parse(text).ok_or_else(|| StoreError::corrupt(format!("unknown status `{text}`")))
}

pub(crate) fn parse_digest(bytes: &[u8]) -> Result<SecretDigest, StoreError> {
    <[u8; 32]>::try_from(bytes)
        .map(SecretDigest::from_bytes)
        .map_err(|_| StoreError::corrupt(format!("digest of {} bytes, not 32", bytes.len())))
}

/// Scope names, comma-separated: bit positions of application scopes differ between processes.
pub(crate) fn format_scopes(scopes: Scopes) -> String {
    scopes.iter().map(Scope::name).collect::<Vec<_>>().join(",")
}

pub(crate) fn parse_scopes(text: &str) -> Result<Scopes, StoreError> {
    if text.is_empty() {
        return Ok(Scopes::EMPTY);
    }
    text.split(',').try_fold(Scopes::EMPTY, |set, name| {
        Scope::lookup(name).map(|s| set.with(s)).ok_or_else(|| {
            StoreError::corrupt(format!(
                "unknown scope `{name}` (application scopes must be registered first)"
            ))
        })
    })
}

/// Names the key in a corrupt-record error, so the bad record can be found.
pub(crate) fn in_key(id: impl std::fmt::Display, e: StoreError) -> StoreError {
    if e.is_corrupt() {
        StoreError::corrupt(format!("key {id}: {e}"))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn dates_keep_nanoseconds_and_sort_as_bytes() {
        let date = datetime!(2020-08-18 16:02:26.0136931 +02:00);
        let text = format_date(date).expect("formats");
        assert_eq!(text, "2020-08-18T14:02:26.013693100Z");
        assert_eq!(parse_date(&text).expect("parses"), date);
        let ordered = [
            datetime!(0000-01-01 0:00 UTC),
            datetime!(1999-12-31 23:59:59.999999999 UTC),
            datetime!(2000-01-01 1:00 +01:00),
            datetime!(2000-01-01 0:00:00.000000001 UTC),
            datetime!(2000-01-01 0:00:00.1 UTC),
            datetime!(9999-12-31 23:59:59 UTC),
        ];
        for pair in ordered.windows(2) {
            let (a, b) = (format_date(pair[0]), format_date(pair[1]));
            assert!(a.expect("formats") < b.expect("formats"), "{pair:?}");
        }
        assert!(format_date(datetime!(-0001-12-31 0:00 UTC)).is_err());
        assert!(format_date(datetime!(9999-12-31 23:00 -02:00)).is_err());
        assert!(parse_date("yesterday").unwrap_err().is_corrupt());
    }

    #[test]
    fn scopes_statuses_and_digests_read_back_or_are_corrupt() {
        let billing = Scope::register("codec-test.billing").expect("registers");
        let scopes = Scopes::from([Scope::REST, billing]);
        assert_eq!(
            parse_scopes(&format_scopes(scopes)).expect("parses"),
            scopes
        );
        assert_eq!(parse_scopes("").expect("parses"), Scopes::EMPTY);
        assert!(parse_scopes("rest,").unwrap_err().is_corrupt());
        assert!(parse_scopes("no-such-scope").unwrap_err().is_corrupt());
        assert_eq!(
            parse_status("disabledDueToUser").expect("parses"),
            Status::DisabledDueToUser
        );
        assert!(parse_status("bogus").unwrap_err().is_corrupt());
        assert!(parse_digest(&[0; 31]).unwrap_err().is_corrupt());
        assert_eq!(
            parse_digest(&[7; 32]).expect("parses"),
            SecretDigest::from_bytes([7; 32])
        );
        let e = in_key(7, StoreError::corrupt("bad"));
        assert!(e.is_corrupt() && e.to_string().contains("key 7"));
    }

    #[test]
    fn scopes_are_stored_by_name() {
        let billing = Scope::register("sqlite-test.billing").expect("registers");
        let scopes = Scopes::from([Scope::REST, billing, Scope::UI]);
        let text = format_scopes(scopes);
        assert_eq!(text, format!("ui,rest,{}", billing.name()));
        assert_eq!(parse_scopes(&text).expect("parses"), scopes);
        assert_eq!(parse_scopes("").expect("parses"), Scopes::EMPTY);
        assert!(parse_scopes(" rest").unwrap_err().is_corrupt());
    }
}
