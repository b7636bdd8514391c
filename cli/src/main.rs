//! `token-exchange`: the policy CLI. Argument parsing, output and exit codes; the work is in
//! the library modules.
#![deny(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};

use token_exchange_cli::input::{json_object_arg, parse_time, read_text, system_now, InputError};
use token_exchange_cli::keys::{
    default_header, generate, overlay, private_key_arg, public_jwk, sign_token, KeyAlg,
};
use token_exchange_cli::policy::{parse_header_arg, RequestSpec};
use token_exchange_cli::random::entropy;
use token_exchange_cli::{audit, cases, check, explain};

const EXIT_CODES: &str = "\
Exit codes:
  0  success: the policy is valid, the request is forwarded (allowed, passed, or under a
     shadow rule) or a published document served (200), every case passed, the key or
     token was written, the log was summarised
  1  the answer is no: the policy is invalid (check), the request is refused (explain;
     a 405 at jwks_path or discovery_path included),
     a case failed (test), anomalies were found (audit --fail-on-anomaly), warnings,
     findings, key findings or lifecycle notices with check --strict
  2  the command could not answer: bad usage, a missing or unreadable file, bad JSON,
     a bad key, token or time, an invalid policy given to explain or test, a bad case file";

/// Review, explain and test token-exchange policies with the filter's own code, without a gateway.
#[derive(Parser)]
#[command(name = "token-exchange", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a policy (every error with its JSON path), then summarise it for review.
    #[command(after_help = EXIT_CODES)]
    Check(CheckArgs),
    /// Decide one request with the policy, at a fixed time: decision, rule, reason, challenge,
    /// audit record, and the token that would be minted.
    #[command(after_help = EXIT_CODES)]
    Explain(ExplainArgs),
    /// Run table-driven policy tests from a case file, or every *.cases.json under a directory.
    #[command(after_help = EXIT_CODES)]
    Test(TestArgs),
    /// Generate a private JWK (for signing_keys or a test issuer) and its public JWKS.
    #[command(after_help = EXIT_CODES)]
    Keygen(KeygenArgs),
    /// Sign a test token with a private JWK (for demos and tests).
    #[command(after_help = EXIT_CODES)]
    Mint(MintArgs),
    /// Summarise audit lines from a log (Envoy's or Kong's format, or JSON lines) and flag anomalies.
    #[command(after_help = EXIT_CODES)]
    Audit(AuditArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// The policy file (JSON), or - for stdin.
    policy: String,
    /// Exit 1 also when the valid policy has warnings, findings (e.g. shadowed rules), key
    /// findings (e.g. a retired key kept after its publication ended) or lifecycle notices
    /// (an issuer overdue for review, or expired).
    #[arg(long)]
    strict: bool,
    /// The time review dates are judged at: RFC 3339 or Unix seconds (default: now).
    #[arg(long)]
    now: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ExplainArgs {
    /// The policy file (JSON).
    policy: String,
    /// The presented token, inline or @file (@- for stdin); sent as `Authorization: Bearer <token>`.
    #[arg(long)]
    token: Option<String>,
    /// The request path (query included).
    #[arg(long)]
    path: String,
    /// The request method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// The Host header.
    #[arg(long)]
    host: Option<String>,
    /// The gateway's route name (Envoy's xds.route_name).
    #[arg(long)]
    route: Option<String>,
    /// One more request header, "Name: value" (repeatable; e.g. "content-type: application/grpc").
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The time of the request: RFC 3339 or Unix seconds (default: now).
    #[arg(long)]
    now: Option<String>,
    /// Deterministic randomness (minted jti, RSA blinding) for repeatable output.
    #[arg(long)]
    seed: Option<u64>,
    /// Replace the inline keys of trusted issuer ISSUER by this key for this run: ISSUER=JWK or ISSUER=@file (repeatable; for an issuer with jwks_uri or discovery use --jwks).
    #[arg(long = "issuer-key", value_name = "ISSUER=JWK")]
    issuer_keys: Vec<String>,
    /// The key set the filter last fetched for ISSUER (jwks_uri or discovery), a JWK Set (or one public JWK) inline or @file, imported as the filter imports fetched sets (repeatable, once per issuer). Without it the issuer's keys were never fetched. No network access.
    #[arg(long = "jwks", value_name = "ISSUER=JWKS")]
    jwks: Vec<String>,
    /// When the --jwks sets were fetched: RFC 3339 or Unix seconds (default: --now); older than jwks_max_stale_seconds at --now is stale.
    #[arg(long)]
    fetched_at: Option<String>,
    /// Sign the minted token with a freshly generated key instead of the policy's.
    #[arg(long)]
    generated_signing_key: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TestArgs {
    /// A case file, or a directory searched for *.cases.json.
    cases: String,
    /// Run only the cases whose name contains this text.
    #[arg(long)]
    run: Option<String>,
    /// Deterministic randomness (minted jti, RSA blinding) for repeatable output.
    #[arg(long)]
    seed: Option<u64>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct KeygenArgs {
    /// The algorithm.
    #[arg(long, value_enum)]
    alg: KeyAlg,
    /// The key id (default: the algorithm and 8 random hex digits).
    #[arg(long)]
    kid: Option<String>,
    /// Write the private JWK to this new file (mode 0600) instead of printing it.
    #[arg(long)]
    private_key_file: Option<String>,
    /// Also write the public JWKS to this new file.
    #[arg(long)]
    jwks_file: Option<String>,
    /// Deterministic key from this seed: for tests only, never for a real key.
    #[arg(long)]
    seed: Option<u64>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct MintArgs {
    /// The private JWK that signs, inline or @file.
    #[arg(long)]
    key: String,
    /// The claims, a JSON object inline or @file.
    #[arg(long)]
    claims: String,
    /// Header members to add or replace (null removes one), a JSON object inline or @file.
    #[arg(long)]
    header: Option<String>,
    /// Set iat to now and exp to now + this many seconds (the claims must not set exp).
    #[arg(long)]
    expires_in: Option<u64>,
    /// "now" for --expires-in: RFC 3339 or Unix seconds (default: now).
    #[arg(long)]
    now: Option<String>,
    /// Deterministic randomness (RSA blinding).
    #[arg(long)]
    seed: Option<u64>,
    /// Machine-readable output (token, header, claims).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct AuditArgs {
    /// The log file, or - for stdin.
    log: String,
    /// Window for deny spikes, in seconds.
    #[arg(long, default_value_t = 60)]
    window: u64,
    /// Denies of one caller within the window that make a spike.
    #[arg(long, default_value_t = 10)]
    spike: usize,
    /// Occurrences of gateway_token_replay, invalid_signature, unknown_key, algorithm_not_allowed,
    /// chain_cycle, chain_too_deep or actor_not_allowed that are flagged (revoked tokens are
    /// flagged at every use).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Distinct client addresses (Kong's log lines) presenting one token that are flagged.
    #[arg(long, default_value_t = 3)]
    addresses: usize,
    /// Exit 1 when an anomaly is found.
    #[arg(long)]
    fail_on_anomaly: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// A command's answer: what to print and whether it is "yes" (exit 0) or "no" (exit 1).
struct Answer {
    text: String,
    json: Value,
    yes: bool,
}

fn now_arg(now: Option<&str>) -> Result<std::time::Duration, InputError> {
    match now {
        Some(t) => parse_time(t).map_err(|e| InputError(format!("--now: {e}"))),
        None => Ok(system_now()),
    }
}

fn run_check(a: CheckArgs) -> Result<Answer, InputError> {
    let report = check::check(&a.policy, now_arg(a.now.as_deref())?)?;
    Ok(Answer {
        yes: report.valid && !(a.strict && report.notable),
        text: report.text,
        json: report.json,
    })
}

fn run_explain(a: ExplainArgs) -> Result<Answer, InputError> {
    let token = a.token.as_deref().map(explain::token_arg).transpose()?;
    let headers = a
        .headers
        .iter()
        .map(|h| parse_header_arg(h))
        .collect::<Result<Vec<_>, _>>()?;
    let (text, json, yes) = explain::explain(explain::ExplainRequest {
        policy: a.policy,
        request: RequestSpec {
            method: a.method,
            path: a.path,
            host: a.host,
            route: a.route,
            headers,
            token,
        },
        now: now_arg(a.now.as_deref())?,
        seed: a.seed,
        issuer_keys: a.issuer_keys,
        generated_signing_key: a.generated_signing_key,
        jwks: a.jwks,
        fetched_at: a
            .fetched_at
            .as_deref()
            .map(|t| parse_time(t).map_err(|e| InputError(format!("--fetched-at: {e}"))))
            .transpose()?,
    })?;
    Ok(Answer { text, json, yes })
}

fn run_test(a: TestArgs) -> Result<Answer, InputError> {
    let (text, json, yes) = cases::run(&a.cases, a.seed, a.run.as_deref())?;
    Ok(Answer { text, json, yes })
}

/// Writes `text` to a new file only (never over an existing key), private to its owner.
fn write_new_file(path: &str, text: &str) -> Result<(), InputError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| InputError(format!("cannot create {path}: {e}")))?;
    f.write_all(text.as_bytes())
        .map_err(|e| InputError(format!("cannot write {path}: {e}")))
}

fn run_keygen(a: KeygenArgs) -> Result<Answer, InputError> {
    let mut rng = entropy(a.seed);
    let kid = match a.kid {
        Some(k) if k.is_empty() => return Err(InputError::new("--kid: must not be empty")),
        Some(k) => k,
        None => {
            let mut id = [0u8; 4];
            rng.fill(&mut id)
                .map_err(|_| InputError::new("the random source failed"))?;
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}-{hex}", a.alg.name().to_ascii_lowercase())
        }
    };
    let private = generate(a.alg, &kid, rng.as_mut())?;
    let jwks = json!({ "keys": [public_jwk(&private, "generated key")?] });
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    if let Some(path) = &a.private_key_file {
        write_new_file(path, &pretty(&private))?;
    }
    if let Some(path) = &a.jwks_file {
        write_new_file(path, &pretty(&jwks))?;
    }
    let mut text = String::new();
    match &a.private_key_file {
        Some(path) => text.push_str(&format!("private JWK written to {path} (keep it secret)\n")),
        None => text.push_str(&format!(
            "private JWK (for signing_keys or a test issuer; keep it secret):\n{}",
            pretty(&private)
        )),
    }
    if let Some(path) = &a.jwks_file {
        text.push_str(&format!("public JWKS written to {path}\n"));
    }
    text.push_str(&format!(
        "public JWKS (for trusted_issuers[].jwks, or for verifiers of minted tokens):\n{}",
        pretty(&jwks)
    ));
    let mut j = json!({ "kid": kid, "alg": a.alg.name(), "jwks": jwks });
    if let (Some(o), None) = (j.as_object_mut(), &a.private_key_file) {
        o.insert("private_jwk".into(), private);
    }
    Ok(Answer {
        text,
        json: j,
        yes: true,
    })
}

fn run_mint(a: MintArgs) -> Result<Answer, InputError> {
    let (_, key) = private_key_arg(&a.key, "--key")?;
    let mut claims: Map<String, Value> = json_object_arg(&a.claims, "--claims")?;
    let mut header = default_header(&key);
    if let Some(h) = &a.header {
        overlay(&mut header, &json_object_arg(h, "--header")?);
    }
    if let Some(secs) = a.expires_in {
        if claims.contains_key("exp") {
            return Err(InputError::new(
                "--expires-in: the claims already set exp (give one or the other)",
            ));
        }
        let now = now_arg(a.now.as_deref())?.as_secs();
        claims.insert("exp".into(), json!(now.saturating_add(secs)));
        claims.entry("iat").or_insert(json!(now));
    } else if a.now.is_some() {
        return Err(InputError::new("--now is only used with --expires-in"));
    }
    let mut rng = entropy(a.seed);
    let token = sign_token(&key, &header, &claims, rng.as_mut())?;
    Ok(Answer {
        text: format!("{token}\n"),
        json: json!({ "token": token, "header": header, "claims": claims }),
        yes: true,
    })
}

fn run_audit(a: AuditArgs) -> Result<Answer, InputError> {
    let text = read_text(&a.log, "log")?;
    let log = audit::read_log(&text);
    let (text, json, anomalies) = audit::summarise(
        &log,
        audit::Thresholds {
            window_seconds: a.window,
            spike: a.spike,
            repeat: a.repeat,
            addresses: a.addresses,
        },
    );
    if log.entries.is_empty() {
        eprintln!(
            "token-exchange: warning: no audit records (lines with \"event\":\"token_exchange\") in {}",
            a.log
        );
    }
    Ok(Answer {
        text,
        json,
        yes: !(a.fail_on_anomaly && anomalies > 0),
    })
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
fn print(text: &str) -> Result<(), InputError> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(InputError(format!("cannot write output: {e}")))
        }
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are answers (0); usage errors are 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let (json, result) = match cli.command {
        Command::Check(a) => (a.json, run_check(a)),
        Command::Explain(a) => (a.json, run_explain(a)),
        Command::Test(a) => (a.json, run_test(a)),
        Command::Keygen(a) => (a.json, run_keygen(a)),
        Command::Mint(a) => (a.json, run_mint(a)),
        Command::Audit(a) => (a.json, run_audit(a)),
    };
    let answer = match result {
        Ok(a) => a,
        Err(e) => {
            eprintln!("token-exchange: error: {e}");
            return ExitCode::from(2);
        }
    };
    let out = if json {
        serde_json::to_string_pretty(&answer.json).unwrap_or_default() + "\n"
    } else {
        answer.text
    };
    if let Err(e) = print(&out) {
        eprintln!("token-exchange: error: {e}");
        return ExitCode::from(2);
    }
    ExitCode::from(if answer.yes { 0 } else { 1 })
}
