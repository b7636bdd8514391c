//! `explain`: one request through the core's `decide`, at a fixed time, without a gateway:
//! the decision, what is forwarded, and the trust-boundary facts behind it (shadow mode, the
//! minted `act` chain, a step-up challenge, ceilings, the issuer's review, identity headers),
//! with the key sets the filter would have fetched supplied offline (`--jwks`), and the
//! gateway's published documents as the filter serves them.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Map, Value};
use token_exchange_filter::core::{ExchangeRule, Policy};

use crate::fetched::{describe_state, import, Fetch};
use crate::input::{format_time, inline_or_file, InputError};
use crate::keys::{generate, public_jwk, KeyAlg};
use crate::outcome::{Decider, Forwarded, Outcome};
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
    /// `--jwks ISS=JWKS`: the key set the filter last fetched for a fetching issuer.
    pub jwks: Vec<String>,
    /// `--fetched-at`: when those sets were fetched (default: `now`).
    pub fetched_at: Option<Duration>,
}

/// Reasons that ask the client to re-authenticate (RFC 9470).
const STEP_UP_REASONS: [&str; 2] = ["acr_not_satisfied", "authentication_too_old"];

/// The explanation: (human text, JSON, whether the request is forwarded).
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
    let decider = Decider::load(&doc)?;
    let policy = &decider.policy;
    let fetched_at = req.fetched_at.unwrap_or(req.now).as_secs();
    let mut fetches: Vec<(String, Fetch)> = Vec::new();
    for arg in &req.jwks {
        let (iss, set) = arg.split_once('=').ok_or_else(|| {
            InputError(format!("--jwks {arg:?}: use ISSUER=JWKS or ISSUER=@file"))
        })?;
        let what = format!("--jwks for {iss}");
        if fetches.iter().any(|(i, _)| i == iss) {
            return Err(InputError(format!(
                "{what}: given twice (the filter holds one key set per issuer)"
            )));
        }
        let origin = match set.strip_prefix('@') {
            Some(path) => path.to_owned(),
            None => "inline".to_owned(),
        };
        let supplied = import(policy, iss, &inline_or_file(set, &what)?, &origin)
            .map_err(|e| InputError(format!("{what}: {e}")))?;
        fetches.push((iss.to_owned(), Fetch::At(supplied.into(), fetched_at)));
    }
    if req.fetched_at.is_some() && fetches.is_empty() {
        return Err(InputError::new(
            "--fetched-at is only used with --jwks (when the given key sets were fetched)",
        ));
    }
    if fetched_at > req.now.as_secs() {
        return Err(InputError::new(
            "--fetched-at: after --now (a key set cannot be fetched after the request)",
        ));
    }
    let mut keys = decider.keys().clone();
    crate::fetched::apply(&mut keys, &fetches);
    let key_states = describe_state(policy, &fetches, req.now.as_secs());
    let outcome = decider.decide(&req.request, &keys, req.now, rng.as_mut());
    let rule = outcome
        .rule
        .as_ref()
        .and_then(|name| policy.rules.iter().find(|r| *r.name == **name));

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
    let step_up = rule
        .filter(|_| STEP_UP_REASONS.contains(&outcome.reason.as_str()))
        .map(|r| {
            json!({
                "acr_values": r.require.acr,
                "max_age": r.require.max_age_seconds,
            })
        });

    let mut json = outcome.to_json();
    if let Some(o) = json.as_object_mut() {
        o.insert("now".into(), json!(req.now.as_secs()));
        o.insert("policy".into(), json!(req.policy));
        if let (Some(s), Some(Value::Object(m))) = (&signed_with, o.get_mut("minted")) {
            m.insert("signed_with".into(), json!(s));
            m.insert("generated_key".into(), json!(req.generated_signing_key));
            m.insert("discarded".into(), json!(outcome.shadow));
        }
        if let Some(s) = &step_up {
            o.insert("step_up".into(), s.clone());
        }
        o.insert("notes".into(), json!(notes));
        if !key_states.is_empty() {
            let states: Vec<&Value> = key_states.iter().map(|(j, _)| j).collect();
            o.insert("issuer_keys".into(), json!(states));
        }
    }

    let mut t = String::new();
    let unsent = if outcome.shadow {
        " (shadow mode: not sent)"
    } else {
        ""
    };
    if outcome.shadow {
        let _ = writeln!(
            t,
            "decision   {} (shadow mode: what enforcing the rule would decide)",
            outcome.decision
        );
    } else {
        let _ = writeln!(t, "decision   {}", outcome.decision);
    }
    match &outcome.description {
        Some(d) => {
            let _ = writeln!(t, "reason     {}: {d}", outcome.reason);
        }
        None => {
            let _ = writeln!(t, "reason     {}", outcome.reason);
        }
    }
    if let Some(s) = outcome.status {
        let _ = writeln!(t, "status     {s}{unsent}");
    }
    if let Some(r) = outcome.retry_after {
        let _ = writeln!(
            t,
            "retry      Retry-After: {r} (jwks_min_refetch_seconds: a retry sooner cannot find new keys){unsent}"
        );
    }
    let _ = writeln!(
        t,
        "rule       {}{}",
        match (&outcome.rule, &outcome.served) {
            (Some(r), _) => r.as_str(),
            (None, Some(_)) => "(none: a published document is served before any rule)",
            (None, None) => "(none matched)",
        },
        if outcome.shadow { " (mode shadow)" } else { "" }
    );
    if let Some(c) = &outcome.challenge {
        let _ = writeln!(t, "challenge  WWW-Authenticate: {c}{unsent}");
    }
    if let Some(b) = &outcome.body {
        let _ = writeln!(t, "body       {b}{unsent}");
    }
    if let Some((status, message)) = &outcome.grpc {
        let _ = writeln!(
            t,
            "grpc       grpc-status: {status}, grpc-message: {message}{unsent}"
        );
    }
    if let Some(r) = rule.filter(|_| step_up.is_some()) {
        let _ = writeln!(
            t,
            "step-up    {}",
            describe_step_up(r, &outcome, req.now.as_secs())
        );
    }
    if let (Some(m), Some(s)) = (&outcome.minted, &signed_with) {
        let discarded = if outcome.shadow {
            "; discarded (shadow mode)"
        } else {
            ""
        };
        let _ = writeln!(t, "minted     {s}{discarded}");
        let _ = writeln!(t, "  header   {}", Value::Object(m.header.clone()));
        let pretty = serde_json::to_string_pretty(&Value::Object(m.claims.clone()))
            .unwrap_or_default()
            .replace('\n', "\n           ");
        let _ = writeln!(t, "  claims   {pretty}");
        let _ = writeln!(t, "  token    {}", m.token);
        let chain = m.act_chain();
        for (i, entry) in chain.iter().enumerate() {
            let label = if i == 0 { "  act      " } else { "           " };
            let _ = writeln!(t, "{label}{}. {}", i + 1, describe_act(entry));
        }
    }
    for line in trust_lines(policy, rule, &outcome) {
        let _ = writeln!(t, "{line}");
    }
    if let Some(served) = &outcome.served {
        for (name, value) in &served.headers {
            let _ = writeln!(t, "header     {name}: {value}");
        }
        if !served.body.is_null() {
            let pretty = serde_json::to_string_pretty(&served.body)
                .unwrap_or_default()
                .replace('\n', "\n           ");
            let _ = writeln!(t, "body       {pretty}");
        }
        if outcome.reason == "jwks" {
            let _ = writeln!(
                t,
                "published  {}",
                describe_published(policy, &served.kids(), req.now.as_secs())
            );
        }
    }
    if outcome.refetch() {
        if let Some((issuer, _)) = &outcome.fetched_keys {
            let _ = writeln!(
                t,
                "refetch    the filter first refetches the keys of {issuer} (at most once per jwks_min_refetch_seconds) and waits for them (at most jwks_timeout_ms): this is its decision if they are the ones given"
            );
        }
    }
    // A served document uses no issuer's keys.
    for (_, line) in key_states.iter().filter(|_| outcome.served.is_none()) {
        let _ = writeln!(t, "keys       {line}");
    }
    let removes = removed(&outcome.strip_headers);
    let forwarded = match (outcome.forwarded, outcome.shadow) {
        (Forwarded::Minted, _) => {
            format!("with Authorization: Bearer <the minted token>{removes}")
        }
        (Forwarded::Unchanged, true) => format!(
            "unchanged: the rule is in shadow mode, so the request goes on as it came (its own Authorization, if any) and is never denied{removes}"
        ),
        (Forwarded::Unchanged, false) => {
            format!("untouched (no rule matched, unmatched: pass){removes}")
        }
        (Forwarded::Nothing, _) if outcome.served.is_some() => {
            "nothing: the filter serves the document itself".to_owned()
        }
        (Forwarded::Nothing, _) => "nothing: the filter answers itself".to_owned(),
    };
    let _ = writeln!(t, "forwarded  {forwarded}");
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
    let yes = outcome.forwarded != Forwarded::Nothing
        || (outcome.served.is_some() && outcome.status == Some(200));
    Ok((t, json, yes))
}

