//! The audit record: one JSON line per decision. It names the original token by id (its
//! `jti`, else a hash of its signature) and never contains a token or a secret.
//!
//! The line is written by hand ([`AuditRecord::to_json_line`]: one buffer, no serializer
//! on every request's path); the derived `Serialize` is the reference it is tested equal
//! to, member for member.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

/// The decision taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Token validated, exchanged, forwarded.
    Allow,
    /// Refused with a local response (what a record says until a decision is made).
    #[default]
    Deny,
    /// No rule matched and policy says pass: forwarded untouched.
    Pass,
    /// The filter answered itself with a public document (the gateway's key set or its
    /// OpenID configuration).
    Serve,
}

impl Outcome {
    /// The audit value: `allow`, `deny`, `pass`, `serve`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Pass => "pass",
            Outcome::Serve => "serve",
        }
    }
}

/// Whether the token-dependent work was reused from the verified-and-minted cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheUse {
    /// Served from the cache: no verification, the cached minted token forwarded again.
    Hit,
    /// Not served from the cache (decided afresh, the cache off, or no token reached).
    #[default]
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

/// One audit record. Field order is the JSON order. Text a cache hit repeats is shared
/// with the cache entry (`Arc<str>`): a hit copies no string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Always `token_exchange`: lets log pipelines select these lines.
    pub event: &'static str,
    /// Milliseconds since the Unix epoch (host clock).
    pub ts_ms: u64,
    /// allow / deny / pass / serve.
    pub decision: Outcome,
    /// `exchanged`, `unmatched_pass`, a deny reason code, or what was served (`jwks`,
    /// `openid_configuration`).
    pub reason: &'static str,
    /// HTTP status of a local response (deny and serve; in shadow mode, the status enforcing
    /// would have sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `shadow` when the matched rule is in shadow mode: `decision`, `reason` and `status`
    /// say what enforcing would have done; the request was forwarded unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    /// The matched rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Arc<str>>,
    /// `x-request-id`, when the request has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Request method.
    pub method: String,
    /// Request path without the query string (queries may carry secrets).
    pub path: String,
    /// Original issuer (`iss`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<Arc<str>>,
    /// Original subject (`sub`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<Arc<str>>,
    /// Original caller (`azp`, else `client_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<Arc<str>>,
    /// Original token id: its `jti`, else `sha256:` + 32 hex of its signature's hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<Arc<str>>,
    /// Whether `iss`/`sub`/`caller`/`token_id` come from a token whose signature verified.
    pub token_verified: bool,
    /// Whether the exchange was reused from the cache (`hit`) or not (`miss`).
    pub cache: CacheUse,
    /// For a gateway token (chained exchange): the issuer of the token the chain started from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_iss: Option<Arc<str>>,
    /// For a gateway token: the id of the token the chain started from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_token_id: Option<Arc<str>>,
    /// Exchanges the minted token records (or would have): 1 at the edge, one more per hop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain_depth: Option<usize>,
    /// The verified token's `acr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acr: Option<Arc<str>>,
    /// The verified token's `auth_time`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
    /// The (original) issuer's `review_by` date has passed.
    #[serde(skip_serializing_if = "is_false")]
    pub issuer_review_overdue: bool,
    /// Scopes the rule would grant and the token holds, removed by the issuer's `max_scopes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling_removed_scopes: Option<Arc<str>>,
    /// Names (never values) of `strip_headers` the request carried: stripped, or the reason
    /// for `identity_header_present`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub identity_headers: Vec<String>,
    /// The minted token's `jti`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minted_jti: Option<Arc<str>>,
    /// The minted token's `aud`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minted_aud: Option<Arc<str>>,
    /// The minted token's `scope`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minted_scope: Option<Arc<str>>,
    /// The minted token's `exp` (seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minted_exp: Option<u64>,
    /// The `kid` that signed the minted token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minted_kid: Option<Arc<str>>,
}

