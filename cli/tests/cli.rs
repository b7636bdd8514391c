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
        // The demo fetches its issuer's keys at run time: give the set it fetches.
        "--jwks",
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
        "--jwks",
        "https://idp.demo.local=@envoy-example/demo-keys/demo-issuer-es256.public.jwk.json",
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
        // The demo fetches its issuer's keys at run time: give the set it fetches.
        "--jwks",
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
    assert!(j["notes"].as_array().unwrap().iter().any(|n| n
        .as_str()
        .unwrap()
        .contains("signing_keys replaced for this run by a generated key")));
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
        "fetched": {"https://idp.demo.local": {"jwks": format!("@{}", root().join("envoy-example/demo-keys/demo-issuer-es256.public.jwk.json").display())}},
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
        "is not allow, deny, pass or serve",
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

// -------------------------------------------------------------------- trust boundaries

/// Each of `wants` is in `text`.
#[track_caller]
fn assert_has(text: &str, wants: &[&str]) {
    for want in wants {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}

const TRUST: &str = "filter-config/examples/trust-boundaries.json";
const IDP_KEY: &str = "filter-config/tests/keys/idp-rs256.TEST-ONLY.jwk.json";
const PARTNER_KEY: &str = "filter-config/tests/keys/partner-es256.TEST-ONLY.jwk.json";
/// 2026-05-01T09:00:00Z: after the internal issuer's revoked_before, before any review date.
const T0: u64 = 1_777_626_000;

/// A token PyJWT signs with a TEST-ONLY issuer key, issued at [`T0`] for ten minutes.
fn pyjwt_trust_token(py: &Path, key: &str, claims: Value) -> String {
    let mut c = json!({"sub": "alice", "iat": T0, "exp": T0 + 600});
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), claims) {
        c.extend(extra);
    }
    python_out(py, PYJWT_SIGN, &[key, &c.to_string()])
}

fn idp_token(py: &Path, claims: Value) -> String {
    let mut c = json!({"iss": "https://idp.example.com", "aud": "https://api.example.com", "azp": "web-app"});
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), claims) {
        c.extend(extra);
    }
    pyjwt_trust_token(py, IDP_KEY, c)
}

/// `explain` on the trust-boundaries policy with both test issuers' keys.
fn explain_trust(extra: &[&str]) -> Run {
    let mut a = vec![
        "explain",
        TRUST,
        "--issuer-key",
        "https://idp.example.com=@filter-config/tests/keys/idp-rs256.TEST-ONLY.jwk.json",
        "--issuer-key",
        "https://login.partner.example=@filter-config/tests/keys/partner-es256.TEST-ONLY.jwk.json",
    ];
    a.extend_from_slice(extra);
    run(&a)
}

#[test]
fn check_reviews_issuer_dates_ceilings_chains_shadow_rules_revocation_and_hygiene() {
    let at = |now: &str| {
        let r = run(&["check", TRUST, "--now", now, "--json"]);
        assert_eq!(r.code, 0, "{}", r.stdout);
        r.json()
    };
    let j = at("2026-05-01T09:00:00Z");
    assert_eq!(
        (&j["now"], &j["now_utc"]),
        (&json!(T0), &json!("2026-05-01T09:00:00Z"))
    );
    let idp = &j["trusted_issuers"][0];
    assert_eq!(
        (
            &idp["review_by"],
            &idp["review_overdue"],
            &idp["expires"],
            &idp["expired"]
        ),
        (
            &json!("2026-09-30"),
            &json!(false),
            &Value::Null,
            &json!(false)
        )
    );
    assert_eq!(
        (&idp["revoked_before"], &idp["revoked_before_utc"]),
        (&json!(1_772_366_400), &json!("2026-03-01T12:00:00Z"))
    );
    assert_eq!(
        (&idp["max_scopes"], &idp["allowed_audiences"]),
        (&Value::Null, &Value::Null)
    );
    let partner = &j["trusted_issuers"][1];
    assert_eq!(
        partner["max_scopes"],
        json!(["shipments:read", "orders:read"])
    );
    assert_eq!(
        partner["allowed_audiences"],
        json!(["shipments-service", "billing-service"])
    );
    assert_eq!(
        (
            &partner["review_by"],
            &partner["review_overdue"],
            &partner["expires"],
            &partner["expired"]
        ),
        (
            &json!("2026-06-30"),
            &json!(false),
            &json!("2026-12-31"),
            &json!(false)
        )
    );
    let rules = &j["rules"];
    assert_eq!(rules[0]["accept_gateway_tokens"], Value::Null);
    assert_eq!(
        rules[1]["accept_gateway_tokens"],
        json!({"audiences": ["shipments-service"]})
    );
    assert_eq!(rules[1]["max_chain_depth"], 2);
    assert_eq!(rules[2]["require"]["max_age_seconds"], 300);
    assert_eq!(
        rules[2]["require"]["acr"],
        json!(["urn:example:mfa", "urn:example:hwk"])
    );
    let modes: Vec<&Value> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["mode"])
        .collect();
    assert_eq!(
        modes,
        [
            &json!("enforce"),
            &json!("enforce"),
            &json!("enforce"),
            &json!("shadow")
        ]
    );
    assert_eq!(j["revoked"], json!({"jti": 1, "sub": 1}));
    assert_eq!(
        (&j["strip_headers_default"], &j["strip_headers_action"]),
        (&json!(false), &json!("refuse"))
    );
    assert_eq!(
        j["strip_headers"],
        json!([
            "x-forwarded-user",
            "x-forwarded-email",
            "x-auth-request-*",
            "x-user-id",
            "x-consumer-*"
        ])
    );
    assert_eq!((&j["notices"], &j["findings"]), (&json!([]), &json!([])));
    assert_eq!(
        run(&["check", TRUST, "--now", "2026-05-01T09:00:00Z", "--strict"]).code,
        0
    );

    let human = run(&["check", TRUST, "--now", "2026-05-01T09:00:00Z"]).stdout;
    assert_has(
        &human,
        &[
        "now              2026-05-01T09:00:00Z (review dates are judged at this time)",
        "header hygiene   refuse (400 identity_header_present): the policy's list, x-forwarded-user, x-forwarded-email, x-auth-request-*, x-user-id, x-consumer-*",
        "revoked          1 jti, 1 sub (original tokens and subjects refused: token_revoked, subject_revoked)",
        "    ceilings    scopes at most shipments:read orders:read; exchanged only for shipments-service, billing-service",
        "    review by   2026-06-30 (not yet due)",
        "    expires     2026-12-31 (trusted through that day)",
        "    revoked     tokens issued before 2026-03-01T12:00:00Z (or without iat) are refused (issued_before_revocation)",
        "     chain    at most 2 exchange(s) recorded in act; takes the gateway's tokens minted for shipments-service (chained exchange)",
        "     chain    at most 2 exchange(s) recorded in act; refuses the gateway's own tokens (gateway_token_replay)",
        "acr one of urn:example:mfa, urn:example:hwk (step-up); authenticated at most 300 s ago (auth_time; step-up)",
        "     mode     shadow: decides, mints and audits as enforcing would, but forwards the request unchanged and never denies",
        "lifecycle notices (0), as the filter logs them at load and daily",
        ],
    );

    // The day after the partner's review_by: flagged, with the filter's own warning; --strict fails.
    let j = at("2026-07-01T00:00:00Z");
    assert_eq!(j["trusted_issuers"][1]["review_overdue"], true);
    assert_eq!(j["trusted_issuers"][0]["review_overdue"], false);
    assert_eq!(
        j["notices"],
        json!(["trusted issuer \"https://login.partner.example\" is overdue for review (review_by 2026-06-30, now 2026-07-01T00:00:00Z): review the entry and set a new review_by"])
    );
    let strict = run(&["check", TRUST, "--now", "2026-07-01T00:00:00Z", "--strict"]);
    assert_eq!(strict.code, 1);
    assert!(strict
        .stdout
        .contains("    review by   2026-06-30 (OVERDUE since 2026-07-01T00:00:00Z)"));
    assert!(strict.stdout.contains("lifecycle notices (1)"));
    // After expires: no longer trusted; the internal issuer's review is overdue by then too.
    let j = at("2027-01-01T00:00:00Z");
    assert_eq!(j["trusted_issuers"][1]["expired"], true);
    assert_eq!(j["trusted_issuers"][0]["review_overdue"], true);
    assert_eq!(j["notices"].as_array().unwrap().len(), 2);
    assert_eq!(
        j["notices"][1],
        "trusted issuer \"https://login.partner.example\" expired after 2026-12-31: its tokens are refused (issuer_expired); remove or renew the entry"
    );
    let human = run(&["check", TRUST, "--now", "1798761600"]).stdout;
    assert!(human.contains(
        "    expires     2026-12-31 (EXPIRED since 2027-01-01T00:00:00Z: its tokens are refused (issuer_expired))"
    ));

    // Without strip_headers: the default list, stripped.
    let j = run(&["check", "filter-config/examples/minimal.json", "--json"]).json();
    assert_eq!(
        (&j["strip_headers_default"], &j["strip_headers_action"]),
        (&json!(true), &json!("strip"))
    );
    assert_eq!(j["strip_headers"][0], "x-forwarded-user");
    assert!(run(&["check", "filter-config/examples/minimal.json"])
        .stdout
        .contains("header hygiene   strip (removed before forwarding): the default list, x-forwarded-user, "));
    assert_input_error(&run(&["check", TRUST, "--now", "soon"]), "--now:");
}

