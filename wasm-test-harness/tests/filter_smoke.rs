//! Smoke tests against the real filter wasm (built through `build::filter_wasm`).
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers outside #[test] fns

use wasm_test_harness::{build, imports, Host, Profile, Support};

/// A minimal valid policy (demo key material, not a secret).
const CONFIG: &str = r#"{
  "issuer": "https://gateway.test",
  "signing_keys": [{"kty":"OKP","crv":"Ed25519","kid":"gw-1","alg":"EdDSA",
    "x":"6-GT6RtF_l8YuzeeGs_7PgCSPFxDbFbjS5G1pGg0QTw",
    "d":"TgI_s5Sqf9UZtFfuPwt8XH4v6-I9PQquX7v9fg9YrcU"}],
  "trusted_issuers": [{"issuer":"https://idp.test",
    "jwks":{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","alg":"EdDSA",
      "x":"J1gKpxGOGbVNkVINwYFhLuMAd627uNCa-e94SI_pk8Q"}]},
    "algorithms":["EdDSA"],"audiences":["api"]}],
  "rules": [{"name":"r","match":{"path_prefix":"/"},
    "mint":{"audience":"svc","scopes":["a"],"ttl_seconds":60}}]
}"#;

fn load(host: &Host) -> wasm_test_harness::Vm {
    let wasm = build::filter_wasm().unwrap();
    host.load(&wasm, CONFIG.as_bytes())
        .unwrap_or_else(|e| panic!("the filter refused the smoke config: {e}"))
}

#[test]
fn request_without_authorization_is_denied_with_401() {
    for host in [Host::envoy(), Host::kong()] {
        let vm = load(&host);
        let r = vm.request(&[
            (":method", "GET"),
            (":path", "/orders"),
            (":authority", "api.test"),
        ]);
        assert!(r.forwarded_headers().is_none(), "{:?}", host.profile());
        let lr = r.local_response().unwrap();
        assert_eq!(lr.status, 401, "{:?}: {lr:?}", host.profile());
    }
}

#[test]
fn invalid_configuration_is_refused_and_the_old_one_stays() {
    let host = Host::envoy();
    let vm = load(&host);
    let err = vm.reconfigure(b"{\"issuer\": 1}").unwrap_err();
    assert_eq!(err.kind, wasm_test_harness::ErrorKind::ConfigureRejected);
    let r = vm.request(&[(":method", "GET"), (":path", "/orders")]);
    assert_eq!(r.local_response().map(|l| l.status), Some(401));
}

#[test]
fn several_vms_configure_independently() {
    let host = Host::envoy();
    let wasm = build::filter_wasm().unwrap();
    let vms = host.load_workers(&wasm, CONFIG.as_bytes(), 3).unwrap();
    for vm in &vms {
        let r = vm.request(&[(":method", "GET"), (":path", "/")]);
        assert_eq!(r.status(), Some(401));
    }
}

#[test]
fn filter_imports_only_what_every_profile_provides() {
    let wasm = build::filter_wasm().unwrap();
    for profile in [Profile::Envoy, Profile::Kong, Profile::Apisix] {
        let report = imports::check(&wasm, profile).unwrap();
        assert!(
            report.missing.is_empty(),
            "{profile:?} lacks {:?}",
            report.missing
        );
        // Functions a host links but does not implement are allowed only if the filter
        // never calls them there; list them so a change is noticed.
        for (name, how) in &report.unimplemented {
            assert!(
                matches!(how, Support::Traps | Support::ReturnsUnimplemented),
                "{name}"
            );
        }
    }
    let envoy = imports::check(&wasm, Profile::Envoy).unwrap();
    assert!(envoy.unimplemented.is_empty(), "{envoy:?}");
}
