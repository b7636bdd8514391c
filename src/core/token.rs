//! Parsing a compact JWS (RFC 7515 §7.1) from an untrusted string, strictly and within
//! limits. Nothing here trusts the content: it only establishes structure; the signature
//! and the claims are judged in `validate`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::json::{parse_strict, JsonError};
use super::reason::DenyReason;

/// Size and shape limits, each enforced before more expensive work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted token, in bytes.
    pub max_token_bytes: usize,
    /// Longest accepted JOSE header segment (base64url), in bytes.
    pub max_header_bytes: usize,
    /// Deepest accepted JSON nesting in header or payload.
    pub max_json_depth: usize,
    /// Most accepted members in the payload.
    pub max_claims: usize,
    /// Most accepted scope values.
    pub max_scopes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_token_bytes: 8192,
            max_header_bytes: 2048,
            max_json_depth: 16,
            max_claims: 64,
            max_scopes: 64,
        }
    }
}

/// A structurally valid, not yet verified, JWS.
#[derive(Debug, Clone)]
pub struct ParsedToken<'t> {
    /// The JOSE header.
    pub header: Map<String, Value>,
    /// The header's `alg`, as written.
    pub alg: String,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    /// The payload's claims.
    pub claims: Map<String, Value>,
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: exactly what was signed.
    pub signing_input: &'t str,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

impl ParsedToken<'_> {
    /// An identifier safe to log: the `jti` when it is a short printable string, otherwise
    /// `sha256:` and the first 16 bytes (hex) of the SHA-256 of the signature. Never the token.
    pub fn token_id(&self) -> String {
        match self.claims.get("jti").and_then(Value::as_str) {
            Some(jti) if is_loggable_id(jti) => jti.to_owned(),
            _ => signature_id(&self.signature),
        }
    }
}

/// `sha256:<hex of the first 16 bytes>` of `bytes`.
pub fn signature_id(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::from("sha256:");
    for b in digest.iter().take(16) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn is_loggable_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_graphic())
}

/// Strict base64url without padding; None on any other character or non-canonical input.
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// Strict base64url encoding without padding.
pub fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn json_reason(e: JsonError) -> DenyReason {
    match e {
        JsonError::Syntax(_) => DenyReason::MalformedToken,
        JsonError::DuplicateKey => DenyReason::DuplicateClaim,
        JsonError::TooDeep => DenyReason::JsonTooDeep,
    }
}

fn json_object(segment: &str, limits: &Limits) -> Result<Map<String, Value>, DenyReason> {
    let bytes = b64url_decode(segment).ok_or(DenyReason::MalformedToken)?;
    match parse_strict(&bytes, limits.max_json_depth).map_err(json_reason)? {
        Value::Object(m) => Ok(m),
        _ => Err(DenyReason::MalformedToken),
    }
}

/// Parses `token` (the part after `Bearer `) as a compact JWS.
pub fn parse<'t>(token: &'t str, limits: &Limits) -> Result<ParsedToken<'t>, DenyReason> {
    if token.len() > limits.max_token_bytes {
        return Err(DenyReason::TokenTooLarge);
    }
    // Counted, not collected: no allocation for the split.
    let mut parts = token.split('.');
    let (h, p, s) = match (parts.next(), parts.next(), parts.next(), parts.count()) {
        (Some(h), Some(p), Some(s), 0) => (h, p, s),
        (Some(_), Some(_), Some(_), 2) => return Err(DenyReason::EncryptedToken),
        _ => return Err(DenyReason::MalformedToken),
    };
    if h.is_empty() || p.is_empty() {
        return Err(DenyReason::MalformedToken);
    }
    if h.len() > limits.max_header_bytes {
        return Err(DenyReason::HeaderTooLarge);
    }

    let header = json_object(h, limits)?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err(DenyReason::MalformedToken),
    };
    if header.contains_key("enc") {
        return Err(DenyReason::EncryptedToken);
    }
    if header.contains_key("crit") {
        // No extension is understood, so any `crit` (including RFC 7797 `b64`) is refused.
        return Err(DenyReason::UnsupportedCriticalHeader);
    }
    match header.get("cty") {
        None => {}
        Some(Value::String(c)) if c.eq_ignore_ascii_case("JWT") => {
            return Err(DenyReason::NestedToken)
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err(DenyReason::MalformedToken),
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if is_jwt_type(t) => {}
        Some(_) => return Err(DenyReason::UnsupportedTokenType),
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(DenyReason::MalformedToken),
    };

    let claims = json_object(p, limits)?;
    if claims.len() > limits.max_claims {
        return Err(DenyReason::TooManyClaims);
    }
    let signature = b64url_decode(s).ok_or(DenyReason::MalformedToken)?;
    let signing_input = token
        .get(..h.len() + 1 + p.len())
        .ok_or(DenyReason::MalformedToken)?;
    Ok(ParsedToken {
        header,
        alg,
        kid,
        claims,
        signing_input,
        signature,
    })
}

