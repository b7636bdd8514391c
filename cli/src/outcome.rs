//! What the core decided for one request, in the terms a reviewer reads: the decision, rule,
//! reason, status and challenge, the minted token's header and claims (its signature checked
//! against the gateway's public key), what is forwarded, and the audit record exactly as the
//! filter logs it.
//!
//! A request for the gateway's published documents (`jwks_path`, `discovery_path`) is
//! answered by the core's `Policy::serve_published` first, as the filter does.
//!
//! A shadow rule's decision is carried out as a pass, so the filter's `Decision` holds no
//! challenge and no minted token. To show what enforcing would have done, the same request
//! is decided again by the same policy with its rules enforced (`mode` is the only
//! difference), drawing the same random bytes, so the token shown is the one the audit
//! line's `minted_jti` names.

use std::time::Duration;

use serde_json::{json, Map, Value};
use token_exchange_filter::core::keys::{Alg, IssuerKey};
use token_exchange_filter::core::keyset::KeyMiss;
use token_exchange_filter::core::publish::Served;
use token_exchange_filter::core::token::b64url_decode;
use token_exchange_filter::core::{AuditRecord, Decision, Entropy, KeySnapshot, Policy, Verdict};

use crate::input::InputError;
use crate::keys::generated_keys;
use crate::policy::{PolicyDocument, RequestSpec};
use crate::random::{OsEntropy, Recording, Replay};

/// The audit `mode` of a shadow rule's decisions (the core's).
const SHADOW: &str = "shadow";

/// A policy ready to decide requests as the filter would, and to say what its shadow rules
/// would do if they were enforced.
pub struct Decider {
    /// The policy, exactly as the filter would load it.
    pub policy: Policy,
    /// The same policy with every rule enforced (only when some rule is in shadow mode).
    enforcing: Option<Policy>,
    /// The keys the policy asks to generate (`{"generate": ...}`), generated here; nothing
    /// fetched.
    keys: KeySnapshot,
}

impl Decider {
    /// Loads `doc` (and, if it has shadow rules, its enforcing twin).
    pub fn load(doc: &PolicyDocument) -> Result<Decider, InputError> {
        let policy = doc.load()?;
        let enforcing = if doc.has_shadow_rules() {
            Some(doc.load_enforcing()?)
        } else {
            None
        };
        let keys = generated_keys(&policy, &mut OsEntropy)?;
        Ok(Decider {
            policy,
            enforcing,
            keys,
        })
    }

    /// The generated keys, and nothing fetched: what a decision's key snapshot starts from.
    pub fn keys(&self) -> &KeySnapshot {
        &self.keys
    }

    /// Decides `request` at `now` with `keys` (from [`Decider::keys`], plus fetched sets) as
    /// the filter does: a published document is served by `Policy::serve_published`, any
    /// other request decided by `Policy::decide`. Describes the decision.
    pub fn decide(
        &self,
        request: &RequestSpec,
        keys: &KeySnapshot,
        now: Duration,
        entropy: &mut dyn Entropy,
    ) -> Outcome {
        let head = request.head();
        let req = head.request();
        if let Some(served) = self.policy.serve_published(&req, keys, now) {
            return Outcome::served(&served);
        }
        let mut recording = Recording::new(entropy);
        let decision = self.policy.decide(&req, keys, now, &mut recording);
        let enforced = match (&self.enforcing, decision.audit.mode) {
            (Some(enforcing), Some(SHADOW)) => {
                let mut replay = Replay::new(recording.drawn);
                let twin = enforcing.decide(&req, keys, now, &mut replay);
                // Shown only if it is the decision the audit line describes.
                let same = AuditRecord {
                    mode: Some(SHADOW),
                    ..twin.audit.clone()
                } == decision.audit;
                same.then_some(twin)
            }
            _ => None,
        };
        Outcome::of(&self.policy, keys, &decision, enforced.as_ref(), head.grpc)
    }
}

/// A published document the filter answered with itself.
#[derive(Debug, Clone)]
pub struct ServedView {
    /// The response headers, in order.
    pub headers: Vec<(String, String)>,
    /// The document (`null` for a 405).
    pub body: Value,
}

