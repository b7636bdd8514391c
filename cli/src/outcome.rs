//! What the core decided for one request, in the terms a reviewer reads: the decision, rule,
//! reason, status and challenge, the minted token's header and claims (its signature checked
//! against the gateway's public key), and the audit record exactly as the filter logs it.

use serde_json::{json, Map, Value};
use token_exchange_filter::core::keys::{Alg, IssuerKey};
use token_exchange_filter::core::token::b64url_decode;
use token_exchange_filter::core::{Decision, KeySnapshot, Policy, Verdict};

/// The token the decision minted, decoded.
#[derive(Debug, Clone)]
pub struct MintedView {
    /// The compact JWS.
    pub token: String,
    /// Its protected header.
    pub header: Map<String, Value>,
    /// Its claims.
    pub claims: Map<String, Value>,
    /// Whether the signature verifies with the public key of the key that signed it
    /// (`None` for HS256, which has no public key).
    pub verified: Option<bool>,
}

/// One decision, described.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `allow`, `deny` or `pass`.
    pub decision: String,
    /// `exchanged`, `unmatched_pass` or a deny reason code.
    pub reason: String,
    /// The reason's fixed description (denials).
    pub description: Option<String>,
    /// HTTP status of the local response (denials).
    pub status: Option<u16>,
    /// The rule that matched.
    pub rule: Option<String>,
    /// `WWW-Authenticate` (denials but 500).
    pub challenge: Option<String>,
    /// The JSON body of the local response (denials).
    pub body: Option<String>,
    /// gRPC status and message, when the request is gRPC (denials).
    pub grpc: Option<(u32, String)>,
    /// What was minted (allow).
    pub minted: Option<MintedView>,
    /// Headers removed before forwarding (allow and pass).
    pub strip_headers: Vec<String>,
    /// The audit record.
    pub audit: Value,
    /// The audit record exactly as the filter logs it (one JSON line).
    pub audit_line: String,
}

impl Outcome {
    /// Describes `decision`, taken by `policy` for a request that was gRPC or not.
    pub fn of(
        policy: &Policy,
        keys: &KeySnapshot,
        decision: &Decision,
        grpc_request: bool,
    ) -> Outcome {
        let audit_line = decision.audit.to_json_line();
        let audit = serde_json::from_str(&audit_line).unwrap_or(Value::Null);
        let mut out = Outcome {
            decision: str_field(&audit, "decision"),
            reason: str_field(&audit, "reason"),
            description: None,
            status: decision.audit.status,
            rule: decision.audit.rule.clone(),
            challenge: None,
            body: None,
            grpc: None,
            minted: None,
            strip_headers: Vec::new(),
            audit,
            audit_line,
        };
        match &decision.verdict {
            Verdict::Deny(d) => {
                out.description = Some(d.reason.description().to_owned());
                out.challenge = d.www_authenticate.clone();
                out.body = Some(d.body.clone());
                if grpc_request {
                    out.grpc = Some((d.grpc_status, d.grpc_message.clone()));
                }
            }
            Verdict::Forward { minted, .. } => {
                out.minted = Some(view(policy, keys, &minted.token));
                out.strip_headers = decision.strip_headers.clone();
            }
            Verdict::Pass => out.strip_headers = decision.strip_headers.clone(),
        }
        out
    }

    /// The description as JSON (`explain --json`).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "decision": self.decision,
            "reason": self.reason,
            "rule": self.rule,
        });
        let o = v.as_object_mut();
        if let Some(o) = o {
            if let Some(d) = &self.description {
                o.insert("description".into(), json!(d));
            }
            if let Some(s) = self.status {
                o.insert("status".into(), json!(s));
            }
            if let Some(c) = &self.challenge {
                o.insert("www_authenticate".into(), json!(c));
            }
            if let Some(b) = &self.body {
                let body = serde_json::from_str(b).unwrap_or_else(|_| json!(b));
                o.insert("body".into(), body);
            }
            if let Some((status, message)) = &self.grpc {
                o.insert("grpc".into(), json!({"status": status, "message": message}));
            }
            if let Some(m) = &self.minted {
                o.insert(
                    "minted".into(),
                    json!({
                        "header": m.header,
                        "claims": m.claims,
                        "signature_verified": m.verified,
                        "token": m.token,
                    }),
                );
            }
            if self.decision != "deny" {
                o.insert("strip_headers".into(), json!(self.strip_headers));
            }
            o.insert("audit".into(), self.audit.clone());
        }
        v
    }
}

fn str_field(v: &Value, name: &str) -> String {
    v.get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Decodes a minted token and checks its signature with the signing key's public half.
fn view(policy: &Policy, keys: &KeySnapshot, token: &str) -> MintedView {
    let mut parts = token.split('.');
    let object = |part: Option<&str>| -> Map<String, Value> {
        part.and_then(b64url_decode)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    };
    let header = object(parts.next());
    let claims = object(parts.next());
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let verified = keys
        .signing_key(policy, kid)
        .and_then(|k| k.public_jwk().map(|jwk| (k.alg(), jwk)))
        .map(|(alg, jwk)| verify(token, alg, &jwk));
    MintedView {
        token: token.to_owned(),
        header,
        claims,
        verified,
    }
}

fn verify(token: &str, alg: Alg, public_jwk: &Value) -> bool {
    let Ok(key) = IssuerKey::from_jwk(public_jwk, &[alg]) else {
        return false;
    };
    let Some((input, sig)) = token.rsplit_once('.') else {
        return false;
    };
    b64url_decode(sig).is_some_and(|s| key.verify(alg, input.as_bytes(), &s))
}
