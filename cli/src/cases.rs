//! `test`: table-driven policy tests. A case file names a policy, test issuers with their
//! private keys (or the policy's own signing key, for gateway tokens), and cases (a request,
//! a token to sign, a literal token or the token an earlier case minted, a fixed `now`, and
//! what must come out); each case goes through the core's `decide`. The key sets the filter
//! would have fetched for issuers with `jwks_uri` or discovery are given per issuer
//! (`fetched`, for the file or one case: a JWK Set, the public keys of test issuers, or
//! `"never"`) with their fetch time, and imported as the filter imports them. Requests to
//! `jwks_path` and `discovery_path` are served as the filter serves them. The format is
//! described in the README ("Policy tests"); unknown fields are errors, like in policies.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::{json, Map, Value};
use token_exchange_filter::core::audit::Outcome as AuditOutcome;
use token_exchange_filter::core::signing::{SigningKey, MINTED_TOKEN_TYPE};
use token_exchange_filter::core::{AuditRecord, DenyReason, Policy};

use crate::fetched::{apply, fetching_issuer, import, Fetch, SuppliedKeys};
use crate::input::{parse_json, read_text, relative_to, time_from_value, InputError};
use crate::keys::{default_header, overlay, public_jwk, sign_token, signing_key};
use crate::outcome::{Decider, Forwarded, Outcome};
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
    /// Issuer → the key set the filter last fetched for it, or `"never"`.
    #[serde(default)]
    fetched: Map<String, Value>,
    cases: Vec<CaseDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestIssuerDoc {
    #[serde(default)]
    key: Option<Value>,
    /// Sign with the policy's own active signing key: gateway tokens, as for chained exchange.
    #[serde(default)]
    policy_signing_key: bool,
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
    /// Overrides the file's `fetched`, issuer by issuer.
    #[serde(default)]
    fetched: Map<String, Value>,
    expect: ExpectDoc,
}

/// One issuer's entry of `fetched` (other than `"never"`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchedDoc {
    /// A JWK Set (or one public JWK), inline or `"@file"`.
    #[serde(default)]
    jwks: Option<Value>,
    /// Or: the public keys of these test issuers, as a set.
    #[serde(default)]
    keys_of: Option<Vec<String>>,
    /// When it was fetched (default: the case's `now`).
    #[serde(default)]
    fetched_at: Option<Value>,
}

/// `"served"` expectations: what the filter answered at `jwks_path` or `discovery_path`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServedDoc {
    /// The served JWK Set has exactly these kids (in any order).
    #[serde(default)]
    kids: Option<Vec<String>>,
    /// The served document, exactly.
    #[serde(default)]
    body: Option<Value>,
    /// These response headers, exactly.
    #[serde(default)]
    headers: Map<String, Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExpectDoc {
    #[serde(default)]
    decision: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    forwarded: Option<String>,
    #[serde(default)]
    strip_headers: Option<Vec<String>>,
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
    #[serde(default)]
    retry_after: Option<u64>,
    #[serde(default)]
    refetch: Option<bool>,
    #[serde(default)]
    served: Option<ServedDoc>,
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
    #[serde(default)]
    act: Option<Vec<Map<String, Value>>>,
}

/// `"token": {"minted_by": "<an earlier case's name>"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintedByDoc {
    minted_by: String,
}

/// A test issuer, ready to sign.
struct TestIssuer {
    key: TestKey,
    iss: Option<String>,
    /// The public JWK of its own key (for `keys_of`).
    public: Option<Value>,
}

/// The key a test issuer signs with.
enum TestKey {
    /// Its own private JWK.
    Own(SigningKey),
    /// The policy's active signing key: its tokens are the gateway's own.
    PolicySigningKey,
}

impl TestKey {
    fn get<'k>(&'k self, policy: &'k Policy) -> Option<&'k SigningKey> {
        match self {
            TestKey::Own(k) => Some(k),
            TestKey::PolicySigningKey => policy.active_signing_key(),
        }
    }
}

/// One case, resolved: request, token source, time, expectations.
struct Case {
    name: String,
    now: Duration,
    request: RequestSpec,
    token: TokenSource,
    /// What the filter holds for each fetching issuer named in the file or the case.
    fetches: Vec<(String, Fetch)>,
    expect: ExpectDoc,
}

