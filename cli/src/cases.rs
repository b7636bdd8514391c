//! `test`: table-driven policy tests. A case file names a policy, test issuers with their
//! private keys, and cases (a request, a token to sign or a literal token, a fixed `now`,
//! and what must come out); each case goes through the core's `decide`. The format is
//! described in the README ("Policy tests"); unknown fields are errors, like in policies.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};
use token_exchange_filter::core::signing::SigningKey;
use token_exchange_filter::core::DenyReason;

use crate::input::{parse_json, read_text, relative_to, time_from_value, InputError};
use crate::keys::{default_header, generated_keys, overlay, public_jwk, sign_token, signing_key};
use crate::outcome::Outcome;
use crate::policy::{check_token_text, PolicyDocument, RequestSpec};
use crate::random::{entropy, OsEntropy};

/// Reads a member that may be `null` (absent → `None`, `null` → `Some(Null)`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFileDoc {
    #[serde(default)]
    #[allow(dead_code)] // Documentation for the reader of the file.
    description: Option<String>,
    policy: String,
    #[serde(default)]
    now: Option<Value>,
    #[serde(default)]
    issuers: BTreeMap<String, TestIssuerDoc>,
    #[serde(default)]
    defaults: DefaultsDoc,
    cases: Vec<CaseDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestIssuerDoc {
    key: Value,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    replace_policy_keys: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DefaultsDoc {
    #[serde(default)]
    request: RequestDoc,
    #[serde(default)]
    token: Option<TokenDoc>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RequestDoc {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    headers: Map<String, Value>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct TokenDoc {
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    claims: Map<String, Value>,
    #[serde(default)]
    header: Map<String, Value>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseDoc {
    name: String,
    #[serde(default)]
    now: Option<Value>,
    #[serde(default)]
    request: RequestDoc,
    #[serde(default, deserialize_with = "present")]
    token: Option<Value>,
    expect: ExpectDoc,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExpectDoc {
    #[serde(default)]
    decision: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default, deserialize_with = "present")]
    rule: Option<Value>,
    #[serde(default)]
    challenge: Option<String>,
    #[serde(default)]
    minted: Option<MintedDoc>,
    #[serde(default)]
    audit: Option<Map<String, Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MintedDoc {
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    claims: Map<String, Value>,
    #[serde(default)]
    absent: Vec<String>,
    #[serde(default)]
    lifetime: Option<u64>,
}

/// A test issuer, ready to sign.
struct TestIssuer {
    key: SigningKey,
    iss: Option<String>,
}

/// One case, resolved: request, token source, time, expectations.
struct Case {
    name: String,
    now: Duration,
    request: RequestSpec,
    token: TokenSource,
    expect: ExpectDoc,
}

enum TokenSource {
    None,
    Literal(String),
    Signed {
        issuer: String,
        header: Map<String, Value>,
        claims: Map<String, Value>,
    },
}

/// The result of one case.
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// What did not hold (empty: passed).
    pub failures: Vec<String>,
    /// What the core decided.
    pub outcome: Outcome,
}

/// The results of one case file.
pub struct FileResult {
    /// The case file.
    pub file: String,
    /// The policy it tests.
    pub policy: String,
    /// Changes made to the policy document for the run.
    pub notes: Vec<String>,
    /// Each case, in file order.
    pub cases: Vec<CaseResult>,
}

fn at(file: &str, path: impl std::fmt::Display, msg: impl std::fmt::Display) -> InputError {
    InputError(format!("{file}: {path}: {msg}"))
}

/// The case files under `target`: the file itself, or every `*.cases.json` below a directory.
pub fn case_files(target: &str) -> Result<Vec<PathBuf>, InputError> {
    let path = Path::new(target);
    let meta =
        std::fs::metadata(path).map_err(|e| InputError(format!("cannot read {target}: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found = Vec::new();
    // Bounded depth: a symbolic link loop must not make the search endless.
    let mut dirs = vec![(path.to_path_buf(), 0u8)];
    while let Some((dir, depth)) = dirs.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| InputError(format!("cannot read directory {}: {e}", dir.display())))?;
        for entry in entries {
            let entry = entry
                .map_err(|e| InputError(format!("cannot read directory {}: {e}", dir.display())))?;
            let p = entry.path();
            if p.is_dir() {
                if depth < 16 {
                    dirs.push((p, depth + 1));
                }
            } else if p.to_string_lossy().ends_with(".cases.json") {
                found.push(p);
            }
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(InputError(format!(
            "no case files (*.cases.json) under {target}"
        )));
    }
    Ok(found)
}

/// Runs one case file (`run`: only cases whose name contains it).
pub fn run_file(
    path: &Path,
    seed: Option<u64>,
    run: Option<&str>,
) -> Result<FileResult, InputError> {
    let file = path.display().to_string();
    let text = read_text(&file, "case file")?;
    let value = parse_json(&text, &format!("case file {file}"))?;
    let doc: CaseFileDoc = serde_path_to_error::deserialize(value).map_err(|e| {
        let p = e.path().to_string();
        at(
            &file,
            if p == "." { "(document)".to_owned() } else { p },
            e.inner(),
        )
    })?;
    if doc.cases.is_empty() {
        return Err(at(
            &file,
            "cases",
            "no cases: a case file must test something",
        ));
    }

    // The policy, with the test issuers' keys where the file says so.
    let policy_path = relative_to(path, &doc.policy).display().to_string();
    let mut policy_doc = PolicyDocument::read(&policy_path).map_err(|e| at(&file, "policy", e))?;
    let mut issuers = BTreeMap::new();
    for (name, t) in &doc.issuers {
        let p = format!("issuers.{name}");
        let jwk = match &t.key {
            Value::String(s) => {
                let key_path = s.strip_prefix('@').ok_or_else(|| {
                    at(
                        &file,
                        format!("{p}.key"),
                        "must be a private JWK or \"@file\"",
                    )
                })?;
                let key_path = relative_to(path, key_path).display().to_string();
                let text =
                    read_text(&key_path, "key").map_err(|e| at(&file, format!("{p}.key"), e))?;
                parse_json(&text, &key_path).map_err(|e| at(&file, format!("{p}.key"), e))?
            }
            Value::Object(_) => t.key.clone(),
            _ => {
                return Err(at(
                    &file,
                    format!("{p}.key"),
                    "must be a private JWK or \"@file\"",
                ))
            }
        };
        let key = signing_key(&jwk, "key").map_err(|e| at(&file, format!("{p}.key"), e))?;
        if t.replace_policy_keys {
            let iss = t.iss.as_deref().ok_or_else(|| {
                at(
                    &file,
                    format!("{p}.iss"),
                    "required with replace_policy_keys",
                )
            })?;
            let public = public_jwk(&jwk, "key").map_err(|e| at(&file, format!("{p}.key"), e))?;
            policy_doc
                .replace_issuer_keys(iss, public)
                .map_err(|e| at(&file, format!("{p}.iss"), e))?;
        }
        issuers.insert(
            name.clone(),
            TestIssuer {
                key,
                iss: t.iss.clone(),
            },
        );
    }
    let policy = policy_doc.load().map_err(|e| at(&file, "policy", e))?;

    let mut cases = Vec::new();
    for (i, c) in doc.cases.into_iter().enumerate() {
        let p = format!("cases[{i}]");
        if run.is_some_and(|r| !c.name.contains(r)) {
            continue;
        }
        cases.push(resolve_case(
            &file,
            &p,
            c,
            doc.now.as_ref(),
            &doc.defaults,
            &issuers,
        )?);
    }

    let mut results = Vec::new();
    for (i, case) in cases.into_iter().enumerate() {
        let mut rng = match seed {
            Some(s) => entropy(Some(s.wrapping_add(i as u64))),
            None => Box::new(OsEntropy),
        };
        let keys = generated_keys(&policy, rng.as_mut())?;
        let mut request = case.request.clone();
        request.token = match &case.token {
            TokenSource::None => None,
            TokenSource::Literal(t) => Some(t.clone()),
            TokenSource::Signed {
                issuer,
                header,
                claims,
            } => {
                let key = &issuers
                    .get(issuer)
                    .ok_or_else(|| at(&file, &case.name, format!("no test issuer {issuer:?}")))?
                    .key;
                Some(sign_token(key, header, claims, rng.as_mut())?)
            }
        };
        let head = request.head();
        let decision = policy.decide(&head.request(), &keys, case.now, rng.as_mut());
        let outcome = Outcome::of(&policy, &keys, &decision, head.grpc);
        let failures = compare(&case.expect, &outcome);
        results.push(CaseResult {
            name: case.name,
            failures,
            outcome,
        });
    }
    Ok(FileResult {
        file,
        policy: policy_path,
        notes: policy_doc.changes.iter().map(|c| c.note()).collect(),
        cases: results,
    })
}

fn resolve_case(
    file: &str,
    p: &str,
    c: CaseDoc,
    file_now: Option<&Value>,
    defaults: &DefaultsDoc,
    issuers: &BTreeMap<String, TestIssuer>,
) -> Result<Case, InputError> {
    let now_value = c.now.as_ref().or(file_now).ok_or_else(|| {
        at(
            file,
            format!("{p}.now"),
            "no now: give it in the case or at the top of the file (tests run at a fixed time)",
        )
    })?;
    let now = time_from_value(now_value, "now").map_err(|e| at(file, format!("{p}.now"), e))?;

    // The request: the defaults, overlaid by the case.
    let d = &defaults.request;
    let method = c
        .request
        .method
        .or_else(|| d.method.clone())
        .unwrap_or_else(|| "GET".into());
    let path = c.request.path.or_else(|| d.path.clone()).ok_or_else(|| {
        at(
            file,
            format!("{p}.request.path"),
            "required (here or in defaults.request)",
        )
    })?;
    let mut headers: Vec<(String, Value)> = Vec::new();
    for (name, v) in d.headers.iter().chain(c.request.headers.iter()) {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        if !v.is_null() {
            headers.push((name.clone(), v.clone()));
        }
    }
    let mut header_pairs = Vec::new();
    for (name, v) in headers {
        let values: Vec<&Value> = match &v {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for value in values {
            let text = value.as_str().ok_or_else(|| {
                at(
                    file,
                    format!("{p}.request.headers.{name}"),
                    "must be a string or an array of strings",
                )
            })?;
            header_pairs.push((name.clone(), text.to_owned()));
        }
    }
    let request = RequestSpec {
        method,
        path,
        host: c.request.host.or_else(|| d.host.clone()),
        route: c.request.route.or_else(|| d.route.clone()),
        headers: header_pairs,
        token: None,
    };

    // The token: absent → the default token (if any); null → none; a string → literal.
    let token =
        match c.token {
            None => match &defaults.token {
                Some(t) => signed(
                    file,
                    &format!("{p}.token"),
                    t,
                    &TokenDoc::default(),
                    now,
                    issuers,
                )?,
                None => TokenSource::None,
            },
            Some(Value::Null) => TokenSource::None,
            Some(Value::String(s)) => TokenSource::Literal(
                check_token_text(&s, "token").map_err(|e| at(file, format!("{p}.token"), e))?,
            ),
            Some(v @ Value::Object(_)) => {
                let t: TokenDoc = serde_path_to_error::deserialize(v)
                    .map_err(|e| at(file, format!("{p}.token.{}", e.path()), e.inner()))?;
                let base = defaults.token.clone().unwrap_or_default();
                signed(file, &format!("{p}.token"), &base, &t, now, issuers)?
            }
            Some(_) => return Err(at(
                file,
                format!("{p}.token"),
                "must be an object (claims to sign), a string (a literal token) or null (no token)",
            )),
        };
    check_expectations(file, &format!("{p}.expect"), &c.expect)?;
    Ok(Case {
        name: c.name,
        now,
        request,
        token,
        expect: c.expect,
    })
}

/// The token to sign: `base` (the defaults) overlaid by `t` (the case).
fn signed(
    file: &str,
    p: &str,
    base: &TokenDoc,
    t: &TokenDoc,
    now: Duration,
    issuers: &BTreeMap<String, TestIssuer>,
) -> Result<TokenSource, InputError> {
    let name = t
        .issuer
        .clone()
        .or_else(|| base.issuer.clone())
        .ok_or_else(|| {
            at(
                file,
                format!("{p}.issuer"),
                "which test issuer signs? (here or in defaults.token)",
            )
        })?;
    let issuer = issuers.get(&name).ok_or_else(|| {
        let known: Vec<&str> = issuers.keys().map(String::as_str).collect();
        at(
            file,
            format!("{p}.issuer"),
            format!("no test issuer {name:?} (known: {})", known.join(", ")),
        )
    })?;
    let mut claims = Map::new();
    if let Some(iss) = &issuer.iss {
        claims.insert("iss".into(), json!(iss));
    }
    overlay(&mut claims, &base.claims);
    overlay(&mut claims, &t.claims);
    // expires_in: the case's, else the default's unless the case sets exp itself.
    let expires_in = match (t.expires_in, t.claims.contains_key("exp")) {
        (Some(_), true) => {
            return Err(at(
                file,
                format!("{p}.expires_in"),
                "give exp or expires_in, not both",
            ))
        }
        (Some(secs), false) => Some(secs),
        (None, true) => None,
        (None, false) if base.expires_in.is_some() && base.claims.contains_key("exp") => {
            return Err(at(
                file,
                "defaults.token.expires_in",
                "give exp or expires_in, not both",
            ))
        }
        (None, false) => base.expires_in,
    };
    if let Some(secs) = expires_in {
        claims.insert("exp".into(), json!(now.as_secs().saturating_add(secs)));
        // iat = now, unless a claim list sets it (or removes it with null).
        if !t.claims.contains_key("iat") && !base.claims.contains_key("iat") {
            claims.insert("iat".into(), json!(now.as_secs()));
        }
    }
    let mut header = default_header(&issuer.key);
    overlay(&mut header, &base.header);
    overlay(&mut header, &t.header);
    Ok(TokenSource::Signed {
        issuer: name,
        header,
        claims,
    })
}

const OUTCOME_REASONS: [&str; 2] = ["exchanged", "unmatched_pass"];

fn check_expectations(file: &str, p: &str, e: &ExpectDoc) -> Result<(), InputError> {
    if e.decision.is_none()
        && e.reason.is_none()
        && e.status.is_none()
        && e.rule.is_none()
        && e.challenge.is_none()
        && e.minted.is_none()
        && e.audit.as_ref().is_none_or(Map::is_empty)
    {
        return Err(at(
            file,
            p,
            "expects nothing: a case that cannot fail tests nothing",
        ));
    }
    if let Some(d) = &e.decision {
        if !["allow", "deny", "pass"].contains(&d.as_str()) {
            return Err(at(
                file,
                format!("{p}.decision"),
                format!("{d:?} is not allow, deny or pass"),
            ));
        }
        if e.minted.is_some() && d != "allow" {
            return Err(at(
                file,
                format!("{p}.minted"),
                "only an allowed request mints a token",
            ));
        }
    }
    if let Some(r) = &e.reason {
        let known =
            OUTCOME_REASONS.contains(&r.as_str()) || DenyReason::ALL.iter().any(|d| d.code() == r);
        if !known {
            return Err(at(
                file,
                format!("{p}.reason"),
                format!("{r:?} is not a reason code (see the README's deny reasons)"),
            ));
        }
    }
    match &e.rule {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => {
            return Err(at(
                file,
                format!("{p}.rule"),
                "must be a rule name or null (no rule matched)",
            ))
        }
    }
    Ok(())
}

fn shown(v: &Value) -> String {
    if v.is_null() {
        "nothing".to_owned()
    } else {
        v.to_string()
    }
}

/// Every expectation that does not hold, as `what: expected X, got Y`.
fn compare(e: &ExpectDoc, o: &Outcome) -> Vec<String> {
    let mut f = Vec::new();
    let mut check = |what: &str, want: Value, got: Value| {
        if want != got {
            f.push(format!(
                "{what}: expected {}, got {}",
                shown(&want),
                shown(&got)
            ));
        }
    };
    if let Some(d) = &e.decision {
        check("decision", json!(d), json!(o.decision));
    }
    if let Some(r) = &e.reason {
        check("reason", json!(r), json!(o.reason));
    }
    if let Some(s) = e.status {
        check("status", json!(s), json!(o.status));
    }
    if let Some(r) = &e.rule {
        check("rule", r.clone(), json!(o.rule));
    }
    if let Some(c) = &e.challenge {
        check("challenge", json!(c), json!(o.challenge));
    }
    if let Some(m) = &e.minted {
        match &o.minted {
            None => check("minted", json!("a token"), Value::Null),
            Some(t) => {
                let claim = |n: &str| t.claims.get(n).cloned().unwrap_or(Value::Null);
                if let Some(a) = &m.audience {
                    check("minted aud", json!(a), claim("aud"));
                }
                if let Some(s) = &m.scope {
                    check("minted scope", json!(s), claim("scope"));
                }
                if let Some(k) = &m.kid {
                    check(
                        "minted kid",
                        json!(k),
                        t.header.get("kid").cloned().unwrap_or(Value::Null),
                    );
                }
                for (name, want) in &m.claims {
                    check(&format!("minted claim {name}"), want.clone(), claim(name));
                }
                for name in &m.absent {
                    if let Some(v) = t.claims.get(name) {
                        check(&format!("minted claim {name}"), Value::Null, v.clone());
                    }
                }
                if let Some(l) = m.lifetime {
                    let life = match (claim("exp").as_u64(), claim("iat").as_u64()) {
                        (Some(exp), Some(iat)) => json!(exp.saturating_sub(iat)),
                        _ => Value::Null,
                    };
                    check("minted lifetime (exp - iat)", json!(l), life);
                }
                if t.verified == Some(false) {
                    check(
                        "minted signature",
                        json!("verifies"),
                        json!("does not verify"),
                    );
                }
            }
        }
    }
    if let Some(a) = &e.audit {
        for (name, want) in a {
            let got = o.audit.get(name).cloned().unwrap_or(Value::Null);
            check(&format!("audit {name}"), want.clone(), got);
        }
    }
    f
}

/// Runs every case file under `target`: (human text, JSON, all passed).
pub fn run(
    target: &str,
    seed: Option<u64>,
    filter: Option<&str>,
) -> Result<(String, Value, bool), InputError> {
    let files = case_files(target)?;
    let mut results = Vec::new();
    for f in &files {
        results.push(run_file(f, seed, filter)?);
    }
    let total: usize = results.iter().map(|r| r.cases.len()).sum();
    let failed: usize = results
        .iter()
        .flat_map(|r| &r.cases)
        .filter(|c| !c.failures.is_empty())
        .count();
    if total == 0 {
        return Err(InputError(format!(
            "no case matches --run {:?}",
            filter.unwrap_or_default()
        )));
    }
    let results: Vec<FileResult> = results
        .into_iter()
        .filter(|r| !r.cases.is_empty())
        .collect();
    let mut t = String::new();
    for r in &results {
        let _ = writeln!(t, "{}  (policy {})", r.file, r.policy);
        for n in &r.notes {
            let _ = writeln!(t, "  note: {n}");
        }
        for c in &r.cases {
            let mark = if c.failures.is_empty() {
                "PASS"
            } else {
                "FAIL"
            };
            let _ = writeln!(t, "  {mark}  {}", c.name);
            for failure in &c.failures {
                let _ = writeln!(t, "          {failure}");
            }
        }
    }
    let _ = writeln!(
        t,
        "{total} case(s) in {} file(s): {} passed, {failed} failed",
        results.len(),
        total - failed
    );
    let json = json!({
        "files": results.iter().map(|r| json!({
            "file": r.file,
            "policy": r.policy,
            "notes": r.notes,
            "cases": r.cases.iter().map(|c| json!({
                "name": c.name,
                "passed": c.failures.is_empty(),
                "failures": c.failures,
                "decision": c.outcome.decision,
                "reason": c.outcome.reason,
                "status": c.outcome.status,
                "rule": c.outcome.rule,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "summary": {"cases": total, "passed": total - failed, "failed": failed},
    });
    Ok((t, json, failed == 0))
}
