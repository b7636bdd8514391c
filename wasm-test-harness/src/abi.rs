//! The host functions: Proxy-Wasm ABI 0.2.1 (`env`) and a deterministic WASI preview1 subset.

use wasmtime::{bail, format_err, Caller, Extern, IntoFunc, Linker, Memory};

use crate::host::{VmData, ROOT_ID};
use crate::imports::{support, Support, ENV, WASI};
use crate::types::{HttpCall, LocalResponse, LogLevel, MetricKind, Profile};

type Cx<'a> = Caller<'a, VmData>;
type Res = wasmtime::Result<i32>;

const OK: i32 = 0;
const NOT_FOUND: i32 = 1;
const BAD_ARGUMENT: i32 = 2;
const SERIALIZATION_FAILURE: i32 = 3;
const EMPTY: i32 = 7;
const INTERNAL_FAILURE: i32 = 10;
const UNIMPLEMENTED: i32 = 12;

// WASI errno values.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOTSUP: i32 = 58;

// ---------------------------------------------------------------------------------------------
// Guest memory helpers.

fn memory(c: &mut Cx<'_>) -> wasmtime::Result<Memory> {
    match c.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => bail!("the guest exports no memory"),
    }
}

fn range(ptr: i32, len: i32) -> wasmtime::Result<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    let len = len as u32 as usize;
    let end = start
        .checked_add(len)
        .ok_or_else(|| format_err!("guest pointer overflow"))?;
    Ok(start..end)
}

fn read(c: &mut Cx<'_>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let m = memory(c)?;
    let r = range(ptr, len)?;
    m.data(&*c)
        .get(r.clone())
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format_err!("guest read out of bounds: {r:?}"))
}

fn read_string(c: &mut Cx<'_>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    Ok(String::from_utf8_lossy(&read(c, ptr, len)?).into_owned())
}

fn write(c: &mut Cx<'_>, ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let m = memory(c)?;
    let r = range(ptr, bytes.len() as i32)?;
    match m.data_mut(&mut *c).get_mut(r.clone()) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            Ok(())
        }
        None => bail!("guest write out of bounds: {r:?}"),
    }
}

fn write_u32(c: &mut Cx<'_>, ptr: i32, v: u32) -> wasmtime::Result<()> {
    write(c, ptr, &v.to_le_bytes())
}

fn write_u64(c: &mut Cx<'_>, ptr: i32, v: u64) -> wasmtime::Result<()> {
    write(c, ptr, &v.to_le_bytes())
}

/// Allocates in the guest through `proxy_on_memory_allocate` (or `malloc`).
fn alloc(c: &mut Cx<'_>, size: usize) -> wasmtime::Result<i32> {
    let f = match c.get_export("proxy_on_memory_allocate") {
        Some(Extern::Func(f)) => f,
        _ => match c.get_export("malloc") {
            Some(Extern::Func(f)) => f,
            _ => bail!("the guest exports neither proxy_on_memory_allocate nor malloc"),
        },
    };
    let f = f.typed::<i32, i32>(&*c)?;
    let p = f.call(&mut *c, size as i32)?;
    if p == 0 && size > 0 {
        bail!("proxy_on_memory_allocate({size}) returned null");
    }
    Ok(p)
}

/// Copies `data` into fresh guest memory and stores its pointer and size at the out-pointers.
fn return_bytes(c: &mut Cx<'_>, data: &[u8], ptr_out: i32, size_out: i32) -> wasmtime::Result<()> {
    let p = alloc(c, data.len())?;
    write(c, p, data)?;
    write_u32(c, ptr_out, p as u32)?;
    write_u32(c, size_out, data.len() as u32)
}

// ---------------------------------------------------------------------------------------------
// Serialized header maps: u32 count, count × (u32 key len, u32 value len), then each key and
// value followed by a NUL.

pub(crate) fn serialize_map(pairs: &[(String, String)]) -> Vec<u8> {
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

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes) as usize)
}

