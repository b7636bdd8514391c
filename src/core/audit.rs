//! The audit record: one JSON line per decision. It names the original token by id (its
//! `jti`, else a hash of its signature) and never contains a token or a secret.

use std::fmt::Write as _;
use std::sync::Arc;

/// The decision taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Token validated, exchanged, forwarded.
    Allow,
    /// Refused with a local response.
    Deny,
    /// No rule matched and policy says pass: forwarded untouched.
    Pass,
}

impl Outcome {
    /// The audit value: `allow`, `deny`, `pass`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Pass => "pass",
        }
    }
}

/// Whether the token-dependent work was reused from the verified-and-minted cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// Served from the cache: no verification, the cached minted token forwarded again.
    Hit,
    /// Not served from the cache (decided afresh, the cache off, or no token reached).
    Miss,
}

impl CacheUse {
    /// The audit value: `hit` or `miss`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
        }
    }
}

/// One audit record. Field order is the JSON order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Always `token_exchange`: lets log pipelines select these lines.
    pub event: &'static str,
    /// Milliseconds since the Unix epoch (host clock).
    pub ts_ms: u64,
    /// allow / deny / pass.
    pub decision: Outcome,
    /// `exchanged`, `unmatched_pass`, or a deny reason code.
    pub reason: &'static str,
    /// HTTP status of a local response (deny only).
    pub status: Option<u16>,
    /// The matched rule.
    pub rule: Option<Arc<str>>,
    /// `x-request-id`, when the request has one.
    pub request_id: Option<String>,
    /// Request method.
    pub method: String,
    /// Request path without the query string (queries may carry secrets).
    pub path: String,
    /// Original issuer (`iss`).
    pub iss: Option<Arc<str>>,
    /// Original subject (`sub`).
    pub sub: Option<Arc<str>>,
    /// Original caller (`azp`, else `client_id`).
    pub caller: Option<Arc<str>>,
    /// Original token id: its `jti`, else `sha256:` + 32 hex of its signature's hash.
    pub token_id: Option<Arc<str>>,
    /// Whether `iss`/`sub`/`caller`/`token_id` come from a token whose signature verified.
    pub token_verified: bool,
    /// Whether the exchange was reused from the cache (`hit`) or not (`miss`).
    pub cache: CacheUse,
    /// The minted token's `jti`.
    pub minted_jti: Option<Arc<str>>,
    /// The minted token's `aud`.
    pub minted_aud: Option<Arc<str>>,
    /// The minted token's `scope`.
    pub minted_scope: Option<Arc<str>>,
    /// The minted token's `exp` (seconds).
    pub minted_exp: Option<u64>,
    /// The `kid` that signed the minted token.
    pub minted_kid: Option<Arc<str>>,
}

impl AuditRecord {
    /// The record as one JSON line (no newline), absent fields omitted. Written directly
    /// into one buffer sized for a typical record: it is on every request's path.
    pub fn to_json_line(&self) -> String {
        let mut w = JsonLine(String::with_capacity(640));
        w.0.push('{');
        w.str_field("event", self.event);
        w.num_field("ts_ms", self.ts_ms);
        w.str_field("decision", self.decision.as_str());
        w.str_field("reason", self.reason);
        if let Some(s) = self.status {
            w.num_field("status", u64::from(s));
        }
        w.opt_field("rule", self.rule.as_deref());
        w.opt_field("request_id", self.request_id.as_deref());
        w.str_field("method", &self.method);
        w.str_field("path", &self.path);
        w.opt_field("iss", self.iss.as_deref());
        w.opt_field("sub", self.sub.as_deref());
        w.opt_field("caller", self.caller.as_deref());
        w.opt_field("token_id", self.token_id.as_deref());
        w.key("token_verified");
        w.0.push_str(if self.token_verified { "true" } else { "false" });
        w.str_field("cache", self.cache.as_str());
        w.opt_field("minted_jti", self.minted_jti.as_deref());
        w.opt_field("minted_aud", self.minted_aud.as_deref());
        w.opt_field("minted_scope", self.minted_scope.as_deref());
        if let Some(exp) = self.minted_exp {
            w.num_field("minted_exp", exp);
        }
        w.opt_field("minted_kid", self.minted_kid.as_deref());
        w.0.push('}');
        w.0
    }
}