/// One issuer's `fetched` entry, imported; its time is resolved per case.
#[derive(Clone)]
enum FetchSpec {
    Never,
    Set(Arc<SuppliedKeys>, Option<Duration>),
}

enum TokenSource {
    None,
    Literal(String),
    /// The token minted by the earlier case with this index (and name).
    MintedBy(usize, String),
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
        let mut public = None;
        let key = match (&t.key, t.policy_signing_key) {
            (Some(_), true) => {
                return Err(at(&file, &p, "give key or policy_signing_key, not both"))
            }
            (None, false) => {
                return Err(at(
                    &file,
                    format!("{p}.key"),
                    "required: a private JWK or \"@file\" (or policy_signing_key: true)",
                ))
            }
            (None, true) if t.replace_policy_keys => {
                return Err(at(
                    &file,
                    format!("{p}.replace_policy_keys"),
                    "not with policy_signing_key: the gateway is not one of its trusted issuers",
                ))
            }
            (None, true) => TestKey::PolicySigningKey,
            (Some(k), false) => {
                let jwk = read_key(&file, path, &p, k)?;
                let key = signing_key(&jwk, "key").map_err(|e| at(&file, format!("{p}.key"), e))?;
                public = public_jwk(&jwk, "key").ok();
                if t.replace_policy_keys {
                    let iss = t.iss.as_deref().ok_or_else(|| {
                        at(
                            &file,
                            format!("{p}.iss"),
                            "required with replace_policy_keys",
                        )
                    })?;
                    let public =
                        public_jwk(&jwk, "key").map_err(|e| at(&file, format!("{p}.key"), e))?;
                    policy_doc
                        .replace_issuer_keys(iss, public)
                        .map_err(|e| at(&file, format!("{p}.iss"), e))?;
                }
                TestKey::Own(key)
            }
        };
        issuers.insert(
            name.clone(),
            TestIssuer {
                key,
                iss: t.iss.clone(),
                public,
            },
        );
    }
    let decider = Decider::load(&policy_doc).map_err(|e| at(&file, "policy", e))?;
    let policy = &decider.policy;
    for t in issuers.values_mut() {
        if matches!(t.key, TestKey::PolicySigningKey) && t.iss.is_none() {
            t.iss = Some(policy.issuer.clone());
        }
    }
    let fetch_ctx = FetchContext {
        file: &file,
        path,
        policy,
        issuers: &issuers,
    };
    let file_fetched = fetch_ctx.entries("fetched", &doc.fetched)?;

    // Every case is resolved (so a bad one is reported whatever --run selects); the selected
    // ones run, with the earlier cases whose minted tokens they present.
    let mut cases: Vec<Case> = Vec::new();
    let mut selected: Vec<bool> = Vec::new();
    for (i, c) in doc.cases.into_iter().enumerate() {
        let p = format!("cases[{i}]");
        selected.push(run.is_none_or(|r| c.name.contains(r)));
        let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        let ctx = CaseContext {
            file: &file,
            file_now: doc.now.as_ref(),
            defaults: &doc.defaults,
            issuers: &issuers,
            policy,
            earlier: &names,
            fetch: &fetch_ctx,
            file_fetched: &file_fetched,
        };
        let case = resolve_case(&ctx, &p, c)?;
        cases.push(case);
    }
    let mut needed = selected.clone();
    for (i, case) in cases.iter().enumerate().rev() {
        if let (true, TokenSource::MintedBy(j, _)) =
            (needed.get(i).copied().unwrap_or(false), &case.token)
        {
            if let Some(n) = needed.get_mut(*j) {
                *n = true;
            }
        }
    }

    let mut minted: Vec<Option<String>> = Vec::new();
    let mut results = Vec::new();
    for (i, case) in cases.into_iter().enumerate() {
        if !needed.get(i).copied().unwrap_or(false) {
            minted.push(None);
            continue;
        }
        let mut rng = match seed {
            Some(s) => entropy(Some(s.wrapping_add(i as u64))),
            None => Box::new(OsEntropy),
        };
        let mut request = case.request.clone();
        let mut failures = Vec::new();
        request.token = match &case.token {
            TokenSource::None => None,
            TokenSource::Literal(t) => Some(t.clone()),
            TokenSource::MintedBy(j, name) => {
                let token = minted.get(*j).cloned().flatten();
                if token.is_none() {
                    failures.push(format!("token: case {name:?} minted no token to present"));
                }
                token
            }
            TokenSource::Signed {
                issuer,
                header,
                claims,
            } => {
                let key = issuers
                    .get(issuer)
                    .and_then(|t| t.key.get(policy))
                    .ok_or_else(|| {
                        at(
                            &file,
                            &case.name,
                            format!("no key for test issuer {issuer:?}"),
                        )
                    })?;
                Some(sign_token(key, header, claims, rng.as_mut())?)
            }
        };
        let mut keys = decider.keys().clone();
        apply(&mut keys, &case.fetches);
        let outcome = decider.decide(&request, &keys, case.now, rng.as_mut());
        minted.push(outcome.minted.as_ref().map(|m| m.token.clone()));
        if !selected.get(i).copied().unwrap_or(false) {
            continue;
        }
        if failures.is_empty() {
            failures = compare(&case.expect, &outcome);
        }
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

/// A test issuer's `key`: a private JWK inline, or `"@file"` relative to the case file.
fn read_key(file: &str, path: &Path, p: &str, key: &Value) -> Result<Value, InputError> {
    match key {
        Value::String(s) => {
            let key_path = s.strip_prefix('@').ok_or_else(|| {
                at(
                    file,
                    format!("{p}.key"),
                    "must be a private JWK or \"@file\"",
                )
            })?;
            let key_path = relative_to(path, key_path).display().to_string();
            let text = read_text(&key_path, "key").map_err(|e| at(file, format!("{p}.key"), e))?;
            parse_json(&text, &key_path).map_err(|e| at(file, format!("{p}.key"), e))
        }
        Value::Object(_) => Ok(key.clone()),
        _ => Err(at(
            file,
            format!("{p}.key"),
            "must be a private JWK or \"@file\"",
        )),
    }
}

/// What every case of a file is resolved against.
struct CaseContext<'a> {
    file: &'a str,
    file_now: Option<&'a Value>,
    defaults: &'a DefaultsDoc,
    issuers: &'a BTreeMap<String, TestIssuer>,
    policy: &'a Policy,
    /// The names of the cases above, in order.
    earlier: &'a [&'a str],
    fetch: &'a FetchContext<'a>,
    /// The file's `fetched`.
    file_fetched: &'a [(String, FetchSpec)],
}

