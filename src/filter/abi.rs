//! The few Proxy-Wasm ABI 0.2.1 host functions the filter calls, wrapped so that no host
//! answer can panic the VM.
//!
//! The SDK's `hostcalls` wrappers `panic!` on statuses they do not expect and decode header
//! maps with `String::from_utf8(..).unwrap()`; they also declare the host's status as a Rust
//! enum, which is undefined behaviour when a host answers a value the enum lacks (12,
//! Unimplemented, from hosts that implement fewer functions). Here every status is a plain
//! `u32`, every length is checked, and every failure is a value the caller turns into a deny.
#![allow(unsafe_code)]

use std::ptr::null_mut;

/// `proxy_log` levels.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// Header maps used by the filter.
#[derive(Debug, Clone, Copy)]
pub enum Map {
    RequestHeaders = 0,
    HttpCallResponseHeaders = 6,
}

/// Buffers used by the filter.
#[derive(Debug, Clone, Copy)]
pub enum Buffer {
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
/// `proxy_set_shared_data` with a CAS value that is no longer current.
pub const CAS_MISMATCH: u32 = 8;
/// The host does not implement the function (APISIX: shared data, ticks, the clock).
pub const UNIMPLEMENTED: u32 = 12;

/// A host status other than Ok (the raw ABI value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostStatus(pub u32);

extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_metric_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
}

/// Takes ownership of a host-returned buffer. The host obtained it from the guest's
/// `proxy_on_memory_allocate` (the SDK allocates it as a `Vec<u8>` of exactly `size`).
fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: allocated by proxy_on_memory_allocate as Vec::with_capacity(size), ownership
    // passed to us by the host call that returned Ok.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// Writes a log line; false if the host refused it.
pub fn log(level: Level, message: &str) -> bool {
    // SAFETY: pointer and length of a live &str.
    unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) == OK }
}

/// The host clock in nanoseconds since the epoch, if the host implements it.
pub fn current_time_nanos() -> Option<u64> {
    let mut t: u64 = 0;
    // SAFETY: valid out-pointer.
    let status = unsafe { proxy_get_current_time_nanoseconds(&mut t) };
    (status == OK).then_some(t)
}

/// The whole buffer, `None` when empty/absent.
pub fn buffer(buffer: Buffer) -> Result<Option<Vec<u8>>, HostStatus> {
    buffer_prefix(buffer, usize::MAX)
}

/// At most `max` bytes from the start of the buffer, `None` when empty/absent.
pub fn buffer_prefix(buffer: Buffer, max: usize) -> Result<Option<Vec<u8>>, HostStatus> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: valid out-pointers.
    let status = unsafe { proxy_get_buffer_bytes(buffer as u32, 0, max, &mut data, &mut size) };
    match status {
        OK => {
            let v = take(data, size);
            Ok((!v.is_empty()).then_some(v))
        }
        NOT_FOUND | 7 => Ok(None),
        s => Err(HostStatus(s)),
    }
}

/// The header map `map` as the host serialised it (see [`HeaderMap`]).
pub fn header_map(map: Map) -> Result<HeaderMap, HostStatus> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: valid out-pointers.
    let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    if status != OK {
        return Err(HostStatus(status));
    }
    let bytes = take(data, size);
    if bytes.is_empty() {
        return Ok(HeaderMap::default());
    }
    HeaderMap::decode(bytes).ok_or(HostStatus(3))
}

/// A serialised header map, read in place: the host's buffer and where each name and value
/// is in it (no copy per header).
#[derive(Debug, Default)]
pub struct HeaderMap {
    bytes: Vec<u8>,
    /// (name start, name length, value start, value length), bounds-checked by `decode`.
    spans: Vec<(usize, usize, usize, usize)>,
}

impl HeaderMap {
    /// Decodes the ABI's serialised map: count, then (key len, value len) pairs, then each
    /// key and value followed by a NUL. Bounds-checked: a malformed buffer is `None`, never
    /// a trap.
    pub fn decode(bytes: Vec<u8>) -> Option<HeaderMap> {
        let u32_at = |at: usize| -> Option<usize> {
            let b = bytes.get(at..at.checked_add(4)?)?;
            Some(
                u32::from_le_bytes([b.first().copied()?, *b.get(1)?, *b.get(2)?, *b.get(3)?])
                    as usize,
            )
        };
        let count = u32_at(0)?;
        let mut pos = 4usize.checked_add(count.checked_mul(8)?)?;
        let mut spans = Vec::with_capacity(count.min(1024));
        for i in 0..count {
            let at = 4usize.checked_add(i.checked_mul(8)?)?;
            let (klen, vlen) = (u32_at(at)?, u32_at(at.checked_add(4)?)?);
            let key = pos;
            pos = pos.checked_add(klen)?.checked_add(1)?;
            let value = pos;
            pos = pos.checked_add(vlen)?.checked_add(1)?;
            if pos > bytes.len() {
                return None;
            }
            spans.push((key, klen, value, vlen));
        }
        Some(HeaderMap { bytes, spans })
    }

    /// Every (name, value), as the host gave them.
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().map(|&(k, kl, v, vl)| {
            (
                self.bytes.get(k..k + kl).unwrap_or_default(),
                self.bytes.get(v..v + vl).unwrap_or_default(),
            )
        })
    }
}

