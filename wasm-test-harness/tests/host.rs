//! Tests of the host itself, against a tiny WAT guest (tests/guest/probe.wat).
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers outside #[test] fns

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use wasm_test_harness::{
    imports, Action, ErrorKind, Host, HttpCallResponse, LogLevel, Profile, RequestSpec, Support,
};

const PROBE: &str = include_str!("guest/probe.wat");

fn probe() -> Vec<u8> {
    wat::parse_str(PROBE).unwrap()
}

fn messages(host: &Host) -> Vec<String> {
    host.logs().into_iter().map(|l| l.message).collect()
}

#[test]
fn load_runs_vm_start_and_configure_and_captures_logs_and_stdout() {
    let host = Host::envoy();
    let vm = host.load(&probe(), b"hello-config").unwrap();
    let logs = host.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].level, LogLevel::Info);
    assert_eq!(logs[0].vm, 0);
    assert_eq!(logs[0].context_id, 1);
    assert_eq!(logs[0].message, "hello-config");
    assert_eq!(host.stdout(), "hello\n");
    assert_eq!(vm.tick_period(), Some(Duration::from_secs(1)));
}

#[test]
fn rejected_configuration_fails_load_and_reconfigure() {
    let host = Host::envoy();
    let err = host.load(&probe(), b"").err().unwrap();
    assert_eq!(err.kind, ErrorKind::ConfigureRejected);
    let vm = host.load(&probe(), b"good").unwrap();
    let err = vm.reconfigure(b"xbad").unwrap_err();
    assert_eq!(err.kind, ErrorKind::ConfigureRejected);
    assert!(err.logs.iter().any(|l| l.message == "good"), "{err}");
    vm.reconfigure(b"better").unwrap();
    assert!(messages(&host).contains(&"better".to_string()));
}

#[test]
fn envoy_headers_are_lower_case_with_pseudo_headers_and_request_id() {
    let host = Host::envoy();
    let vm = host.load(&probe(), b"c").unwrap();
    let r = vm.request(&[
        (":method", "GET"),
        (":path", "/orders"),
        ("Host", "api.test"),
        ("X-Mode", "r"),
    ]);
    assert_eq!(r.action(), Action::Continue);
    let h = r.forwarded_headers().unwrap();
    assert_eq!(h[0], (":authority".into(), "api.test".into()));
    assert_eq!(r.forwarded_header(":path").as_deref(), Some("/orders"));
    assert_eq!(r.forwarded_header(":scheme").as_deref(), Some("http"));
    assert!(h.iter().any(|(k, v)| k == "x-mode" && v == "r"));
    assert!(!h.iter().any(|(k, _)| k == "host" || k == "Host"));
    assert_eq!(r.forwarded_header("x-added").as_deref(), Some("yes"));
    assert!(r.forwarded_header("x-request-id").is_some());
    assert!(r.local_response().is_none());
    assert_eq!(r.status(), Some(200));
    assert!(messages(&host).contains(&"on_log".to_string()));
}

#[test]
fn kong_headers_keep_casing_without_pseudo_headers() {
    let host = Host::kong();
    let vm = host.load(&probe(), b"c").unwrap();
    let r = vm.request(&[
        (":method", "GET"),
        (":path", "/orders"),
        ("Host", "api.test"),
        ("X-Mode", "r"),
    ]);
    let h = r.forwarded_headers().unwrap();
    assert!(h.iter().any(|(k, _)| k == "Host"));
    assert!(h.iter().any(|(k, _)| k == "X-Mode"));
    assert!(!h.iter().any(|(k, _)| k.starts_with(':')));
    assert!(r.forwarded_header("x-request-id").is_none());
    assert_eq!(r.forwarded_header("x-added").as_deref(), Some("yes"));
}

#[test]
fn local_response_stops_the_request() {
    let host = Host::envoy();
    let vm = host.load(&probe(), b"c").unwrap();
    let r = vm.request(&[(":path", "/"), ("x-mode", "d")]);
    assert_eq!(r.action(), Action::Pause);
    assert!(r.forwarded_headers().is_none());
    let lr = r.local_response().unwrap();
    assert_eq!(lr.status, 403);
    assert_eq!(lr.details, "denied");
    assert_eq!(lr.body_str(), "no");
    assert_eq!(lr.grpc_status, -1);
    assert!(!r.is_paused());
    assert!(messages(&host).contains(&"on_log".to_string()));
}