/// What `fetched` entries are read against.
struct FetchContext<'a> {
    file: &'a str,
    path: &'a Path,
    policy: &'a Policy,
    issuers: &'a BTreeMap<String, TestIssuer>,
}

impl FetchContext<'_> {
    /// Reads a `fetched` member (at JSON path `p`): issuer → entry.
    fn entries(
        &self,
        p: &str,
        map: &Map<String, Value>,
    ) -> Result<Vec<(String, FetchSpec)>, InputError> {
        map.iter()
            .map(|(issuer, v)| {
                let ip = format!("{p}.{issuer}");
                fetching_issuer(self.policy, issuer).map_err(|e| at(self.file, &ip, e))?;
                Ok((issuer.clone(), self.entry(&ip, issuer, v)?))
            })
            .collect()
    }

    fn entry(&self, p: &str, issuer: &str, v: &Value) -> Result<FetchSpec, InputError> {
        let file = self.file;
        match v {
            Value::String(s) if s == "never" => return Ok(FetchSpec::Never),
            Value::Object(_) => {}
            _ => {
                return Err(at(
                    file,
                    p,
                    "must be \"never\" or an object: {\"jwks\": <a JWK Set or \"@file\">} or {\"keys_of\": [<test issuers>]}, and fetched_at",
                ))
            }
        }
        let d: FetchedDoc = serde_path_to_error::deserialize(v.clone())
            .map_err(|e| at(file, format!("{p}.{}", e.path()), e.inner()))?;
        let fetched_at = d
            .fetched_at
            .as_ref()
            .map(|t| {
                time_from_value(t, "fetched_at").map_err(|e| at(file, format!("{p}.fetched_at"), e))
            })
            .transpose()?;
        let (text, origin, what) = match (&d.jwks, &d.keys_of) {
            (Some(Value::String(s)), None) => {
                let rel = s.strip_prefix('@').ok_or_else(|| {
                    at(file, format!("{p}.jwks"), "must be a JWK Set object or \"@file\"")
                })?;
                let set_path = relative_to(self.path, rel).display().to_string();
                let text = read_text(&set_path, "key set").map_err(|e| at(file, format!("{p}.jwks"), e))?;
                (text, set_path, "jwks")
            }
            (Some(set @ Value::Object(_)), None) => (set.to_string(), "inline".to_owned(), "jwks"),
            (Some(_), None) => {
                return Err(at(file, format!("{p}.jwks"), "must be a JWK Set object or \"@file\""))
            }
            (None, Some(names)) => {
                let mut keys = Vec::new();
                for (i, name) in names.iter().enumerate() {
                    let t = self.issuers.get(name).ok_or_else(|| {
                        at(file, format!("{p}.keys_of[{i}]"), format!("no test issuer {name:?}"))
                    })?;
                    let public = t.public.clone().ok_or_else(|| {
                        at(
                            file,
                            format!("{p}.keys_of[{i}]"),
                            format!("test issuer {name:?} signs with the policy's signing key: the filter never fetches those"),
                        )
                    })?;
                    keys.push(public);
                }
                let origin = format!("the public keys of test issuer(s) {}", names.join(", "));
                (json!({ "keys": keys }).to_string(), origin, "keys_of")
            }
            (Some(_), Some(_)) => return Err(at(file, p, "give jwks or keys_of, not both")),
            (None, None) => {
                return Err(at(
                    file,
                    p,
                    "which keys were fetched? give jwks (a JWK Set or \"@file\") or keys_of (test issuers), or \"never\"",
                ))
            }
        };
        let supplied = import(self.policy, issuer, &text, &origin)
            .map_err(|e| at(file, format!("{p}.{what}"), e))?;
        Ok(FetchSpec::Set(Arc::new(supplied), fetched_at))
    }
}

