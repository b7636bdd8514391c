//! What an introspection answer means (RFC 7662 §2.2): status 200, `application/json`, at
//! most `max_bytes`, a strict JSON object (no duplicate members, bounded depth) whose
//! `active` is a JSON boolean. Anything else is a failure of the endpoint, never an answer
//! about the token; the members of an active answer are judged when a request is decided,
//! with the checks of a JWT's claims.

use serde_json::{Map, Value};

use crate::core::fetch::{CallResponse, FetchFailure};
use crate::core::json::parse_strict;

/// Deepest nesting accepted in an answer (claims such as `act` or `cnf` are objects).
const MAX_ANSWER_DEPTH: usize = 16;

/// A valid answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introspected {
    /// `active: true`, and every member of the answer.
    Active(Map<String, Value>),
    /// `active: false` (RFC 7662 says nothing else need be returned).
    Inactive,
}

/// Reads an answer of at most `max_bytes`.
pub fn parse_introspection(
    response: &CallResponse<'_>,
    max_bytes: usize,
) -> Result<Introspected, FetchFailure> {
    let body = response.document(max_bytes, &["application/json"])?;
    let doc =
        parse_strict(body, MAX_ANSWER_DEPTH).map_err(|e| FetchFailure::Invalid(e.to_string()))?;
    let Value::Object(members) = doc else {
        return Err(FetchFailure::Invalid("not a JSON object".into()));
    };
    match members.get("active") {
        Some(Value::Bool(true)) => Ok(Introspected::Active(members)),
        Some(Value::Bool(false)) => Ok(Introspected::Inactive),
        // "true", 1, null: a provider that says something else is not understood.
        _ => Err(FetchFailure::Invalid(
            "active is missing or not a boolean".into(),
        )),
    }
}

/// A failure in the words of the introspection settings.
pub fn describe_failure(failure: &FetchFailure) -> String {
    match failure {
        FetchFailure::DispatchRefused(s) => {
            format!("the host refused the call (status {s}): check introspection.upstream")
        }
        FetchFailure::TimedOut => "no response within introspection.timeout_ms".into(),
        FetchFailure::TooLarge { size, max } => {
            format!("body of {size} bytes is larger than introspection.max_bytes ({max})")
        }
        other => other.to_string(),
    }
}

/// Whether an issuer's endpoint is failing, so that a failure is logged when it starts or
/// changes kind and a recovery once, never per request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointHealth {
    failing: Option<String>,
}

