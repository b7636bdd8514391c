//! Calendar dates and times in UTC, for the policy's lifecycle fields (`review_by`, `expires`,
//! `revoked_before`). Only the strict forms the policy accepts are parsed: `YYYY-MM-DD` and
//! `YYYY-MM-DDTHH:MM:SSZ`; no offsets, no fractions, no lenient variants.

use std::fmt;

/// Seconds in a UTC day (no leap seconds, as in POSIX time and JWT NumericDates).
pub const DAY_SECONDS: u64 = 86_400;

/// A calendar day in UTC (proleptic Gregorian), from year 1970 on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcDate {
    /// Days since 1970-01-01.
    days: u64,
}

impl UtcDate {
    /// Parses exactly `YYYY-MM-DD` (a real date, 1970 to 9999).
    pub fn parse(s: &str) -> Option<UtcDate> {
        let b = s.as_bytes();
        if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return None;
        }
        let year = digits(s.get(0..4)?)?;
        let month = digits(s.get(5..7)?)?;
        let day = digits(s.get(8..10)?)?;
        if year < 1970 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month)
        {
            return None;
        }
        Some(UtcDate {
            days: days_from_civil(year, month, day),
        })
    }

    /// The day that contains `secs` (seconds since the epoch).
    pub fn of(secs: u64) -> UtcDate {
        UtcDate {
            days: secs / DAY_SECONDS,
        }
    }

    /// 00:00:00Z of this day, in seconds since the epoch.
    pub fn start(self) -> u64 {
        self.days.saturating_mul(DAY_SECONDS)
    }

    /// 00:00:00Z of the following day: the first second after this date.
    pub fn end(self) -> u64 {
        self.days.saturating_add(1).saturating_mul(DAY_SECONDS)
    }
}

impl fmt::Display for UtcDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(self.days);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// Parses exactly `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC, whole seconds) into seconds since
/// the epoch.
pub fn parse_utc_timestamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b.get(10) != Some(&b'T')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
        || b.get(19) != Some(&b'Z')
    {
        return None;
    }
    let date = UtcDate::parse(s.get(0..10)?)?;
    let hour = digits(s.get(11..13)?)?;
    let minute = digits(s.get(14..16)?)?;
    let second = digits(s.get(17..19)?)?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(date.start() + hour * 3600 + minute * 60 + second)
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_utc_timestamp(secs: u64) -> String {
    let day = UtcDate::of(secs);
    let rest = secs % DAY_SECONDS;
    format!(
        "{day}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn is_leap(year: u64) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a valid date from 1970 on (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    // 719468 days from 0000-03-01 to 1970-01-01.
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_strictly() {
        let d = UtcDate::parse("2026-01-01").unwrap();
        assert_eq!(d.start(), 1_767_225_600);
        assert_eq!(d.end(), 1_767_225_600 + DAY_SECONDS);
        assert_eq!(d.to_string(), "2026-01-01");
        assert_eq!(UtcDate::parse("1970-01-01").unwrap().start(), 0);
        assert_eq!(
            UtcDate::parse("2024-02-29").unwrap().to_string(),
            "2024-02-29"
        );
        for bad in [
            "2025-02-29",
            "2100-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-04-31",
            "2026-1-01",
            "2026-01-01 ",
            "2026/01/01",
            "1969-12-31",
            "+026-01-01",
            "2026-01-01T00:00:00Z",
            "",
        ] {
            assert!(UtcDate::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            UtcDate::parse("2000-02-29").unwrap().to_string(),
            "2000-02-29"
        );
    }

    #[test]
    fn every_day_round_trips() {
        // 1970 to beyond 2400, including every leap rule.
        for days in (0..160_000).step_by(17) {
            let d = UtcDate { days };
            assert_eq!(UtcDate::parse(&d.to_string()), Some(d), "{d}");
        }
    }

    #[test]
    fn timestamps_parse_strictly() {
        assert_eq!(
            parse_utc_timestamp("2026-01-01T00:00:00Z"),
            Some(1_767_225_600)
        );
        assert_eq!(
            parse_utc_timestamp("2026-01-01T12:34:56Z"),
            Some(1_767_225_600 + 12 * 3600 + 34 * 60 + 56)
        );
        assert_eq!(format_utc_timestamp(1_767_270_896), "2026-01-01T12:34:56Z");
        for bad in [
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2026-01-01T00:00:60Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+00:00",
            "2026-01-01T00:00:00.5Z",
            "2026-01-01t00:00:00z",
            "2026-01-01",
        ] {
            assert!(parse_utc_timestamp(bad).is_none(), "{bad}");
        }
    }
}