/// The file's `fetched` overlaid by the case's, with each fetch time resolved (default: the
/// case's `now`; never after it).
fn case_fetches(
    ctx: &CaseContext<'_>,
    p: &str,
    case: &[(String, FetchSpec)],
    now: Duration,
) -> Result<Vec<(String, Fetch)>, InputError> {
    let mut merged: Vec<(String, FetchSpec, String)> = ctx
        .file_fetched
        .iter()
        .map(|(i, f)| (i.clone(), f.clone(), format!("fetched.{i}")))
        .collect();
    for (issuer, spec) in case {
        merged.retain(|(i, _, _)| i != issuer);
        merged.push((
            issuer.clone(),
            spec.clone(),
            format!("{p}.fetched.{issuer}"),
        ));
    }
    merged
        .into_iter()
        .map(|(issuer, spec, path)| {
            let fetch = match spec {
                FetchSpec::Never => Fetch::Never,
                FetchSpec::Set(keys, at_time) => {
                    let at_time = at_time.unwrap_or(now);
                    if at_time > now {
                        return Err(at(
                            ctx.file,
                            format!("{path}.fetched_at"),
                            "is after the case's now: a key set cannot be fetched after the request",
                        ));
                    }
                    Fetch::At(keys, at_time.as_secs())
                }
            };
            Ok((issuer, fetch))
        })
        .collect()
}

fn resolve_case(ctx: &CaseContext<'_>, p: &str, c: CaseDoc) -> Result<Case, InputError> {
    let (file, defaults) = (ctx.file, ctx.defaults);
    let now_value = c.now.as_ref().or(ctx.file_now).ok_or_else(|| {
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
                Some(t) => signed(ctx, &format!("{p}.token"), t, &TokenDoc::default(), now)?,
                None => TokenSource::None,
            },
            Some(Value::Null) => TokenSource::None,
            Some(Value::String(s)) => TokenSource::Literal(
                check_token_text(&s, "token").map_err(|e| at(file, format!("{p}.token"), e))?,
            ),
            Some(v @ Value::Object(_)) if v.get("minted_by").is_some() => {
                let m: MintedByDoc = serde_path_to_error::deserialize(v).map_err(|e| {
                    at(
                        file,
                        format!("{p}.token.{}", e.path()),
                        format!("{} (minted_by names an earlier case and takes nothing else)", e.inner()),
                    )
                })?;
                minted_by(ctx, &format!("{p}.token.minted_by"), m.minted_by)?
            }
            Some(v @ Value::Object(_)) => {
                let t: TokenDoc = serde_path_to_error::deserialize(v)
                    .map_err(|e| at(file, format!("{p}.token.{}", e.path()), e.inner()))?;
                let base = defaults.token.clone().unwrap_or_default();
                signed(ctx, &format!("{p}.token"), &base, &t, now)?
            }
            Some(_) => return Err(at(
                file,
                format!("{p}.token"),
                "must be an object (claims to sign, or {\"minted_by\": <an earlier case>}), a string (a literal token) or null (no token)",
            )),
        };
    check_expectations(file, &format!("{p}.expect"), &c.expect)?;
    let own = ctx.fetch.entries(&format!("{p}.fetched"), &c.fetched)?;
    let fetches = case_fetches(ctx, p, &own, now)?;
    Ok(Case {
        name: c.name,
        now,
        request,
        token,
        fetches,
        expect: c.expect,
    })
}

