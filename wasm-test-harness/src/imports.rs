//! Which host functions each profile provides, and a check of a module's imports against it.
//!
//! ```no_run
//! use wasm_test_harness::{build, imports, Profile};
//! let report = imports::check(&build::filter_wasm().unwrap(), Profile::Kong).unwrap();
//! assert!(report.missing.is_empty(), "{report:?}");
//! ```

use wasmparser::{Parser, Payload, TypeRef};

use crate::types::{Error, ErrorKind, Profile};

/// Module name of the Proxy-Wasm host functions.
pub const ENV: &str = "env";
/// Module name of the WASI preview1 functions.
pub const WASI: &str = "wasi_snapshot_preview1";

/// The Proxy-Wasm ABI 0.2.1 host functions (imported from `env`).
pub const ABI_FUNCTIONS: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_add_header_map_value",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_set_effective_context",
    "proxy_call_foreign_function",
    "proxy_done",
    "proxy_define_metric",
    "proxy_get_metric",
    "proxy_record_metric",
    "proxy_increment_metric",
];

/// The WASI preview1 functions every profile (and this harness) provides.
pub const WASI_FUNCTIONS: &[&str] = &[
    "fd_write",
    "fd_read",
    "fd_close",
    "fd_seek",
    "fd_fdstat_get",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "clock_time_get",
    "clock_res_get",
    "random_get",
    "proc_exit",
    "sched_yield",
    "poll_oneoff",
];

/// How a profile supports one host function.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// Implemented.
    Provided,
    /// Linked, but calling it traps (Kong: "not yet implemented"), which kills the worker.
    Traps,
    /// Linked, but returns status 12 (`Unimplemented`); the Rust SDK panics on that status.
    ReturnsUnimplemented,
    /// Not provided at all: a module importing it fails to load.
    Missing,
}

const KONG_TRAPS: &[&str] = &[
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_close_stream",
    "proxy_done",
    "proxy_resolve_shared_queue",
    "proxy_get_log_level",
];

const APISIX_MISSING: &[&str] = &[
    // Not in wasm-nginx-module's host API table.
    "proxy_get_log_level",
    // Declared there as (i32, i64) -> i32 while the SDK imports (i32, i32) -> i32: link error.
    "proxy_get_metric",
];

const APISIX_UNIMPLEMENTED: &[&str] = &[
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_set_header_map_pairs",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_done",
    "proxy_call_foreign_function",
    "proxy_close_stream",
    // Metrics: every one answers PROXY_RESULT_UNIMPLEMENTED in ngx_http_wasm_api.c.
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
];

/// How `profile` supports the import `module`.`name`.
pub fn support(profile: Profile, module: &str, name: &str) -> Support {
    if module == WASI {
        return if WASI_FUNCTIONS.contains(&name) {
            Support::Provided
        } else {
            Support::Missing
        };
    }
    if module != ENV || !ABI_FUNCTIONS.contains(&name) {
        return Support::Missing;
    }
    match profile {
        Profile::Envoy => Support::Provided,
        Profile::Kong if KONG_TRAPS.contains(&name) => Support::Traps,
        Profile::Kong => Support::Provided,
        Profile::Apisix if APISIX_MISSING.contains(&name) => Support::Missing,
        Profile::Apisix if APISIX_UNIMPLEMENTED.contains(&name) => Support::ReturnsUnimplemented,
        Profile::Apisix => Support::Provided,
    }
}

/// The result of [`check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Every function import, as `module.name`.
    pub imports: Vec<String>,
    /// Imports the host does not provide: the module will not load there.
    pub missing: Vec<String>,
    /// Imports the host links but does not implement (trap or status 12): fine only if the
    /// filter never calls them on that host.
    pub unimplemented: Vec<(String, Support)>,
}

impl ImportReport {
    /// True if `name` (e.g. `"proxy_get_log_level"`) is imported.
    pub fn imports(&self, name: &str) -> bool {
        self.imports
            .iter()
            .any(|i| i.rsplit('.').next() == Some(name))
    }
}

/// Reads the module's function imports and sorts them by how `profile` supports them.
pub fn check(wasm: &[u8], profile: Profile) -> Result<ImportReport, Error> {
    let mut report = ImportReport::default();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload =
            payload.map_err(|e| Error::new(ErrorKind::Load, format!("parsing the module: {e}")))?;
        if let Payload::ImportSection(reader) = payload {
            for import in reader.into_imports() {
                let import = import
                    .map_err(|e| Error::new(ErrorKind::Load, format!("parsing imports: {e}")))?;
                if !matches!(import.ty, TypeRef::Func(_)) {
                    continue;
                }
                let full = format!("{}.{}", import.module, import.name);
                match support(profile, import.module, import.name) {
                    Support::Provided => {}
                    Support::Missing => report.missing.push(full.clone()),
                    s => report.unimplemented.push((full.clone(), s)),
                }
                report.imports.push(full);
            }
        }
    }
    Ok(report)
}