fn encode_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Sets header `name` to `value`, replacing every existing value.
pub fn replace_header(map: Map, name: &str, value: &str) -> Result<(), HostStatus> {
    // SAFETY: pointers and lengths of live &strs.
    let status = unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    };
    if status == OK {
        Ok(())
    } else {
        Err(HostStatus(status))
    }
}

/// Removes every value of header `name` (absent is fine).
pub fn remove_header(map: Map, name: &str) -> Result<(), HostStatus> {
    // SAFETY: pointer and length of a live &str.
    let status = unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) };
    match status {
        OK | NOT_FOUND => Ok(()),
        s => Err(HostStatus(s)),
    }
}

/// A property by path; `Ok(None)` when the host does not have it.
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostStatus> {
    // Parts separated by NUL, no trailing NUL (as the SDK sends them; Kong maps each NUL
    // to a dot, so a trailing one would name a different property).
    let serialized = path.join("\0").into_bytes();
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: valid pointers; the path buffer outlives the call.
    let status =
        unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) };
    match status {
        OK => Ok(Some(take(data, size))),
        NOT_FOUND => Ok(None),
        s => Err(HostStatus(s)),
    }
}

/// Sends a local response; the request goes no further. `grpc_status` is for gRPC requests
/// (Envoy turns the response into a gRPC trailers-only one with it; Kong and APISIX ignore it).
pub fn send_local_response(
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    grpc_status: Option<u32>,
) -> Result<(), HostStatus> {
    let headers = encode_pairs(headers);
    let details = b"token_exchange_denied";
    // -1: no gRPC status (the SDKs' convention; Envoy then sends no grpc-status of its own).
    let grpc_status = grpc_status
        .and_then(|s| i32::try_from(s).ok())
        .unwrap_or(-1);
    // SAFETY: pointers and lengths of live buffers.
    let s = unsafe {
        proxy_send_local_response(
            u32::from(status),
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            grpc_status,
        )
    };
    if s == OK {
        Ok(())
    } else {
        Err(HostStatus(s))
    }
}

/// `proxy_define_metric` type of a counter.
const METRIC_COUNTER: u32 = 0;

/// Defines (or finds again: hosts return the same counter for the same name) a counter.
pub fn define_counter(name: &str) -> Result<u32, HostStatus> {
    let mut id: u32 = 0;
    // SAFETY: pointer and length of a live &str; valid out-pointer.
    let status = unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) };
    if status == OK {
        Ok(id)
    } else {
        Err(HostStatus(status))
    }
}

/// Adds `delta` to a counter. Counters only, positive deltas only: Kong traps on
/// `increment_metric` for a gauge and wraps a counter below zero.
pub fn increment_counter(id: u32, delta: u32) -> Result<(), HostStatus> {
    // SAFETY: plain values.
    let status = unsafe { proxy_increment_metric(id, i64::from(delta)) };
    if status == OK {
        Ok(())
    } else {
        Err(HostStatus(status))
    }
}

fn status(s: u32) -> Result<(), HostStatus> {
    if s == OK {
        Ok(())
    } else {
        Err(HostStatus(s))
    }
}

/// Asks for `proxy_on_tick` every `ms` milliseconds (0 stops it).
pub fn set_tick_period(ms: u32) -> Result<(), HostStatus> {
    // SAFETY: a plain value.
    status(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

/// Shared data (every VM of the plugin on this host): `(value, cas)`, `None` when absent.
pub fn get_shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, HostStatus> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: pointer and length of a live &str; valid out-pointers.
    let s =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match s {
        OK => Ok(Some((take(data, size), cas))),
        NOT_FOUND => Ok(None),
        s => Err(HostStatus(s)),
    }
}

/// Writes shared data; `cas` is the value from a read (0: unconditionally on some hosts,
/// only-if-absent on others; see `shared`). `Err(HostStatus(CAS_MISMATCH))` when it lost.
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), HostStatus> {
    // SAFETY: pointers and lengths of live buffers.
    status(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Sends an HTTP call to `upstream` with `body` (may be empty); its token, which
/// `proxy_on_http_call_response` names.
pub fn http_call(
    upstream: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout_ms: u32,
) -> Result<u32, HostStatus> {
    let headers = encode_pairs(headers);
    let trailers = encode_pairs(&[]);
    let mut token: u32 = 0;
    // SAFETY: pointers and lengths of live buffers; valid out-pointer.
    let s = unsafe {
        proxy_http_call(
            upstream.as_ptr(),
            upstream.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    };
    status(s).map(|()| token)
}

/// The answer to the call being reported: its headers (lossy UTF-8) and its body when it is
/// at most `max` bytes (never more is read: a larger one is refused by its announced size).
pub fn call_response(body_size: usize, max: usize) -> (Vec<(String, String)>, Vec<u8>) {
    let headers = header_map(Map::HttpCallResponseHeaders)
        .unwrap_or_default()
        .pairs()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    let body = if body_size > 0 && body_size <= max {
        buffer_prefix(Buffer::HttpCallResponseBody, body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    (headers, body)
}

/// Lets the paused request of the effective context go on upstream.
pub fn continue_request() -> Result<(), HostStatus> {
    // SAFETY: a plain value (0: the request stream).
    status(unsafe { proxy_continue_stream(0) })
}

/// Makes `context_id` the context later host calls act on (e.g. a paused request resumed
/// from another context's callback).
pub fn set_effective_context(context_id: u32) -> Result<(), HostStatus> {
    // SAFETY: a plain value.
    status(unsafe { proxy_set_effective_context(context_id) })
}