#[test]
fn http_call_is_scripted_and_resumes_the_request() {
    let host = Host::envoy();
    let vm = host.load(&probe(), b"c").unwrap();
    let r = vm.request(&[(":path", "/"), ("x-mode", "c")]);
    assert_eq!(r.action(), Action::Pause);
    assert!(r.is_paused());
    assert!(r.forwarded_headers().is_none());
    let calls = host.pending_http_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].upstream, "auth");
    assert_eq!(calls[0].header(":path"), Some("/check"));
    assert_eq!(calls[0].timeout, Duration::from_secs(5));
    assert_eq!(calls[0].context_id, r.context_id());

    host.answer_http_call(calls[0].token, HttpCallResponse::status(200).body("tok"))
        .unwrap();
    assert!(host.pending_http_calls().is_empty());
    assert!(!r.is_paused());
    assert_eq!(r.forwarded_header("x-auth").as_deref(), Some("tok"));

    // A failed (or timed out) call delivers no headers: the probe answers 503.
    let r2 = vm.request(&[(":path", "/"), ("x-mode", "c")]);
    let token = host.pending_http_calls()[0].token;
    host.time_out_http_call(token).unwrap();
    assert_eq!(r2.local_response().unwrap().status, 503);
    assert!(host
        .answer_http_call(token, HttpCallResponse::status(200))
        .is_err());
}

#[test]
fn trap_is_reported_with_the_guest_panic_message_and_poisons_the_vm() {
    let host = Host::envoy();
    let vm = host.load(&probe(), b"c").unwrap();
    let err = vm.try_request(&[("x-mode", "t")]).err().unwrap();
    assert_eq!(err.kind, ErrorKind::Trap);
    assert_eq!(err.panic_message(), Some("panicked at 'boom'"));
    assert!(err.to_string().contains("boom"), "{err}");
    let err = vm.try_request(&[("x-mode", "r")]).err().unwrap();
    assert_eq!(err.kind, ErrorKind::VmFailed);

    // The panicking convenience API shows the same message.
    let vm2 = host.load(&probe(), b"c").unwrap();
    let panic = std::panic::catch_unwind(AssertUnwindSafe(|| vm2.request(&[("x-mode", "t")])))
        .err()
        .unwrap();
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("panicked at 'boom'"), "{text}");
}

#[test]
fn unknown_upstream_is_refused() {
    let host = Host::envoy();
    host.set_known_upstreams(&["other"]);
    let vm = host.load(&probe(), b"c").unwrap();
    // The probe traps when proxy_http_call fails.
    let err = vm.try_request(&[("x-mode", "c")]).err().unwrap();
    assert_eq!(err.kind, ErrorKind::Trap);
}

#[test]
fn shared_data_cas_works_across_vms() {
    let host = Host::envoy();
    let vms = host.load_workers(&probe(), b"c", 2).unwrap();
    let (a, b) = (&vms[0], &vms[1]);
    host.clear_logs();
    a.request(&[("x-mode", "w")]); // create with cas 0: ok
    a.request(&[("x-mode", "g")]);
    b.request(&[("x-mode", "g")]);
    b.request(&[("x-mode", "w")]); // ok, bumps cas
    a.request(&[("x-mode", "w")]); // stale cas: CasMismatch (8)
    let statuses: Vec<(usize, String)> = host
        .logs()
        .into_iter()
        .filter(|l| l.message != "on_log")
        .map(|l| (l.vm, l.message))
        .collect();
    assert_eq!(
        statuses,
        vec![(0, "0".into()), (1, "0".into()), (0, "8".into())]
    );
    assert_eq!(host.shared_data("counter").unwrap().0, b"1");
}

#[test]
fn both_clocks_follow_the_test_clock() {
    let host = Host::envoy();
    let vm = host.load(&probe(), b"c").unwrap();
    host.set_unix_time(1_800_000_000);
    vm.request(&[("x-mode", "k")]);
    let ns = 1_800_000_000u64 * 1_000_000_000;
    assert_eq!(host.shared_data("now").unwrap().0, ns.to_le_bytes());
    assert_eq!(host.shared_data("wasi_now").unwrap().0, ns.to_le_bytes());
    host.advance(Duration::from_millis(1500));
    vm.request(&[("x-mode", "k")]);
    let later = ns + 1_500_000_000;
    assert_eq!(host.shared_data("now").unwrap().0, later.to_le_bytes());
    assert_eq!(host.shared_data("wasi_now").unwrap().0, later.to_le_bytes());
}

