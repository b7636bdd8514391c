//! The host-cost probe: a Proxy-Wasm (ABI 0.2.1) module that lets every request through and,
//! in `proxy_on_request_headers`, makes exactly the host calls its plugin configuration lists
//! (comma-separated), each once per request, the way the filter makes them on a cache hit:
//!
//! - `noop`: none (the least any Wasm filter costs: the stream callbacks alone)
//! - `headers`: `proxy_get_header_map_pairs` of the request headers (one call, as the filter)
//! - `time`: `proxy_get_current_time_nanoseconds`
//! - `log`: `proxy_log` at info of a 600-byte line (an audit line's size)
//! - `counters`: `proxy_increment_metric` on three counters (a hit's outcome, rule, cache)
//! - `replace`: `proxy_replace_header_map_value` of `authorization` with a 300-byte token
//! - `calibrate`: none of these per request, but on each request each of the calls above
//!   200 times in a row, timed with the host clock, and one warn line with the mean µs per
//!   call (a figure that does not depend on the load generator)
//!
//! Bench-only (scripts/bench.sh builds it); never shipped, so it trusts its configuration.
#![allow(clippy::missing_safety_doc)]

use std::cell::Cell;

extern "C" {
    fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(ret: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(t: u32, s: usize, m: usize, d: *mut *mut u8, z: *mut usize) -> u32;
    fn proxy_get_header_map_pairs(t: u32, d: *mut *mut u8, z: *mut usize) -> u32;
    fn proxy_replace_header_map_value(
        t: u32,
        k: *const u8,
        ks: usize,
        v: *const u8,
        vs: usize,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
}

const HEADERS: u32 = 1;
const TIME: u32 = 2;
const LOG: u32 = 4;
const COUNTERS: u32 = 8;
const REPLACE: u32 = 16;
const CALIBRATE: u32 = 32;
/// Calls per timed batch in `calibrate`.
const BATCH: u32 = 200;

thread_local! {
    static STEPS: Cell<u32> = const { Cell::new(0) };
    static COUNTER_IDS: Cell<[u32; 3]> = const { Cell::new([0; 3]) };
}

static LINE: [u8; 600] = [b'a'; 600];
static TOKEN: [u8; 300] = [b't'; 300];

#[no_mangle]
pub extern "C" fn _initialize() {}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut v: Vec<u8> = Vec::with_capacity(size);
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

/// Frees what the host handed over (allocated by `proxy_on_memory_allocate`).
unsafe fn free(p: *mut u8, size: usize) {
    if !p.is_null() {
        drop(Vec::from_raw_parts(p, 0, size));
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(_: u32, _: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_: u32, _: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_: u32, size: usize) -> u32 {
    let (mut p, mut n) = (std::ptr::null_mut(), 0usize);
    let config = unsafe {
        if proxy_get_buffer_bytes(7, 0, size, &mut p, &mut n) != 0 || p.is_null() {
            Vec::new()
        } else {
            Vec::from_raw_parts(p, n, n)
        }
    };
    let mut steps = 0;
    for step in String::from_utf8_lossy(&config).split(',') {
        steps |= match step.trim() {
            "headers" => HEADERS,
            "time" => TIME,
            "log" => LOG,
            "counters" => COUNTERS,
            "replace" => REPLACE,
            "calibrate" => CALIBRATE,
            _ => 0,
        };
    }
    STEPS.with(|s| s.set(steps));
    if steps & (COUNTERS | CALIBRATE) != 0 {
        let mut ids = [0u32; 3];
        for (i, name) in ["probe.a", "probe.b", "probe.c"].iter().enumerate() {
            unsafe { proxy_define_metric(0, name.as_ptr(), name.len(), &mut ids[i]) };
        }
        COUNTER_IDS.with(|c| c.set(ids));
    }
    1
}

fn clock() -> u64 {
    let mut t = 0u64;
    unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    t
}

/// Each step alone, `BATCH` times, timed; one warn line with the mean µs per call.
fn calibrate() {
    let mut line = String::from("host-probe calibrate (us per call):");
    for (name, step) in [
        ("empty", 0),
        ("headers", HEADERS),
        ("time", TIME),
        ("replace", REPLACE),
        ("log", LOG),
        ("counters/3", COUNTERS),
    ] {
        let start = clock();
        for _ in 0..BATCH {
            unsafe { run(step) };
        }
        let us = (clock() - start) as f64 / 1000.0 / f64::from(BATCH);
        line.push_str(&format!(" {name} {us:.3}"));
    }
    unsafe { proxy_log(3, line.as_ptr(), line.len()) };
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_: u32, _: usize, _: u32) -> u32 {
    let steps = STEPS.with(|s| s.get());
    if steps & CALIBRATE != 0 {
        calibrate();
    } else {
        unsafe { run(steps) };
    }
    0
}

unsafe fn run(steps: u32) {
    {
        if steps & HEADERS != 0 {
            let (mut p, mut n) = (std::ptr::null_mut(), 0usize);
            if proxy_get_header_map_pairs(0, &mut p, &mut n) == 0 {
                free(p, n);
            }
        }
        if steps & TIME != 0 {
            let mut t = 0u64;
            proxy_get_current_time_nanoseconds(&mut t);
        }
        if steps & REPLACE != 0 {
            let k = b"authorization";
            proxy_replace_header_map_value(0, k.as_ptr(), k.len(), TOKEN.as_ptr(), TOKEN.len());
        }
        if steps & LOG != 0 {
            proxy_log(2, LINE.as_ptr(), LINE.len());
        }
        if steps & COUNTERS != 0 {
            for id in COUNTER_IDS.with(|c| c.get()) {
                proxy_increment_metric(id, 1);
            }
        }
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(_: u32) {}

#[cfg(feature = "all-exports")]
mod all_exports {
    #[no_mangle]
    pub extern "C" fn proxy_on_done(_: u32) -> u32 {
        1
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_log(_: u32) {}
    #[no_mangle]
    pub extern "C" fn proxy_on_tick(_: u32) {}
    #[no_mangle]
    pub extern "C" fn proxy_on_http_call_response(_: u32, _: u32, _: usize, _: usize, _: usize) {}
    #[no_mangle]
    pub extern "C" fn proxy_on_request_body(_: u32, _: usize, _: u32) -> u32 {
        0
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_request_trailers(_: u32, _: usize) -> u32 {
        0
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_response_headers(_: u32, _: usize, _: u32) -> u32 {
        0
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_response_body(_: u32, _: usize, _: u32) -> u32 {
        0
    }
    #[no_mangle]
    pub extern "C" fn proxy_on_response_trailers(_: u32, _: usize) -> u32 {
        0
    }
}