/// trust-boundaries.json with rules no token of their issuers can ever pass.
fn ceiling_conflicts_policy(dir: &Path) -> String {
    let mut doc = read_json(TRUST);
    let rules = doc["rules"].as_array_mut().unwrap();
    // The partner is never exchanged for orders-service.
    rules.push(
        json!({"name": "partner-orders", "match": {"path_prefix": "/partner-orders"},
        "require": {"issuers": ["https://login.partner.example"]},
        "mint": {"audience": "orders-service", "scopes": ["orders:read"]}}),
    );
    // shipments:write is outside the partner's max_scopes; the internal issuer can still.
    rules.push(json!({"name": "shipments-write", "match": {"path_prefix": "/shipments-write"},
        "require": {"issuers": ["https://idp.example.com", "https://login.partner.example"], "scopes": ["shipments:write"]},
        "mint": {"audience": "shipments-service", "scopes": ["shipments:write"]}}));
    // Gateway tokens for reports-service come only from a shadow rule: none exist.
    rules.push(
        json!({"name": "archive", "match": {"path_prefix": "/archive"},
        "require": {"issuers": ["https://idp.example.com"]},
        "accept_gateway_tokens": {"audiences": ["reports-service", "shipments-service"]},
        "mint": {"audience": "archive-service", "scopes": ["shipments:read"]}}),
    );
    write(dir, "ceilings.json", &doc.to_string())
}