/// A JSON object being written member by member (names are fixed ASCII identifiers).
struct JsonLine(String);

impl JsonLine {
    fn key(&mut self, name: &str) {
        if !self.0.ends_with('{') {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(name);
        self.0.push_str("\":");
    }
    fn str_field(&mut self, name: &str, value: &str) {
        self.key(name);
        push_json_string(&mut self.0, value);
    }
    fn opt_field(&mut self, name: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.str_field(name, v);
        }
    }
    fn num_field(&mut self, name: &str, value: u64) {
        self.key(name);
        let _ = write!(self.0, "{value}");
    }
}

/// Appends `s` as a JSON string (RFC 8259 §7: `"`, `\\` and control characters escaped; the
/// same escapes serde_json writes).
pub fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(s.get(plain..i).unwrap_or_default());
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        plain = i + 1;
    }
    out.push_str(s.get(plain..).unwrap_or_default());
    out.push('"');
}

/// Truncates attacker-supplied text for the log, on a char boundary.
pub(crate) fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s.get(..end).unwrap_or_default().to_owned();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_respects_char_boundaries() {
        assert_eq!(bounded("abc", 5), "abc");
        assert_eq!(bounded("ééé", 3), "é…");
    }

    #[test]
    fn json_line_omits_absent_fields() {
        let r = AuditRecord {
            event: "token_exchange",
            ts_ms: 5,
            decision: Outcome::Deny,
            reason: "missing_token",
            status: Some(401),
            rule: None,
            request_id: None,
            method: "GET".into(),
            path: "/x".into(),
            iss: None,
            sub: None,
            caller: None,
            token_id: None,
            token_verified: false,
            cache: CacheUse::Miss,
            minted_jti: None,
            minted_aud: None,
            minted_scope: None,
            minted_exp: None,
            minted_kid: None,
        };
        assert_eq!(
            r.to_json_line(),
            r#"{"event":"token_exchange","ts_ms":5,"decision":"deny","reason":"missing_token","status":401,"method":"GET","path":"/x","token_verified":false,"cache":"miss"}"#
        );
    }

    #[test]
    fn strings_are_escaped_as_serde_json_does() {
        for s in [
            "plain",
            "quote \" and backslash \\",
            "ctl \u{0}\u{1f}\u{8}\u{c}\n\r\t end",
            "é ✓ \u{2028}",
            "",
        ] {
            let mut out = String::new();
            push_json_string(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn a_full_record_is_valid_json_with_every_field() {
        let r = AuditRecord {
            event: "token_exchange",
            ts_ms: 1,
            decision: Outcome::Allow,
            reason: "exchanged",
            status: None,
            rule: Some("r\"1".into()),
            request_id: Some("id".into()),
            method: "GET".into(),
            path: "/a\\b".into(),
            iss: Some("https://idp".into()),
            sub: Some("alice\n".into()),
            caller: Some("web".into()),
            token_id: Some("t".into()),
            token_verified: true,
            cache: CacheUse::Hit,
            minted_jti: Some("j".into()),
            minted_aud: Some("aud".into()),
            minted_scope: Some("a b".into()),
            minted_exp: Some(9),
            minted_kid: Some("k".into()),
        };
        let v: serde_json::Value = serde_json::from_str(&r.to_json_line()).unwrap();
        assert_eq!(v["rule"], "r\"1");
        assert_eq!(v["sub"], "alice\n");
        assert_eq!(v["cache"], "hit");
        assert_eq!(v["minted_exp"], 9);
        assert_eq!(v.as_object().unwrap().len(), 19);
    }
}