/// `JWT`, or a `+jwt` media type such as `at+jwt` (RFC 7519 §5.1, RFC 8725 §3.11).
fn is_jwt_type(t: &str) -> bool {
    let lower = t.to_ascii_lowercase();
    let lower = lower.strip_prefix("application/").unwrap_or(&lower);
    lower == "jwt" || (lower.ends_with("+jwt") && lower.len() > 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(v: &str) -> String {
        b64url_encode(v.as_bytes())
    }
    fn tok(h: &str, p: &str) -> String {
        format!("{}.{}.{}", seg(h), seg(p), b64url_encode(b"sig"))
    }
    fn err(t: &str) -> DenyReason {
        parse(t, &Limits::default()).unwrap_err()
    }

    #[test]
    fn parses_a_jws() {
        let t = tok(
            r#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}"#,
            r#"{"sub":"a"}"#,
        );
        let p = parse(&t, &Limits::default()).unwrap();
        assert_eq!(p.alg, "EdDSA");
        assert_eq!(p.kid.as_deref(), Some("k1"));
        assert_eq!(p.signature, b"sig");
        assert_eq!(p.signing_input, t.rsplit_once('.').unwrap().0);
        assert!(p.token_id().starts_with("sha256:"));
        assert_eq!(p.token_id().len(), 7 + 32);
    }

    #[test]
    fn structure_errors() {
        assert_eq!(err("a.b"), DenyReason::MalformedToken);
        assert_eq!(err("a.b.c.d"), DenyReason::MalformedToken);
        assert_eq!(err("a.b.c.d.e"), DenyReason::EncryptedToken);
        assert_eq!(err(""), DenyReason::MalformedToken);
        assert_eq!(err(".."), DenyReason::MalformedToken);
        // padding and non-url alphabet
        let h = seg(r#"{"alg":"EdDSA"}"#);
        assert_eq!(err(&format!("{h}=.{h}.AA")), DenyReason::MalformedToken);
        assert_eq!(err(&format!("{h}.{h}.A+/A")), DenyReason::MalformedToken);
        // non-object payload
        assert_eq!(
            err(&tok(r#"{"alg":"EdDSA"}"#, "[1]")),
            DenyReason::MalformedToken
        );
        assert_eq!(
            err(&tok(r#"{"alg":"EdDSA"}"#, "not json")),
            DenyReason::MalformedToken
        );
        assert_eq!(err(&tok(r#"{"alg":1}"#, "{}")), DenyReason::MalformedToken);
    }

    #[test]
    fn header_rules() {
        assert_eq!(
            err(&tok(r#"{"alg":"EdDSA","crit":["exp"],"exp":1}"#, "{}")),
            DenyReason::UnsupportedCriticalHeader
        );
        assert_eq!(
            err(&tok(r#"{"alg":"EdDSA","cty":"jwt"}"#, "{}")),
            DenyReason::NestedToken
        );
        assert_eq!(
            err(&tok(r#"{"alg":"EdDSA","typ":"JOSE+JSON"}"#, "{}")),
            DenyReason::UnsupportedTokenType
        );
        assert_eq!(
            err(&tok(r#"{"alg":"EdDSA","enc":"A256GCM"}"#, "{}")),
            DenyReason::EncryptedToken
        );
        assert_eq!(
            err(&tok(r#"{"alg":"EdDSA","alg":"none"}"#, "{}")),
            DenyReason::DuplicateClaim
        );
        assert_eq!(
            err(&tok(r#"{"alg":"EdDSA","kid":["../../x"]}"#, "{}")),
            DenyReason::MalformedToken
        );
        assert!(parse(
            &tok(r#"{"alg":"EdDSA","typ":"JWT"}"#, "{}"),
            &Limits::default()
        )
        .is_ok());
        assert!(parse(
            &tok(r#"{"alg":"EdDSA","typ":"application/at+jwt"}"#, "{}"),
            &Limits::default()
        )
        .is_ok());
    }

    #[test]
    fn limits() {
        let l = Limits {
            max_token_bytes: 100,
            max_header_bytes: 40,
            max_json_depth: 3,
            max_claims: 2,
            max_scopes: 2,
        };
        let big = tok(
            r#"{"alg":"EdDSA"}"#,
            &format!(r#"{{"x":"{}"}}"#, "a".repeat(200)),
        );
        assert_eq!(parse(&big, &l).unwrap_err(), DenyReason::TokenTooLarge);
        let deep = tok(r#"{"alg":"EdDSA"}"#, r#"{"a":[[[1]]]}"#);
        assert_eq!(parse(&deep, &l).unwrap_err(), DenyReason::JsonTooDeep);
        let many = tok(r#"{"alg":"EdDSA"}"#, r#"{"a":1,"b":2,"c":3}"#);
        assert_eq!(parse(&many, &l).unwrap_err(), DenyReason::TooManyClaims);
        let long_header = tok(r#"{"alg":"EdDSA","kid":"0123456789abcdef"}"#, "{}");
        assert_eq!(
            parse(&long_header, &l).unwrap_err(),
            DenyReason::HeaderTooLarge
        );
        let dup = tok(r#"{"alg":"EdDSA"}"#, r#"{"a":1,"a":1}"#);
        assert_eq!(parse(&dup, &l).unwrap_err(), DenyReason::DuplicateClaim);
    }

    #[test]
    fn token_id_prefers_a_sane_jti() {
        let t = tok(r#"{"alg":"EdDSA"}"#, r#"{"jti":"abc-123"}"#);
        assert_eq!(parse(&t, &Limits::default()).unwrap().token_id(), "abc-123");
        let t = tok(r#"{"alg":"EdDSA"}"#, r#"{"jti":"has space\n"}"#);
        assert!(parse(&t, &Limits::default())
            .unwrap()
            .token_id()
            .starts_with("sha256:"));
    }
}
