//! What an answer to a key fetch means: the status, the content type, the size cap, then the
//! document itself (strict JSON: no duplicate members, bounded depth).
//!
//! Hosts report failures differently (HOSTS.md): Envoy makes up a 503 or 504 with a text
//! body, Kong's host gives no `:status` at all and a `:dispatch_status` pseudo-header. Both
//! end up as failures here, never as keys.

use serde_json::Value;

use super::FetchFailure;
use crate::core::json::parse_strict;
use crate::core::jwks::{import_fetched_jwks, KeySet, MAX_JWKS_DEPTH};
use crate::core::keys::Alg;
use crate::core::url::HttpUrl;

/// Deepest nesting accepted in a discovery document (providers list arrays of strings).
const MAX_DISCOVERY_DEPTH: usize = 8;

/// An answer to a call, as the host delivered it.
#[derive(Debug, Clone, Copy)]
pub struct CallResponse<'a> {
    /// The response headers (names in any case; pseudo-headers included).
    pub headers: &'a [(String, String)],
    /// The body, when it was read (not when it was larger than the cap).
    pub body: &'a [u8],
    /// The body's size as the host announced it.
    pub body_size: usize,
}

impl CallResponse<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    /// The body, once status, content type and size are acceptable.
    pub(crate) fn document(
        &self,
        max_bytes: usize,
        media_types: &[&str],
    ) -> Result<&[u8], FetchFailure> {
        let status = match self.header(":status") {
            None => {
                let detail = self.header(":dispatch_status").map(str::to_owned);
                return Err(FetchFailure::NoResponse(detail));
            }
            Some(s) => s
                .parse::<u16>()
                .map_err(|_| FetchFailure::NoResponse(Some(format!("status {s:?}"))))?,
        };
        match status {
            200 => {}
            300..=399 => return Err(FetchFailure::Redirect(status)),
            s => return Err(FetchFailure::Status(s)),
        }
        if self.body_size > max_bytes || self.body.len() > max_bytes {
            return Err(FetchFailure::TooLarge {
                size: self.body_size.max(self.body.len()),
                max: max_bytes,
            });
        }
        let content_type = self.header("content-type");
        let media = content_type
            .and_then(|t| t.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase());
        if !media.as_deref().is_some_and(|m| media_types.contains(&m)) {
            return Err(FetchFailure::NotJson(content_type.map(|t| {
                t.chars().filter(|c| !c.is_control()).take(100).collect()
            })));
        }
        Ok(self.body)
    }
}

/// The key set's URL from a discovery document for `issuer`: status 200, JSON, at most
/// `max_bytes`, its `issuer` equal to ours byte for byte (OIDC Discovery §4.3) and an
/// `http(s)` `jwks_uri`.
pub fn parse_discovery(
    response: &CallResponse<'_>,
    max_bytes: usize,
    issuer: &str,
) -> Result<String, FetchFailure> {
    let body = response.document(max_bytes, &["application/json"])?;
    let doc = parse_strict(body, MAX_DISCOVERY_DEPTH)
        .map_err(|e| FetchFailure::Invalid(e.to_string()))?;
    let Value::Object(members) = doc else {
        return Err(FetchFailure::Invalid("not a JSON object".into()));
    };
    match members.get("issuer") {
        Some(Value::String(s)) if s == issuer => {}
        Some(Value::String(_)) => return Err(FetchFailure::IssuerMismatch),
        _ => {
            return Err(FetchFailure::Invalid(
                "issuer is missing or not a string".into(),
            ))
        }
    }
    match members.get("jwks_uri") {
        Some(Value::String(uri)) => match HttpUrl::parse(uri) {
            Ok(url) => Ok(url.to_string()),
            Err(why) => Err(FetchFailure::Invalid(format!("jwks_uri {why}"))),
        },
        _ => Err(FetchFailure::Invalid(
            "jwks_uri is missing or not a string".into(),
        )),
    }
}

