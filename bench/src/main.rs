//! Helpers for `scripts/bench.sh` (see `bench/README.md`):
//!
//! - `bench gen --out DIR [--cold N] [--warm N] [--valid-for S]`: the benchmark's policy
//!   (RS256, ES256 and EdDSA issuers, one rule, EdDSA minting), each issuer's public JWKS for
//!   Envoy's `jwt_authn`, and pre-minted tokens per issuer: a warm set (a few, repeated) and a
//!   cold set (all distinct). Tokens are checked natively with the filter's own decision.
//! - `bench gen-scale --out DIR [--rules N] [--issuers M] [--cold N] [--warm N]`: the
//!   policy-scale case: N rules and M trusted issuers, tokens that match only the last rule
//!   and come from the last issuer.
//! - `bench upstream --port-file FILE`: a minimal keep-alive HTTP/1.1 server on 127.0.0.1 that
//!   answers every request `200 ok`, a thread per connection.
//! - `bench micro [--quick]`: the native micro-benchmark (verify and mint per algorithm, the
//!   whole decision, the policy-scale case and policy load time) as a Markdown table.

mod gen;
mod micro;
mod upstream;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts allocations so that the micro-benchmark can report allocations per operation.
struct CountingAlloc;

/// Allocations (including reallocations) since the process started.
pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
#[allow(unsafe_code)] // A counting allocator cannot be written without it (bench only).
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Errors end the command with a message.
pub type Res<T> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]);
    let r = match args.first().map(String::as_str) {
        Some("gen") => out_dir(rest).and_then(|out| {
            gen::gen(
                &out,
                num(rest, "--cold", 20_000)?,
                num(rest, "--warm", 8)?,
                num(rest, "--valid-for", 3600)?,
            )
        }),
        Some("gen-scale") => out_dir(rest).and_then(|out| {
            gen::gen_scale(
                &out,
                num(rest, "--rules", 1000)?,
                num(rest, "--issuers", 100)?,
                num(rest, "--cold", 20_000)?,
                num(rest, "--warm", 8)?,
                num(rest, "--valid-for", 3600)?,
            )
        }),
        Some("upstream") => opt(rest, "--port-file")
            .ok_or_else(|| "missing --port-file".to_owned())
            .and_then(|f| upstream::serve(&PathBuf::from(f))),
        Some("micro") => micro::run(rest.iter().any(|a| a == "--quick")),
        _ => {
            Err("usage: bench gen|gen-scale|upstream|micro [options] (see bench/README.md)".into())
        }
    };
    if let Err(e) = r {
        eprintln!("bench: ERROR: {e}");
        std::process::exit(1);
    }
}

fn opt<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn out_dir(args: &[String]) -> Res<PathBuf> {
    let out = PathBuf::from(opt(args, "--out").ok_or("missing --out")?);
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

fn num<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Res<T> {
    match opt(args, name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| format!("{name}: not a number: {v}")),
    }
}
