//! Builds the filter's release wasm, so tests never run against a stale artefact: through
//! `scripts/build-wasm.sh`, the same build (cargo, then wasm-opt) the demo, soak and benchmark
//! use.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::types::{Error, ErrorKind};

/// Environment variable naming a prebuilt wasm to use instead of building.
pub const WASM_PATH_ENV: &str = "TOKEN_EXCHANGE_FILTER_WASM";

/// The workspace root: the parent of the running test's crate (cargo sets
/// `CARGO_MANIFEST_DIR` for test processes; every workspace crate sits directly under the
/// root), else the parent of this crate as compiled. The runtime value comes first so that a
/// harness library compiled in another checkout (a copied `target/`) still builds and loads
/// this checkout's filter.
pub fn workspace_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Where `scripts/build-wasm.sh` puts the optimised release filter wasm.
pub fn filter_wasm_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        workspace_root().join(target)
    };
    target
        .join("wasm32-wasip1")
        .join("release")
        .join("token_exchange_filter.opt.wasm")
}

/// Runs `scripts/build-wasm.sh` in the workspace root (a no-op when up to date) once per
/// process, and returns the wasm bytes.
/// If `TOKEN_EXCHANGE_FILTER_WASM` is set, reads that file instead.
pub fn filter_wasm() -> Result<Vec<u8>, Error> {
    let path = build_filter()?;
    std::fs::read(&path)
        .map_err(|e| Error::new(ErrorKind::Build, format!("reading {}: {e}", path.display())))
}

/// Builds the release filter wasm once per process (as [`filter_wasm`]) and returns its path,
/// for tests that hand the file to a real proxy.
pub fn build_filter() -> Result<PathBuf, Error> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(build)
        .clone()
        .map_err(|m| Error::new(ErrorKind::Build, m))
}

fn build() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(WASM_PATH_ENV) {
        return Ok(PathBuf::from(path));
    }
    let output = Command::new("bash")
        .current_dir(workspace_root())
        .arg("scripts/build-wasm.sh")
        .output()
        .map_err(|e| format!("running scripts/build-wasm.sh: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the filter wasm failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let path = filter_wasm_path();
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} not found after the build", path.display()))
    }
}
