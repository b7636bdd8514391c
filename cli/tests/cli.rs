//! The `token-exchange` binary as a user runs it: every command on the example policies and on
//! tokens minted by PyJWT (an independent JWT library, `.venv/bin/python`), passing and failing
//! case files, bad input for every argument, and the exit codes. Without the venv the PyJWT
//! tests skip loudly, unless `CI` is set: then they fail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};

/// 2026-01-01T00:00:00Z.
const NOW: u64 = 1_767_225_600;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }
}

fn run_with(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_token-exchange"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    // Never a panic or a backtrace, whatever the input.
    assert!(
        !r.stderr.contains("panicked") && !r.stderr.contains("RUST_BACKTRACE"),
        "{args:?}: {}",
        r.stderr
    );
    r
}

fn run(args: &[&str]) -> Run {
    run_with(args, None)
}

/// Exit 2 and exactly one line on stderr, naming the problem.
#[track_caller]
fn assert_input_error(r: &Run, needle: &str) {
    assert_eq!(r.code, 2, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("token-exchange: error: "),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(needle), "{needle:?} not in {}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
}

/// A fresh scratch directory.
fn scratch() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "cli-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn read_json(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join(rel)).unwrap()).unwrap()
}

fn example_policies() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("filter-config/examples"))
        .unwrap()
        .map(|e| {
            format!(
                "filter-config/examples/{}",
                e.unwrap().file_name().to_string_lossy()
            )
        })
        .filter(|p| p.ends_with(".json"))
        .collect();
    v.sort();
    v.push("envoy-example/demo-policy.json".into());
    v
}

/// The venv's Python with PyJWT, or None (skipping loudly) when it is missing outside CI.
fn python() -> Option<PathBuf> {
    let py = root().join(".venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    if std::env::var_os("CI").is_some() {
        panic!("PyJWT missing in .venv (run bash scripts/setup.sh); CI is set, so this fails");
    }
    eprintln!("SKIPPED: PyJWT tests need .venv (bash scripts/setup.sh)");
    None
}

fn python_out(py: &Path, script: &str, args: &[&str]) -> String {
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// PyJWT signs `claims` with a private JWK (its `alg` and `kid`).
const PYJWT_SIGN: &str = r#"
import json, sys, jwt
jwk = json.loads(open(sys.argv[1]).read())
key = jwt.PyJWK(jwk).key
print(jwt.encode(json.loads(sys.argv[2]), key, algorithm=jwk["alg"], headers={"kid": jwk["kid"]}))
"#;

/// PyJWT verifies a token with a public JWK; prints the claims.
const PYJWT_VERIFY: &str = r#"
import json, sys, jwt
jwk = json.loads(sys.argv[2])
key = jwt.PyJWK(jwk).key
claims = jwt.decode(sys.argv[1], key, algorithms=[jwk["alg"]], options={"verify_aud": False, "verify_exp": False, "verify_iat": False, "verify_nbf": False})
print(json.dumps({"header": jwt.get_unverified_header(sys.argv[1]), "claims": claims}))
"#;

// ------------------------------------------------------------------------------- check

#[test]
fn check_accepts_every_example_policy_and_summarises_it_in_order() {
    for policy in example_policies() {
        let r = run(&["check", &policy, "--json"]);
        assert_eq!(r.code, 0, "{policy}: {}", r.stdout);
        let j = r.json();
        assert_eq!(j["valid"], true);
        let doc = read_json(&policy);
        let names = |v: &Value, key: &str| -> Vec<Value> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x[key].clone())
                .collect()
        };
        assert_eq!(
            names(&j["trusted_issuers"], "issuer"),
            names(&doc["trusted_issuers"], "issuer")
        );
        assert_eq!(
            names(&j["rules"], "name"),
            names(&doc["rules"], "name"),
            "{policy}"
        );
        assert_eq!(j["signing_keys"][0]["kid"], doc["signing_keys"][0]["kid"]);
        assert_eq!(j["signing_keys"][0]["role"], "signs");
        assert_eq!(j["findings"], json!([]), "{policy}");
        for (i, rule) in doc["rules"].as_array().unwrap().iter().enumerate() {
            assert_eq!(j["rules"][i]["mint"]["audience"], rule["mint"]["audience"]);
            assert_eq!(j["rules"][i]["mint"]["scopes"], rule["mint"]["scopes"]);
        }
        let human = run(&["check", &policy]);
        assert_eq!(human.code, 0);
        assert!(human
            .stdout
            .starts_with(&format!("{policy}: valid policy\n")));
        for rule in doc["rules"].as_array().unwrap() {
            assert!(human.stdout.contains(rule["name"].as_str().unwrap()));
        }
    }
    // providers.json: the skipped Keycloak encryption key is a warning with its path.
    let j = run(&["check", "filter-config/examples/providers.json", "--json"]).json();
    assert_eq!(j["warnings"][0]["path"], "trusted_issuers[0].jwks.keys[0]");
    assert_eq!(
        j["trusted_issuers"][1]["claims"],
        json!({"caller": ["cid"], "scopes": ["scp"]})
    );
    // orders-api.json: two signing keys, the first signs; rule 3 needs no issuer list.
    let j = run(&["check", "filter-config/examples/orders-api.json", "--json"]).json();
    assert_eq!(j["signing_keys"][1]["role"], "published");
    assert_eq!(j["rules"][2]["require"]["issuers_implied"], true);
    assert_eq!(
        j["trusted_issuers"][0]["keys"][1],
        json!({"kid": "idp-rsa-2", "algorithms": ["RS256"]})
    );
}