/// The served keys with their place in the rotation.
fn describe_published(policy: &Policy, kids: &[String], now: u64) -> String {
    let ttl = policy.longest_ttl_seconds();
    let listed: Vec<String> = kids
        .iter()
        .map(|kid| {
            let state = policy
                .signing_keys
                .iter()
                .find(|k| &k.kid == kid)
                .map_or("?".to_owned(), |k| {
                    crate::check::key_state_text(k, ttl, now)
                });
            format!("{kid} ({state})")
        })
        .collect();
    let left: Vec<String> = policy
        .signing_keys
        .iter()
        .filter(|k| !kids.contains(&k.kid))
        .map(|k| format!("{} ({})", k.kid, crate::check::key_state_text(k, ttl, now)))
        .collect();
    let mut text = if listed.is_empty() {
        "no key".to_owned()
    } else {
        listed.join(", ")
    };
    if !left.is_empty() {
        text.push_str(&format!("; not served: {}", left.join(", ")));
    }
    text
}

/// What a client must do to satisfy a step-up rule, and what the token showed.
fn describe_step_up(rule: &ExchangeRule, o: &Outcome, now: u64) -> String {
    let q = &rule.require;
    let mut asks = Vec::new();
    if !q.acr.is_empty() {
        asks.push(format!("with acr one of {}", q.acr.join(", ")));
    }
    if let Some(max_age) = q.max_age_seconds {
        asks.push(format!("at most {max_age} s before the request"));
    }
    let acr = o.audit.get("acr").and_then(Value::as_str).unwrap_or("none");
    let when = match o.audit.get("auth_time").and_then(Value::as_u64) {
        Some(at) => format!(
            "authenticated {} s before the request",
            now.saturating_sub(at)
        ),
        None => "no auth_time".to_owned(),
    };
    format!(
        "re-authenticate the user (RFC 9470) {}, then retry with the new token; this token: acr {acr}, {when}",
        asks.join(" and ")
    )
}