pub(crate) fn deserialize_map(b: &[u8]) -> Option<Vec<(String, String)>> {
    if b.is_empty() {
        return Some(Vec::new());
    }
    let n = u32_at(b, 0)?;
    let mut pos = 4usize.checked_add(n.checked_mul(8)?)?;
    let mut out = Vec::with_capacity(n.min(1024));
    for i in 0..n {
        let kl = u32_at(b, 4 + i * 8)?;
        let vl = u32_at(b, 8 + i * 8)?;
        let k = b.get(pos..pos.checked_add(kl)?)?;
        pos = pos.checked_add(kl + 1)?;
        let v = b.get(pos..pos.checked_add(vl)?)?;
        pos = pos.checked_add(vl + 1)?;
        out.push((
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    Some(out)
}

fn map_mut(d: &mut VmData, map_type: i32) -> Option<&mut Vec<(String, String)>> {
    match map_type {
        0..=3 => {
            let s = d.stream()?;
            Some(match map_type {
                0 => &mut s.request_headers,
                1 => &mut s.request_trailers,
                2 => &mut s.response_headers,
                _ => &mut s.response_trailers,
            })
        }
        6 => d.call_response.as_mut().map(|r| &mut r.headers),
        7 => d.call_response.as_mut().map(|r| &mut r.trailers),
        _ => None,
    }
}

/// Header names as the host stores them: lower-case on Envoy and APISIX, as given on Kong.
fn normalize_key(profile: Profile, key: String) -> String {
    match profile {
        Profile::Kong => key,
        _ => key.to_ascii_lowercase(),
    }
}

// ---------------------------------------------------------------------------------------------
// Properties.

enum Prop {
    Found(Vec<u8>),
    NotFound,
    InternalFailure,
}

const REQUEST_SCOPED: &[&str] = &[
    "request.",
    "response.",
    "source.",
    "destination.",
    "connection.",
    "upstream.",
    "kong.route_id",
    "kong.service_id",
    "xds.",
];

/// NUL-separated path to the dotted key used internally. One trailing NUL (as some guests
/// send) is tolerated, as Envoy does.
/// The dotted property name of a NUL-separated path. Envoy ignores a trailing NUL; Kong's
/// ngx_wasm_module turns every NUL into a dot, so there `request\0path\0` names
/// `request.path.`, which does not exist (the SDK sends no trailing NUL).
fn property_key(raw: &[u8], profile: Profile) -> String {
    let raw = match profile {
        Profile::Kong => raw,
        _ => raw.strip_suffix(&[0]).unwrap_or(raw),
    };
    raw.split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect::<Vec<_>>()
        .join(".")
}

fn get_property(d: &VmData, key: &str) -> Prop {
    let profile = d.host.profile;
    let stream = if d.effective == ROOT_ID {
        None
    } else {
        d.streams.get(&d.effective)
    };
    if profile == Profile::Kong
        && stream.is_none()
        && REQUEST_SCOPED.iter().any(|p| key.starts_with(p))
    {
        return Prop::InternalFailure;
    }
    if profile != Profile::Envoy
        && (key.starts_with("xds.") || matches!(key, "node" | "cluster_name" | "route_name"))
    {
        return Prop::NotFound;
    }
    if let Some(v) = stream.and_then(|s| s.properties.get(key)) {
        return Prop::Found(v.clone());
    }
    if let Some(v) = d.properties.get(key) {
        return Prop::Found(v.clone());
    }
    let envoy = profile == Profile::Envoy;
    let int = |v: i64| Prop::Found(profile.encode_int(v));
    let text = |v: &str| Prop::Found(v.as_bytes().to_vec());
    match (key, stream) {
        ("plugin_root_id", _) if !envoy => text("0"),
        ("kong.route_id", _) if profile == Profile::Kong => {
            text("00000000-0000-4000-8000-0000000000a1")
        }
        ("kong.service_id", _) if profile == Profile::Kong => {
            text("00000000-0000-4000-8000-0000000000b1")
        }
        ("request.time", Some(s)) => {
            if envoy {
                int(s.start_ns as i64)
            } else {
                let ms = s.start_ns / 1_000_000;
                text(&format!("{}.{:03}", ms / 1000, ms % 1000))
            }
        }
        ("request.path", Some(s)) => text(&s.path),
        ("request.url_path", Some(s)) => text(s.path.split('?').next().unwrap_or("")),
        ("request.method", Some(s)) => text(&s.method),
        ("request.scheme", Some(s)) => text(&s.scheme),
        ("request.host", Some(s)) => {
            if envoy {
                text(&s.authority)
            } else {
                text("localhost")
            }
        }
        ("request.id", Some(s)) if envoy => s
            .request_headers
            .iter()
            .find(|(k, _)| k == "x-request-id")
            .map_or(Prop::NotFound, |(_, v)| text(v)),
        ("source.address", Some(_)) => text(if envoy {
            "127.0.0.1:51284"
        } else {
            "127.0.0.1"
        }),
        ("source.port", Some(_)) => int(51284),
        ("destination.address", Some(_)) => {
            text(if envoy { "127.0.0.1:8000" } else { "127.0.0.1" })
        }
        ("destination.port", Some(_)) => int(8000),
        ("response.code", Some(s)) => {
            let code = s
                .local_response
                .as_ref()
                .map(|l| l.status)
                .or_else(|| s.forwarded.as_ref().map(|_| u32::from(s.upstream_status)));
            match code {
                Some(c) => int(i64::from(c)),
                None if envoy => Prop::NotFound,
                None => text("000"),
            }
        }
        _ => Prop::NotFound,
    }
}

// ---------------------------------------------------------------------------------------------
// Registration.

/// Registers `name` unless the profile lacks it (a module importing it then fails to load,
/// as on that host).
fn def<Params, Args>(
    l: &mut Linker<VmData>,
    profile: Profile,
    module: &str,
    name: &str,
    f: impl IntoFunc<VmData, Params, Args>,
) -> wasmtime::Result<()> {
    if support(profile, module, name) != Support::Missing {
        l.func_wrap(module, name, f)?;
    }
    Ok(())
}

/// `Some(status)` to return instead of running the function (an injected fault, or the
/// profile's "Unimplemented"), or a trap where the profile traps.
fn gate(c: &Cx<'_>, module: &str, name: &str) -> wasmtime::Result<Option<i32>> {
    if let Some(status) = c.data().host.faults.borrow().get(name) {
        return Ok(Some(*status));
    }
    let profile = c.data().host.profile;
    match support(profile, module, name) {
        Support::Traps => bail!(
            "{name}: not yet implemented ({} host traps here; a real worker would die)",
            profile.name()
        ),
        Support::ReturnsUnimplemented => Ok(Some(UNIMPLEMENTED)),
        Support::Provided | Support::Missing => Ok(None),
    }
}

/// The one registration shape of every host function that returns a status: registered per
/// the profile ([`def`]), then [`gate`]d before its body runs, so that `Host::inject_fault`
/// and the profile's traps and "Unimplemented" answers cover every function alike.
/// (`proc_exit` alone has no status to return and is registered with [`def`].)
macro_rules! host_fn {
    ($l:ident, $p:ident, $module:expr, $name:expr, |$c:ident $(, $arg:tt : $ty:ty)*| $body:block $(,)?) => {
        def($l, $p, $module, $name, move |mut $c: Cx<'_> $(, $arg: $ty)*| -> Res {
            if let Some(status) = gate(&$c, $module, $name)? {
                return Ok(status);
            }
            $body
        })
    };
}

/// Every host function name [`host_fn`] registers (for checking `inject_fault` names).
pub(crate) fn is_host_function(name: &str) -> bool {
    crate::imports::ABI_FUNCTIONS.contains(&name) || crate::imports::WASI_FUNCTIONS.contains(&name)
}

pub(crate) fn add_to_linker(l: &mut Linker<VmData>, p: Profile) -> wasmtime::Result<()> {
    add_env(l, p)?;
    add_wasi(l, p)
}

#[allow(clippy::too_many_lines, unused_mut)]
fn add_env(l: &mut Linker<VmData>, p: Profile) -> wasmtime::Result<()> {
    host_fn!(
        l,
        p,
        ENV,
        "proxy_log",
        |c, level: i32, ptr: i32, len: i32| {
            let msg = read_string(&mut c, ptr, len)?;
            let Some(level) = LogLevel::from_raw(level) else {
                return Ok(BAD_ARGUMENT);
            };
            let d = c.data();
            d.host.log(level, d.vm_index, d.effective, msg);
            Ok(OK)
        },
    )?;
    host_fn!(l, p, ENV, "proxy_get_log_level", |c, ret: i32| {
        let level = c.data().host.log_level.get() as u32;
        write_u32(&mut c, ret, level)?;
        Ok(OK)
    },)?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_get_current_time_nanoseconds",
        |c, ret: i32| {
            let now = c.data().host.now_ns.get();
            write_u64(&mut c, ret, now)?;
            Ok(OK)
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_set_tick_period_milliseconds",
        |c, ms: i32| {
            c.data_mut().tick_period_ms = ms as u32;
            Ok(OK)
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_get_buffer_bytes",
        |c, ty: i32, start: i32, max: i32, ret_ptr: i32, ret_size: i32| {
            let d = c.data_mut();
            let data: Vec<u8> = match ty {
                0 => match d.stream() {
                    Some(s) => s.request_body.clone(),
                    None => return Ok(NOT_FOUND),
                },
                1 => match d.stream() {
                    Some(s) => s.response_body.clone(),
                    None => return Ok(NOT_FOUND),
                },
                4 => match &d.call_response {
                    Some(r) => r.body.clone(),
                    None => return Ok(NOT_FOUND),
                },
                6 => d.vm_config.clone(),
                7 => d.plugin_config.clone(),
                _ => return Ok(NOT_FOUND),
            };
            let start = (start as u32 as usize).min(data.len());
            let end = start.saturating_add(max as u32 as usize).min(data.len());
            let slice = data.get(start..end).unwrap_or_default();
            if slice.is_empty() {
                write_u32(&mut c, ret_ptr, 0)?;
                write_u32(&mut c, ret_size, 0)?;
                return Ok(OK);
            }
            return_bytes(&mut c, slice, ret_ptr, ret_size)?;
            Ok(OK)
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_set_buffer_bytes",
        |c, ty: i32, start: i32, size: i32, ptr: i32, len: i32| {
            let bytes = read(&mut c, ptr, len)?;
            let d = c.data_mut();
            let Some(s) = d.stream() else {
                return Ok(NOT_FOUND);
            };
            let buf = match ty {
                0 => &mut s.request_body,
                1 => &mut s.response_body,
                _ => return Ok(BAD_ARGUMENT),
            };
            let start = (start as u32 as usize).min(buf.len());
            let end = start.saturating_add(size as u32 as usize).min(buf.len());
            buf.splice(start..end, bytes);
            Ok(OK)
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_get_header_map_pairs",
        |c, ty: i32, ret_ptr: i32, ret_size: i32| {
            let Some(pairs) = map_mut(c.data_mut(), ty).map(|m| m.clone()) else {
                return Ok(NOT_FOUND);
            };
            return_bytes(&mut c, &serialize_map(&pairs), ret_ptr, ret_size)?;
            Ok(OK)
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_set_header_map_pairs",
        |c, ty: i32, ptr: i32, len: i32| {
            let bytes = read(&mut c, ptr, len)?;
            let Some(pairs) = deserialize_map(&bytes) else {
                return Ok(SERIALIZATION_FAILURE);
            };
            let profile = c.data().host.profile;
            let Some(map) = map_mut(c.data_mut(), ty) else {
                return Ok(NOT_FOUND);
            };
            *map = pairs
                .into_iter()
                .map(|(k, v)| (normalize_key(profile, k), v))
                .collect();
            Ok(OK)
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_get_header_map_value",
        |c, ty: i32, kp: i32, kl: i32, ret_ptr: i32, ret_size: i32| {
            let key = read_string(&mut c, kp, kl)?;
            let profile = c.data().host.profile;
            let d = c.data_mut();
            let mut value = None;
            if profile == Profile::Kong && ty == 0 {
                if let Some(s) = d.stream() {
                    value = match key.as_str() {
                        ":path" => Some(s.path.clone()),
                        ":method" => Some(s.method.clone()),
                        ":scheme" => Some(s.scheme.clone()),
                        ":authority" => Some(s.authority.clone()),
                        _ => None,
                    };
                }
            }
            if value.is_none() {
                let Some(map) = map_mut(d, ty) else {
                    return Ok(NOT_FOUND);
                };
                value = map
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&key))
                    .map(|(_, v)| v.clone());
            }
            match value {
                Some(v) => {
                    return_bytes(&mut c, v.as_bytes(), ret_ptr, ret_size)?;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_remove_header_map_value",
        |c, ty: i32, kp: i32, kl: i32| {
            let key = read_string(&mut c, kp, kl)?;
            let Some(map) = map_mut(c.data_mut(), ty) else {
                return Ok(NOT_FOUND);
            };
            map.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
            Ok(OK)
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_replace_header_map_value",
        |c, ty: i32, kp: i32, kl: i32, vp: i32, vl: i32| {
            let key = read_string(&mut c, kp, kl)?;
            let value = read_string(&mut c, vp, vl)?;
            let key = normalize_key(c.data().host.profile, key);
            let Some(map) = map_mut(c.data_mut(), ty) else {
                return Ok(NOT_FOUND);
            };
            match map.iter().position(|(k, _)| k.eq_ignore_ascii_case(&key)) {
                Some(first) => {
                    let mut i = 0;
                    map.retain(|(k, _)| {
                        let keep = i <= first || !k.eq_ignore_ascii_case(&key);
                        i += 1;
                        keep
                    });
                    if let Some(slot) = map.get_mut(first) {
                        slot.1 = value;
                    }
                }
                None => map.push((key, value)),
            }
            Ok(OK)
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_add_header_map_value",
        |c, ty: i32, kp: i32, kl: i32, vp: i32, vl: i32| {
            let key = read_string(&mut c, kp, kl)?;
            let value = read_string(&mut c, vp, vl)?;
            let key = normalize_key(c.data().host.profile, key);
            let Some(map) = map_mut(c.data_mut(), ty) else {
                return Ok(NOT_FOUND);
            };
            map.push((key, value));
            Ok(OK)
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_get_property",
        |c, pp: i32, pl: i32, ret_ptr: i32, ret_size: i32| {
            let raw = read(&mut c, pp, pl)?;
            let key = property_key(&raw, c.data().host.profile);
            let d = c.data();
            if d.host.profile == Profile::Kong && d.effective == ROOT_ID && key == "plugin_name" {
                bail!(
                    "kong: reading plugin_name outside a request crashes the nginx worker \
                     (segmentation fault, observed)"
                );
            }
            match get_property(d, &key) {
                Prop::Found(v) => {
                    return_bytes(&mut c, &v, ret_ptr, ret_size)?;
                    Ok(OK)
                }
                Prop::NotFound => Ok(NOT_FOUND),
                Prop::InternalFailure => Ok(INTERNAL_FAILURE),
            }
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_set_property",
        |c, pp: i32, pl: i32, vp: i32, vl: i32| {
            let raw = read(&mut c, pp, pl)?;
            let value = read(&mut c, vp, vl)?;
            let key = property_key(&raw, c.data().host.profile);
            let d = c.data_mut();
            match d.stream() {
                Some(s) => {
                    s.properties.insert(key, value);
                }
                None => {
                    d.properties.insert(key, value);
                }
            }
            Ok(OK)
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_get_shared_data",
        |c, kp: i32, kl: i32, ret_ptr: i32, ret_size: i32, ret_cas: i32| {
            let key = read_string(&mut c, kp, kl)?;
            let entry = c.data().host.shared_data.borrow().get(&key).cloned();
            match entry {
                Some((value, cas)) => {
                    return_bytes(&mut c, &value, ret_ptr, ret_size)?;
                    write_u32(&mut c, ret_cas, cas)?;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_set_shared_data",
        |c, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| {
            let key = read_string(&mut c, kp, kl)?;
            let value = read(&mut c, vp, vl)?;
            let host = c.data().host.clone();
            Ok(crate::callouts::set_shared_data(
                &host, key, value, cas as u32,
            ))
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_register_shared_queue",
        |c, np: i32, nl: i32, ret: i32| {
            let name = read_string(&mut c, np, nl)?;
            let host = c.data().host.clone();
            let id = {
                let mut q = host.queues.borrow_mut();
                match q.iter().position(|(n, _)| *n == name) {
                    Some(i) => i + 1,
                    None => {
                        q.push((name, Default::default()));
                        q.len()
                    }
                }
            };
            write_u32(&mut c, ret, id as u32)?;
            Ok(OK)
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_resolve_shared_queue",
        |c, _vp: i32, _vl: i32, np: i32, nl: i32, ret: i32| {
            let name = read_string(&mut c, np, nl)?;
            let pos = c
                .data()
                .host
                .queues
                .borrow()
                .iter()
                .position(|(n, _)| *n == name);
            match pos {
                Some(i) => {
                    write_u32(&mut c, ret, (i + 1) as u32)?;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_dequeue_shared_queue",
        |c, id: i32, ret_ptr: i32, ret_size: i32| {
            let host = c.data().host.clone();
            let item = {
                let mut q = host.queues.borrow_mut();
                let Some((_, items)) = (id as usize).checked_sub(1).and_then(|i| q.get_mut(i))
                else {
                    return Ok(NOT_FOUND);
                };
                items.pop_front()
            };
            match item {
                Some(v) => {
                    return_bytes(&mut c, &v, ret_ptr, ret_size)?;
                    Ok(OK)
                }
                None => Ok(EMPTY),
            }
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_enqueue_shared_queue",
        |c, id: i32, vp: i32, vl: i32| {
            let v = read(&mut c, vp, vl)?;
            let host = c.data().host.clone();
            let mut q = host.queues.borrow_mut();
            match (id as usize).checked_sub(1).and_then(|i| q.get_mut(i)) {
                Some((_, items)) => {
                    items.push_back(v);
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        },
    )?;
    host_fn!(l, p, ENV, "proxy_continue_stream", |c, ty: i32| {
        let Some(s) = c.data_mut().stream() else {
            return Ok(NOT_FOUND);
        };
        match ty {
            0 => s.continue_request = true,
            1 => s.continue_response = true,
            _ => return Ok(BAD_ARGUMENT),
        }
        Ok(OK)
    },)?;
    host_fn!(l, p, ENV, "proxy_close_stream", |c, _ty: i32| {
        let Some(s) = c.data_mut().stream() else {
            return Ok(NOT_FOUND);
        };
        if s.local_response.is_none() {
            s.local_response = Some(LocalResponse {
                status: 0,
                details: "stream closed by the filter (proxy_close_stream)".to_string(),
                headers: Vec::new(),
                body: Vec::new(),
                grpc_status: -1,
            });
        }
        Ok(OK)
    },)?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_send_local_response",
        |c, status: i32, dp: i32, dl: i32, bp: i32, bl: i32, hp: i32, hl: i32, grpc: i32| {
            let details = read_string(&mut c, dp, dl)?;
            let body = read(&mut c, bp, bl)?;
            let hb = read(&mut c, hp, hl)?;
            let Some(headers) = deserialize_map(&hb) else {
                return Ok(SERIALIZATION_FAILURE);
            };
            let Some(s) = c.data_mut().stream() else {
                return Ok(NOT_FOUND);
            };
            s.local_response = Some(LocalResponse {
                status: status as u32,
                details,
                headers,
                body,
                grpc_status: grpc,
            });
            Ok(OK)
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_http_call",
        |c,
         up: i32,
         ul: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         tp: i32,
         tl: i32,
         timeout: i32,
         ret: i32| {
            let upstream = read_string(&mut c, up, ul)?;
            let hb = read(&mut c, hp, hl)?;
            let body = read(&mut c, bp, bl)?;
            let tb = read(&mut c, tp, tl)?;
            let (Some(headers), Some(trailers)) = (deserialize_map(&hb), deserialize_map(&tb))
            else {
                return Ok(SERIALIZATION_FAILURE);
            };
            let d = c.data();
            let host = d.host.clone();
            {
                let known = host.known_upstreams.borrow();
                if !known.is_empty() && !known.contains(&upstream) {
                    return Ok(BAD_ARGUMENT);
                }
            }
            if let Some(status) =
                crate::callouts::check_http_call(host.profile, &headers, d.in_configure)?
            {
                return Ok(status);
            }
            let token = host.next_token.get();
            host.next_token.set(token + 1);
            host.pending_calls.borrow_mut().push(HttpCall {
                token,
                vm: d.vm_index,
                context_id: d.effective,
                upstream,
                headers,
                body,
                trailers,
                timeout: std::time::Duration::from_millis(u64::from(timeout as u32)),
            });
            write_u32(&mut c, ret, token)?;
            Ok(OK)
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_grpc_call",
        |c,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32| { Ok(BAD_ARGUMENT) },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_grpc_stream",
        |c, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            Ok(BAD_ARGUMENT)
        },
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_grpc_send",
        |c, _: i32, _: i32, _: i32, _: i32| { Ok(NOT_FOUND) },
    )?;
    host_fn!(l, p, ENV, "proxy_grpc_cancel", |c, _: i32| {
        Ok(NOT_FOUND)
    })?;
    host_fn!(l, p, ENV, "proxy_grpc_close", |c, _: i32| { Ok(NOT_FOUND) })?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_get_status",
        |c, code: i32, mp: i32, ms: i32| {
            write_u32(&mut c, code, 0)?;
            return_bytes(&mut c, b"", mp, ms)?;
            Ok(OK)
        },
    )?;
    host_fn!(l, p, ENV, "proxy_set_effective_context", |c, ctx: i32| {
        let ctx = ctx as u32;
        let d = c.data_mut();
        if ctx == ROOT_ID || d.streams.contains_key(&ctx) {
            d.effective = ctx;
            Ok(OK)
        } else {
            Ok(BAD_ARGUMENT)
        }
    },)?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_call_foreign_function",
        |c, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| { Ok(NOT_FOUND) },
    )?;
    host_fn!(l, p, ENV, "proxy_done", |c| { Ok(OK) })?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_define_metric",
        |c, ty: i32, np: i32, nl: i32, ret: i32| {
            let name = read_string(&mut c, np, nl)?;
            let kind = match ty {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Histogram,
                _ => return Ok(BAD_ARGUMENT),
            };
            let host = c.data().host.clone();
            let id = {
                let mut m = host.metrics.borrow_mut();
                match m.iter().position(|x| x.name == name) {
                    Some(i) => i + 1,
                    None => {
                        m.push(crate::host::Metric {
                            name,
                            kind,
                            value: 0,
                        });
                        m.len()
                    }
                }
            };
            write_u32(&mut c, ret, id as u32)?;
            Ok(OK)
        },
    )?;
    host_fn!(l, p, ENV, "proxy_get_metric", |c, id: i32, ret: i32| {
        let profile = c.data().host.profile;
        let v = c
            .data()
            .host
            .metrics
            .borrow()
            .get((id as usize).wrapping_sub(1))
            .map(|m| (m.kind, m.value));
        match v {
            Some((MetricKind::Histogram, _)) | None if profile == Profile::Kong => {
                bail!("kong: get_metric on a histogram or an unknown id traps (observed)")
            }
            Some((MetricKind::Histogram, _)) | None => Ok(BAD_ARGUMENT),
            Some((_, v)) => {
                write_u64(&mut c, ret, v)?;
                Ok(OK)
            }
        }
    })?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_record_metric",
        |c, id: i32, value: i64| {
            let profile = c.data().host.profile;
            let host = c.data().host.clone();
            let mut metrics = host.metrics.borrow_mut();
            match metrics.get_mut((id as usize).wrapping_sub(1)) {
                Some(m) if m.kind == MetricKind::Counter && profile == Profile::Kong => {
                    bail!("kong: record_metric on a counter traps (\"metric is a counter\", observed)")
                }
                // Envoy adds the value to a counter.
                Some(m) if m.kind == MetricKind::Counter => {
                    m.value = m.value.wrapping_add(value as u64);
                    Ok(OK)
                }
                Some(m) => {
                    m.value = value as u64;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        }
    )?;
    host_fn!(
        l,
        p,
        ENV,
        "proxy_increment_metric",
        |c, id: i32, off: i64| {
            let profile = c.data().host.profile;
            let host = c.data().host.clone();
            let mut metrics = host.metrics.borrow_mut();
            match metrics.get_mut((id as usize).wrapping_sub(1)) {
                Some(m) if m.kind != MetricKind::Counter && profile == Profile::Kong => {
                    bail!("kong: increment_metric on a gauge traps (\"metric not a counter\", observed)")
                }
                Some(m) if m.kind == MetricKind::Histogram => Ok(BAD_ARGUMENT),
                // Envoy refuses a negative counter increment; Kong wraps the counter around.
                Some(m) if m.kind == MetricKind::Counter && off < 0 && profile != Profile::Kong => {
                    Ok(BAD_ARGUMENT)
                }
                Some(m) => {
                    m.value = (m.value as i64).wrapping_add(off) as u64;
                    Ok(OK)
                }
                None => Ok(NOT_FOUND),
            }
        }
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// WASI preview1, deterministic: no environment, no arguments, no files; stdout/stderr
// captured; clocks on the test clock; random bytes from a seeded generator.

#[allow(clippy::too_many_lines, unused_mut)]
fn add_wasi(l: &mut Linker<VmData>, p: Profile) -> wasmtime::Result<()> {
    host_fn!(
        l,
        p,
        WASI,
        "fd_write",
        |c, fd: i32, iovs: i32, n: i32, written: i32| {
            if fd != 1 && fd != 2 {
                return Ok(ERRNO_BADF);
            }
            let mut out = Vec::new();
            for i in 0..n {
                let iov = read(&mut c, iovs + i * 8, 8)?;
                let ptr = u32_at(&iov, 0).unwrap_or(0);
                let len = u32_at(&iov, 4).unwrap_or(0);
                out.extend(read(&mut c, ptr as i32, len as i32)?);
            }
            let len = out.len() as u32;
            let host = c.data().host.clone();
            if fd == 1 {
                host.stdout.borrow_mut().extend(out);
            } else {
                host.stderr.borrow_mut().extend(out);
            }
            write_u32(&mut c, written, len)?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    host_fn!(
        l,
        p,
        WASI,
        "fd_read",
        |c, _fd: i32, _iovs: i32, _n: i32, nread: i32| {
            write_u32(&mut c, nread, 0)?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    host_fn!(l, p, WASI, "fd_close", |c, _fd: i32| { Ok(ERRNO_BADF) })?;
    host_fn!(
        l,
        p,
        WASI,
        "fd_seek",
        |c, _fd: i32, _off: i64, _whence: i32, _ret: i32| { Ok(ERRNO_BADF) },
    )?;
    host_fn!(l, p, WASI, "fd_fdstat_get", |c, fd: i32, ret: i32| {
        if !(0..=2).contains(&fd) {
            return Ok(ERRNO_BADF);
        }
        // filetype character_device (2), no flags, no rights restrictions.
        let mut stat = [0u8; 24];
        if let Some(b) = stat.first_mut() {
            *b = 2;
        }
        write(&mut c, ret, &stat)?;
        Ok(ERRNO_SUCCESS)
    },)?;
    host_fn!(l, p, WASI, "fd_prestat_get", |c, _fd: i32, _ret: i32| {
        Ok(ERRNO_BADF)
    },)?;
    host_fn!(
        l,
        p,
        WASI,
        "fd_prestat_dir_name",
        |c, _fd: i32, _p: i32, _l: i32| { Ok(ERRNO_BADF) },
    )?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        host_fn!(l, p, WASI, name, |c, count: i32, size: i32| {
            write_u32(&mut c, count, 0)?;
            write_u32(&mut c, size, 0)?;
            Ok(ERRNO_SUCCESS)
        },)?;
    }
    for name in ["environ_get", "args_get"] {
        host_fn!(l, p, WASI, name, |c, _a: i32, _b: i32| {
            Ok(ERRNO_SUCCESS)
        })?;
    }
    host_fn!(
        l,
        p,
        WASI,
        "clock_time_get",
        |c, id: i32, _precision: i64, ret: i32| {
            let host = c.data().host.clone();
            let t = match id {
                0 => host.now_ns.get(),
                1..=3 => host.mono_ns.get(),
                _ => return Ok(ERRNO_INVAL),
            };
            write_u64(&mut c, ret, t)?;
            Ok(ERRNO_SUCCESS)
        },
    )?;
    host_fn!(l, p, WASI, "clock_res_get", |c, id: i32, ret: i32| {
        if !(0..=3).contains(&id) {
            return Ok(ERRNO_INVAL);
        }
        write_u64(&mut c, ret, 1)?;
        Ok(ERRNO_SUCCESS)
    },)?;
    host_fn!(l, p, WASI, "random_get", |c, ptr: i32, len: i32| {
        let host = c.data().host.clone();
        let mut bytes = Vec::with_capacity(len as u32 as usize);
        while bytes.len() < len as u32 as usize {
            bytes.extend_from_slice(&host.next_random().to_le_bytes());
        }
        bytes.truncate(len as u32 as usize);
        write(&mut c, ptr, &bytes)?;
        Ok(ERRNO_SUCCESS)
    },)?;
    def(
        l,
        p,
        WASI,
        "proc_exit",
        |_c: Cx<'_>, code: i32| -> wasmtime::Result<()> { bail!("guest called proc_exit({code})") },
    )?;
    host_fn!(l, p, WASI, "sched_yield", |c| { Ok(ERRNO_SUCCESS) })?;
    host_fn!(
        l,
        p,
        WASI,
        "poll_oneoff",
        |c, _a: i32, _b: i32, _n: i32, _r: i32| { Ok(ERRNO_NOTSUP) },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{deserialize_map, property_key, serialize_map};
    use crate::types::Profile;

    #[test]
    fn header_map_round_trip() {
        let pairs = vec![
            (":path".to_string(), "/a".to_string()),
            ("x".to_string(), String::new()),
        ];
        let bytes = serialize_map(&pairs);
        assert_eq!(&bytes[..4], &2u32.to_le_bytes());
        assert_eq!(deserialize_map(&bytes), Some(pairs));
        assert_eq!(deserialize_map(&bytes[..bytes.len() - 2]), None);
        assert_eq!(deserialize_map(b""), Some(vec![]));
    }

    #[test]
    fn property_paths() {
        assert_eq!(
            property_key(b"request\0path", Profile::Envoy),
            "request.path"
        );
        assert_eq!(
            property_key(b"request\0path\0", Profile::Envoy),
            "request.path"
        );
        assert_eq!(
            property_key(b"request\0path", Profile::Kong),
            "request.path"
        );
        assert_eq!(
            property_key(b"request\0path\0", Profile::Kong),
            "request.path."
        );
    }
}