#[test]
fn check_lists_every_error_with_its_json_path() {
    let dir = scratch();
    let mut doc = read_json("filter-config/examples/minimal.json");
    doc["rules"][0]["mint"]["ttl_seconds"] = json!(0);
    doc["trusted_issuers"][0]["algorithms"] = json!(["none"]);
    doc["colour"] = json!("blue");
    let p = write(&dir, "broken.json", &doc.to_string());
    let r = run(&["check", &p, "--json"]);
    assert_eq!(r.code, 1);
    let j = r.json();
    assert_eq!(j["valid"], false);
    let paths: Vec<&str> = j["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for want in [
        "rules[0].mint.ttl_seconds",
        "trusted_issuers[0].algorithms[0]",
        "colour",
    ] {
        assert!(paths.contains(&want), "{want} not in {paths:?}");
    }
    let human = run(&["check", &p]);
    assert_eq!(human.code, 1);
    assert!(human.stdout.contains("invalid policy"));
    assert!(human
        .stdout
        .contains("rules[0].mint.ttl_seconds: must be an integer between 1 and 86400"));
    assert!(human.stdout.contains("\"none\" is never accepted"));
}

#[test]
fn check_flags_shadowed_rules_and_rules_that_match_nothing() {
    let dir = scratch();
    let mut doc = read_json("filter-config/examples/minimal.json");
    let mut admin = doc["rules"][0].clone();
    admin["name"] = json!("orders-admin");
    admin["match"] = json!({"path_prefix": "/orders/admin", "methods": ["GET"]});
    let mut dead = doc["rules"][0].clone();
    dead["name"] = json!("dead");
    dead["match"] = json!({"path_prefix": "/a", "path": "/b"});
    let mut fine = doc["rules"][0].clone();
    fine["name"] = json!("orders-post");
    fine["match"] = json!({"path_prefix": "/orders", "methods": ["POST"]});
    doc["rules"]
        .as_array_mut()
        .unwrap()
        .extend([admin, dead, fine]);
    let p = write(&dir, "shadowed.json", &doc.to_string());
    let r = run(&["check", &p, "--json"]);
    assert_eq!(r.code, 0, "findings do not make a policy invalid");
    let j = r.json();
    assert_eq!(
        j["findings"],
        json!([
            {"kind": "shadowed", "path": "rules[1]", "rule": "orders-admin", "by_path": "rules[0]", "by": "orders-read",
             "message": "rules[1] is shadowed by rules[0]: every request it matches, the earlier rule matches first"},
            {"kind": "matches_nothing", "path": "rules[2]", "rule": "dead",
             "message": "rules[2] matches no request: its path is outside its path_prefix"},
        ])
    );
    let human = run(&["check", &p]);
    assert!(human.stdout.contains("findings (2)"));
    assert!(human
        .stdout
        .contains("\"orders-admin\" never applies: \"orders-read\" takes its requests first"));
    assert_eq!(run(&["check", &p, "--strict"]).code, 1);
    // --strict on a clean policy stays 0; providers.json has a warning (a skipped key).
    assert_eq!(
        run(&["check", "filter-config/examples/minimal.json", "--strict"]).code,
        0
    );
    assert_eq!(
        run(&["check", "filter-config/examples/providers.json", "--strict"]).code,
        1
    );
}