/// The usable keys of a key set response for an issuer pinning `pinned`: status 200, JSON
/// (`application/json` or `application/jwk-set+json`), at most `max_bytes`, then the
/// fetched-set importer (unusable keys skipped; no usable key is a failure).
pub fn parse_jwks(
    response: &CallResponse<'_>,
    max_bytes: usize,
    pinned: &[Alg],
) -> Result<KeySet, FetchFailure> {
    let body = response.document(max_bytes, &["application/json", "application/jwk-set+json"])?;
    // Depth first, so the error says what it is.
    parse_strict(body, MAX_JWKS_DEPTH).map_err(|e| FetchFailure::Invalid(e.to_string()))?;
    import_fetched_jwks(body, pinned).map_err(|e| {
        let at = if e.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", e.path)
        };
        if e.message.starts_with("no key can verify") {
            FetchFailure::NoUsableKeys(e.message)
        } else {
            FetchFailure::Invalid(format!("{at}{}", e.message))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    fn answer(status: Option<&str>, ctype: Option<&str>) -> Vec<(String, String)> {
        let mut h = Vec::new();
        if let Some(s) = status {
            h.push((":status".to_owned(), s.to_owned()));
        }
        if let Some(t) = ctype {
            h.push(("Content-Type".to_owned(), t.to_owned()));
        }
        h
    }

    fn jwks(headers: &[(String, String)], body: &str) -> Result<KeySet, FetchFailure> {
        let r = CallResponse {
            headers,
            body: body.as_bytes(),
            body_size: body.len(),
        };
        parse_jwks(&r, 65536, &[Alg::EdDSA])
    }

    fn one_key() -> String {
        format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"{ED_X}"}}]}}"#)
    }

    #[test]
    fn accepts_a_json_key_set() {
        for ctype in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JWK-Set+JSON",
        ] {
            let set = jwks(&answer(Some("200"), Some(ctype)), &one_key()).unwrap();
            assert_eq!(set.keys.len(), 1, "{ctype}");
        }
    }

    #[test]
    fn every_outage_kind_is_a_failure() {
        let ok = Some("application/json");
        let body = one_key();
        type Case<'a> = (Vec<(String, String)>, &'a str, &'a str);
        let cases: Vec<Case> = vec![
            // Kong's host on a timeout: no :status, a dispatch status.
            (
                vec![(":dispatch_status".into(), "timeout".into())],
                &body,
                "no_response",
            ),
            (vec![], "", "no_response"),
            (
                answer(Some("503"), Some("text/plain")),
                "upstream connect error",
                "http_503",
            ),
            (answer(Some("504"), ok), &body, "http_504"),
            (answer(Some("404"), ok), &body, "http_404"),
            (answer(Some("302"), ok), &body, "http_302"),
            (answer(Some("x"), ok), &body, "no_response"),
            (answer(Some("200"), Some("text/html")), "<html>", "not_json"),
            (answer(Some("200"), None), &body, "not_json"),
            (answer(Some("200"), ok), "<html>", "invalid"),
            (answer(Some("200"), ok), &body[..body.len() - 3], "invalid"),
            (answer(Some("200"), ok), "{\"keys\":[]}", "invalid"),
            (
                answer(Some("200"), ok),
                "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"}]}",
                "no_usable_keys",
            ),
        ];
        for (headers, body, kind) in cases {
            let e = jwks(&headers, body).unwrap_err();
            assert_eq!(e.kind(), kind, "{headers:?} {body:?}: {e}");
            assert!(!e.to_string().is_empty());
        }
        let redirect = jwks(&answer(Some("301"), ok), &body).unwrap_err();
        assert_eq!(redirect, FetchFailure::Redirect(301));
    }

    #[test]
    fn the_size_cap_is_checked_before_the_body() {
        let headers = answer(Some("200"), Some("application/json"));
        // The host announces 2 MB: refused without looking at what was read.
        let r = CallResponse {
            headers: &headers,
            body: b"",
            body_size: 2 << 20,
        };
        assert_eq!(
            parse_jwks(&r, 65536, &[Alg::EdDSA]).unwrap_err(),
            FetchFailure::TooLarge {
                size: 2 << 20,
                max: 65536
            }
        );
        let big = format!("{}{}", one_key(), " ".repeat(70_000));
        assert_eq!(jwks(&headers, &big).unwrap_err().kind(), "too_large");
    }

    #[test]
    fn hostile_key_sets() {
        let headers = answer(Some("200"), Some("application/json"));
        let ed =
            |kid: &str| format!(r#"{{"kty":"OKP","crv":"Ed25519","kid":"{kid}","x":"{ED_X}"}}"#);
        // Duplicate kids: ambiguous, both skipped; with nothing else usable, a failure.
        let dup = format!(r#"{{"keys":[{},{}]}}"#, ed("a"), ed("a"));
        assert_eq!(jwks(&headers, &dup).unwrap_err().kind(), "no_usable_keys");
        let dup_and_good = format!(r#"{{"keys":[{},{},{}]}}"#, ed("a"), ed("a"), ed("b"));
        let set = jwks(&headers, &dup_and_good).unwrap();
        assert_eq!(
            set.keys.iter().map(|k| k.kid()).collect::<Vec<_>>(),
            [Some("b")]
        );
        // Private members: that key skipped, never used.
        let private = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"p","x":"{ED_X}","d":"{ED_X}"}},{}]}}"#,
            ed("b")
        );
        let set = jwks(&headers, &private).unwrap();
        assert_eq!(set.keys.len(), 1);
        assert!(set.skipped[0].to_string().contains("\"p\""));
        // Unknown kty: skipped.
        let unknown = format!(r#"{{"keys":[{{"kty":"ML-DSA","kid":"q"}},{}]}}"#, ed("b"));
        assert_eq!(jwks(&headers, &unknown).unwrap().skipped.len(), 1);
        // Huge numbers: out of f64 range is invalid JSON; large in range is fine unread.
        let huge = format!(r#"{{"keys":[{}],"exp":1e400}}"#, ed("b"));
        assert_eq!(jwks(&headers, &huge).unwrap_err().kind(), "invalid");
        let large = format!(r#"{{"keys":[{}],"n":{}}}"#, ed("b"), "1".repeat(200));
        assert!(jwks(&headers, &large).is_ok());
        // Deep nesting.
        let deep = format!(
            r#"{{"keys":[{}],"x":{}{}}}"#,
            ed("b"),
            "[".repeat(100),
            "]".repeat(100)
        );
        let e = jwks(&headers, &deep).unwrap_err();
        assert!(e.to_string().contains("nested too deeply"), "{e}");
        // Duplicate members anywhere.
        let twice = format!(r#"{{"keys":[{}],"keys":[]}}"#, ed("b"));
        assert!(jwks(&headers, &twice)
            .unwrap_err()
            .to_string()
            .contains("duplicate"));
        // 10,000 keys within the byte cap: refused before any key is imported.
        let many: Vec<String> = (0..10_000).map(|i| ed(&format!("k{i}"))).collect();
        let many = format!(r#"{{"keys":[{}]}}"#, many.join(","));
        let r = CallResponse {
            headers: &headers,
            body: many.as_bytes(),
            body_size: many.len(),
        };
        let started = std::time::Instant::now();
        let e = parse_jwks(&r, 1 << 20, &[Alg::EdDSA]).unwrap_err();
        assert!(e.to_string().contains("10000 keys"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // Truncated anywhere: never a panic, always a failure.
        let full = one_key();
        for cut in 0..full.len() {
            assert!(jwks(&headers, &full[..cut]).is_err(), "{cut}");
        }
    }

    #[test]
    fn discovery_documents() {
        let headers = answer(Some("200"), Some("application/json"));
        let doc = |body: &str| {
            let r = CallResponse {
                headers: &headers,
                body: body.as_bytes(),
                body_size: body.len(),
            };
            parse_discovery(&r, 65536, "https://idp.test/realm")
        };
        assert_eq!(
            doc(
                r#"{"issuer":"https://idp.test/realm","jwks_uri":"https://idp.test/realm/certs","scopes_supported":["openid"]}"#
            ),
            Ok("https://idp.test/realm/certs".into())
        );
        // Byte for byte: a trailing slash is another issuer.
        assert_eq!(
            doc(r#"{"issuer":"https://idp.test/realm/","jwks_uri":"https://idp.test/certs"}"#),
            Err(FetchFailure::IssuerMismatch)
        );
        for bad in [
            r#"{"jwks_uri":"https://idp.test/certs"}"#,
            r#"{"issuer":"https://idp.test/realm"}"#,
            r#"{"issuer":"https://idp.test/realm","jwks_uri":"file:///etc/passwd"}"#,
            r#"{"issuer":"https://idp.test/realm","jwks_uri":7}"#,
            r#"["https://idp.test/realm"]"#,
            r#"{"issuer":"https://idp.test/realm","issuer":"https://idp.test/realm","jwks_uri":"https://x/"}"#,
        ] {
            assert_eq!(doc(bad).unwrap_err().kind(), "invalid", "{bad}");
        }
    }
}
