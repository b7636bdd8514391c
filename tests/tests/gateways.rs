//! The configurations shipped for each gateway: Kong (kong.conf, kong.yml, the plugin form,
//! token_exchange_filter.meta.json generated from the policy schema and checked with a
//! Draft 4 validator), APISIX (config.yaml, route.json) and Istio (the WasmPlugin and the OCI
//! image scripts/istio_oci.py writes). Every policy they carry is loaded by the filter's
//! parser. (Envoy's production.yaml runs in the real Envoy: envoy_e2e.rs.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test code

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use token_exchange_filter::core::Policy;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn python(args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .current_dir(repo())
        .args(args)
        .output()
        .expect("python3 runs the repository's scripts")
}

/// The parser's verdict: every error, with its path.
fn parse(doc: &Value) -> Result<Policy, String> {
    Policy::from_json(doc.to_string().as_bytes()).map_err(|e| e.to_string())
}

/// A policy every gateway can run: no rule binds to a route name, which only Envoy has.
fn assert_portable_policy(doc: &Value, what: &str) {
    parse(doc).unwrap_or_else(|e| panic!("{what}: the filter refuses its policy: {e}"));
    for rule in doc["rules"].as_array().unwrap() {
        assert!(
            rule["match"].get("route").is_none(),
            "{what}: rule {} matches on a route name, which this host does not expose",
            rule["name"]
        );
    }
}

fn kong_schema() -> jsonschema::Validator {
    let meta: Value =
        serde_json::from_str(&read("kong-example/token_exchange_filter.meta.json")).unwrap();
    jsonschema::draft4::new(&meta["config_schema"]).unwrap()
}

fn draft4_errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Every JSON policy in the repository: the examples and the demo's.
fn shipped_policies() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for dir in ["filter-config/examples", "envoy-example"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json")
                && !path.to_string_lossy().contains("demo-keys")
            {
                let doc: Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                out.push((path.display().to_string(), doc));
            }
        }
    }
    assert!(out.len() >= 4, "{out:?}");
    out
}

// --- Kong ------------------------------------------------------------------------------------