#[test]
fn tick_reaches_every_vm_that_asked() {
    let host = Host::envoy();
    host.load_workers(&probe(), b"c", 2).unwrap();
    host.clear_logs();
    host.tick().unwrap();
    let ticks: Vec<usize> = host
        .logs()
        .into_iter()
        .filter(|l| l.message == "tick")
        .map(|l| l.vm)
        .collect();
    assert_eq!(ticks, vec![0, 1]);

    // APISIX has no tick: set_tick_period returns Unimplemented, nothing ticks.
    let apisix = Host::apisix();
    let vm = apisix.load(&probe(), b"c").unwrap();
    assert_eq!(vm.tick_period(), None);
    apisix.tick().unwrap();
    assert!(!messages(&apisix).contains(&"tick".to_string()));
}

#[test]
fn integer_properties_follow_the_profile() {
    for (make, expected) in [
        (Host::envoy as fn() -> Host, 51284i64.to_le_bytes().to_vec()),
        (Host::kong, b"51284".to_vec()),
    ] {
        let host = make();
        let vm = host.load(&probe(), b"c").unwrap();
        vm.request(&[("x-mode", "p")]);
        assert_eq!(host.shared_data("prop").unwrap().0, expected);
        // Request properties override the defaults (a fresh host: the probe writes with
        // CAS 0, which Kong refuses on an existing key).
        let host = make();
        let vm = host.load(&probe(), b"c").unwrap();
        vm.send(RequestSpec::new(&[("x-mode", "p")]).property("source.port", "7"));
        assert_eq!(host.shared_data("prop").unwrap().0, b"7");
    }
}

#[test]
fn kong_request_properties_fail_in_on_configure() {
    let kong = Host::kong();
    kong.load(&probe(), b"p").unwrap();
    // The probe logs the status as one character '0' + status: ':' is 10, InternalFailure.
    assert_eq!(messages(&kong), vec![":".to_string()]);
    let envoy = Host::envoy();
    envoy.load(&probe(), b"p").unwrap();
    assert_eq!(messages(&envoy), vec!["1".to_string()]); // NotFound outside a request
}

#[test]
fn log_level_filters_capture() {
    let host = Host::envoy();
    host.set_log_level(LogLevel::Warn);
    host.load(&probe(), b"quiet").unwrap();
    assert!(host.logs().is_empty());
}

#[test]
fn import_check_sorts_imports_by_profile() {
    let wasm = probe();
    let envoy = imports::check(&wasm, Profile::Envoy).unwrap();
    assert!(
        envoy.missing.is_empty() && envoy.unimplemented.is_empty(),
        "{envoy:?}"
    );
    assert!(envoy.imports("proxy_http_call"));
    let apisix = imports::check(&wasm, Profile::Apisix).unwrap();
    assert!(apisix.missing.is_empty(), "{apisix:?}");
    assert!(apisix.unimplemented.contains(&(
        "env.proxy_get_current_time_nanoseconds".to_string(),
        Support::ReturnsUnimplemented
    )));

    let log_level = wat::parse_str(
        r#"(module (import "env" "proxy_get_log_level" (func (param i32) (result i32)))
                   (memory (export "memory") 1)
                   (func (export "proxy_abi_version_0_2_1")))"#,
    )
    .unwrap();
    let kong = imports::check(&log_level, Profile::Kong).unwrap();
    assert_eq!(
        kong.unimplemented,
        vec![("env.proxy_get_log_level".to_string(), Support::Traps)]
    );
    let apisix = imports::check(&log_level, Profile::Apisix).unwrap();
    assert_eq!(apisix.missing, vec!["env.proxy_get_log_level".to_string()]);
    // And the APISIX host really refuses to load it.
    let err = Host::apisix().load(&log_level, b"c").err().unwrap();
    assert_eq!(err.kind, ErrorKind::Load);
}