impl AuditRecord {
    /// The record as one JSON line (no newline), absent fields omitted: the same members,
    /// order and escapes as its derived `Serialize`. Written directly into one buffer sized
    /// for a typical record: it is on every request's path.
    pub fn to_json_line(&self) -> String {
        let mut w = JsonLine(String::with_capacity(768));
        w.0.push('{');
        w.str_field("event", self.event);
        w.num_field("ts_ms", self.ts_ms);
        w.str_field("decision", self.decision.as_str());
        w.str_field("reason", self.reason);
        w.opt_num("status", self.status.map(u64::from));
        w.opt_field("mode", self.mode);
        w.opt_field("rule", self.rule.as_deref());
        w.opt_field("request_id", self.request_id.as_deref());
        w.str_field("method", &self.method);
        w.str_field("path", &self.path);
        w.opt_field("iss", self.iss.as_deref());
        w.opt_field("sub", self.sub.as_deref());
        w.opt_field("caller", self.caller.as_deref());
        w.opt_field("token_id", self.token_id.as_deref());
        w.bool_field("token_verified", self.token_verified);
        w.str_field("cache", self.cache.as_str());
        w.opt_field("origin_iss", self.origin_iss.as_deref());
        w.opt_field("origin_token_id", self.origin_token_id.as_deref());
        w.opt_num("chain_depth", self.chain_depth.map(|d| d as u64));
        w.opt_field("acr", self.acr.as_deref());
        w.opt_num("auth_time", self.auth_time);
        if self.issuer_review_overdue {
            w.bool_field("issuer_review_overdue", true);
        }
        w.opt_field(
            "ceiling_removed_scopes",
            self.ceiling_removed_scopes.as_deref(),
        );
        if !self.identity_headers.is_empty() {
            w.key("identity_headers");
            w.0.push('[');
            for (i, name) in self.identity_headers.iter().enumerate() {
                if i > 0 {
                    w.0.push(',');
                }
                push_json_string(&mut w.0, name);
            }
            w.0.push(']');
        }
        w.opt_field("minted_jti", self.minted_jti.as_deref());
        w.opt_field("minted_aud", self.minted_aud.as_deref());
        w.opt_field("minted_scope", self.minted_scope.as_deref());
        w.opt_num("minted_exp", self.minted_exp);
        w.opt_field("minted_kid", self.minted_kid.as_deref());
        w.0.push('}');
        w.0
    }
}

fn is_false(b: &bool) -> bool {
    !*b
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
    fn opt_num(&mut self, name: &str, value: Option<u64>) {
        if let Some(v) = value {
            self.num_field(name, v);
        }
    }
    fn bool_field(&mut self, name: &str, value: bool) {
        self.key(name);
        self.0.push_str(if value { "true" } else { "false" });
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

/// [`bounded`], shared.
pub(crate) fn bounded_arc(s: &str, max: usize) -> Arc<str> {
    if s.len() <= max {
        return Arc::from(s);
    }
    Arc::from(bounded(s, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_respects_char_boundaries() {
        assert_eq!(bounded("abc", 5), "abc");
        assert_eq!(bounded("ééé", 3), "é…");
        assert_eq!(&*bounded_arc("ééé", 3), "é…");
    }

    #[test]
    fn json_line_omits_absent_fields() {
        let r = AuditRecord {
            event: "token_exchange",
            ts_ms: 5,
            decision: Outcome::Deny,
            reason: "missing_token",
            status: Some(401),
            method: "GET".into(),
            path: "/x".into(),
            ..AuditRecord::default()
        };
        assert_eq!(
            r.to_json_line(),
            r#"{"event":"token_exchange","ts_ms":5,"decision":"deny","reason":"missing_token","status":401,"method":"GET","path":"/x","token_verified":false,"cache":"miss"}"#
        );
        assert_eq!(r.to_json_line(), serde_json::to_string(&r).unwrap());
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

    /// Every member set (and hostile text in each string): the hand-written line is the
    /// derived serialization, byte for byte.
    #[test]
    fn the_hand_written_line_is_the_derived_serialization() {
        let t = |s: &str| Some(Arc::<str>::from(s));
        let full = AuditRecord {
            event: "token_exchange",
            ts_ms: 1,
            decision: Outcome::Allow,
            reason: "exchanged",
            status: Some(403),
            mode: Some("shadow"),
            rule: t("r\"1"),
            request_id: Some("id\u{1}".into()),
            method: "GET".into(),
            path: "/a\\b".into(),
            iss: t("https://idp"),
            sub: t("alice\n"),
            caller: t("web"),
            token_id: t("t"),
            token_verified: true,
            cache: CacheUse::Hit,
            origin_iss: t("https://partner"),
            origin_token_id: t("edge-7"),
            chain_depth: Some(2),
            acr: t("urn:mfa"),
            auth_time: Some(7),
            issuer_review_overdue: true,
            ceiling_removed_scopes: t("a b"),
            identity_headers: vec!["x-user-id".into(), "x-\"q".into()],
            minted_jti: t("j"),
            minted_aud: t("aud"),
            minted_scope: t("a b"),
            minted_exp: Some(9),
            minted_kid: t("k"),
        };
        let line = full.to_json_line();
        assert_eq!(line, serde_json::to_string(&full).unwrap());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 29);
        for outcome in [Outcome::Allow, Outcome::Deny, Outcome::Pass, Outcome::Serve] {
            for cache in [CacheUse::Hit, CacheUse::Miss] {
                let r = AuditRecord {
                    decision: outcome,
                    cache,
                    identity_headers: vec!["one".into()],
                    ..AuditRecord::default()
                };
                assert_eq!(r.to_json_line(), serde_json::to_string(&r).unwrap());
            }
        }
    }
}
