//! Record times: RFC 3339 in UTC with milliseconds, fixed width, so that comparing two
//! times as strings compares them as times.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::Error;

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// `2026-01-31T12:00:00.123Z`.
pub(crate) fn format_ms(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses any RFC 3339 time and returns it in the records' form (truncated to milliseconds).
pub fn normalize(value: &str) -> Result<String, Error> {
    let t = OffsetDateTime::parse(value, &Rfc3339).map_err(|_| Error::Time { value: value.to_string() })?;
    let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
    Ok(format_ms(ms as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_utc_with_millis() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_769_860_800_123), "2026-01-31T12:00:00.123Z");
        assert_eq!(normalize("2026-01-31T13:00:00.1239+01:00").unwrap(), "2026-01-31T12:00:00.123Z");
        assert!(normalize("yesterday").is_err());
    }
}