/// A guest that defines counter "c" and gauge "g" in `proxy_on_configure`, then applies the
/// operation named by the first byte of its configuration and accepts the configuration only
/// if the host answered Ok: `r` record 5 on the counter, `g` increment the gauge by 1, `n`
/// increment the counter by -1, `i` increment the counter by 2.
const METRICS_GUEST: &str = r#"(module
  (import "env" "proxy_define_metric" (func $def (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $inc (param i32 i64) (result i32)))
  (import "env" "proxy_record_metric" (func $rec (param i32 i64) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buf (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "cg")
  (global $heap (mut i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_configure") (param i32 i32) (result i32)
    (local $op i32) (local $status i32)
    (drop (call $def (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 0)))
    (drop (call $def (i32.const 1) (i32.const 101) (i32.const 1) (i32.const 4)))
    (drop (call $buf (i32.const 7) (i32.const 0) (i32.const 16) (i32.const 8) (i32.const 12)))
    (local.set $op (i32.load8_u (i32.load (i32.const 8))))
    (local.set $status (i32.const 99))
    (if (i32.eq (local.get $op) (i32.const 114))
      (then (local.set $status (call $rec (i32.load (i32.const 0)) (i64.const 5)))))
    (if (i32.eq (local.get $op) (i32.const 103))
      (then (local.set $status (call $inc (i32.load (i32.const 4)) (i64.const 1)))))
    (if (i32.eq (local.get $op) (i32.const 110))
      (then (local.set $status (call $inc (i32.load (i32.const 0)) (i64.const -1)))))
    (if (i32.eq (local.get $op) (i32.const 105))
      (then (local.set $status (call $inc (i32.load (i32.const 0)) (i64.const 2)))))
    (i32.eqz (local.get $status)))
)"#;

#[test]
fn metrics_follow_each_hosts_observed_behaviour() {
    let guest = wat::parse_str(METRICS_GUEST).unwrap();
    let run = |profile: Profile, op: &str| {
        let host = Host::new(profile);
        let result = host
            .load(&guest, op.as_bytes())
            .map(|_| ())
            .map_err(|e| e.kind);
        (result, host.metric("c"), host.metric("g"))
    };
    // Counters by increment work everywhere but APISIX (unimplemented there).
    assert_eq!(run(Profile::Envoy, "i"), (Ok(()), Some(2), Some(0)));
    assert_eq!(run(Profile::Kong, "i"), (Ok(()), Some(2), Some(0)));
    assert_eq!(
        run(Profile::Apisix, "i"),
        (Err(ErrorKind::ConfigureRejected), None, None)
    );
    // record_metric on a counter: Envoy adds, Kong traps.
    assert_eq!(run(Profile::Envoy, "r"), (Ok(()), Some(5), Some(0)));
    assert_eq!(run(Profile::Kong, "r").0, Err(ErrorKind::Trap));
    // increment_metric on a gauge: Envoy accepts, Kong traps.
    assert_eq!(run(Profile::Envoy, "g"), (Ok(()), Some(0), Some(1)));
    assert_eq!(run(Profile::Kong, "g").0, Err(ErrorKind::Trap));
    // A negative counter increment: Envoy refuses it, Kong wraps the counter.
    assert_eq!(
        run(Profile::Envoy, "n").0,
        Err(ErrorKind::ConfigureRejected)
    );
    assert_eq!(run(Profile::Kong, "n"), (Ok(()), Some(u64::MAX), Some(0)));
}

#[test]
fn every_host_function_can_be_failed_and_typos_are_refused() {
    let host = Host::envoy();
    for name in imports::ABI_FUNCTIONS
        .iter()
        .chain(imports::WASI_FUNCTIONS.iter())
        .filter(|n| **n != "proc_exit")
    {
        host.inject_fault(name, 10);
    }
    host.clear_faults();
    let typo = std::panic::catch_unwind(AssertUnwindSafe(|| {
        host.inject_fault("proxy_replace_header_map_values", 10)
    }));
    assert!(typo.is_err(), "an unknown function name was accepted");

    // A fault on a function no fault reached before the host_fn! registration (proxy_log).
    let vm = host.load(&probe(), b"c").unwrap();
    host.inject_fault("proxy_log", 2);
    let r = vm.request(&[(":method", "GET"), (":path", "/")]);
    host.clear_faults();
    assert_eq!(r.status(), Some(200));
    assert!(
        !host.logs().iter().any(|l| l.message == "on_log"),
        "proxy_log ran despite the fault"
    );
}
