//! What the layer adds to the answer of a request it let through: `Sunset` (RFC 8594) for a key
//! that expires soon, `Deprecation` (RFC 9745) for a key a rotation replaced, and the rate-limit
//! fields. A request with nothing to add allocates nothing for it.

use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};
use time::{Month, OffsetDateTime, UtcOffset, Weekday};

use crate::identity::Identity;
use crate::rate::Standing;
use crate::ring::unix_now;

/// `Sunset`: when the key stops working, as an HTTP date.
pub const SUNSET: HeaderName = HeaderName::from_static("sunset");
/// `Deprecation`: since when the key is replaced, as a structured date (`@` and Unix seconds).
pub const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");

/// How long before its expiry a key's answers carry `Sunset`, unless the layer says otherwise.
pub(crate) const DEFAULT_EXPIRY_NOTICE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// `at` as an IMF-fixdate (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    let weekday = match at.weekday() {
        Weekday::Monday => "Mon",
        Weekday::Tuesday => "Tue",
        Weekday::Wednesday => "Wed",
        Weekday::Thursday => "Thu",
        Weekday::Friday => "Fri",
        Weekday::Saturday => "Sat",
        Weekday::Sunday => "Sun",
    };
    let month = match at.month() {
        Month::January => "Jan",
        Month::February => "Feb",
        Month::March => "Mar",
        Month::April => "Apr",
        Month::May => "May",
        Month::June => "Jun",
        Month::July => "Jul",
        Month::August => "Aug",
        Month::September => "Sep",
        Month::October => "Oct",
        Month::November => "Nov",
        Month::December => "Dec",
    };
    format!(
        "{weekday}, {:02} {month} {:04} {:02}:{:02}:{:02} GMT",
        at.day(),
        at.year(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

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
                .and_then(|at| HeaderValue::try_from(http_date(at)).ok());
        }
        if deprecated {
            // The date is not in the index slot: read it from the cold record, only for keys in
            // their grace period.
            notes.deprecation = identity
                .deprecated_since()
                .and_then(|at| HeaderValue::try_from(format!("@{}", at.unix_timestamp())).ok());
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
        assert_eq!(http_date(at), "Sun, 06 Nov 1994 08:49:37 GMT");
        // Whatever the offset it carries, the date is written in GMT.
        let east = time::macros::datetime!(2026-12-07 01:30:05 +02:00);
        assert_eq!(http_date(east), "Sun, 06 Dec 2026 23:30:05 GMT");
        // Every day and month name is three letters.
        let mut day = time::macros::datetime!(2026-01-01 0:00 UTC);
        for _ in 0..366 {
            let text = http_date(day);
            assert_eq!(text.len(), "Sun, 06 Nov 1994 08:49:37 GMT".len(), "{text}");
            day += time::Duration::days(1);
        }
    }
}
