//! Verification times: parsing what a person types, and printing what a person reads.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Parse RFC 3339 (`2025-07-19T10:01:17Z`) or unix seconds (`1752919277`).
pub fn parse(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| {
            format!("'{s}' is neither RFC 3339 (2025-07-19T10:01:17Z) nor unix seconds: {e}")
        })
}

/// RFC 3339 in UTC, or the raw number when out of range.
pub fn fmt(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("unix {secs}"))
}

/// Now, as unix seconds.
pub fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_forms() {
        assert_eq!(super::parse("1752919277").unwrap(), 1752919277);
        assert_eq!(super::parse("2025-07-19T10:01:17Z").unwrap(), 1752919277);
        assert!(super::parse("yesterday").unwrap_err().contains("neither"));
        assert_eq!(super::fmt(1752919277), "2025-07-19T10:01:17Z");
    }
}
