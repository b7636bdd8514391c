//! Reading the command line's inputs: files, `@file` arguments, stdin, strict JSON and times.
//! Every failure is one line that names the input; nothing here panics.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use token_exchange_filter::core::json::parse_strict;

/// Nesting allowed in JSON the CLI reads (policies, case files, claims, keys).
const MAX_JSON_DEPTH: usize = 64;

/// An input the command cannot use (exit code 2): one line, naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep the error on one line whatever the source said.
        let one_line: String = self
            .0
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        f.write_str(&one_line)
    }
}

impl InputError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> InputError {
        InputError(message.into())
    }
}

/// The text of a file, or of stdin for `-`.
pub fn read_text(path: &str, what: &str) -> Result<String, InputError> {
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| InputError(format!("cannot read {what} from stdin: {e}")))?;
        return Ok(text);
    }
    let bytes =
        std::fs::read(path).map_err(|e| InputError(format!("cannot read {what} {path}: {e}")))?;
    String::from_utf8(bytes).map_err(|_| InputError(format!("{what} {path} is not UTF-8 text")))
}

/// An argument given inline or as `@file` (`@-`: stdin).
pub fn inline_or_file(arg: &str, what: &str) -> Result<String, InputError> {
    match arg.strip_prefix('@') {
        Some(path) => read_text(path, what),
        None => Ok(arg.to_owned()),
    }
}

/// Strict JSON (duplicate member names refused, as the filter does).
pub fn parse_json(text: &str, what: &str) -> Result<Value, InputError> {
    parse_strict(text.as_bytes(), MAX_JSON_DEPTH).map_err(|e| InputError(format!("{what}: {e}")))
}

/// A JSON object, inline or `@file`.
pub fn json_object_arg(arg: &str, what: &str) -> Result<Map<String, Value>, InputError> {
    match parse_json(&inline_or_file(arg, what)?, what)? {
        Value::Object(map) => Ok(map),
        _ => Err(InputError(format!("{what}: must be a JSON object"))),
    }
}

/// `path` relative to the directory of the file `base` (absolute paths stay as they are).
pub fn relative_to(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    // Lexically, so that messages name `filter-config/examples/x.json`, not `tests/../…`.
    let mut out = PathBuf::new();
    for c in base
        .parent()
        .unwrap_or_else(|| Path::new(""))
        .join(p)
        .components()
    {
        match c {
            std::path::Component::ParentDir
                if matches!(
                    out.components().next_back(),
                    Some(std::path::Component::Normal(_))
                ) =>
            {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A point in time: RFC 3339 (`2026-01-01T00:00:00Z`, `2026-01-01T01:00:00+01:00`, fractions
/// allowed) or Unix seconds (`1767225600`, `1767225600.5`). Never before 1970.
pub fn parse_time(text: &str) -> Result<Duration, InputError> {
    let bad = || {
        InputError(format!(
            "bad time {text:?}: use RFC 3339 (2026-01-01T00:00:00Z) or Unix seconds (1767225600)"
        ))
    };
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
        let secs: u64 = secs.parse().map_err(|_| bad())?;
        return Ok(Duration::from_secs(secs) + fraction(frac).ok_or_else(bad)?);
    }
    parse_rfc3339(t).ok_or_else(bad)
}

/// Unix seconds as a time, for JSON numbers in case files.
pub fn time_from_value(v: &Value, what: &str) -> Result<Duration, InputError> {
    match v {
        Value::String(s) => parse_time(s).map_err(|e| InputError(format!("{what}: {e}"))),
        Value::Number(n) => match n.as_u64() {
            Some(secs) => Ok(Duration::from_secs(secs)),
            None => Err(InputError(format!(
                "{what}: must be Unix seconds (a non-negative integer) or an RFC 3339 string"
            ))),
        },
        _ => Err(InputError(format!(
            "{what}: must be Unix seconds or an RFC 3339 string"
        ))),
    }
}

fn fraction(digits: &str) -> Option<Duration> {
    if digits.is_empty() {
        return Some(Duration::ZERO);
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: String = digits
        .chars()
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    nanos.parse().ok().map(Duration::from_nanos)
}

fn parse_rfc3339(t: &str) -> Option<Duration> {
    let num = |s: &str, len: usize| -> Option<i64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let (date, rest) = t.split_once(['T', 't'])?;
    let mut d = date.split('-');
    let (year, month, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    if d.next().is_some()
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
    {
        return None;
    }
    // The offset: Z, or ±HH:MM.
    let (clock, offset) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (c, off) = rest.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off.get(1..)?.split_once(':')?;
        let (oh, om) = (num(oh, 2)?, num(om, 2)?);
        if oh > 23 || om > 59 {
            return None;
        }
        (c, sign * (oh * 3600 + om * 60))
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut c = hms.split(':');
    let (h, m, s) = (num(c.next()?, 2)?, num(c.next()?, 2)?, num(c.next()?, 2)?);
    // A leap second (:60) is read as the next second.
    if c.next().is_some() || h > 23 || m > 59 || s > 60 {
        return None;
    }
    if frac.is_empty() && clock.contains('.') {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3600 + m * 60 + s - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(Duration::from_secs(secs) + fraction(frac)?)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `secs` since the epoch as RFC 3339 UTC (`2026-01-01T00:00:00Z`).
pub fn format_time(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The system clock (for commands given no `--now`).
pub fn system_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1767225600").unwrap().as_secs(), 1_767_225_600);
        assert_eq!(
            parse_time("2026-01-01T00:00:00Z").unwrap().as_secs(),
            1_767_225_600
        );
        assert_eq!(
            parse_time("2026-01-01T01:00:00+01:00").unwrap().as_secs(),
            1_767_225_600
        );
        assert_eq!(
            parse_time("2025-12-31T23:00:00-01:00").unwrap().as_secs(),
            1_767_225_600
        );
        assert_eq!(
            parse_time("2024-02-29T12:00:00.250Z").unwrap().as_millis(),
            1_709_208_000_250
        );
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap().as_secs(), 0);
        assert_eq!(parse_time("1.5").unwrap().as_millis(), 1500);
        for bad in [
            "",
            "yesterday",
            "-5",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-01-01",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00",
            "1969-12-31T23:59:59Z",
            "2026-01-01T00:00:00.Z",
            "1.2.3",
            "2026-1-01T00:00:00Z",
            "2026-01-01T00:00:00+1:00",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for secs in [0, 951_782_400, 1_709_208_000, 1_767_225_600, 4_102_444_799] {
            assert_eq!(parse_time(&format_time(secs)).unwrap().as_secs(), secs);
        }
        assert_eq!(format_time(1_767_225_600), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn relative_paths_are_normalised() {
        let base = Path::new("filter-config/tests/a.cases.json");
        assert_eq!(
            relative_to(base, "../examples/m.json"),
            Path::new("filter-config/examples/m.json")
        );
        assert_eq!(relative_to(base, "../../e/p.json"), Path::new("e/p.json"));
        assert_eq!(
            relative_to(Path::new("a.json"), "../x.json"),
            Path::new("../x.json")
        );
        assert_eq!(relative_to(base, "/abs/k.json"), Path::new("/abs/k.json"));
    }

    #[test]
    fn errors_stay_on_one_line() {
        assert_eq!(InputError::new("a\nb").to_string(), "a b");
    }
}