/// The token an earlier case minted: the case must be above this one, and its name unique.
fn minted_by(ctx: &CaseContext<'_>, p: &str, name: String) -> Result<TokenSource, InputError> {
    let mut found = ctx.earlier.iter().enumerate().filter(|(_, n)| **n == name);
    match (found.next(), found.next()) {
        (Some((i, _)), None) => Ok(TokenSource::MintedBy(i, name)),
        (Some(_), Some(_)) => Err(at(
            ctx.file,
            p,
            format!("{name:?} names several earlier cases: give them unique names"),
        )),
        (None, _) => Err(at(
            ctx.file,
            p,
            format!("no earlier case is named {name:?} (a case can present only what a case above it minted)"),
        )),
    }
}

/// The token to sign: `base` (the defaults) overlaid by `t` (the case).
fn signed(
    ctx: &CaseContext<'_>,
    p: &str,
    base: &TokenDoc,
    t: &TokenDoc,
    now: Duration,
) -> Result<TokenSource, InputError> {
    let (file, issuers) = (ctx.file, ctx.issuers);
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
    let key = issuer.key.get(ctx.policy).ok_or_else(|| {
        at(
            file,
            format!("{p}.issuer"),
            format!("test issuer {name:?} signs with the policy's signing key, and it has none"),
        )
    })?;
    let mut header = default_header(key);
    if matches!(issuer.key, TestKey::PolicySigningKey) {
        // As the gateway mints them (RFC 9068).
        header.insert("typ".into(), json!(MINTED_TOKEN_TYPE));
    }
    overlay(&mut header, &base.header);
    overlay(&mut header, &t.header);
    Ok(TokenSource::Signed {
        issuer: name,
        header,
        claims,
    })
}

const OUTCOME_REASONS: [&str; 4] = [
    "exchanged",
    "unmatched_pass",
    "jwks",
    "openid_configuration",
];

