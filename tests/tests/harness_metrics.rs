//! Metrics and gRPC denials of the built filter under each host profile: exact counter
//! values after a known sequence of requests, counters defined once at configure time,
//! hosts whose metrics calls fail (APISIX answers "unimplemented"; injected faults), and
//! gRPC requests denied with a gRPC status.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use std::collections::BTreeMap;

use serde_json::{json, Value};
use token_exchange_filter::core::DenyReason;
use token_exchange_tests::*;
use wasm_test_harness::{build, Host, MetricKind, Profile, Request, RequestSpec, Vm};

const INTERNAL_FAILURE: i32 = 10;

fn wasm() -> Vec<u8> {
    build::filter_wasm().expect("filter wasm builds")
}

fn idp() -> Issuer {
    Issuer::ed25519("https://idp.test", "k1", 7)
}

fn load(host: &Host, gw: &Gateway, rules: Value) -> Vm {
    host.set_unix_time(NOW);
    let doc = policy(gw, &[&idp()], rules);
    host.load(&wasm(), doc.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{:?} refused the policy: {e}", host.profile()))
}

fn get(vm: &Vm, path: &str, authorization: Option<&str>, content_type: Option<&str>) -> Request {
    let mut spec = RequestSpec::new(&[
        (":method", "GET"),
        (":path", path),
        (":authority", "api.example.com"),
    ]);
    if let Some(a) = authorization {
        spec = spec.header("Authorization", a);
    }
    if let Some(c) = content_type {
        spec = spec.header("Content-Type", c);
    }
    vm.send(spec)
}

/// Every `token_exchange.*` counter the host holds, by name.
fn counters(host: &Host) -> BTreeMap<String, u64> {
    host.metrics()
        .into_iter()
        .filter(|(name, _, _)| name.starts_with("token_exchange."))
        .map(|(name, kind, value)| {
            assert_eq!(kind, MetricKind::Counter, "{name} is not a counter");
            (name, value)
        })
        .collect()
}

/// The known sequence: one exchange, five denials (two of them gRPC), the same token again
/// (a cache hit), with their expected statuses. Returns the requests.
fn known_sequence(vm: &Vm) -> Vec<Request> {
    let idp = idp();
    let good = format!("Bearer {}", idp.sign(&idp.claims(NOW, "orders:read")));
    let lacking = format!("Bearer {}", idp.sign(&idp.claims(NOW, "profile")));
    let grpc = Some("application/grpc");
    let r = vec![
        get(vm, "/orders/1", Some(&good), None),
        get(vm, "/orders/1", None, None),
        get(vm, "/orders/1", Some(&lacking), None),
        get(vm, "/inventory", Some(&good), None),
        get(vm, "/orders/1", None, grpc),
        get(
            vm,
            "/orders/1",
            Some(&lacking),
            Some("application/grpc+proto"),
        ),
        get(vm, "/orders/2", Some(&good), None),
    ];
    assert!(r[0].is_forwarded(), "{:?}", r[0].local_response());
    let statuses: Vec<Option<u32>> = r.iter().map(Request::status).collect();
    assert_eq!(
        statuses,
        vec![
            Some(200),
            Some(401),
            Some(403),
            Some(403),
            Some(401),
            Some(403),
            Some(200)
        ]
    );
    r
}

/// The counts the known sequence must leave (every other counter is 0).
fn expected_after_known_sequence() -> BTreeMap<String, u64> {
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for r in DenyReason::ALL {
        want.insert(format!("token_exchange.deny.{}", r.code()), 0);
    }
    for (name, value) in [
        ("token_exchange.decision.allow", 2),
        ("token_exchange.decision.deny", 5),
        ("token_exchange.decision.pass", 0),
        ("token_exchange.decision.serve", 0),
        ("token_exchange.minted", 1),
        ("token_exchange.jwks.fetched", 0),
        ("token_exchange.jwks.fetch_failed", 0),
        ("token_exchange.cache.hit", 1),
        ("token_exchange.host_call_failed", 0),
        ("token_exchange.config.loaded", 1),
        ("token_exchange.config.rejected", 0),
        ("token_exchange.deny.missing_token", 2),
        ("token_exchange.deny.insufficient_scope", 2),
        ("token_exchange.deny.no_matching_rule", 1),
        ("token_exchange.rule.orders-read.allow", 2),
        ("token_exchange.rule.orders-read.deny", 4),
    ] {
        want.insert(name.to_owned(), value);
    }
    want
}

fn metrics_suite(host: Host) {
    let profile = host.profile();
    let vm = load(&host, &Gateway::new(), json!([orders_rule()]));
    // Defined at configure time, before any request, all at 0 but config.loaded.
    let before = counters(&host);
    assert_eq!(
        before.len(),
        expected_after_known_sequence().len(),
        "{profile:?}: {before:#?}"
    );
    assert!(
        before
            .iter()
            .all(|(k, v)| *v == u64::from(k == "token_exchange.config.loaded")),
        "{profile:?}: {before:#?}"
    );
    known_sequence(&vm);
    assert_eq!(
        counters(&host),
        expected_after_known_sequence(),
        "{profile:?}"
    );
}

#[test]
fn counters_under_envoy_are_exact_after_a_known_sequence() {
    metrics_suite(Host::envoy());
}

#[test]
fn counters_under_kong_are_exact_after_a_known_sequence() {
    // Kong traps on record_metric for a counter and on increment_metric for a gauge: the
    // filter uses neither, or this suite would end in a trap.
    metrics_suite(Host::kong());
}

#[test]
fn apisix_answers_metrics_unimplemented_and_decisions_are_unchanged() {
    let host = Host::apisix();
    let vm = load(&host, &Gateway::new(), json!([orders_rule()]));
    known_sequence(&vm);
    assert!(counters(&host).is_empty(), "{:?}", host.metrics());
}

#[test]
fn failing_metrics_calls_never_change_a_decision() {
    // Definitions failing at load: no counter exists, the policy still loads and decides.
    let host = Host::envoy();
    host.inject_fault("proxy_define_metric", INTERNAL_FAILURE);
    let vm = load(&host, &Gateway::new(), json!([orders_rule()]));
    host.clear_faults();
    known_sequence(&vm);
    assert!(counters(&host).is_empty(), "{:?}", host.metrics());

    // Increments failing: counters stay at 0, decisions unchanged, no trap.
    for profile in [Profile::Envoy, Profile::Kong] {
        let host = Host::new(profile);
        let vm = load(&host, &Gateway::new(), json!([orders_rule()]));
        host.inject_fault("proxy_increment_metric", INTERNAL_FAILURE);
        known_sequence(&vm);
        host.clear_faults();
        let after = counters(&host);
        assert_eq!(after["token_exchange.decision.allow"], 0, "{profile:?}");
        assert_eq!(after["token_exchange.deny.missing_token"], 0, "{profile:?}");
        // The VM is alive and counts again once the host does.
        known_sequence(&vm);
        assert_eq!(counters(&host)["token_exchange.decision.deny"], 5);
    }
}

#[test]
fn several_vms_share_counters_by_name() {
    // Envoy workers define the same names: the host keeps one counter per name.
    let host = Host::envoy();
    host.set_unix_time(NOW);
    let doc = policy(&Gateway::new(), &[&idp()], json!([orders_rule()]));
    let vms = host
        .load_workers(&wasm(), doc.to_string().as_bytes(), 2)
        .unwrap();
    for vm in &vms {
        known_sequence(vm);
    }
    let c = counters(&host);
    assert_eq!(c["token_exchange.config.loaded"], 2);
    assert_eq!(c["token_exchange.decision.allow"], 4);
    assert_eq!(c["token_exchange.minted"], 2, "one cache per VM");
    assert_eq!(c["token_exchange.cache.hit"], 2);
    assert_eq!(c["token_exchange.decision.deny"], 10);
    assert_eq!(c["token_exchange.rule.orders-read.deny"], 8);
}

#[test]
fn rule_counters_follow_the_policy_and_names_become_one_segment() {
    let host = Host::envoy();
    let gw = Gateway::new();
    let mut dotted = orders_rule();
    dotted["name"] = json!("orders.read v2");
    let vm = load(&host, &gw, json!([dotted]));
    let idp = idp();
    let good = format!("Bearer {}", idp.sign(&idp.claims(NOW, "orders:read")));
    assert!(get(&vm, "/orders", Some(&good), None).is_forwarded());
    assert_eq!(
        counters(&host).get("token_exchange.rule.orders_read_v2.allow"),
        Some(&1)
    );

    // An update defines the new policy's rules; a refused one counts as rejected.
    let mut second = orders_rule();
    second["name"] = json!("reports");
    second["match"] = json!({"path_prefix": "/reports"});
    let doc = policy(&gw, &[&idp], json!([orders_rule(), second]));
    vm.reconfigure(doc.to_string().as_bytes()).unwrap();
    assert!(vm.reconfigure(b"{}").is_err());
    assert_eq!(get(&vm, "/reports", None, None).status(), Some(401));
    let c = counters(&host);
    assert_eq!(c["token_exchange.rule.reports.deny"], 1);
    assert_eq!(c["token_exchange.rule.orders-read.allow"], 0);
    assert_eq!(c["token_exchange.config.loaded"], 2);
    assert_eq!(c["token_exchange.config.rejected"], 1);

    // Two rules whose names map to one segment: warned about at load.
    let mut a = orders_rule();
    a["name"] = json!("a.b");
    let mut b = orders_rule();
    b["name"] = json!("a_b");
    b["match"] = json!({"path_prefix": "/b"});
    host.clear_logs();
    vm.reconfigure(policy(&gw, &[&idp], json!([a, b])).to_string().as_bytes())
        .unwrap();
    assert!(
        host.logs()
            .iter()
            .any(|l| l.message.contains("rule \"a_b\" shares its metric name")),
        "{:?}",
        host.logs()
    );
}

#[test]
fn host_call_failures_are_counted() {
    let host = Host::envoy();
    let vm = load(&host, &Gateway::new(), json!([orders_rule()]));
    let idp = idp();
    let good = format!("Bearer {}", idp.sign(&idp.claims(NOW, "orders:read")));
    host.inject_fault("proxy_replace_header_map_value", INTERNAL_FAILURE);
    assert_eq!(get(&vm, "/orders", Some(&good), None).status(), Some(500));
    host.clear_faults();
    host.inject_fault("proxy_get_header_map_pairs", INTERNAL_FAILURE);
    assert_eq!(get(&vm, "/orders", Some(&good), None).status(), Some(500));
    host.clear_faults();
    let c = counters(&host);
    assert_eq!(c["token_exchange.host_call_failed"], 2);
    // The token minted before the header could be replaced is counted as minted, and the
    // decision as a 500 deny.
    assert_eq!(c["token_exchange.minted"], 1);
    assert_eq!(c["token_exchange.decision.allow"], 0);
    assert_eq!(c["token_exchange.deny.internal_error"], 2);
}

#[test]
fn grpc_requests_are_denied_with_a_grpc_status_under_every_profile() {
    for host in [Host::envoy(), Host::kong(), Host::apisix()] {
        let profile = host.profile();
        let vm = load(&host, &Gateway::new(), json!([orders_rule()]));
        let idp = idp();
        let lacking = format!("Bearer {}", idp.sign(&idp.claims(NOW, "profile")));
        for (auth, status, grpc_status, message) in [
            (None, 401, 16, "a bearer token is required"),
            (
                Some("Bearer x.y.z"),
                401,
                16,
                "invalid_token: malformed token",
            ),
            (
                Some(lacking.as_str()),
                403,
                7,
                "insufficient_scope: token lacks a required scope",
            ),
        ] {
            let r = get(&vm, "/orders", auth, Some("application/grpc"));
            assert!(!r.is_forwarded());
            let lr = r.local_response().unwrap();
            assert_eq!(lr.status, status, "{profile:?}");
            assert_eq!(lr.grpc_status, grpc_status, "{profile:?}: host argument");
            assert_eq!(
                lr.header("grpc-status"),
                Some(grpc_status.to_string().as_str())
            );
            assert_eq!(lr.header("grpc-message"), Some(message), "{profile:?}");
            assert_eq!(lr.header("content-type"), Some("application/grpc"));
            assert!(lr.body.is_empty(), "{profile:?}: a gRPC denial has no body");
            assert!(lr
                .header("www-authenticate")
                .unwrap()
                .starts_with("Bearer realm="));
        }
        // Malformed requests map to INVALID_ARGUMENT; anything else stays HTTP/JSON.
        let r = get(&vm, "/orders/../x", None, Some("application/grpc"));
        assert_eq!(r.local_response().unwrap().grpc_status, 3);
        for ct in [None, Some("application/json"), Some("application/grpc-web")] {
            let lr = get(&vm, "/orders", None, ct).local_response().unwrap();
            assert_eq!(lr.grpc_status, -1, "{profile:?} {ct:?}");
            assert_eq!(lr.header("content-type"), Some("application/json"));
            assert!(lr.header("grpc-status").is_none());
            let body: Value = serde_json::from_slice(&lr.body).unwrap();
            assert!(body["error"].is_string());
        }
    }
}