#[test]
fn check_finds_rules_whose_grant_can_never_meet_what_their_issuers_may_hold() {
    let dir = scratch();
    let p = ceiling_conflicts_policy(&dir);
    let r = run(&["check", &p, "--now", "2026-05-01T09:00:00Z", "--json"]);
    assert_eq!(
        r.code, 0,
        "findings do not make a policy invalid: {}",
        r.stdout
    );
    let j = r.json();
    assert_eq!(
        j["findings"],
        json!([
            {"kind": "never_grants", "path": "rules[4]", "rule": "partner-orders",
             "issuers": [{"issuer_path": "trusted_issuers[1]", "issuer": "https://login.partner.example",
                          "why": "audience_not_allowed",
                          "message": "its allowed_audiences exclude the rule's mint.audience"}],
             "message": "rules[4] can never mint: the ceilings of every issuer it accepts exclude it (trusted_issuers[1]: its allowed_audiences exclude the rule's mint.audience)"},
            {"kind": "issuer_never_granted", "path": "rules[5]", "rule": "shipments-write",
             "issuer_path": "trusted_issuers[1]", "issuer": "https://login.partner.example",
             "why": "required_scope_outside", "scope": "shipments:write",
             "message": "rules[5] never exchanges tokens of trusted_issuers[1], which it accepts: the rule requires scope \"shipments:write\", outside its max_scopes"},
            {"kind": "gateway_audience_never_granted", "path": "rules[6]", "rule": "archive",
             "audience": "reports-service", "why": "not_minted",
             "message": "rules[6] never exchanges the gateway tokens for \"reports-service\" it accepts: no rule of this policy mints that audience in enforce mode (and can apply)"},
        ])
    );
    let human = run(&["check", &p, "--now", "2026-05-01T09:00:00Z"]);
    assert!(human.stdout.contains("findings (3)"));
    assert_has(
        &human.stdout,
        &[
        "(\"partner-orders\" never mints: refused for every token of \"https://login.partner.example\")",
        "(\"shipments-write\" refuses every token of \"https://login.partner.example\")",
        "(\"archive\" refuses every gateway token minted for \"reports-service\")",
        ],
    );
    assert_eq!(
        run(&["check", &p, "--now", "2026-05-01T09:00:00Z", "--strict"]).code,
        1
    );
    // The filter agrees: a partner token holding every scope is refused by partner-orders.
    let cases = json!({
        "policy": &p, "now": T0,
        "issuers": {"partner": {"key": format!("@{}", root().join(PARTNER_KEY).display()),
                                "iss": "https://login.partner.example", "replace_policy_keys": true}},
        "defaults": {"token": {"issuer": "partner", "expires_in": 60,
            "claims": {"sub": "p", "aud": "https://api.example.com/partner", "azp": "portal", "scope": "orders:read shipments:read shipments:write"}}},
        "cases": [
            {"name": "partner-orders", "request": {"path": "/partner-orders/1"}, "expect": {"reason": "issuer_audience_not_allowed"}},
            {"name": "shipments-write", "request": {"path": "/shipments-write/1"}, "expect": {"reason": "issuer_scope_ceiling"}},
        ]
    });
    let f = write(&dir, "ceilings.cases.json", &cases.to_string());
    let r = run(&["test", &f]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}

#[test]
fn explain_shows_what_a_shadow_rule_would_do_and_that_the_request_goes_on_unchanged() {
    let Some(py) = python() else { return };
    let token = idp_token(&py, json!({"scope": "reports:read", "jti": "shadow-1"}));
    let base = [
        "--path",
        "/reports/q2",
        "--now",
        "2026-05-01T09:00:10Z",
        "--header",
        "x-request-id: r-7",
    ];
    let mut a = base.to_vec();
    a.extend(["--token", &token, "--json"]);
    // No --seed: the minted token shown is still the one the audit line names.
    let r = explain_trust(&a);
    assert_eq!(r.code, 0, "a shadow rule never denies: {}", r.stdout);
    let j = r.json();
    assert_eq!(
        (&j["decision"], &j["reason"], &j["mode"], &j["forwarded"]),
        (
            &json!("allow"),
            &json!("exchanged"),
            &json!("shadow"),
            &json!("unchanged")
        )
    );
    assert_eq!(j["minted"]["claims"]["jti"], j["audit"]["minted_jti"]);
    assert_eq!(j["minted"]["claims"]["aud"], "reports-service");
    assert_eq!(j["minted"]["discarded"], true);
    assert_eq!(j["minted"]["signature_verified"], true);
    assert_eq!(j["audit"]["mode"], "shadow");
    assert_eq!(j["strip_headers"], json!([]));
    let mut a = base.to_vec();
    a.extend(["--token", &token]);
    let human = explain_trust(&a).stdout;
    assert_has(
        &human,
        &[
        "decision   allow (shadow mode: what enforcing the rule would decide)",
        "rule       reports-tightening (mode shadow)",
        "; discarded (shadow mode)",
        "forwarded  unchanged: the rule is in shadow mode, so the request goes on as it came (its own Authorization, if any) and is never denied\n",
        ],
    );
    // No token: what enforcing would answer, marked as not sent; an identity header is
    // still stripped.
    let mut a = base.to_vec();
    a.extend(["--header", "X-Forwarded-User: mallory"]);
    let r = explain_trust(&a);
    assert_eq!(r.code, 0);
    assert_has(
        &r.stdout,
        &[
        "decision   deny (shadow mode: what enforcing the rule would decide)",
        "status     400 (shadow mode: not sent)",
        "challenge  WWW-Authenticate: Bearer realm=\"token-exchange\", error=\"invalid_request\", error_description=\"identity headers are not accepted from clients\" (shadow mode: not sent)",
        "identity   headers from the client: x-forwarded-user: removed before forwarding (enforcing the rule would refuse the request)",
        "; removes x-forwarded-user\n",
        ],
    );
    let mut a = base.to_vec();
    a.push("--json");
    let j = explain_trust(&a).json();
    assert_eq!(
        (
            &j["reason"],
            &j["status"],
            &j["www_authenticate"],
            &j["forwarded"]
        ),
        (
            &json!("missing_token"),
            &json!(401),
            &json!("Bearer realm=\"token-exchange\""),
            &json!("unchanged")
        )
    );
}

#[test]
fn explain_shows_the_act_chain_of_a_two_hop_exchange_verified_by_pyjwt() {
    let Some(py) = python() else { return };
    let edge = idp_token(&py, json!({"scope": "shipments:read", "jti": "edge-7"}));
    let r = explain_trust(&[
        "--path",
        "/shipments/42",
        "--now",
        "2026-05-01T09:00:10Z",
        "--token",
        &edge,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let first = r.json();
    assert_eq!(
        first["minted"]["act_chain"],
        json!([{"sub": "web-app", "iss": "https://idp.example.com", "rule": "shipments", "audience": "shipments-service"}])
    );
    let t1 = first["minted"]["token"].as_str().unwrap().to_owned();
    // shipments-service presents it to billing.
    let hop = [
        "--path",
        "/billing/invoices/7",
        "--now",
        "2026-05-01T09:01:30Z",
        "--token",
        &t1,
    ];
    let mut a = hop.to_vec();
    a.push("--json");
    let r = explain_trust(&a);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let j = r.json();
    assert_eq!(j["rule"], "billing-from-shipments");
    assert_eq!(
        j["minted"]["act_chain"],
        json!([
            {"sub": "shipments-service", "iss": "https://gateway.example.internal", "rule": "billing-from-shipments", "audience": "billing-service"},
            {"sub": "web-app", "iss": "https://idp.example.com", "rule": "shipments", "audience": "shipments-service"},
        ])
    );
    assert_eq!(
        j["minted"]["claims"]["exp"], first["minted"]["claims"]["exp"],
        "a hop never extends exp"
    );
    assert_eq!(
        (
            &j["audit"]["chain_depth"],
            &j["audit"]["origin_token_id"],
            &j["audit"]["caller"]
        ),
        (&json!(2), &json!("edge-7"), &json!("shipments-service"))
    );
    // PyJWT verifies the hop's token with the gateway's published key.
    let doc = read_json(TRUST);
    let mut public = doc["signing_keys"][0].clone();
    public.as_object_mut().unwrap().remove("d");
    let verified: Value = serde_json::from_str(&python_out(
        &py,
        PYJWT_VERIFY,
        &[j["minted"]["token"].as_str().unwrap(), &public.to_string()],
    ))
    .unwrap();
    assert_eq!(verified["claims"]["act"]["act"]["sub"], "web-app");
    assert_eq!(verified["claims"], j["minted"]["claims"]);
    let human = explain_trust(&hop).stdout;
    assert_has(
        &human,
        &[
        "  act      1. shipments-service (named by https://gateway.example.internal) through rule billing-from-shipments for billing-service\n",
        "           2. web-app (named by https://idp.example.com) through rule shipments for shipments-service\n",
        "chain      2 exchange(s) recorded (rule billing-from-shipments allows at most 2); a gateway token, exchanged from token edge-7 of https://idp.example.com\n",
        ],
    );
    // The billing token is not taken again; the edge token is not a caller of billing.
    let t2 = j["minted"]["token"].as_str().unwrap().to_owned();
    let r = explain_trust(&[
        "--path",
        "/billing/1",
        "--now",
        "2026-05-01T09:01:40Z",
        "--token",
        &t2,
        "--json",
    ]);
    assert_eq!(
        (r.code, r.json()["reason"].clone()),
        (1, json!("audience_mismatch"))
    );
    let r = explain_trust(&[
        "--path",
        "/shipments/1",
        "--now",
        "2026-05-01T09:01:40Z",
        "--token",
        &t1,
        "--json",
    ]);
    assert_eq!(
        (r.code, r.json()["reason"].clone()),
        (1, json!("gateway_token_replay"))
    );
}

#[test]
fn explain_shows_step_up_ceilings_overdue_reviews_and_identity_headers() {
    let Some(py) = python() else { return };
    let pwd = idp_token(
        &py,
        json!({"scope": "payouts:write", "acr": "urn:example:pwd", "auth_time": T0 - 1000}),
    );
    let args = [
        "--method",
        "POST",
        "--path",
        "/payouts/1",
        "--now",
        "2026-05-01T09:00:10Z",
        "--token",
        &pwd,
    ];
    let r = explain_trust(&args);
    assert_eq!(r.code, 1);
    assert_has(
        &r.stdout,
        &[
        "reason     acr_not_satisfied: a different authentication level is required\n",
        "status     401\n",
        "challenge  WWW-Authenticate: Bearer realm=\"token-exchange\", error=\"insufficient_user_authentication\", error_description=\"a different authentication level is required\", acr_values=\"urn:example:mfa urn:example:hwk\", max_age=\"300\"\n",
        "step-up    re-authenticate the user (RFC 9470) with acr one of urn:example:mfa, urn:example:hwk and at most 300 s before the request, then retry with the new token; this token: acr urn:example:pwd, authenticated 1010 s before the request\n",
        ],
    );
    let mut a = args.to_vec();
    a.push("--json");
    let j = explain_trust(&a).json();
    assert_eq!(
        j["step_up"],
        json!({"acr_values": ["urn:example:mfa", "urn:example:hwk"], "max_age": 300})
    );
    // A partner's token: the ceiling removes shipments:write; after review_by it is flagged.
    let partner = pyjwt_trust_token(
        &py,
        PARTNER_KEY,
        json!({"iss": "https://login.partner.example", "aud": "https://api.example.com/partner",
               "azp": "partner-portal", "scope": "shipments:read shipments:write",
               "iat": 1_783_000_000u64, "exp": 1_783_000_600u64}),
    );
    let r = explain_trust(&[
        "--path",
        "/shipments/1",
        "--now",
        "1783000010",
        "--token",
        &partner,
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_has(
        &r.stdout,
        &[
        "ceiling    removed shipments:write: outside the max_scopes of https://login.partner.example\n",
        "review     trusted issuer https://login.partner.example is overdue for review (review_by 2026-06-30): its tokens are still accepted\n",
        ],
    );
    // An identity header: refused by this policy.
    let r = explain_trust(&[
        "--path",
        "/shipments/1",
        "--now",
        "1783000010",
        "--token",
        &partner,
        "--header",
        "X-Auth-Request-Email: a@example.com",
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains(
        "identity   headers from the client: x-auth-request-email: refused (strip_headers_action: refuse)\n"
    ), "{}", r.stdout);
}

#[test]
fn test_reports_failing_trust_expectations_and_runs_what_a_selected_case_presents() {
    let dir = scratch();
    let key = std::fs::read_to_string(root().join(IDP_KEY)).unwrap();
    let cases = json!({
        "policy": root().join(TRUST),
        "now": "2026-05-01T09:00:00Z",
        "issuers": {"idp": {"key": serde_json::from_str::<Value>(&key).unwrap(), "iss": "https://idp.example.com", "replace_policy_keys": true}},
        "defaults": {"request": {"path": "/shipments/1"}, "token": {"issuer": "idp", "expires_in": 600,
            "claims": {"sub": "alice", "aud": "https://api.example.com", "azp": "web-app", "scope": "shipments:read reports:read"}}},
        "cases": [
            {"name": "edge", "expect": {"decision": "allow"}},
            {"name": "claims the shadow rule is enforced and forwards the minted token",
             "request": {"path": "/reports/1"},
             "expect": {"mode": "enforce", "forwarded": "minted", "strip_headers": ["x-forwarded-user"]}},
            {"name": "claims a shorter act chain", "request": {"path": "/billing/1"}, "token": {"minted_by": "edge"},
             "expect": {"minted": {"act": [{"sub": "shipments-service", "iss": "https://gateway.example.internal", "rule": "billing-from-shipments", "audience": "billing-service"}]}}},
            {"name": "a deny mints nothing", "request": {"path": "/nowhere"}, "expect": {"reason": "no_matching_rule"}},
            {"name": "presents what a deny minted", "token": {"minted_by": "a deny mints nothing"}, "expect": {"decision": "allow"}},
            {"name": "claims a wrong step-up challenge", "request": {"method": "POST", "path": "/payouts/1"},
             "token": {"claims": {"scope": "payouts:write", "acr": "urn:example:mfa"}},
             "expect": {"challenge": "Bearer realm=\"token-exchange\", error=\"insufficient_user_authentication\", error_description=\"more recent authentication is required\", max_age=\"300\""}},
        ]
    });
    let f = write(&dir, "trust-failing.cases.json", &cases.to_string());
    let r = run(&["test", &f]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_has(
        &r.stdout,
        &[
        "  PASS  edge\n",
        "  FAIL  claims the shadow rule is enforced and forwards the minted token\n",
        "          mode: expected \"enforce\", got \"shadow\"\n",
        "          forwarded: expected \"minted\", got \"unchanged\"\n",
        "          strip_headers: expected [\"x-forwarded-user\"], got []\n",
        "  FAIL  claims a shorter act chain\n",
        "          minted act (newest first): expected [{\"audience\":\"billing-service\",\"iss\":\"https://gateway.example.internal\",\"rule\":\"billing-from-shipments\",\"sub\":\"shipments-service\"}], got [{\"audience\":\"billing-service\",\"iss\":\"https://gateway.example.internal\",\"rule\":\"billing-from-shipments\",\"sub\":\"shipments-service\"},{\"audience\":\"shipments-service\",\"iss\":\"https://idp.example.com\",\"rule\":\"shipments\",\"sub\":\"web-app\"}]\n",
        "  FAIL  presents what a deny minted\n",
        "          token: case \"a deny mints nothing\" minted no token to present\n",
        "  FAIL  claims a wrong step-up challenge\n",
        "          challenge: expected \"Bearer realm=\\\"token-exchange\\\", error=\\\"insufficient_user_authentication\\\", error_description=\\\"more recent authentication is required\\\", max_age=\\\"300\\\"\", got \"Bearer realm=\\\"token-exchange\\\", error=\\\"insufficient_user_authentication\\\", error_description=\\\"more recent authentication is required\\\", acr_values=\\\"urn:example:mfa urn:example:hwk\\\", max_age=\\\"300\\\"\"\n",
        "6 case(s) in 1 file(s): 2 passed, 4 failed\n",
        ],
    );
    let j = run(&["test", &f, "--json"]).json();
    let case = &j["files"][0]["cases"][1];
    assert_eq!(
        (&case["mode"], &case["forwarded"]),
        (&json!("shadow"), &json!("unchanged"))
    );
    // --run selects the hop; the edge case it presents the token of runs too, unreported.
    let r = run(&[
        "test",
        "filter-config/tests/trust-boundaries.cases.json",
        "--run",
        "chain, hop 2",
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("1 case(s) in 1 file(s): 1 passed, 0 failed"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("hop 1"), "{}", r.stdout);
}

#[test]
fn test_refuses_bad_trust_case_files_with_their_json_path() {
    let dir = scratch();
    let key =
        serde_json::from_str::<Value>(&std::fs::read_to_string(root().join(IDP_KEY)).unwrap())
            .unwrap();
    let file = |issuers: Value, cases: Value| {
        json!({
            "policy": root().join(TRUST), "now": T0, "issuers": issuers,
            "defaults": {"request": {"path": "/shipments/1"}, "token": {"issuer": "idp", "expires_in": 60,
                "claims": {"sub": "a", "aud": "https://api.example.com", "azp": "web-app", "scope": "shipments:read"}}},
            "cases": cases,
        })
    };
    let idp =
        json!({"idp": {"key": key, "iss": "https://idp.example.com", "replace_policy_keys": true}});
    let edge = json!({"name": "edge", "expect": {"decision": "allow"}});
    for (issuers, cases, needle) in [
        (
            idp.clone(),
            json!([edge, {"name": "hop", "token": {"minted_by": "nope"}, "expect": {"decision": "allow"}}]),
            "cases[1].token.minted_by: no earlier case is named \"nope\"",
        ),
        (
            idp.clone(),
            json!([{"name": "hop", "token": {"minted_by": "edge"}, "expect": {"decision": "allow"}}, edge]),
            "cases[0].token.minted_by: no earlier case is named \"edge\"",
        ),
        (
            idp.clone(),
            json!([edge, edge, {"name": "hop", "token": {"minted_by": "edge"}, "expect": {"decision": "allow"}}]),
            "cases[2].token.minted_by: \"edge\" names several earlier cases",
        ),
        (
            idp.clone(),
            json!([edge, {"name": "hop", "token": {"minted_by": "edge", "claims": {}}, "expect": {"decision": "allow"}}]),
            "cases[1].token.claims: unknown field `claims`",
        ),
        (
            idp.clone(),
            json!([{"name": "x", "expect": {"mode": "audit"}}]),
            "cases[0].expect.mode: \"audit\" is not one of enforce, shadow",
        ),
        (
            idp.clone(),
            json!([{"name": "x", "expect": {"forwarded": "yes"}}]),
            "cases[0].expect.forwarded: \"yes\" is not one of minted, unchanged, nothing",
        ),
        (
            idp.clone(),
            json!([{"name": "x", "expect": {"audit": {"ceiling_removed_scope": null}}}]),
            "cases[0].expect.audit.ceiling_removed_scope: is not a member of the audit record",
        ),
        (
            idp.clone(),
            json!([{"name": "x", "expect": {"minted": {"act": ["web-app"]}}}]),
            "cases[0].expect.minted.act[0]: invalid type",
        ),
        (
            json!({"gw": {"key": key, "policy_signing_key": true}}),
            json!([edge]),
            "issuers.gw: give key or policy_signing_key, not both",
        ),
        (
            json!({"gw": {"iss": "x"}}),
            json!([edge]),
            "issuers.gw.key: required",
        ),
        (
            json!({"gw": {"policy_signing_key": true, "iss": "https://gateway.example.internal", "replace_policy_keys": true}}),
            json!([edge]),
            "issuers.gw.replace_policy_keys: not with policy_signing_key",
        ),
    ] {
        let f = write(&dir, "bad.cases.json", &file(issuers, cases).to_string());
        assert_input_error(&run(&["test", &f]), needle);
    }
}

const ENVOY_TRUST_LOG: &str = "cli/tests/fixtures/envoy-trust-audit.log";

#[test]
fn audit_summarises_the_trust_fields_of_a_real_envoy_log() {
    // Captured from tests/tests/envoy_e2e.rs::trust_boundaries_through_envoy (no tokens, no keys).
    let r = run(&["audit", ENVOY_TRUST_LOG, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(
        (&j["records"], &j["malformed_lines"]),
        (&json!(17), &json!([]))
    );
    assert_eq!(
        j["shadow"],
        json!({"records": 2, "by_rule": {"reports": {"allow": 1, "deny": 1,
               "reasons": {"exchanged": 1, "missing_token": 1}, "denied_callers": {"(none)": 1}}}})
    );
    assert_eq!(
        j["identity_headers"],
        json!({"x-forwarded-user": {"total": 1, "refused": 0, "stripped": 1, "denied": 0}})
    );
    assert_eq!(j["chain"]["by_depth"], json!({"1": 8, "2": 2, "3": 3}));
    assert_eq!(j["chain"]["hops"]["allow"], 3);
    assert_eq!(j["chain"]["hops"]["deny"], 3);
    let notices: Vec<&str> = j["lifecycle_notices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["message"].as_str().unwrap())
        .collect();
    assert_eq!(notices.len(), 2);
    // Logged by every Envoy thread at each of the two loads.
    assert_eq!(j["lifecycle_notices"][0]["count"], 6);
    assert!(notices[0].starts_with("trusted issuer \"https://partner.test\" is overdue for review"));
    assert!(notices[1].starts_with("trusted issuer \"https://retired.test\" expired after"));
    let hops: Vec<&Value> = j["minted"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["origin_token_id"].is_string())
        .collect();
    assert_eq!(hops.len(), 3);
    assert_eq!(j["minted"][0]["shadow"], true);
    // The revoked token, refused at the edge and through its hop, is the only anomaly at
    // the default thresholds: the gateway token replayed at the edge is not "many callers".
    assert_eq!(
        j["anomalies"],
        json!([{"kind": "revoked_token_use", "reason": "token_revoked", "revoked": "token revoke-4302",
                "count": 2, "callers": ["orders-service", "web-app"],
                "first_ms": j["anomalies"][0]["first_ms"], "last_ms": j["anomalies"][0]["last_ms"],
                "message": "token revoke-4302 presented 2 time(s) after its revocation (token_revoked; callers: orders-service, web-app, 2026-11-28T13:58:06Z)"}])
    );
    assert_eq!(
        run(&["audit", ENVOY_TRUST_LOG, "--fail-on-anomaly"]).code,
        1
    );
    // Every chain refusal is flagged from --repeat 1.
    let r = run(&["audit", ENVOY_TRUST_LOG, "--repeat", "1"]);
    assert_has(
        &r.stdout,
        &[
        "chain_cycle 1 times (callers: billing-service ×1; issuers: https://gateway.test ×1)",
        "chain_too_deep 1 times (callers: billing-service ×1; issuers: https://gateway.test ×1)",
        "gateway_token_replay 1 times",
        "shadow rules (what enforcing would have done; the requests went on unchanged)",
        "  reports                                  would allow 1     would deny 1     (exchanged ×1, missing_token ×1)",
        "  x-forwarded-user                         1 (refused 0, stripped 1, denied otherwise 0)",
        "  chain depth (records)     1: 8, 2: 2, 3: 3",
        "the filter's warnings about its issuer allow list",
        "[shadow: discarded]",
        "(a hop; the chain started from chain-4302)",
        ],
    );
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

// -------------------------------------------------------------------------- living keys

const DEMO: &str = "envoy-example/demo-policy.json";
const DEMO_ISS: &str = "https://idp.demo.local";
/// The demo issuer's public JWK: the file `envoy-example/jwks_server.py` serves as a set.
const DEMO_JWK: &str = "envoy-example/demo-keys/demo-issuer-es256.public.jwk.json";
const LIVING: &str = "filter-config/examples/living-keys.json";
const STAFF: &str = "https://login.example.com/realms/staff";

fn demo_jwks() -> String {
    format!("{DEMO_ISS}=@{DEMO_JWK}")
}

/// `explain` on the demo policy at NOW + 10 with `extra` arguments and `token`, as JSON.
fn explain_demo(token: &str, extra: &[&str]) -> Run {
    let mut a = vec![
        "explain",
        DEMO,
        "--path",
        "/orders/42",
        "--route",
        "orders",
        "--now",
        "2026-01-01T00:00:10Z",
        "--token",
        token,
    ];
    a.extend_from_slice(extra);
    run(&a)
}

#[test]
fn explain_decides_with_the_key_sets_the_filter_would_have_fetched() {
    let Some(py) = python() else { return };
    let token = demo_token(&py, &["--jti", "fetched-1"]);

    // Without --jwks: as before the filter's first fetch.
    let r = explain_demo(&token, &["--json"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let j = r.json();
    assert_eq!(
        (&j["reason"], &j["status"], &j["retry_after"]),
        (&json!("issuer_keys_unavailable"), &json!(503), &json!(10))
    );
    assert_eq!(
        j["fetched_keys"],
        json!({"issuer": DEMO_ISS, "missing": "unavailable", "refetch": true})
    );
    assert_eq!(
        j["issuer_keys"],
        json!([{"issuer": DEMO_ISS, "state": "never_fetched"}])
    );
    let human = explain_demo(&token, &[]);
    assert_has(
        &human.stdout,
        &[
            "reason     issuer_keys_unavailable: the issuer's signing keys are temporarily unavailable",
            "status     503",
            "retry      Retry-After: 10",
            "keys       https://idp.demo.local: never fetched, as before the filter's first fetch",
            "--jwks https://idp.demo.local=@jwks.json",
            "refetch    the filter first refetches the keys of https://idp.demo.local",
        ],
    );

    // --jwks with the demo's key file (one JWK, served by jwks_server.py as a set).
    let jwks = demo_jwks();
    let r = explain_demo(&token, &["--jwks", &jwks, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let j = r.json();
    assert_eq!(j["decision"], "allow");
    assert_eq!(j["audit"]["token_verified"], true);
    assert_eq!(
        j["fetched_keys"],
        json!({"issuer": DEMO_ISS, "missing": null, "refetch": false})
    );
    let state = &j["issuer_keys"][0];
    assert_eq!(
        (&state["state"], &state["usable_kids"], &state["fetched_at"]),
        (&json!("fresh"), &json!(["demo-issuer-1"]), &json!(NOW + 10))
    );
    assert_eq!(state["stale_at"], NOW + 10 + 86_400);
    let human = explain_demo(&token, &["--jwks", &jwks]);
    assert_has(
        &human.stdout,
        &[
            "decision   allow",
            "keys       https://idp.demo.local: fetched 2026-01-01T00:00:10Z from envoy-example/demo-keys/demo-issuer-es256.public.jwk.json (one JWK, served as a one-key set): usable demo-issuer-1; in use until 2026-01-02T00:00:10Z",
        ],
    );

    // --fetched-at: within jwks_max_stale_seconds (86400) the keys are used, beyond it not.
    let r = explain_demo(
        &token,
        &[
            "--jwks",
            &jwks,
            "--fetched-at",
            "2025-12-31T00:00:11Z",
            "--json",
        ],
    );
    assert_eq!(r.json()["decision"], "allow");
    let r = explain_demo(
        &token,
        &[
            "--jwks",
            &jwks,
            "--fetched-at",
            "2025-12-31T00:00:10Z",
            "--json",
        ],
    );
    assert_eq!(r.code, 1);
    let j = r.json();
    assert_eq!(j["reason"], "issuer_keys_unavailable");
    assert_eq!(j["issuer_keys"][0]["state"], "stale");
    let human = explain_demo(&token, &["--jwks", &jwks, "--fetched-at", "1767139210"]);
    assert!(
        human.stdout.contains("STALE since 2026-01-01T00:00:10Z"),
        "{}",
        human.stdout
    );

    // A set without the token's kid: unknown_key, after the refetch the filter makes.
    let dir = scratch();
    let other = dir.join("other.jwk.json").display().to_string();
    assert_eq!(
        run(&[
            "keygen",
            "--alg",
            "ES256",
            "--kid",
            "rotated-in",
            "--private-key-file",
            &other
        ])
        .code,
        0
    );
    let public = run(&["keygen", "--alg", "ES256", "--kid", "rotated-in", "--json"]).json();
    let set = json!({"keys": [public["jwks"]["keys"][0].clone()]});
    let inline = format!("{DEMO_ISS}={set}");
    let r = explain_demo(&token, &["--jwks", &inline, "--json"]);
    let j = r.json();
    assert_eq!(j["reason"], "unknown_key");
    assert_eq!(
        j["fetched_keys"],
        json!({"issuer": DEMO_ISS, "missing": "unknown_kid", "refetch": true})
    );
    assert_eq!(j["issuer_keys"][0]["origin"], "inline");

    // Unusable keys are skipped and reported as the filter logs them; the rest is used.
    let demo_key: Value = read_json(DEMO_JWK);
    let mut enc = demo_key.clone();
    enc["kid"] = json!("enc-1");
    enc["use"] = json!("enc");
    let set = json!({"keys": [enc, {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}, demo_key]});
    let p = write(&dir, "mixed.jwks.json", &set.to_string());
    let arg = format!("{DEMO_ISS}=@{p}");
    let r = explain_demo(&token, &["--jwks", &arg, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let j = r.json();
    assert_eq!(
        j["issuer_keys"][0]["skipped"],
        json!([
            "fetched keys[0]: key \"enc-1\" skipped: use \"enc\" is not for signatures",
            "fetched keys[1]: key \"hmac\" skipped: key type oct (a shared secret) is never used to verify tokens"
        ])
    );
    assert_eq!(j["issuer_keys"][0]["usable_kids"], json!(["demo-issuer-1"]));
    let human = explain_demo(&token, &["--jwks", &arg]);
    assert!(human
        .stdout
        .contains("; fetched keys[0]: key \"enc-1\" skipped: use \"enc\" is not for signatures"));
}

#[test]
fn explain_refuses_bad_fetched_key_sets_in_one_line() {
    let dir = scratch();
    let base = |extra: &[&str]| {
        let mut a = vec![
            "explain",
            DEMO,
            "--path",
            "/orders/1",
            "--now",
            "1767225600",
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    assert_input_error(
        &base(&["--jwks", "nothing"]),
        "--jwks \"nothing\": use ISSUER=JWKS",
    );
    let nobody = format!("https://nobody.example=@{DEMO_JWK}");
    assert_input_error(
        &base(&["--jwks", &nobody]),
        "--jwks for https://nobody.example: \"https://nobody.example\" is not a trusted issuer of the policy",
    );
    assert_input_error(
        &run(&[
            "explain",
            "filter-config/examples/minimal.json",
            "--path",
            "/orders/1",
            "--jwks",
            &format!("https://idp.example.com=@{DEMO_JWK}"),
        ]),
        "has its keys in the policy (jwks) and no jwks_uri or discovery: the filter never fetches them",
    );
    assert_input_error(
        &base(&["--jwks", &format!("{DEMO_ISS}={{")]),
        "--jwks for https://idp.demo.local: inline:",
    );
    assert_input_error(
        &base(&["--jwks", &format!("{DEMO_ISS}=@no/such.json")]),
        "cannot read --jwks for https://idp.demo.local no/such.json",
    );
    assert_input_error(
        &base(&["--jwks", &format!("{DEMO_ISS}={{\"keys\":[]}}")]),
        "the filter would refuse this key set for \"https://idp.demo.local\" (invalid:",
    );
    // A private key is never used from a fetched set: nothing usable is left.
    let private =
        format!("{DEMO_ISS}=@envoy-example/demo-keys/demo-issuer-es256.DEMO-ONLY.jwk.json");
    assert_input_error(&base(&["--jwks", &private]), "(no_usable_keys:");
    // Larger than jwks_max_bytes (65536 by default).
    let mut big = read_json(DEMO_JWK);
    big["x5c"] = json!(["A".repeat(70_000)]);
    let p = write(&dir, "big.json", &json!({"keys": [big]}).to_string());
    assert_input_error(
        &base(&["--jwks", &format!("{DEMO_ISS}=@{p}")]),
        "(too_large:",
    );
    let jwks = demo_jwks();
    assert_input_error(&base(&["--jwks", &jwks, "--jwks", &jwks]), "given twice");
    assert_input_error(
        &base(&["--fetched-at", "1767225600"]),
        "--fetched-at is only used with --jwks",
    );
    assert_input_error(
        &base(&["--jwks", &jwks, "--fetched-at", "1767225601"]),
        "--fetched-at: after --now",
    );
    assert_input_error(
        &base(&["--jwks", &jwks, "--fetched-at", "soon"]),
        "--fetched-at: bad time \"soon\"",
    );
    // Test keys inline beside a key source would be a policy the filter never runs.
    assert_input_error(
        &base(&["--issuer-key", &format!("{DEMO_ISS}=@{DEMO_JWK}")]),
        "trusted issuer \"https://idp.demo.local\" fetches its keys (jwks_uri or discovery): supply the key set the filter would fetch instead (explain --jwks",
    );
}

#[test]
fn explain_serves_the_published_key_set_that_pyjwt_verifies_minted_tokens_with() {
    let Some(py) = python() else { return };
    let at = |path: &str, method: &str, now: &str| {
        run(&[
            "explain", LIVING, "--path", path, "--method", method, "--now", now, "--json",
        ])
    };
    let r = at("/.well-known/jwks.json", "GET", "2026-01-01T00:00:00Z");
    assert_eq!(r.code, 0, "{}", r.stdout);
    let j = r.json();
    assert_eq!(
        (&j["decision"], &j["reason"], &j["status"], &j["forwarded"]),
        (
            &json!("serve"),
            &json!("jwks"),
            &json!(200),
            &json!("nothing")
        )
    );
    assert_eq!(
        j["served"]["kids"],
        json!([
            "example-gw-2026-01",
            "example-gw-2025-07",
            "example-gw-next"
        ])
    );
    assert_eq!(
        j["served"]["headers"],
        json!({"content-type": "application/json", "cache-control": "public, max-age=300"})
    );
    for key in j["served"]["body"]["keys"].as_array().unwrap() {
        assert!(key.get("d").is_none(), "never a private member: {key}");
    }
    assert_eq!(j["audit"]["decision"], "serve");
    assert!(j["audit"].get("caller").is_none());
    // The retired key is gone once the last token it signed has expired (ttl 300 s).
    let human = run(&[
        "explain",
        LIVING,
        "--path",
        "/.well-known/jwks.json",
        "--now",
        "2026-01-01T00:05:00Z",
    ]);
    assert_eq!(human.code, 0);
    assert_has(
        &human.stdout,
        &[
            "decision   serve",
            "status     200",
            "rule       (none: a published document is served before any rule)",
            "header     cache-control: public, max-age=300",
            "published  example-gw-2026-01 (active: signs), example-gw-next (published: announced before it signs); not served: example-gw-2025-07 (retired at 2026-01-01T00:00:00Z, no longer published since 2026-01-01T00:05:00Z)",
            "forwarded  nothing: the filter serves the document itself",
        ],
    );
    let r = at("/.well-known/jwks.json", "POST", "2026-01-01T00:00:00Z");
    assert_eq!(r.code, 1, "a 405 is a refusal");
    assert_eq!(r.json()["status"], 405);
    let r = at(
        "/.well-known/openid-configuration",
        "GET",
        "2026-01-01T00:00:00Z",
    );
    assert_eq!(r.code, 0);
    assert_eq!(
        r.json()["served"]["body"],
        json!({"issuer": "https://gateway.example.internal", "jwks_uri": "https://gateway.example.internal/.well-known/jwks.json"})
    );

    // A staff token (PyJWT) verified with the fetched set; PyJWT verifies the minted token
    // with the served key of its kid.
    let dir = scratch();

    let claims = json!({"iss": STAFF, "sub": "alice", "aud": "https://api.example.com", "azp": "web-app",
                        "scope": "orders:read", "exp": NOW + 600, "iat": NOW});
    let token = python_out(&py, PYJWT_SIGN, &[IDP_KEY, &claims.to_string()]);
    let private: Value = read_json(IDP_KEY);
    let public: Value =
        json!({"kty": "RSA", "kid": private["kid"], "n": private["n"], "e": private["e"]});
    let set = write(
        &dir,
        "staff.jwks.json",
        &json!({"keys": [public]}).to_string(),
    );
    let arg = format!("{STAFF}=@{set}");
    let r = run(&[
        "explain",
        LIVING,
        "--path",
        "/orders/7",
        "--now",
        "2026-01-01T00:00:10Z",
        "--jwks",
        &arg,
        "--fetched-at",
        "2026-01-01T00:00:00Z",
        "--token",
        &token,
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let j = r.json();
    assert_eq!(j["minted"]["header"]["kid"], "example-gw-2026-01");
    // The other fetching issuer was never fetched, and says so.
    assert_eq!(
        j["issuer_keys"][1],
        json!({"issuer": "https://partner.example.net", "state": "never_fetched"})
    );
    let served = at("/.well-known/jwks.json", "GET", "2026-01-01T00:00:10Z").json();
    let mut key = served["served"]["body"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "example-gw-2026-01")
        .unwrap()
        .clone();
    key["alg"] = json!("EdDSA");
    let verified: Value = serde_json::from_str(&python_out(
        &py,
        PYJWT_VERIFY,
        &[j["minted"]["token"].as_str().unwrap(), &key.to_string()],
    ))
    .unwrap();
    assert_eq!(verified["claims"], j["minted"]["claims"]);
}

#[test]
fn test_reports_failing_fetched_and_served_expectations() {
    let dir = scratch();
    let cases = json!({
        "policy": root().join(LIVING),
        "now": NOW,
        "issuers": {"staff": {"key": format!("@{}", root().join(IDP_KEY).display()), "iss": STAFF}},
        "fetched": {STAFF: {"keys_of": ["staff"]}},
        "defaults": {"request": {"path": "/orders/1"},
                     "token": {"issuer": "staff", "claims": {"sub": "a", "aud": "https://api.example.com", "scope": "orders:read"}, "expires_in": 60}},
        "cases": [
            {"name": "served kids", "request": {"path": "/.well-known/jwks.json"}, "token": null,
             "expect": {"served": {"kids": ["example-gw-2026-01"], "headers": {"cache-control": "no-store"}}}},
            {"name": "never fetched", "fetched": {STAFF: "never"},
             "expect": {"refetch": false, "retry_after": 5}},
            {"name": "a document where none is served", "expect": {"served": {"kids": []}}},
        ]
    });
    let p = write(&dir, "living.cases.json", &cases.to_string());
    let r = run(&["test", &p]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_has(
        &r.stdout,
        &[
            "  FAIL  served kids",
            "          served kids: expected [\"example-gw-2026-01\"], got [\"example-gw-2025-07\",\"example-gw-2026-01\",\"example-gw-next\"]",
            "          served header cache-control: expected \"no-store\", got \"public, max-age=300\"",
            "  FAIL  never fetched",
            "          retry_after: expected 5, got 30",
            "          refetch: expected false, got true",
            "  FAIL  a document where none is served",
            "          served: expected \"a document\", got nothing",
            "3 case(s) in 1 file(s): 0 passed, 3 failed",
        ],
    );
}

#[test]
fn test_refuses_bad_fetched_members_with_their_json_path() {
    let dir = scratch();
    let good = || {
        json!({
            "policy": root().join(LIVING),
            "now": NOW,
            "issuers": {"staff": {"key": format!("@{}", root().join(IDP_KEY).display()), "iss": STAFF},
                        "gw": {"policy_signing_key": true}},
            "fetched": {STAFF: {"keys_of": ["staff"]}},
            "cases": [{"name": "c", "request": {"path": "/orders/1"},
                       "token": {"issuer": "staff", "claims": {"sub": "a", "aud": "https://api.example.com", "scope": "orders:read"}, "expires_in": 60},
                       "expect": {"decision": "allow"}}]
        })
    };
    let p = write(&dir, "good.cases.json", &good().to_string());
    let r = run(&["test", &p]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let bad = |name: &str, edit: &dyn Fn(&mut Value), needle: &str| {
        let mut doc = good();
        edit(&mut doc);
        let p = write(&dir, name, &doc.to_string());
        assert_input_error(&run(&["test", &p]), needle);
    };
    bad(
        "a.json",
        &|d| d["fetched"]["https://nobody.example"] = json!("never"),
        "fetched.https://nobody.example: \"https://nobody.example\" is not a trusted issuer",
    );
    bad(
        "b.json",
        &|d| d["fetched"][STAFF] = json!("sometimes"),
        "fetched.https://login.example.com/realms/staff: must be \"never\" or an object",
    );
    bad(
        "c.json",
        &|d| d["fetched"][STAFF] = json!({"keys_of": ["staff"], "jwks": {"keys": []}}),
        "give jwks or keys_of, not both",
    );
    bad(
        "d.json",
        &|d| d["fetched"][STAFF] = json!({"fetched_at": NOW}),
        "which keys were fetched?",
    );
    bad(
        "e.json",
        &|d| d["fetched"][STAFF] = json!({"keys_of": ["ghost"]}),
        "fetched.https://login.example.com/realms/staff.keys_of[0]: no test issuer \"ghost\"",
    );
    bad(
        "f.json",
        &|d| d["fetched"][STAFF] = json!({"keys_of": ["gw"]}),
        "test issuer \"gw\" signs with the policy's signing key: the filter never fetches those",
    );
    bad(
        "g.json",
        &|d| d["fetched"][STAFF] = json!({"jwks": "keys.json"}),
        ".jwks: must be a JWK Set object or \"@file\"",
    );
    bad(
        "h.json",
        &|d| d["fetched"][STAFF] = json!({"jwks": "@no/such.json"}),
        ".jwks: cannot read key set",
    );
    bad(
        "i.json",
        &|d| d["fetched"][STAFF] = json!({"jwks": {"keys": []}}),
        "fetched.https://login.example.com/realms/staff.jwks: inline: the filter would refuse this key set",
    );
    bad(
        "j.json",
        &|d| d["fetched"][STAFF] = json!({"keys_of": ["staff"], "fetched_when": NOW}),
        "fetched.https://login.example.com/realms/staff.fetched_when: unknown field `fetched_when`",
    );
    bad(
        "k.json",
        &|d| d["cases"][0]["fetched"] = json!({STAFF: {"keys_of": ["staff"], "fetched_at": NOW + 1}}),
        "cases[0].fetched.https://login.example.com/realms/staff.fetched_at: is after the case's now",
    );
    bad(
        "l.json",
        &|d| d["fetched"][STAFF] = json!({"keys_of": ["staff"], "fetched_at": "noon"}),
        "fetched.https://login.example.com/realms/staff.fetched_at: fetched_at: bad time \"noon\"",
    );
    bad(
        "m.json",
        &|d| d["cases"][0]["expect"]["served"] = json!({"kids": []}),
        "cases[0].expect.served: only a request to jwks_path or discovery_path is served",
    );
    bad(
        "n.json",
        &|d| {
            d["cases"][0]["expect"] = json!({"served": {}});
        },
        "cases[0].expect.served: expects nothing",
    );
    bad(
        "o.json",
        &|d| d["issuers"]["staff"]["replace_policy_keys"] = json!(true),
        "issuers.staff.iss: trusted issuer \"https://login.example.com/realms/staff\" fetches its keys (jwks_uri or discovery)",
    );
    bad(
        "p.json",
        &|d| d["cases"][0]["fetched"] = json!({"https://nobody.example": "never"}),
        "cases[0].fetched.https://nobody.example: \"https://nobody.example\" is not a trusted issuer",
    );
}

#[test]
fn check_reviews_key_sources_signing_key_states_publication_and_key_findings() {
    let dir = scratch();
    let r = run(&["check", LIVING, "--now", "2026-01-01T00:00:00Z", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let j = r.json();
    assert_eq!(
        j["trusted_issuers"][0]["key_source"],
        json!({"kind": "discovery", "url": "https://login.example.com/realms/staff/.well-known/openid-configuration",
               "upstream": "staff_idp", "refresh_seconds": 300, "max_stale_seconds": 86400, "timeout_ms": 2000,
               "max_bytes": 65536, "min_refetch_seconds": 30})
    );
    assert_eq!(
        j["trusted_issuers"][1]["key_source"],
        json!({"kind": "jwks_uri", "url": "https://keys.partner.example.net/.well-known/jwks.json",
               "upstream": "keys.partner.example.net:443", "refresh_seconds": 600, "max_stale_seconds": 43200,
               "timeout_ms": 1500, "max_bytes": 32768, "min_refetch_seconds": 60})
    );
    let keys = &j["signing_keys"];
    assert_eq!(
        (&keys[0]["state"], &keys[0]["published_now"]),
        (&json!("active"), &json!(true))
    );
    assert_eq!(
        (
            &keys[1]["state"],
            &keys[1]["retired_at"],
            &keys[1]["published_until"],
            &keys[1]["published_now"]
        ),
        (
            &json!("retired"),
            &json!(NOW),
            &json!(NOW + 300),
            &json!(true)
        )
    );
    assert_eq!(
        (&keys[2]["state"], &keys[2]["generated"]),
        (&json!("published"), &json!(true))
    );
    assert_eq!(
        j["published"],
        json!({"jwks_path": "/.well-known/jwks.json", "discovery_path": "/.well-known/openid-configuration",
               "max_age_seconds": 300, "kids": ["example-gw-2026-01", "example-gw-2025-07", "example-gw-next"],
               "openid_configuration": {"issuer": "https://gateway.example.internal", "jwks_uri": "https://gateway.example.internal/.well-known/jwks.json"}})
    );
    assert_eq!(j["key_findings"], json!([]));
    let human = run(&["check", LIVING, "--now", "2026-01-01T00:00:00Z"]);
    assert_eq!(human.code, 0);
    assert_has(
        &human.stdout,
        &[
            "signing keys     example-gw-2026-01 (EdDSA, active: signs), example-gw-2025-07 (EdDSA, retired at 2026-01-01T00:00:00Z, published until 2026-01-01T00:05:00Z), example-gw-next (ES256, published: announced before it signs, generated at start: lost on restart, one per gateway)",
            "published        GET /.well-known/jwks.json: the JWK Set of example-gw-2026-01, example-gw-2025-07, example-gw-next (cache-control: public, max-age=300); GET /.well-known/openid-configuration: issuer https://gateway.example.internal, jwks_uri https://gateway.example.internal/.well-known/jwks.json",
            "    keys        fetched only (none inline)",
            "    fetched     by OIDC discovery (https://login.example.com/realms/staff/.well-known/openid-configuration: its issuer must equal this one, its jwks_uri is fetched) through upstream staff_idp: refreshed every 300 s, used until 86400 s after the last good fetch (jwks_max_stale_seconds), timeout 2000 ms, at most 65536 bytes; an unknown kid refetches at most every 30 s",
            "    fetched     from https://keys.partner.example.net/.well-known/jwks.json through upstream keys.partner.example.net:443: refreshed every 600 s",
            "key findings (0)",
        ],
    );

    // Later: the retired key's publication has ended; its private key is kept for nothing.
    let r = run(&["check", LIVING, "--now", "2026-01-01T00:05:00Z", "--json"]);
    let j = r.json();
    assert_eq!(j["key_findings"][0]["kind"], "retired_key_unpublished");
    assert_eq!(j["key_findings"][0]["path"], "signing_keys[1]");
    assert_eq!(j["key_findings"][0]["subject"], "example-gw-2025-07");
    assert_eq!(
        j["published"]["kids"],
        json!(["example-gw-2026-01", "example-gw-next"])
    );
    assert_eq!(j["findings"], json!([]), "rule findings stay apart");
    assert_eq!(r.code, 0);
    assert_eq!(
        run(&["check", LIVING, "--now", "2026-01-01T00:05:00Z", "--strict"]).code,
        1
    );

    // Each finding, on a variant of the policy.
    let findings = |edit: &dyn Fn(&mut Value)| -> Value {
        let mut doc = read_json(LIVING);
        edit(&mut doc);
        let p = write(&dir, "variant.json", &doc.to_string());
        let r = run(&["check", &p, "--now", "2026-01-01T00:00:00Z", "--json"]);
        assert_eq!(r.code, 0, "{}", r.stdout);
        let human = run(&["check", &p, "--now", "2026-01-01T00:00:00Z"]);
        let j = r.json();
        for f in j["key_findings"].as_array().unwrap() {
            let line = format!(
                "  {}: {}",
                f["path"].as_str().unwrap(),
                f["message"].as_str().unwrap()
            );
            assert!(human.stdout.contains(&line), "{line}\n{}", human.stdout);
        }
        j["key_findings"].clone()
    };
    let kinds = |f: &Value| -> Vec<(String, String)> {
        f.as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["kind"].as_str().unwrap().to_owned(),
                    x["path"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let f = findings(&|d| d["signing_keys"][1]["retired_at"] = json!(NOW + 86_400 * 30));
    assert_eq!(
        kinds(&f),
        [(
            "retired_in_future".to_owned(),
            "signing_keys[1].retired_at".to_owned()
        )]
    );
    assert!(f[0]["message"]
        .as_str()
        .unwrap()
        .contains("stays published until 2026-01-31T00:05:00Z"));
    let f = findings(&|d| {
        let o = d.as_object_mut().unwrap();
        for k in ["jwks_path", "discovery_path", "jwks_max_age_seconds"] {
            o.remove(k);
        }
        d["signing_keys"] = json!([{"generate": "EdDSA", "kid": "gen-1"}]);
    });
    assert_eq!(
        kinds(&f),
        [
            (
                "generated_key_unpublished".to_owned(),
                "signing_keys[0]".to_owned()
            ),
            (
                "generated_active_key".to_owned(),
                "signing_keys[0]".to_owned()
            )
        ]
    );
    let f = findings(&|d| {
        d["trusted_issuers"][1]["jwks"] = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "pinned",
            "x": "3WQMyZQglLH1PO6RZnSmOChTivyC11YJTWKA217-L0Q"}]});
    });
    assert_eq!(
        kinds(&f),
        [(
            "inline_and_fetched".to_owned(),
            "trusted_issuers[1].jwks".to_owned()
        )]
    );
    let f = findings(&|d| {
        d["allow_hs256_signing"] = json!(true);
        d["signing_keys"] = json!([{"kty": "oct", "kid": "hs", "alg": "HS256",
            "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0czA"}]);
    });
    assert_eq!(
        kinds(&f),
        [("nothing_published".to_owned(), "jwks_path".to_owned())]
    );

    // What the loader refuses is an error, not a finding.
    let mut doc = read_json(LIVING);
    doc["trusted_issuers"][1]["jwks_max_stale_seconds"] = json!(300);
    let p = write(&dir, "refused.json", &doc.to_string());
    let r = run(&["check", &p, "--json"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        r.json()["errors"][0]["path"],
        "trusted_issuers[1].jwks_max_stale_seconds"
    );
    let mut doc = read_json(LIVING);
    let t = doc["trusted_issuers"][1].as_object_mut().unwrap();
    for k in [
        "jwks_uri",
        "jwks_upstream",
        "jwks_refresh_seconds",
        "jwks_max_stale_seconds",
        "jwks_timeout_ms",
        "jwks_max_bytes",
        "jwks_min_refetch_seconds",
    ] {
        t.remove(k);
    }
    let p = write(&dir, "keyless.json", &doc.to_string());
    let r = run(&["check", &p, "--json"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.json()["errors"][0]["path"], "trusted_issuers[1].jwks");
}

#[test]
fn audit_counts_served_documents_and_key_fetch_lines_apart_from_callers() {
    let envoy = |msg: &str| {
        format!("[2026-01-01 00:00:00.000][7][warning][wasm] [source/extensions/common/wasm/context.cc:1195] wasm log token_exchange token_exchange: token-exchange-filter: {msg}")
    };
    let record = |ts: u64, decision: &str, reason: &str, status: u16, extra: Value| {
        let mut r = json!({"event": "token_exchange", "ts_ms": ts, "decision": decision, "reason": reason,
                           "status": status, "method": "GET", "path": "/orders/1", "token_verified": false});
        if let (Some(r), Value::Object(e)) = (r.as_object_mut(), extra) {
            r.extend(e);
        }
        format!("[2026-01-01 00:00:00.000][7][info][wasm] [source/extensions/common/wasm/context.cc:1195] wasm log token_exchange token_exchange: {r}")
    };
    let mut lines = vec![
        envoy(r#"keys of issuer "https://idp.demo.local" not fetched yet"#),
        envoy(
            r#"issuer "https://idp.demo.local": key set version 1, usable kids ["demo-issuer-1"]"#,
        ),
        envoy(
            r#"issuer "https://idp.demo.local": fetched keys[1]: key "enc-1" skipped: use "enc" is not for signatures"#,
        ),
        envoy(r#"keys of issuer "https://idp.demo.local" fetched"#),
        envoy(
            r#"fetching keys of issuer "https://idp.demo.local" failed (http_503: HTTP 503); the last keys fetched stay in use until jwks_max_stale_seconds"#,
        ),
        envoy(
            r#"keys of issuer "https://idp.demo.local" unavailable (no_response: no response (connection failed)): its tokens are refused (issuer_keys_unavailable, 503) until a fetch succeeds"#,
        ),
    ];
    // An outage: 20 refusals of one caller within a second are the gateway's state.
    for i in 0..20 {
        lines.push(record(
            1_767_225_600_000 + i * 10,
            "deny",
            "issuer_keys_unavailable",
            503,
            json!({"iss": "https://idp.demo.local", "caller": "demo-web-app", "token_id": "t"}),
        ));
    }
    lines.push(envoy(
        r#"keys of issuer "https://idp.demo.local" recovered: fetched again"#,
    ));
    for (path, status) in [
        ("/.well-known/jwks.json", 200),
        ("/.well-known/jwks.json", 200),
        ("/.well-known/jwks.json", 405),
    ] {
        lines.push(record(
            1_767_225_700_000,
            "serve",
            "jwks",
            status,
            json!({"path": path}),
        ));
    }
    lines.push(record(
        1_767_225_700_000,
        "serve",
        "openid_configuration",
        200,
        json!({}),
    ));
    let text = lines.join("\n");
    let r = run_with(&["audit", "-", "--json", "--fail-on-anomaly"], Some(&text));
    assert_eq!(r.code, 0, "no anomaly: {}", r.stdout);
    let j = r.json();
    assert_eq!(j["records"], 24);
    assert_eq!(j["decisions"]["deny"], 20);
    assert_eq!(
        j["served"],
        json!({"jwks": {"200": 2, "405": 1}, "openid_configuration": {"200": 1}})
    );
    assert!(
        j["by_caller"].get("(none)").is_none(),
        "served documents have no caller: {}",
        j["by_caller"]
    );
    assert!(
        j["by_rule"].get("(none)").is_some(),
        "the refusals have no rule"
    );
    assert_eq!(j["by_reason"], json!({"issuer_keys_unavailable": 20}));
    let f = &j["key_fetches"]["issuers"]["https://idp.demo.local"];
    assert_eq!(
        f["changes"],
        json!({"pending": 1, "fetched": 1, "failing": 1, "unavailable": 1, "recovered": 1})
    );
    assert_eq!(f["last"], "recovered");
    assert_eq!(
        f["versions"],
        json!(["version 1, usable kids [\"demo-issuer-1\"]"])
    );
    assert_eq!(
        f["skipped_keys"],
        json!(["fetched keys[1]: key \"enc-1\" skipped: use \"enc\" is not for signatures"])
    );
    assert_eq!(f["refused_requests"], 20);
    let kinds: Vec<&str> = j["key_fetches"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "pending",
            "version",
            "skipped_key",
            "fetched",
            "failing",
            "unavailable",
            "recovered"
        ]
    );
    assert_eq!(j["key_fetches"]["events"][4]["line"], 5);
    let human = run_with(&["audit", "-"], Some(&text));
    assert_has(
        &human.stdout,
        &[
            "served     4 published document(s): jwks (200 ×2, 405 ×1), openid_configuration (200 ×1) (no token, no caller: not counted above)",
            "  https://idp.demo.local: failing ×1, fetched ×1, pending ×1, recovered ×1, unavailable ×1; last recovered; refused requests (issuer_keys_unavailable) 20",
            "    key set version 1, usable kids [\"demo-issuer-1\"]",
            "  line 6: keys of issuer \"https://idp.demo.local\" unavailable (no_response",
            "anomalies (0)",
        ],
    );
    // The same denials for the caller's own reason are a spike.
    let spiky = text.replace("issuer_keys_unavailable", "invalid_claim");
    let r = run_with(&["audit", "-", "--json"], Some(&spiky));
    assert_eq!(r.json()["anomalies"][0]["kind"], "deny_spike");
}

/// The log of the real Envoy living-keys run (`tests/tests/envoy_keys.rs`): issuer keys
/// fetched, rotated at the provider, the endpoint failing with 503 and recovering, `kid`s
/// sprayed, and the gateway's key set and discovery document served.
const ENVOY_KEYS_LOG: &str = "cli/tests/fixtures/envoy-keys-audit.log";

#[test]
fn audit_reads_serve_records_and_key_fetch_lines_of_a_real_envoy() {
    let text = std::fs::read_to_string(root().join(ENVOY_KEYS_LOG)).unwrap();
    let records: Vec<Value> = text
        .lines()
        .filter_map(|l| {
            l.split_once(": {\"event\":\"token_exchange\"")
                .map(|(_, r)| format!("{{\"event\":\"token_exchange\"{r}"))
        })
        .map(|r| serde_json::from_str(&r).unwrap())
        .collect();
    let served: Vec<&Value> = records
        .iter()
        .filter(|r| r["decision"] == "serve")
        .collect();
    assert!(!served.is_empty() && served.len() < records.len());
    let r = run(&["audit", ENVOY_KEYS_LOG, "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["records"], records.len());
    let count = |doc: &str| served.iter().filter(|r| r["reason"] == doc).count();
    assert_eq!(
        j["served"],
        json!({"jwks": {"200": count("jwks")}, "openid_configuration": {"200": count("openid_configuration")}})
    );
    // Served documents are no decisions by caller, rule, reason or issuer.
    let decided = records.len() - served.len();
    let total = |m: &Value| -> u64 {
        m.as_object()
            .unwrap()
            .values()
            .map(|c| {
                c["allow"].as_u64().unwrap()
                    + c["deny"].as_u64().unwrap()
                    + c["pass"].as_u64().unwrap()
            })
            .sum()
    };
    assert_eq!(total(&j["by_caller"]), decided as u64);
    assert_eq!(total(&j["by_rule"]), decided as u64);
    assert!(j["by_caller"].get("(none)").is_none(), "{}", j["by_caller"]);
    assert!(j["by_reason"].get("jwks").is_none());
    // The filter's key fetch lines, in order, by issuer.
    let events: Vec<(String, String)> = j["key_fetches"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["issuer"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let kinds: Vec<&str> = events.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "version",
            "fetched",
            "version",
            "failing",
            "version",
            "recovered"
        ]
    );
    assert!(events.iter().all(|(i, _)| i == "https://idp.test"));
    let idp = &j["key_fetches"]["issuers"]["https://idp.test"];
    assert_eq!(idp["last"], "recovered");
    assert_eq!(
        idp["versions"],
        json!([
            "version 1, usable kids [\"idp-a\"]",
            "version 2, usable kids [\"idp-a\", \"idp-b\"]",
            "version 3, usable kids [\"idp-b\", \"idp-c\"]"
        ])
    );
    // The kid spraying of the run is what a reviewer is shown.
    let kinds: Vec<(&str, &str)> = j["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap(),
                a["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(kinds, [("repeated_reason", "unknown_key")]);
    let human = run(&["audit", ENVOY_KEYS_LOG]);
    assert_has(
        &human.stdout,
        &[
            &format!(
                "served     {} published document(s): jwks (200 ×{})",
                served.len(),
                count("jwks")
            ),
            "  https://idp.test: failing ×1, fetched ×1, recovered ×1; last recovered",
            "fetching keys of issuer \"https://idp.test\" failed (HTTP 503)",
        ],
    );
}