/// The members an audit record can have (a record with every field the CLI knows set,
/// serialized: the core decides the names).
fn audit_members() -> Vec<String> {
    let s = || Some(std::sync::Arc::<str>::from(""));
    let full = AuditRecord {
        event: "token_exchange",
        decision: AuditOutcome::Deny,
        status: Some(0),
        mode: Some("shadow"),
        rule: s(),
        request_id: Some(String::new()),
        iss: s(),
        sub: s(),
        caller: s(),
        token_id: s(),
        token_verified: true,
        origin_iss: s(),
        origin_token_id: s(),
        chain_depth: Some(0),
        acr: s(),
        auth_time: Some(0),
        issuer_review_overdue: true,
        ceiling_removed_scopes: s(),
        identity_headers: vec![String::new()],
        minted_jti: s(),
        minted_aud: s(),
        minted_scope: s(),
        minted_exp: Some(0),
        minted_kid: s(),
        ..AuditRecord::default()
    };
    match serde_json::to_value(&full) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Checks one of a fixed set of values.
fn one_of(
    file: &str,
    p: String,
    value: Option<&String>,
    allowed: &[&str],
) -> Result<(), InputError> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(at(
            file,
            p,
            format!("{v:?} is not one of {}", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

fn check_expectations(file: &str, p: &str, e: &ExpectDoc) -> Result<(), InputError> {
    if e.decision.is_none()
        && e.mode.is_none()
        && e.forwarded.is_none()
        && e.strip_headers.is_none()
        && e.reason.is_none()
        && e.status.is_none()
        && e.rule.is_none()
        && e.challenge.is_none()
        && e.minted.is_none()
        && e.retry_after.is_none()
        && e.refetch.is_none()
        && e.served.is_none()
        && e.audit.as_ref().is_none_or(Map::is_empty)
    {
        return Err(at(
            file,
            p,
            "expects nothing: a case that cannot fail tests nothing",
        ));
    }
    one_of(
        file,
        format!("{p}.mode"),
        e.mode.as_ref(),
        &["enforce", "shadow"],
    )?;
    one_of(
        file,
        format!("{p}.forwarded"),
        e.forwarded.as_ref(),
        &[
            Forwarded::Minted.name(),
            Forwarded::Unchanged.name(),
            Forwarded::Nothing.name(),
        ],
    )?;
    if let Some(audit) = &e.audit {
        // `null` asserts absence: a misspelled member would always be absent.
        let known = audit_members();
        if let Some((name, _)) = audit
            .iter()
            .find(|(n, v)| v.is_null() && !known.contains(n))
        {
            return Err(at(
                file,
                format!("{p}.audit.{name}"),
                format!(
                    "is not a member of the audit record ({}): expecting it absent could never fail",
                    known.join(", ")
                ),
            ));
        }
    }
    if let Some(d) = &e.decision {
        if !["allow", "deny", "pass", "serve"].contains(&d.as_str()) {
            return Err(at(
                file,
                format!("{p}.decision"),
                format!("{d:?} is not allow, deny, pass or serve"),
            ));
        }
        if e.minted.is_some() && d != "allow" {
            return Err(at(
                file,
                format!("{p}.minted"),
                "only an allowed request mints a token",
            ));
        }
        if e.served.is_some() && d != "serve" {
            return Err(at(
                file,
                format!("{p}.served"),
                "only a request to jwks_path or discovery_path is served (decision serve)",
            ));
        }
    }
    if let Some(served) = &e.served {
        if served.kids.is_none() && served.body.is_none() && served.headers.is_empty() {
            return Err(at(
                file,
                format!("{p}.served"),
                "expects nothing: give kids, body or headers",
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
    if let Some(m) = &e.mode {
        check(
            "mode",
            json!(m),
            json!(if o.shadow { "shadow" } else { "enforce" }),
        );
    }
    if let Some(fw) = &e.forwarded {
        check("forwarded", json!(fw), json!(o.forwarded.name()));
    }
    if let Some(h) = &e.strip_headers {
        check("strip_headers", json!(h), json!(o.strip_headers));
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
                if let Some(act) = &m.act {
                    check(
                        "minted act (newest first)",
                        json!(act),
                        json!(t.act_chain()),
                    );
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
    if let Some(r) = e.retry_after {
        check("retry_after", json!(r), json!(o.retry_after));
    }
    if let Some(r) = e.refetch {
        check("refetch", json!(r), json!(o.refetch()));
    }
    if let Some(sd) = &e.served {
        match &o.served {
            None => check("served", json!("a document"), Value::Null),
            Some(sv) => {
                if let Some(kids) = &sd.kids {
                    let mut want = kids.clone();
                    let mut got = sv.kids();
                    want.sort();
                    got.sort();
                    check("served kids", json!(want), json!(got));
                }
                if let Some(body) = &sd.body {
                    check("served body", body.clone(), sv.body.clone());
                }
                for (name, want) in &sd.headers {
                    let got = sv
                        .headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                        .map_or(Value::Null, |(_, v)| json!(v));
                    check(&format!("served header {name}"), want.clone(), got);
                }
            }
        }
    }
    if let Some(sv) = &o.served {
        // Whatever the case expects: a private member served is always a failure.
        for m in sv.private_members() {
            check(
                &format!("served key member {m}"),
                Value::Null,
                json!("present"),
            );
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
                "mode": if c.outcome.shadow { "shadow" } else { "enforce" },
                "forwarded": c.outcome.forwarded.name(),
                "reason": c.outcome.reason,
                "status": c.outcome.status,
                "rule": c.outcome.rule,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "summary": {"cases": total, "passed": total - failed, "failed": failed},
    });
    Ok((t, json, failed == 0))
}