impl ServedView {
    /// The `kid`s of a served JWK Set, in order.
    pub fn kids(&self) -> Vec<String> {
        self.body
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|k| {
                k.get("kid")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    }

    /// Members of served keys that only private keys have (there must never be any).
    pub fn private_members(&self) -> Vec<String> {
        const PRIVATE: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];
        self.body
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|k| {
                let kid = k
                    .get("kid")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                PRIVATE
                    .iter()
                    .filter(move |m| k.get(**m).is_some())
                    .map(move |m| format!("{kid}.{m}"))
            })
            .collect()
    }
}

/// What reaches the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// The request, with `Authorization: Bearer <the minted token>`.
    Minted,
    /// The request as it came (its own `Authorization`, if any): no rule matched and policy
    /// says pass, or the rule is in shadow mode.
    Unchanged,
    /// Nothing: the filter answers itself.
    Nothing,
}

impl Forwarded {
    /// The name used in JSON output and case files.
    pub fn name(self) -> &'static str {
        match self {
            Forwarded::Minted => "minted",
            Forwarded::Unchanged => "unchanged",
            Forwarded::Nothing => "nothing",
        }
    }
}

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

impl MintedView {
    /// The delegation chain of `act`, newest first: each entry without its nested `act`.
    pub fn act_chain(&self) -> Vec<Map<String, Value>> {
        let mut chain = Vec::new();
        let mut entry = self.claims.get("act");
        while let Some(Value::Object(m)) = entry {
            let mut flat = m.clone();
            flat.remove("act");
            chain.push(flat);
            entry = m.get("act");
        }
        chain
    }
}

/// One decision, described.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `allow`, `deny`, `pass` (in shadow mode: what enforcing would have decided) or
    /// `serve`.
    pub decision: String,
    /// `exchanged`, `unmatched_pass`, a deny reason code, or what was served (`jwks`,
    /// `openid_configuration`).
    pub reason: String,
    /// The reason's fixed description (denials).
    pub description: Option<String>,
    /// HTTP status of the local response (denials; in shadow mode, not sent).
    pub status: Option<u16>,
    /// The rule that matched.
    pub rule: Option<String>,
    /// Whether that rule is in shadow mode.
    pub shadow: bool,
    /// `WWW-Authenticate` (denials but 500; in shadow mode, not sent).
    pub challenge: Option<String>,
    /// The JSON body of the local response (denials; in shadow mode, not sent).
    pub body: Option<String>,
    /// gRPC status and message, when the request is gRPC (denials).
    pub grpc: Option<(u32, String)>,
    /// What was minted (allow; in shadow mode, the token that was minted and discarded).
    pub minted: Option<MintedView>,
    /// `Retry-After` of a denial that is the gateway's temporary state (seconds).
    pub retry_after: Option<u64>,
    /// The token's issuer fetches its keys: which, and what was missing from them (the
    /// filter then refetches them before it answers, rate-limited).
    pub fetched_keys: Option<(String, Option<KeyMiss>)>,
    /// The published document served (decision `serve`).
    pub served: Option<ServedView>,
    /// What reaches the upstream.
    pub forwarded: Forwarded,
    /// Headers removed before forwarding (when anything is forwarded).
    pub strip_headers: Vec<String>,
    /// The audit record.
    pub audit: Value,
    /// The audit record exactly as the filter logs it (one JSON line).
    pub audit_line: String,
}

