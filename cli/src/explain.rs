//! `explain`: one request through the core's `decide`, at a fixed time, without a gateway.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use crate::input::{format_time, inline_or_file, InputError};
use crate::keys::{generate, generated_keys, public_jwk, KeyAlg};
use crate::outcome::Outcome;
use crate::policy::{check_token_text, PolicyDocument, RequestSpec};
use crate::random::entropy;

/// What `explain` is asked.
pub struct ExplainRequest {
    /// The policy file.
    pub policy: String,
    /// The request.
    pub request: RequestSpec,
    /// `now`.
    pub now: Duration,
    /// `--seed`.
    pub seed: Option<u64>,
    /// `--issuer-key ISS=JWK`: trusted issuers whose keys a test key replaces.
    pub issuer_keys: Vec<String>,
    /// `--generated-signing-key`: sign with a fresh key instead of the policy's.
    pub generated_signing_key: bool,
}

/// The explanation: (human text, JSON, whether the request was allowed or passed).
pub fn explain(req: ExplainRequest) -> Result<(String, Value, bool), InputError> {
    let mut doc = PolicyDocument::read(&req.policy)?;
    for arg in &req.issuer_keys {
        let (iss, key) = arg.split_once('=').ok_or_else(|| {
            InputError(format!(
                "--issuer-key {arg:?}: use ISSUER=JWK or ISSUER=@file"
            ))
        })?;
        let what = format!("--issuer-key for {iss}");
        let jwk = crate::input::parse_json(&inline_or_file(key, &what)?, &what)?;
        doc.replace_issuer_keys(iss, public_jwk(&jwk, &what)?)?;
    }
    let mut rng = entropy(req.seed);
    if req.generated_signing_key {
        let mut id = [0u8; 4];
        rng.fill(&mut id)
            .map_err(|_| InputError::new("the random source failed"))?;
        let kid = format!(
            "explain-{}",
            id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let jwk = generate(KeyAlg::EdDSA, &kid, rng.as_mut())?;
        doc.replace_signing_keys(jwk, &kid);
    }
    let policy = doc.load()?;
    let head = req.request.head();
    let keys = generated_keys(&policy, rng.as_mut())?;
    let decision = policy.decide(&head.request(), &keys, req.now, rng.as_mut());
    let outcome = Outcome::of(&policy, &keys, &decision, head.grpc);

    let signed_with = outcome.minted.as_ref().map(|m| {
        let kid = m
            .header
            .get("kid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let alg = m
            .header
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let whose = if req.generated_signing_key {
            "a generated key (not the policy's)"
        } else {
            "the policy's key"
        };
        let check = match m.verified {
            Some(true) => "; signature verified with its public key",
            Some(false) => "; SIGNATURE DOES NOT VERIFY with its public key",
            None => " (HS256: no public key to verify with)",
        };
        format!("signed with {whose} {kid:?} ({alg}){check}")
    });
    let notes: Vec<String> = doc.changes.iter().map(|c| c.note()).collect();

    let mut json = outcome.to_json();
    if let Some(o) = json.as_object_mut() {
        o.insert("now".into(), json!(req.now.as_secs()));
        o.insert("policy".into(), json!(req.policy));
        if let (Some(s), Some(Value::Object(m))) = (&signed_with, o.get_mut("minted")) {
            m.insert("signed_with".into(), json!(s));
            m.insert("generated_key".into(), json!(req.generated_signing_key));
        }
        o.insert("notes".into(), json!(notes));
    }

    let mut t = String::new();
    let _ = writeln!(t, "decision   {}", outcome.decision);
    match &outcome.description {
        Some(d) => {
            let _ = writeln!(t, "reason     {}: {d}", outcome.reason);
        }
        None => {
            let _ = writeln!(t, "reason     {}", outcome.reason);
        }
    }
    if let Some(s) = outcome.status {
        let _ = writeln!(t, "status     {s}");
    }
    let _ = writeln!(
        t,
        "rule       {}",
        outcome.rule.as_deref().unwrap_or("(none matched)")
    );
    if let Some(c) = &outcome.challenge {
        let _ = writeln!(t, "challenge  WWW-Authenticate: {c}");
    }
    if let Some(b) = &outcome.body {
        let _ = writeln!(t, "body       {b}");
    }
    if let Some((status, message)) = &outcome.grpc {
        let _ = writeln!(
            t,
            "grpc       grpc-status: {status}, grpc-message: {message}"
        );
    }
    if let (Some(m), Some(s)) = (&outcome.minted, &signed_with) {
        let _ = writeln!(t, "minted     {s}");
        let _ = writeln!(t, "  header   {}", Value::Object(m.header.clone()));
        let pretty = serde_json::to_string_pretty(&Value::Object(m.claims.clone()))
            .unwrap_or_default()
            .replace('\n', "\n           ");
        let _ = writeln!(t, "  claims   {pretty}");
        let _ = writeln!(t, "  token    {}", m.token);
    }
    match outcome.decision.as_str() {
        "allow" => {
            let _ = writeln!(
                t,
                "forwarded  with Authorization: Bearer <the minted token>{}",
                removed(&outcome.strip_headers)
            );
        }
        "pass" => {
            let _ = writeln!(
                t,
                "forwarded  untouched (no rule matched, unmatched: pass){}",
                removed(&outcome.strip_headers)
            );
        }
        _ => {
            let _ = writeln!(t, "forwarded  nothing: the filter answers itself");
        }
    }
    let _ = writeln!(t, "audit      {}", outcome.audit_line);
    let _ = writeln!(
        t,
        "now        {} ({})",
        format_time(req.now.as_secs()),
        req.now.as_secs()
    );
    for n in &notes {
        let _ = writeln!(t, "note       {n}");
    }
    Ok((t, json, outcome.decision != "deny"))
}

fn removed(headers: &[String]) -> String {
    if headers.is_empty() {
        String::new()
    } else {
        format!("; removes {}", headers.join(", "))
    }
}

/// Reads a `--token` argument: inline or `@file`, trimmed, printable ASCII.
pub fn token_arg(arg: &str) -> Result<String, InputError> {
    check_token_text(&inline_or_file(arg, "--token")?, "--token")
}