impl EndpointHealth {
    /// Records the outcome of one call to `issuer`'s endpoint; the line to log (and whether
    /// it is a warning) when the state changed.
    pub fn record(
        &mut self,
        issuer: &str,
        outcome: Result<(), &FetchFailure>,
    ) -> Option<(bool, String)> {
        match outcome {
            Ok(()) => self.failing.take().map(|_| {
                (
                    false,
                    format!("introspection endpoint of issuer {issuer:?} answers again"),
                )
            }),
            Err(failure) => {
                let kind = failure.kind();
                if self.failing.as_deref() == Some(kind.as_str()) {
                    return None;
                }
                self.failing = Some(kind);
                Some((
                    true,
                    format!(
                        "introspection endpoint of issuer {issuer:?} failing: {}; its tokens are refused (503) until it answers",
                        describe_failure(failure)
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: &str, ctype: &str, body: &str) -> Result<Introspected, FetchFailure> {
        let headers = vec![
            (":status".to_owned(), status.to_owned()),
            ("content-type".to_owned(), ctype.to_owned()),
        ];
        let r = CallResponse {
            headers: &headers,
            body: body.as_bytes(),
            body_size: body.len(),
        };
        parse_introspection(&r, 1024)
    }

    fn ok(body: &str) -> Result<Introspected, FetchFailure> {
        answer("200", "application/json", body)
    }

    fn kind(r: Result<Introspected, FetchFailure>) -> String {
        r.err().map(|f| f.kind()).unwrap_or_else(|| "ok".into())
    }

    #[test]
    fn active_must_be_the_boolean() {
        assert!(matches!(
            ok(r#"{"active":true,"sub":"a","exp":1}"#),
            Ok(Introspected::Active(m)) if m.get("sub") == Some(&Value::from("a"))
        ));
        assert_eq!(ok(r#"{"active":false}"#), Ok(Introspected::Inactive));
        // Extra members of an inactive answer are ignored.
        assert_eq!(
            ok(r#"{"active":false,"sub":5}"#),
            Ok(Introspected::Inactive)
        );
        for bad in [
            r#"{}"#,
            r#"{"active":"true"}"#,
            r#"{"active":1}"#,
            r#"{"active":null}"#,
            r#"{"active":[true]}"#,
            r#"{"Active":true}"#,
            r#"[{"active":true}]"#,
            r#""active""#,
            "true",
        ] {
            assert_eq!(kind(ok(bad)), "invalid", "{bad}");
        }
    }

    #[test]
    fn hostile_bodies_are_failures() {
        for (body, expect) in [
            // Two `active` members: two parsers could read two answers.
            (r#"{"active":false,"active":true}"#, "invalid"),
            (r#"{"active":true,"sub":"a","sub":"b"}"#, "invalid"),
            (r#"{"active":true} trailing"#, "invalid"),
            (r#"{"active":true"#, "invalid"),
            ("", "invalid"),
            ("<html>", "invalid"),
            (r#"{"active":true,"exp":1e400}"#, "invalid"),
            ("{\"active\":true,\"sub\":\"\u{0}\"", "invalid"),
        ] {
            assert_eq!(kind(ok(body)), expect, "{body:?}");
        }
        let deep = format!(
            r#"{{"active":true,"x":{}{}}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        assert_eq!(kind(ok(&deep)), "invalid");
        let huge = format!(r#"{{"active":true,"pad":"{}"}}"#, "x".repeat(2000));
        assert_eq!(kind(ok(&huge)), "too_large");
        // Huge numbers parse; the claim checks refuse them when a request is decided.
        assert!(matches!(
            ok(r#"{"active":true,"exp":18446744073709551616123}"#),
            Ok(Introspected::Active(_))
        ));
    }

    #[test]
    fn outages_and_other_statuses_are_failures() {
        let body = r#"{"active":true}"#;
        assert_eq!(
            kind(answer("200", "text/plain", body)),
            "not_json",
            "content type"
        );
        assert_eq!(kind(answer("401", "application/json", body)), "http_401");
        assert_eq!(kind(answer("503", "text/plain", "busy")), "http_503");
        assert_eq!(kind(answer("504", "text/plain", "timeout")), "http_504");
        assert_eq!(kind(answer("302", "application/json", body)), "http_302");
        let none: Vec<(String, String)> =
            vec![(":dispatch_status".into(), "broken connection".into())];
        let r = CallResponse {
            headers: &none,
            body: b"",
            body_size: 0,
        };
        assert_eq!(kind(parse_introspection(&r, 1024)), "no_response");
        // An announced size over the cap is refused even when no byte was read.
        let headers = vec![
            (":status".to_owned(), "200".to_owned()),
            ("content-type".to_owned(), "application/json".to_owned()),
        ];
        let r = CallResponse {
            headers: &headers,
            body: b"",
            body_size: 5000,
        };
        assert_eq!(kind(parse_introspection(&r, 1024)), "too_large");
    }

    #[test]
    fn failures_are_logged_once_per_change() {
        let mut h = EndpointHealth::default();
        assert_eq!(h.record("i", Ok(())), None);
        let (warn, line) = h.record("i", Err(&FetchFailure::TimedOut)).unwrap();
        assert!(warn && line.contains("introspection.timeout_ms"), "{line}");
        assert_eq!(h.record("i", Err(&FetchFailure::TimedOut)), None);
        assert!(h.record("i", Err(&FetchFailure::Status(503))).is_some());
        assert_eq!(h.record("i", Err(&FetchFailure::Status(503))), None);
        let (warn, line) = h.record("i", Ok(())).unwrap();
        assert!(!warn && line.contains("answers again"));
        assert_eq!(h.record("i", Ok(())), None);
    }
}