/// One `act` entry: who acted, named by whom, through which rule, for which audience.
fn describe_act(entry: &Map<String, Value>) -> String {
    let s = |k: &str| entry.get(k).and_then(Value::as_str);
    let who = match (s("sub"), s("iss")) {
        (Some(sub), Some(iss)) => format!("{sub} (named by {iss})"),
        (Some(sub), None) => sub.to_owned(),
        _ => "an unnamed caller".to_owned(),
    };
    format!(
        "{who} through rule {} for {}",
        s("rule").unwrap_or("?"),
        s("audience").unwrap_or("?")
    )
}

/// The trust-boundary facts of the audit record, one line each.
fn trust_lines(policy: &Policy, rule: Option<&ExchangeRule>, o: &Outcome) -> Vec<String> {
    let a = &o.audit;
    let s = |k: &str| a.get(k).and_then(Value::as_str);
    let mut lines = Vec::new();
    if let Some(depth) = a.get("chain_depth").and_then(Value::as_u64) {
        let limit = rule.map_or(String::new(), |r| {
            format!(" (rule {} allows at most {})", r.name, r.max_chain_depth)
        });
        let mut line = format!("chain      {depth} exchange(s) recorded{limit}");
        if let (Some(iss), Some(id)) = (s("origin_iss"), s("origin_token_id")) {
            let _ = write!(
                line,
                "; a gateway token, exchanged from token {id} of {iss}"
            );
        }
        lines.push(line);
    }
    if let Some(removed) = s("ceiling_removed_scopes") {
        let issuer = s("origin_iss").or(s("iss")).unwrap_or("the issuer");
        lines.push(format!(
            "ceiling    removed {removed}: outside the max_scopes of {issuer}"
        ));
    }
    if a.get("issuer_review_overdue").and_then(Value::as_bool) == Some(true) {
        let iss = s("origin_iss").or(s("iss")).unwrap_or_default();
        let due = policy
            .trusted_issuer(iss)
            .and_then(|t| t.review_by)
            .map_or(String::new(), |d| format!(" (review_by {d})"));
        lines.push(format!(
            "review     trusted issuer {iss} is overdue for review{due}: its tokens are still accepted"
        ));
    }
    if let Some(Value::Array(names)) = a.get("identity_headers") {
        let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
        let refusal = o.reason == "identity_header_present";
        let fate = match (refusal, o.forwarded) {
            (true, Forwarded::Nothing) => "refused (strip_headers_action: refuse)",
            (true, _) => "removed before forwarding (enforcing the rule would refuse the request)",
            (false, Forwarded::Nothing) => "the request is refused anyway",
            (false, _) => "removed before forwarding",
        };
        lines.push(format!(
            "identity   headers from the client: {}: {fate}",
            names.join(", ")
        ));
    }
    lines
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