impl Outcome {
    /// Describes `decision`, taken by `policy` for a request that was gRPC or not; for a
    /// shadow rule, `enforced` is the decision of the same request with the rule enforced.
    pub fn of(
        policy: &Policy,
        keys: &KeySnapshot,
        decision: &Decision,
        enforced: Option<&Decision>,
        grpc_request: bool,
    ) -> Outcome {
        let audit_line = decision.audit.to_json_line();
        let audit = serde_json::from_str(&audit_line).unwrap_or(Value::Null);
        let shadow = decision.audit.mode == Some(SHADOW);
        let mut out = Outcome {
            decision: str_field(&audit, "decision"),
            reason: str_field(&audit, "reason"),
            description: None,
            status: decision.audit.status,
            rule: decision.audit.rule.as_deref().map(str::to_owned),
            shadow,
            challenge: None,
            body: None,
            grpc: None,
            minted: None,
            retry_after: None,
            fetched_keys: decision
                .fetched_keys
                .as_ref()
                .map(|f| (f.issuer.clone(), f.missing)),
            served: None,
            forwarded: match decision.verdict {
                Verdict::Forward { .. } => Forwarded::Minted,
                Verdict::Pass => Forwarded::Unchanged,
                Verdict::Deny(_) => Forwarded::Nothing,
            },
            strip_headers: match decision.verdict {
                Verdict::Deny(_) => Vec::new(),
                _ => decision.strip_headers.clone(),
            },
            audit,
            audit_line,
        };
        // What the decision says, or for a shadow rule what enforcing it would have done.
        let said = enforced.filter(|_| shadow).unwrap_or(decision);
        match &said.verdict {
            Verdict::Deny(d) => {
                out.description = Some(d.reason.description().to_owned());
                out.challenge = d.www_authenticate.as_deref().map(str::to_owned);
                out.body = Some(d.body.to_string());
                out.retry_after = d.retry_after;
                if grpc_request {
                    out.grpc = Some((d.grpc_status, d.grpc_message.to_string()));
                }
            }
            Verdict::Forward { minted, .. } => out.minted = Some(view(policy, keys, &minted.token)),
            Verdict::Pass => {}
        }
        out
    }

    /// Describes a published document the filter served itself.
    pub fn served(served: &Served) -> Outcome {
        let audit_line = served.audit.to_json_line();
        let audit = serde_json::from_str(&audit_line).unwrap_or(Value::Null);
        Outcome {
            decision: str_field(&audit, "decision"),
            reason: str_field(&audit, "reason"),
            description: None,
            status: Some(served.status),
            rule: None,
            shadow: false,
            challenge: None,
            body: None,
            grpc: None,
            minted: None,
            retry_after: None,
            fetched_keys: None,
            served: Some(ServedView {
                headers: served
                    .headers
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), v.clone()))
                    .collect(),
                body: serde_json::from_str(&served.body).unwrap_or(Value::Null),
            }),
            forwarded: Forwarded::Nothing,
            strip_headers: Vec::new(),
            audit,
            audit_line,
        }
    }

    /// Whether the filter would refetch the issuer's keys before answering (a `kid` missing
    /// from the fetched set, or no fresh set): the decision shown is the one it takes if the
    /// refetch brings the same keys.
    pub fn refetch(&self) -> bool {
        self.fetched_keys.as_ref().is_some_and(|(_, m)| m.is_some())
    }

    /// The description as JSON (`explain --json`).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "decision": self.decision,
            "reason": self.reason,
            "rule": self.rule,
            "mode": if self.shadow { "shadow" } else { "enforce" },
            "forwarded": self.forwarded.name(),
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
            if let Some(r) = self.retry_after {
                o.insert("retry_after".into(), json!(r));
            }
            if let Some((issuer, missing)) = &self.fetched_keys {
                let missing = match missing {
                    None => Value::Null,
                    Some(KeyMiss::UnknownKid) => json!("unknown_kid"),
                    Some(KeyMiss::Unavailable) => json!("unavailable"),
                };
                o.insert(
                    "fetched_keys".into(),
                    json!({"issuer": issuer, "missing": missing, "refetch": self.refetch()}),
                );
            }
            if let Some(sv) = &self.served {
                let headers: Map<String, Value> = sv
                    .headers
                    .iter()
                    .map(|(n, v)| (n.clone(), json!(v)))
                    .collect();
                o.insert(
                    "served".into(),
                    json!({"headers": headers, "body": sv.body, "kids": sv.kids()}),
                );
            }
            if let Some(m) = &self.minted {
                o.insert(
                    "minted".into(),
                    json!({
                        "header": m.header,
                        "claims": m.claims,
                        "act_chain": m.act_chain(),
                        "signature_verified": m.verified,
                        "token": m.token,
                    }),
                );
            }
            if self.forwarded != Forwarded::Nothing {
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