#[test]
fn check_refuses_unreadable_input_in_one_line() {
    let dir = scratch();
    assert_input_error(
        &run(&["check", "no/such/policy.json"]),
        "cannot read policy no/such/policy.json",
    );
    let p = write(&dir, "not-json.json", "{\"issuer\": ");
    assert_input_error(&run(&["check", &p]), "invalid JSON");
    let p = write(&dir, "dup.json", r#"{"issuer": "a", "issuer": "b"}"#);
    assert_input_error(&run(&["check", &p]), "duplicate member name");
    assert_input_error(
        &run(&["check", &dir.display().to_string()]),
        "cannot read policy",
    );
    // stdin
    let text = std::fs::read_to_string(root().join("filter-config/examples/minimal.json")).unwrap();
    let r = run_with(&["check", "-", "--json"], Some(&text));
    assert_eq!((r.code, r.json()["valid"].clone()), (0, json!(true)));
    assert_input_error(&run_with(&["check", "-"], Some("")), "invalid JSON");
}

// ------------------------------------------------------------------------------ explain

fn demo_token(py: &Path, extra: &[&str]) -> String {
    let mut args = vec!["--now", "1767225600"];
    args.extend_from_slice(extra);
    let script = "import runpy, sys; sys.argv = ['mint_demo_token.py'] + sys.argv[1:]; runpy.run_path('envoy-example/mint_demo_token.py', run_name='__main__')";
    python_out(py, script, &args)
}

#[test]
fn explain_a_pyjwt_token_on_the_demo_policy() {
    let Some(py) = python() else { return };
    let token = demo_token(&py, &["--jti", "pyjwt-1"]);
    let args = [
        "explain",
        "envoy-example/demo-policy.json",
        // The demo fetches its issuer's keys at run time: give them here.
        "--issuer-key",
        "https://idp.demo.local=@envoy-example/demo-keys/demo-issuer-es256.public.jwk.json",
        "--path",
        "/orders/42",
        "--route",
        "orders",
        "--now",
        "2026-01-01T00:00:10Z",
        "--header",
        "x-request-id: r-1",
        "--header",
        "X-Forwarded-User: mallory",
        "--token",
    ];
    let mut a = args.to_vec();
    a.push(&token);
    a.push("--json");
    let r = run(&a);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        !r.stdout.contains(&token),
        "the original token is never printed"
    );
    let j = r.json();
    assert_eq!(
        (&j["decision"], &j["reason"], &j["rule"]),
        (&json!("allow"), &json!("exchanged"), &json!("orders-read"))
    );
    let minted = &j["minted"];
    assert_eq!(
        minted["header"],
        json!({"alg": "EdDSA", "kid": "demo-gateway-1", "typ": "at+jwt"})
    );
    assert_eq!(minted["claims"]["scope"], "orders:read");
    assert_eq!(
        minted["claims"]["exchanged_from"],
        json!({"iss": "https://idp.demo.local", "token_id": "pyjwt-1", "iat": NOW})
    );
    assert_eq!(minted["claims"]["iat"], NOW + 10);
    assert_eq!(minted["signature_verified"], true);
    assert_eq!(minted["generated_key"], false);
    assert!(minted["signed_with"]
        .as_str()
        .unwrap()
        .starts_with("signed with the policy's key \"demo-gateway-1\""));
    assert_eq!(j["audit"]["request_id"], "r-1");
    assert_eq!(j["audit"]["minted_jti"], minted["claims"]["jti"]);
    assert_eq!(
        j["strip_headers"],
        json!(["x-forwarded-user"]),
        "the policy's strip_headers present on this request"
    );
    // PyJWT verifies the minted token with the gateway's public key.
    let public = std::fs::read_to_string(
        root().join("envoy-example/demo-keys/gateway-signing-key.public.jwk.json"),
    )
    .unwrap();
    let mut public: Value = serde_json::from_str(&public).unwrap();
    public["alg"] = json!("EdDSA");
    let verified: Value = serde_json::from_str(&python_out(
        &py,
        PYJWT_VERIFY,
        &[minted["token"].as_str().unwrap(), &public.to_string()],
    ))
    .unwrap();
    assert_eq!(verified["claims"], minted["claims"]);

    // Human output: the same facts, marked as signed with the policy's key.
    let mut a = args.to_vec();
    a.push(&token);
    let human = run(&a);
    assert_eq!(human.code, 0);
    for want in [
        "decision   allow",
        "rule       orders-read",
        "signed with the policy's key",
        "removes x-forwarded-user",
    ] {
        assert!(human.stdout.contains(want), "{want}: {}", human.stdout);
    }
    // The audit line exactly as the filter logs it (field order of AuditRecord).
    assert!(human.stdout.contains(
        "audit      {\"event\":\"token_exchange\",\"ts_ms\":1767225610000,\"decision\":\"allow\""
    ));

    // Denied: exit 1, with the status and the challenge a client would see.
    let weak = demo_token(&py, &["--scope", "profile"]);
    let mut a = args.to_vec();
    a.push(&weak);
    a.push("--json");
    let r = run(&a);
    assert_eq!(r.code, 1);
    let j = r.json();
    assert_eq!(
        (&j["decision"], &j["reason"], &j["status"]),
        (&json!("deny"), &json!("insufficient_scope"), &json!(403))
    );
    assert_eq!(
        j["www_authenticate"],
        "Bearer realm=\"demo-gateway\", error=\"insufficient_scope\", error_description=\"token lacks a required scope\", scope=\"orders:read\""
    );
    assert_eq!(j["body"]["error"], "insufficient_scope");
    assert!(j.get("minted").is_none());
    // Expired an hour ago.
    let old = demo_token(&py, &["--expired"]);
    let r = run(&[
        "explain",
        "envoy-example/demo-policy.json",
        "--path",
        "/orders/1",
        "--route",
        "orders",
        "--now",
        "1767225600",
        "--token",
        &old,
        "--json",
    ]);
    assert_eq!(
        (r.code, r.json()["reason"].clone()),
        (1, json!("token_expired"))
    );
}