#[test]
fn kong_meta_json_is_generated_from_the_policy_schema() {
    let out = python(&["scripts/kong_meta.py", "--stdout"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        read("kong-example/token_exchange_filter.meta.json"),
        "kong-example/token_exchange_filter.meta.json is stale: run python3 scripts/kong_meta.py"
    );
    let meta: Value =
        serde_json::from_str(&read("kong-example/token_exchange_filter.meta.json")).unwrap();
    assert_eq!(
        meta.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["config_schema"]
    );
    let schema = &meta["config_schema"];
    // Kong refuses a config_schema that declares another draft than 4.
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-04/schema#");
    assert!(jsonschema::draft4::meta::is_valid(schema));
    // Nothing of 2020-12 that Draft 4 would silently ignore is left.
    let text = schema.to_string();
    for newer in [
        "\"$defs\"",
        "\"const\"",
        "\"propertyNames\"",
        "\"$id\"",
        "\"if\"",
    ] {
        assert!(!text.contains(newer), "{newer} left in the Draft 4 schema");
    }
}

#[test]
fn kong_meta_schema_and_the_parser_agree_on_every_shipped_policy() {
    let validator = kong_schema();
    for (path, doc) in shipped_policies() {
        assert_eq!(
            draft4_errors(&validator, &doc),
            Vec::<String>::new(),
            "{path}"
        );
        parse(&doc).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

#[test]
fn kong_meta_schema_refuses_what_the_parser_refuses() {
    let validator = kong_schema();
    let base: Value = serde_json::from_str(&read("filter-config/examples/minimal.json")).unwrap();
    type Edit = Box<dyn Fn(&mut Value)>;
    let broken: Vec<(&str, Edit)> = vec![
        (
            "unknown top-level field",
            Box::new(|d| d["issuers"] = json!([])),
        ),
        (
            "no issuer",
            Box::new(|d| {
                d.as_object_mut()
                    .unwrap()
                    .remove("issuer")
                    .map(|_| ())
                    .unwrap()
            }),
        ),
        (
            "ttl 0",
            Box::new(|d| d["rules"][0]["mint"]["ttl_seconds"] = json!(0)),
        ),
        (
            "add_claims naming iss",
            Box::new(|d| d["rules"][0]["mint"]["add_claims"] = json!({"iss": "x"})),
        ),
        (
            "add_claims naming sub",
            Box::new(|d| d["rules"][0]["mint"]["add_claims"] = json!({"sub": "x"})),
        ),
        (
            "unknown match field",
            Box::new(|d| d["rules"][0]["match"]["pathprefix"] = json!("/x")),
        ),
        (
            "unmatched value",
            Box::new(|d| d["unmatched"] = json!("allow")),
        ),
        (
            "alg none",
            Box::new(|d| d["trusted_issuers"][0]["algorithms"] = json!(["none"])),
        ),
    ];
    for (what, edit) in broken {
        let mut doc = base.clone();
        edit(&mut doc);
        assert!(
            !draft4_errors(&validator, &doc).is_empty(),
            "{what}: accepted by the Draft 4 schema"
        );
        assert!(parse(&doc).is_err(), "{what}: accepted by the parser");
    }
    // A claim the gateway does not set may be added.
    let mut ok = base.clone();
    ok["rules"][0]["mint"]["add_claims"] = json!({"tier": "gold"});
    assert_eq!(draft4_errors(&validator, &ok), Vec::<String>::new());
    parse(&ok).unwrap();
}

/// The filter config of every route in a Kong declarative file, by attachment form.
fn kong_filter_configs(doc: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for service in doc["services"].as_array().unwrap() {
        for route in service["routes"].as_array().unwrap() {
            for chain in route["filter_chains"].as_array().into_iter().flatten() {
                for filter in chain["filters"].as_array().unwrap() {
                    assert_eq!(filter["name"], "token_exchange_filter");
                    out.push(filter["config"].clone());
                }
            }
            for plugin in route["plugins"].as_array().into_iter().flatten() {
                assert_eq!(plugin["name"], "token_exchange_filter");
                out.push(plugin["config"].clone());
            }
        }
    }
    out
}

#[test]
fn kong_declarative_configs_carry_a_valid_policy_in_both_forms() {
    let validator = kong_schema();
    let chain = yaml("kong-example/kong.yml");
    let plugin = yaml("kong-example/kong-plugin.yml");
    for (path, doc) in [("kong.yml", &chain), ("kong-plugin.yml", &plugin)] {
        assert_eq!(doc["_format_version"], "3.0", "{path}");
        let configs = kong_filter_configs(doc);
        assert_eq!(configs.len(), 1, "{path}");
        // Kong validates the config with meta.json's schema; the filter with its parser.
        assert_eq!(
            draft4_errors(&validator, &configs[0]),
            Vec::<String>::new(),
            "{path}"
        );
        assert_portable_policy(&configs[0], path);
    }
    assert!(chain["services"][0]["routes"][0]
        .get("filter_chains")
        .is_some());
    assert!(plugin["services"][0]["routes"][0].get("plugins").is_some());
    assert_eq!(kong_filter_configs(&chain), kong_filter_configs(&plugin));
}

#[test]
fn kong_conf_turns_wasm_on_and_names_the_filter() {
    let conf = read("kong-example/kong.conf");
    let settings: Vec<(&str, &str)> = conf
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let get = |key: &str| settings.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    assert_eq!(get("wasm"), Some("on"));
    assert!(get("wasm_filters_path").is_some_and(|p| p.starts_with('/')));
    assert_eq!(get("wasm_filters"), Some("token_exchange_filter"));
    // The metadata file must sit beside the .wasm under the filter's name.
    assert!(repo()
        .join("kong-example/token_exchange_filter.meta.json")
        .is_file());
}

// --- APISIX ----------------------------------------------------------------------------------

#[test]
fn apisix_plugin_and_route_carry_a_valid_policy_as_a_string() {
    let config = yaml("apisix-example/config.yaml");
    let plugin = &config["wasm"]["plugins"][0];
    let name = plugin["name"].as_str().unwrap();
    assert!(plugin["priority"].as_i64().is_some());
    assert!(plugin["file"]
        .as_str()
        .unwrap()
        .ends_with("/token_exchange_filter.wasm"));
    assert!(matches!(
        plugin["http_request_phase"].as_str(),
        Some("access" | "rewrite")
    ));
    let route: Value = serde_json::from_str(&read("apisix-example/route.json")).unwrap();
    let conf = route["plugins"][name]["conf"].as_str().unwrap_or_else(|| {
        panic!("route.json: plugins.{name}.conf must be the policy as a string")
    });
    let policy: Value = serde_json::from_str(conf).unwrap();
    assert_portable_policy(&policy, "apisix-example/route.json");
}

// --- Istio -----------------------------------------------------------------------------------

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Reads a blob of the layout, checking that its content has the digest it is stored under.
fn blob(layout: &Path, descriptor: &Value) -> Vec<u8> {
    let digest = descriptor["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap();
    assert_eq!(
        sha256_hex(&bytes),
        hex,
        "blob content does not match {digest}"
    );
    assert_eq!(descriptor["size"], bytes.len(), "size of {digest}");
    bytes
}

/// What Istio's agent does with the image (pkg/wasm/imagefetcher.go, "compat" variant with
/// the OCI layer media type): the last layer, gunzipped, untarred, `plugin.wasm`. Returns
/// the module and the manifest digest (what Istio compares `sha256` with).
fn pull_like_istio(layout: &Path) -> (Vec<u8>, String) {
    let layout_file: Value =
        serde_json::from_slice(&std::fs::read(layout.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout_file["imageLayoutVersion"], "1.0.0");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    let descriptor = &index["manifests"][0];
    assert_eq!(
        descriptor["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let manifest_bytes = blob(layout, descriptor);
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config: Value = serde_json::from_slice(&blob(layout, &manifest["config"])).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let layer = layers.last().unwrap();
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&blob(layout, layer)[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"],
        json!([format!("sha256:{}", sha256_hex(&tar_bytes))]),
        "diff_ids name the uncompressed layer"
    );
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut module = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry
            .path()
            .unwrap()
            .file_name()
            .is_some_and(|n| n == "plugin.wasm")
        {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            module = Some(bytes);
        }
    }
    let module = module.expect("plugin.wasm in the layer");
    (module, sha256_hex(&manifest_bytes))
}

#[test]
fn istio_image_and_wasmplugin_match_the_built_module() {
    let wasm_path = wasm_test_harness::build::build_filter().unwrap();
    let wasm = std::fs::read(&wasm_path).unwrap();
    let tmp =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("istio-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let image = "registry.example.com/gateway/token-exchange-filter:1.2.3";
    let mut digests = Vec::new();
    for run in ["a", "b"] {
        let out_dir = tmp.join(run);
        let out = python(&[
            "scripts/istio_oci.py",
            "--wasm",
            wasm_path.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--image",
            image,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (module, manifest_digest) = pull_like_istio(&out_dir.join("oci"));
        assert!(module == wasm, "plugin.wasm is not the built module");
        let plugin: Value = serde_yaml::from_str(
            &std::fs::read_to_string(out_dir.join("wasmplugin.yaml")).unwrap(),
        )
        .unwrap();
        assert_eq!(plugin["apiVersion"], "extensions.istio.io/v1alpha1");
        assert_eq!(plugin["kind"], "WasmPlugin");
        let spec = &plugin["spec"];
        assert_eq!(spec["url"], format!("oci://{image}"));
        assert_eq!(
            spec["sha256"],
            manifest_digest.as_str(),
            "sha256 is the manifest digest"
        );
        assert_eq!(spec["phase"], "AUTHN");
        assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
        assert_eq!(spec["type"], "HTTP");
        assert!(spec["selector"]["matchLabels"]
            .as_object()
            .is_some_and(|m| !m.is_empty()));
        assert!(spec["match"][0]["ports"][0]["number"].as_u64().is_some());
        assert_portable_policy(&spec["pluginConfig"], "istio pluginConfig");
        digests.push(manifest_digest);
    }
    assert_eq!(digests[0], digests[1], "the image is not reproducible");
    // The committed template is what was rendered.
    let template = read("istio-example/wasmplugin.yaml");
    assert!(template.contains("url: oci://{{IMAGE}}"));
    assert!(template.contains("sha256: {{MANIFEST_SHA256}}"));
}