#[test]
fn explain_with_a_keygen_key_in_place_of_the_issuers_keys() {
    let Some(py) = python() else { return };
    let dir = scratch();
    let key = dir.join("idp.jwk.json").display().to_string();
    let r = run(&[
        "keygen",
        "--alg",
        "RS256",
        "--kid",
        "idp-test",
        "--private-key-file",
        &key,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let claims = json!({"iss": "https://idp.example.com", "sub": "bob", "aud": "https://api.example.com",
                        "azp": "web-app", "scope": "orders:read", "exp": NOW + 300, "iat": NOW});
    let token = python_out(&py, PYJWT_SIGN, &[&key, &claims.to_string()]);
    let base = [
        "explain",
        "filter-config/examples/minimal.json",
        "--path",
        "/orders/1",
        "--now",
        "1767225600",
        "--json",
        "--token",
    ];
    // The example policy trusts another key.
    let mut a = base.to_vec();
    a.push(&token);
    let r = run(&a);
    assert_eq!(
        (r.code, r.json()["reason"].clone()),
        (1, json!("unknown_key"))
    );
    // With the test key in place of the issuer's keys.
    let swap = format!("https://idp.example.com=@{key}");
    a.extend(["--issuer-key", &swap]);
    let r = run(&a);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let j = r.json();
    assert_eq!(j["minted"]["claims"]["sub"], "bob");
    assert_eq!(
        j["notes"],
        json!(["keys of trusted issuer \"https://idp.example.com\" replaced for this run by test key \"idp-test\""])
    );
    // The replaced issuer must be one the policy trusts.
    let mut a = base.to_vec();
    let bad = format!("https://nobody.example=@{key}");
    a.extend([token.as_str(), "--issuer-key", &bad]);
    assert_input_error(
        &run(&a),
        "\"https://nobody.example\" is not a trusted issuer",
    );
}

#[test]
fn explain_with_a_generated_signing_key_and_a_seed() {
    let Some(py) = python() else { return };
    let token = demo_token(&py, &[]);
    let base = [
        "explain",
        "envoy-example/demo-policy.json",
        // The demo fetches its issuer's keys at run time: give them here.
        "--issuer-key",
        "https://idp.demo.local=@envoy-example/demo-keys/demo-issuer-es256.public.jwk.json",
        "--path",
        "/orders/42",
        "--route",
        "orders",
        "--now",
        "1767225601",
        "--json",
        "--token",
        &token,
    ];
    let mut a = base.to_vec();
    a.push("--generated-signing-key");
    let j = run(&a).json();
    let kid = j["minted"]["header"]["kid"].as_str().unwrap();
    assert!(kid.starts_with("explain-"), "{kid}");
    assert_eq!(j["minted"]["generated_key"], true);
    assert!(j["minted"]["signed_with"]
        .as_str()
        .unwrap()
        .contains("a generated key (not the policy's)"));
    assert_eq!(j["minted"]["signature_verified"], true);
    assert!(j["notes"][0]
        .as_str()
        .unwrap()
        .contains("signing_keys replaced for this run by a generated key"));
    // --seed: the same output twice; another seed, another jti.
    let mut a = base.to_vec();
    a.extend(["--seed", "7"]);
    let first = run(&a).stdout;
    assert_eq!(first, run(&a).stdout);
    let mut b = base.to_vec();
    b.extend(["--seed", "8"]);
    let other: Value = serde_json::from_str(&run(&b).stdout).unwrap();
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_ne!(
        first["minted"]["claims"]["jti"],
        other["minted"]["claims"]["jti"]
    );
    // Without --seed, two runs mint different jti (the OS random source).
    let (x, y) = (run(&base).json(), run(&base).json());
    assert_ne!(x["minted"]["claims"]["jti"], y["minted"]["claims"]["jti"]);
}

#[test]
fn explain_a_grpc_request_and_requests_without_a_token() {
    let r = run(&[
        "explain",
        "filter-config/examples/minimal.json",
        "--path",
        "/orders/1",
        "--method",
        "POST",
        "--header",
        "content-type: application/grpc",
        "--now",
        "1767225600",
        "--json",
    ]);
    assert_eq!(r.code, 1);
    let j = r.json();
    assert_eq!(
        (&j["reason"], &j["rule"]),
        (&json!("no_matching_rule"), &Value::Null)
    );
    assert_eq!(
        j["grpc"],
        json!({"status": 7, "message": "no policy rule allows this request"})
    );
    let r = run(&[
        "explain",
        "filter-config/examples/minimal.json",
        "--path",
        "/orders/1",
        "--now",
        "1767225600",
    ]);
    assert_eq!(r.code, 1);
    assert!(r
        .stdout
        .contains("reason     missing_token: a bearer token is required"));
    assert!(r
        .stdout
        .contains("challenge  WWW-Authenticate: Bearer realm=\"token-exchange\""));
    let r = run(&[
        "explain",
        "filter-config/examples/partner-and-internal.json",
        "--path",
        "/health",
        "--json",
    ]);
    assert_eq!((r.code, r.json()["decision"].clone()), (0, json!("pass")));
}

#[test]
fn explain_refuses_bad_arguments_in_one_line() {
    let dir = scratch();
    let p = "filter-config/examples/minimal.json";
    let base = |extra: &[&str]| {
        let mut a = vec!["explain", p, "--path", "/orders/1"];
        a.extend_from_slice(extra);
        run(&a)
    };
    assert_input_error(&base(&["--now", "yesterday"]), "bad time \"yesterday\"");
    assert_input_error(&base(&["--now", "2026-02-30T00:00:00Z"]), "bad time");
    assert_input_error(
        &base(&["--token", "@no/such/token"]),
        "cannot read --token no/such/token",
    );
    assert_input_error(&base(&["--token", "  "]), "empty token");
    assert_input_error(&base(&["--token", "a.b\u{1}.c"]), "printable ASCII");
    assert_input_error(&base(&["--header", "no colon"]), "bad header \"no colon\"");
    assert_input_error(&base(&["--issuer-key", "nothing"]), "use ISSUER=JWK");
    assert_input_error(
        &base(&["--issuer-key", "https://idp.example.com={"]),
        "invalid JSON",
    );
    assert_input_error(
        &base(&[
            "--issuer-key",
            r#"https://idp.example.com={"kty":"RSA","n":"AQAB","e":"AQAB"}"#,
        ]),
        "--issuer-key for https://idp.example.com",
    );
    assert_input_error(
        &run(&["explain", "no/such.json", "--path", "/"]),
        "cannot read policy no/such.json",
    );
    let mut doc = read_json(p);
    doc["rules"][0]["mint"]["audience"] = json!(7);
    let broken = write(&dir, "broken.json", &doc.to_string());
    assert_input_error(
        &run(&["explain", &broken, "--path", "/"]),
        "is invalid (1 error(s); `token-exchange check` lists them): rules[0].mint.audience",
    );
    // A missing required option or a number that is none is a usage error (clap), also 2.
    let r = run(&["explain", p]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--path"));
    let r = base(&["--seed", "x"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("invalid value 'x' for '--seed <SEED>'"),
        "{}",
        r.stderr
    );
}

// --------------------------------------------------------------------------------- test

#[test]
fn test_runs_the_shipped_cases_for_every_example_policy() {
    let r = run(&["test", "filter-config/tests", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let j = r.json();
    assert_eq!(j["summary"]["failed"], 0);
    assert!(j["summary"]["cases"].as_u64().unwrap() >= 50);
    let tested: Vec<&str> = j["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["policy"].as_str().unwrap())
        .collect();
    for policy in example_policies() {
        assert!(
            tested.contains(&policy.as_str()),
            "{policy} has no case file: {tested:?}"
        );
    }
    let human = run(&["test", "filter-config/tests"]);
    assert_eq!(human.code, 0);
    assert!(human
        .stdout
        .lines()
        .last()
        .unwrap()
        .ends_with("passed, 0 failed"));
    assert!(!human.stdout.contains("FAIL"));
}

#[test]
fn test_reports_each_failing_expectation_and_exits_1() {
    let r = run(&["test", "cli/tests/fixtures/failing.cases.json"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    for want in [
        "  PASS  a reader is allowed",
        "  FAIL  claims a deny that is an allow",
        "          decision: expected \"deny\", got \"allow\"",
        "          reason: expected \"insufficient_scope\", got \"exchanged\"",
        "  FAIL  claims a wider scope than minted",
        "          minted scope: expected \"orders:read orders:write\", got \"orders:read\"",
        "          minted claim email: expected nothing, got \"alice@example.com\"",
        "          audit caller: expected \"mobile-app\", got \"demo-web-app\"",
        "  FAIL  claims a rule when none matched",
        "          rule: expected \"orders-read\", got nothing",
        "4 case(s) in 1 file(s): 1 passed, 3 failed",
    ] {
        assert!(r.stdout.contains(want), "{want:?} not in:\n{}", r.stdout);
    }
    let j = run(&["test", "cli/tests/fixtures/failing.cases.json", "--json"]).json();
    let passed: Vec<bool> = j["files"][0]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["passed"].as_bool().unwrap())
        .collect();
    assert_eq!(passed, [true, false, false, false]);
    assert_eq!(j["summary"], json!({"cases": 4, "passed": 1, "failed": 3}));
    // --run selects cases by name.
    let r = run(&[
        "test",
        "cli/tests/fixtures/failing.cases.json",
        "--run",
        "reader",
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_input_error(
        &run(&[
            "test",
            "cli/tests/fixtures/failing.cases.json",
            "--run",
            "zzz",
        ]),
        "no case matches --run \"zzz\"",
    );
}

#[test]
fn test_accepts_literal_tokens_minted_by_pyjwt() {
    let Some(py) = python() else { return };
    let dir = scratch();
    let good = demo_token(&py, &["--jti", "lit-1"]);
    let weak = demo_token(&py, &["--scope", "profile"]);
    let cases = json!({
        "policy": root().join("envoy-example/demo-policy.json"),
        "now": NOW + 5,
        "defaults": {"request": {"path": "/orders/1", "route": "orders"}},
        "cases": [
            {"name": "PyJWT token allowed", "token": good, "expect": {"decision": "allow", "minted": {"claims": {"exchanged_from": {"iss": "https://idp.demo.local", "token_id": "lit-1", "iat": NOW}}}}},
            {"name": "PyJWT token without orders:read", "token": weak, "expect": {"reason": "insufficient_scope"}},
        ]
    });
    let p = write(&dir, "pyjwt.cases.json", &cases.to_string());
    let r = run(&["test", &p]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r
        .stdout
        .contains("2 case(s) in 1 file(s): 2 passed, 0 failed"));
}

#[test]
fn test_refuses_bad_case_files_with_their_json_path() {
    let dir = scratch();
    let policy = root()
        .join("filter-config/examples/minimal.json")
        .display()
        .to_string();
    let key = root()
        .join("filter-config/tests/keys/idp-rs256.TEST-ONLY.jwk.json")
        .display()
        .to_string();
    let good = || {
        json!({
            "policy": policy,
            "now": NOW,
            "issuers": {"idp": {"key": format!("@{key}"), "iss": "https://idp.example.com", "replace_policy_keys": true}},
            "cases": [{"name": "c", "request": {"path": "/orders/1"},
                       "token": {"issuer": "idp", "claims": {"sub": "a", "aud": "https://api.example.com", "scope": "orders:read"}, "expires_in": 60},
                       "expect": {"decision": "allow"}}]
        })
    };
    let p = write(&dir, "good.cases.json", &good().to_string());
    assert_eq!(run(&["test", &p]).code, 0);
    let bad = |name: &str, edit: &dyn Fn(&mut Value), needle: &str| {
        let mut doc = good();
        edit(&mut doc);
        let p = write(&dir, name, &doc.to_string());
        assert_input_error(&run(&["test", &p]), needle);
    };
    bad(
        "a.json",
        &|d| d["cases"][0]["expect"]["colour"] = json!(1),
        "cases[0].expect.colour: unknown field `colour`",
    );
    bad(
        "b.json",
        &|d| d["cases"][0]["expect"] = json!({}),
        "cases[0].expect: expects nothing",
    );
    bad(
        "c.json",
        &|d| d["cases"][0]["expect"]["reason"] = json!("nope"),
        "cases[0].expect.reason: \"nope\" is not a reason code",
    );
    bad(
        "d.json",
        &|d| d["cases"][0]["expect"]["decision"] = json!("maybe"),
        "is not allow, deny or pass",
    );
    bad(
        "e.json",
        &|d| d["cases"][0]["token"]["issuer"] = json!("ghost"),
        "cases[0].token.issuer: no test issuer \"ghost\" (known: idp)",
    );
    bad(
        "f.json",
        &|d| d["now"] = Value::Null,
        "cases[0].now: no now",
    );
    bad("g.json", &|d| d["now"] = json!("noon"), "bad time \"noon\"");
    bad("h.json", &|d| d["cases"] = json!([]), "cases: no cases");
    bad(
        "i.json",
        &|d| d["policy"] = json!("missing.json"),
        "policy: cannot read policy",
    );
    bad(
        "j.json",
        &|d| d["issuers"]["idp"]["key"] = json!("@missing.jwk.json"),
        "issuers.idp.key: cannot read key",
    );
    bad(
        "k.json",
        &|d| d["issuers"]["idp"]["key"] = json!({"kty": "OKP"}),
        "issuers.idp.key: key: signing keys need a non-empty kid",
    );
    bad(
        "l.json",
        &|d| d["issuers"]["idp"]["iss"] = json!("https://nobody"),
        "issuers.idp.iss: \"https://nobody\" is not a trusted issuer",
    );
    bad(
        "m.json",
        &|d| d["cases"][0]["token"]["claims"]["exp"] = json!(1),
        "give exp or expires_in, not both",
    );
    bad(
        "n.json",
        &|d| d["cases"][0]["token"] = json!(5),
        "cases[0].token: must be an object",
    );
    bad(
        "o.json",
        &|d| d["cases"][0]["request"]["headers"] = json!({"x": 1}),
        "cases[0].request.headers.x: must be a string",
    );
    bad(
        "p.json",
        &|d| d["cases"][0]["expect"] = json!({"decision": "deny", "minted": {"scope": "a"}}),
        "cases[0].expect.minted: only an allowed request",
    );
    let p = write(&dir, "q.json", "{\"policy\": ");
    assert_input_error(&run(&["test", &p]), "invalid JSON");
    assert_input_error(&run(&["test", "no/such/dir"]), "cannot read no/such/dir");
    assert_eq!(
        run(&["test", "filter-config/tests", "--seed", "nope"]).code,
        2
    );
    let empty = scratch();
    assert_input_error(
        &run(&["test", &empty.display().to_string()]),
        "no case files (*.cases.json)",
    );
}

// ---------------------------------------------------------------------------- keygen, mint

#[test]
fn keygen_and_mint_interoperate_with_pyjwt() {
    let Some(py) = python() else { return };
    let dir = scratch();
    for alg in ["EdDSA", "ES256", "RS256"] {
        let r = run(&["keygen", "--alg", alg, "--json"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let j = r.json();
        let kid = j["kid"].as_str().unwrap();
        assert!(
            kid.starts_with(&format!("{}-", alg.to_ascii_lowercase())),
            "{kid}"
        );
        assert_eq!(j["private_jwk"]["alg"], alg);
        let public = &j["jwks"]["keys"][0];
        assert_eq!(public["kid"], kid);
        for private_member in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(
                public.get(private_member).is_none(),
                "{alg}: {private_member}"
            );
        }
        let key = write(
            &dir,
            &format!("{alg}.jwk.json"),
            &j["private_jwk"].to_string(),
        );
        // Our mint, PyJWT verifies.
        let r = run(&[
            "mint",
            "--key",
            &format!("@{key}"),
            "--claims",
            r#"{"sub":"alice","scope":"a b"}"#,
            "--expires-in",
            "60",
            "--now",
            "1767225600",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let token = r.stdout.trim();
        let v: Value = serde_json::from_str(&python_out(
            &py,
            PYJWT_VERIFY,
            &[token, &public.to_string()],
        ))
        .unwrap();
        assert_eq!(
            v["claims"],
            json!({"sub": "alice", "scope": "a b", "iat": NOW, "exp": NOW + 60})
        );
        assert_eq!(v["header"], json!({"alg": alg, "kid": kid, "typ": "JWT"}));
        // PyJWT signs with our private key, PyJWT verifies with our public one: the JWKs are standard.
        let t = python_out(&py, PYJWT_SIGN, &[&key, r#"{"sub":"bob"}"#]);
        let v: Value =
            serde_json::from_str(&python_out(&py, PYJWT_VERIFY, &[&t, &public.to_string()]))
                .unwrap();
        assert_eq!(v["claims"]["sub"], "bob");
    }
}

#[test]
fn keygen_writes_new_private_files_only() {
    let dir = scratch();
    let key = dir.join("k.jwk.json").display().to_string();
    let jwks = dir.join("k.jwks.json").display().to_string();
    let r = run(&[
        "keygen",
        "--alg",
        "EdDSA",
        "--kid",
        "k1",
        "--private-key-file",
        &key,
        "--jwks-file",
        &jwks,
    ]);
    assert_eq!(r.code, 0);
    assert!(
        !r.stdout.contains("\"d\""),
        "the private key is not printed when written to a file"
    );
    assert!(r.stdout.contains(&format!("private JWK written to {key}")));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let private: Value = serde_json::from_str(&std::fs::read_to_string(&key).unwrap()).unwrap();
    let public: Value = serde_json::from_str(&std::fs::read_to_string(&jwks).unwrap()).unwrap();
    assert_eq!(private["kid"], "k1");
    assert_eq!(public["keys"][0]["x"], private["x"]);
    // A policy can sign with it and trust it: check accepts both uses.
    let mut doc = read_json("filter-config/examples/minimal.json");
    doc["signing_keys"] = json!([private]);
    doc["trusted_issuers"][0]["jwks"] = public.clone();
    doc["trusted_issuers"][0]["algorithms"] = json!(["EdDSA"]);
    doc["trusted_issuers"][0]["issuer"] = json!("https://other-idp.example.com");
    let p = write(&dir, "policy.json", &doc.to_string());
    assert_eq!(run(&["check", &p]).code, 0);
    // Never over an existing file.
    let again = run(&["keygen", "--alg", "EdDSA", "--private-key-file", &key]);
    assert_input_error(&again, &format!("cannot create {key}"));
    // --seed repeats the key (tests only).
    let a = run(&[
        "keygen", "--alg", "ES256", "--kid", "s", "--seed", "3", "--json",
    ])
    .stdout;
    assert_eq!(
        a,
        run(&["keygen", "--alg", "ES256", "--kid", "s", "--seed", "3", "--json"]).stdout
    );
    // Usage errors.
    let r = run(&["keygen", "--alg", "HS256"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("possible values: EdDSA, ES256, RS256"),
        "{}",
        r.stderr
    );
    assert_eq!(run(&["keygen"]).code, 2);
    assert_input_error(
        &run(&["keygen", "--alg", "EdDSA", "--kid", ""]),
        "--kid: must not be empty",
    );
}

#[test]
fn mint_refuses_bad_arguments_in_one_line() {
    let key = "@filter-config/tests/keys/partner-es256.TEST-ONLY.jwk.json";
    let claims = r#"{"sub":"a"}"#;
    let ok = run(&[
        "mint",
        "--key",
        key,
        "--claims",
        claims,
        "--header",
        r#"{"alg":"none","typ":null}"#,
        "--json",
    ]);
    assert_eq!(ok.code, 0);
    let j = ok.json();
    assert_eq!(
        j["header"],
        json!({"alg": "none", "kid": "test-partner-es256"})
    );
    assert_eq!(j["token"].as_str().unwrap().split('.').count(), 3);
    assert_input_error(
        &run(&["mint", "--key", "@no/key.json", "--claims", claims]),
        "cannot read --key no/key.json",
    );
    assert_input_error(
        &run(&[
            "mint",
            "--key",
            r#"{"kty":"oct","k":"c2VjcmV0"}"#,
            "--claims",
            claims,
        ]),
        "--key: signing keys need a non-empty kid",
    );
    assert_input_error(
        &run(&["mint", "--key", "{", "--claims", claims]),
        "--key: invalid JSON",
    );
    assert_input_error(
        &run(&["mint", "--key", key, "--claims", "not json"]),
        "--claims: invalid JSON",
    );
    assert_input_error(
        &run(&["mint", "--key", key, "--claims", "[1]"]),
        "--claims: must be a JSON object",
    );
    assert_input_error(
        &run(&["mint", "--key", key, "--claims", claims, "--header", "7"]),
        "--header: must be a JSON object",
    );
    assert_input_error(
        &run(&[
            "mint",
            "--key",
            key,
            "--claims",
            r#"{"exp":1}"#,
            "--expires-in",
            "5",
        ]),
        "already set exp",
    );
    assert_input_error(
        &run(&["mint", "--key", key, "--claims", claims, "--now", "5"]),
        "--now is only used with --expires-in",
    );
    assert_input_error(
        &run(&[
            "mint",
            "--key",
            key,
            "--claims",
            claims,
            "--expires-in",
            "5",
            "--now",
            "soon",
        ]),
        "--now: bad time",
    );
    let r = run(&[
        "mint",
        "--key",
        key,
        "--claims",
        claims,
        "--expires-in",
        "-5",
    ]);
    assert_eq!(r.code, 2);
    let r = run(&["mint", "--key", key]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--claims"));
}

// -------------------------------------------------------------------------------- audit

const ENVOY_LOG: &str = "cli/tests/fixtures/envoy-audit.log";

#[test]
fn audit_reads_a_log_captured_from_a_real_envoy() {
    let text = std::fs::read_to_string(root().join(ENVOY_LOG)).unwrap();
    let records: Vec<Value> = text
        .lines()
        .filter_map(|l| {
            l.split_once(": {\"event\":\"token_exchange\"")
                .map(|(_, r)| format!("{{\"event\":\"token_exchange\"{r}"))
        })
        .map(|r| serde_json::from_str(&r).unwrap())
        .collect();
    assert!(records.len() >= 10);
    let r = run(&["audit", ENVOY_LOG, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["records"], records.len());
    assert_eq!(j["formats"], json!({"envoy": records.len()}));
    assert_eq!(j["malformed_lines"], json!([]));
    assert!(
        j["lines"].as_u64().unwrap() > records.len() as u64,
        "the sample keeps Envoy's other lines"
    );
    let count = |d: &str| records.iter().filter(|r| r["decision"] == d).count();
    assert_eq!(j["decisions"]["allow"], count("allow"));
    assert_eq!(j["decisions"]["deny"], count("deny"));
    let minted: Vec<(Value, Value)> = records
        .iter()
        .filter(|r| r["minted_jti"].is_string())
        .map(|r| (r["minted_jti"].clone(), r["token_id"].clone()))
        .collect();
    assert!(!minted.is_empty());
    let listed: Vec<(Value, Value)> = j["minted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["minted_jti"].clone(), m["token_id"].clone()))
        .collect();
    assert_eq!(listed, minted);
    let human = run(&["audit", ENVOY_LOG]);
    assert!(human
        .stdout
        .starts_with(&format!("{} audit record(s) in ", records.len())));
    let (jti, id) = &minted[0];
    assert!(human.stdout.contains(&format!(
        "{} <- {}",
        jti.as_str().unwrap(),
        id.as_str().unwrap()
    )));
    // The same records from stdin, and from Kong's log format.
    let r = run_with(&["audit", "-", "--json"], Some(&text));
    assert_eq!(r.json()["records"], records.len());
    let kong: String = records
        .iter()
        .enumerate()
        .map(|(i, r)| format!("2026/01/01 00:00:00 [info] 4242#0: *{i} [proxy-wasm][\"token_exchange_filter\" #1] {r}, client: 10.0.0.{}, server: kong, request: \"GET / HTTP/1.1\", host: \"localhost\"\n", i % 4))
        .collect();
    let r = run_with(&["audit", "-", "--json"], Some(&kong));
    let k = r.json();
    assert_eq!(k["formats"], json!({"kong": records.len()}));
    assert_eq!(k["by_reason"], j["by_reason"]);
}

#[test]
fn audit_flags_anomalies_and_fails_on_them_when_asked() {
    let mut lines = Vec::new();
    for i in 0..12u64 {
        lines.push(json!({"event": "token_exchange", "ts_ms": NOW * 1000 + i * 2000, "decision": "deny", "reason": "invalid_signature",
                          "status": 401, "caller": "scraper", "iss": "https://idp.example.com", "token_id": format!("t{i}"), "token_verified": false}).to_string());
    }
    let log = lines.join("\n");
    let r = run_with(&["audit", "-", "--json"], Some(&log));
    assert_eq!(r.code, 0, "anomalies alone do not fail");
    let kinds: Vec<Value> = r.json()["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("deny_spike"), json!("repeated_reason")]);
    let r = run_with(&["audit", "-", "--fail-on-anomaly"], Some(&log));
    assert_eq!(r.code, 1);
    assert!(r
        .stdout
        .contains("caller \"scraper\": 12 denies within 60 s from 2026-01-01T00:00:00Z"));
    assert!(r.stdout.contains(
        "invalid_signature 12 times (callers: scraper ×12; issuers: https://idp.example.com ×12)"
    ));
    // Higher thresholds: nothing to flag.
    let r = run_with(
        &[
            "audit",
            "-",
            "--fail-on-anomaly",
            "--spike",
            "13",
            "--repeat",
            "13",
        ],
        Some(&log),
    );
    assert_eq!(r.code, 0, "{}", r.stdout);
    // No records at all: a warning, not an error.
    let r = run_with(&["audit", "-"], Some("[info] nothing here\n"));
    assert_eq!(r.code, 0);
    assert!(r.stderr.contains("warning: no audit records"));
    assert_input_error(
        &run(&["audit", "no/such.log"]),
        "cannot read log no/such.log",
    );
    let r = run(&["audit", ENVOY_LOG, "--window", "soon"]);
    assert_eq!(r.code, 2);
}

// ----------------------------------------------------------------------------- --help

#[test]
fn every_command_has_help_and_documents_its_exit_codes() {
    for cmd in [
        vec![],
        vec!["check"],
        vec!["explain"],
        vec!["test"],
        vec!["keygen"],
        vec!["mint"],
        vec!["audit"],
    ] {
        let mut a = cmd.clone();
        a.push("--help");
        let r = run(&a);
        assert_eq!(r.code, 0, "{a:?}");
        assert!(r.stdout.contains("Usage: token-exchange"), "{a:?}");
        assert!(r.stdout.contains("Exit codes:"), "{a:?}");
    }
    let r = run(&["frobnicate"]);
    assert_eq!(r.code, 2);
    assert_eq!(run(&[]).code, 2);
    assert_eq!(run(&["--version"]).code, 0);
}
