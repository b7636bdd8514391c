//! The Proxy-Wasm ABI 0.2.1 exports: the host calls in here, and each call is routed to the
//! root context (configuration, ticks, fetched keys) or to a request's context.
//!
//! The filter has its own dispatcher instead of the SDK's because the SDK's panics where
//! a host can legitimately surprise it: a `proxy_on_http_call_response` whose token it does
//! not know (`expect("invalid token_id")`). On Kong that happens after any trap: the
//! request whose call was in flight gets its callback on the new instance, the panic traps
//! again, and nginx then sends that request upstream unfiltered (HOSTS.md). Here an unknown
//! token is ignored, and when it names a request context, that request is refused. Unknown
//! context ids are ignored everywhere; nothing in this file can panic.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;

use super::abi::{self, Level};
use super::http::ExchangeFilter;
use super::root::ExchangeRoot;

/// `proxy_on_request_headers` answers.
pub const CONTINUE: u32 = 0;
/// Stop the stream (it is resumed later, or was answered locally).
pub const PAUSE: u32 = 1;

/// Every context of this VM.
#[derive(Default)]
struct Contexts {
    roots: HashMap<u32, ExchangeRoot>,
    /// Request contexts, with their root's id.
    requests: HashMap<u32, (u32, ExchangeFilter)>,
}

thread_local! {
    // One VM, one thread: the instance is never entered concurrently.
    static CONTEXTS: RefCell<Contexts> = RefCell::new(Contexts::default());
}

/// Runs `f` on the contexts; `None` if they are already in use (a re-entrant call, which no
/// host makes; refused rather than a panic).
fn with<R>(f: impl FnOnce(&mut Contexts) -> R) -> Option<R> {
    CONTEXTS.with(|c| c.try_borrow_mut().ok().map(|mut c| f(&mut c)))
}

#[cfg(target_os = "wasi")]
extern "C" {
    fn __wasm_call_ctors();
}

/// WASI reactor initialisation: static constructors, then the panic hook.
#[no_mangle]
pub extern "C" fn _initialize() {
    #[cfg(target_os = "wasi")]
    // SAFETY: the linker's constructor function, called once by the host before anything.
    unsafe {
        __wasm_call_ctors();
    }
    // A panic aborts the VM; at least say why, through a log call that cannot itself panic.
    std::panic::set_hook(Box::new(|info| {
        abi::log(
            Level::Critical,
            &format!("token-exchange-filter panicked: {info}"),
        );
    }));
}

/// The ABI version this module speaks.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory for data the host passes in; the filter takes ownership as a `Vec` of exactly
/// `size` bytes (`abi::take`).
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut vec: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: capacity is `size`; the bytes are written by the host before they are read.
    unsafe {
        vec.set_len(size);
    }
    Box::into_raw(vec.into_boxed_slice()) as *mut u8
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    with(|c| {
        if root_context_id == 0 {
            c.roots
                .entry(context_id)
                .or_insert_with(|| ExchangeRoot::new(context_id));
        } else {
            let policy = c.roots.get(&root_context_id).and_then(ExchangeRoot::policy);
            c.requests.insert(
                context_id,
                (root_context_id, ExchangeFilter::new(context_id, policy)),
            );
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _vm_configuration_size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, _configuration_size: usize) -> u32 {
    let ok = with(|c| {
        c.roots
            .get_mut(&context_id)
            .is_some_and(ExchangeRoot::on_configure)
    });
    u32::from(ok.unwrap_or(false))
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    with(|c| {
        if let Some(root) = c.roots.get_mut(&context_id) {
            root.on_tick();
            resume_waiting(c, context_id);
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _num_headers: usize,
    _end_of_stream: u32,
) -> u32 {
    let action = with(|c| {
        let (root_id, request) = c.requests.get_mut(&context_id)?;
        let root = c.roots.get_mut(root_id);
        Some(request.on_request_headers(root))
    });
    match action.flatten() {
        Some(action) => action,
        None => {
            // A request this VM cannot attribute: refuse it rather than let it through.
            refuse_unknown("request headers of an unknown context");
            PAUSE
        }
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token: u32,
    num_headers: usize,
    body_size: usize,
    _num_trailers: usize,
) {
    let known = with(|c| {
        let root_id = c
            .roots
            .iter_mut()
            .find(|(_, r)| r.owns_call(token))
            .map(|(id, _)| *id);
        let Some(root_id) = root_id else {
            return Unknown::Token(c.roots.contains_key(&context_id));
        };
        if let Some(root) = c.roots.get_mut(&root_id) {
            root.on_http_call_response(token, num_headers, body_size);
        }
        resume_waiting(c, root_id);
        Unknown::None
    });
    match known {
        Some(Unknown::None) => {}
        // A late answer to a call this VM gave up (or a reconfigured VM forgot): ignored.
        Some(Unknown::Token(true)) => {
            abi::log(
                Level::Warn,
                &format!("token-exchange-filter: ignored the answer to unknown call {token}"),
            );
        }
        // A request context waiting on a call this VM does not know (e.g. made by an
        // instance that trapped): refuse the request.
        Some(Unknown::Token(false)) | None => {
            let _ = abi::set_effective_context(context_id);
            let refused = with(|c| {
                c.requests
                    .get_mut(&context_id)
                    .map(|(_, request)| request.refuse_internal())
                    .is_some()
            });
            if refused != Some(true) {
                refuse_unknown(&format!("the answer to unknown call {token}"));
            }
        }
    }
}

enum Unknown {
    None,
    /// Unknown token; whether the context is a root.
    Token(bool),
}

/// Refuses the effective request with a bare 500 (no policy is involved).
fn refuse_unknown(what: &str) {
    abi::log(
        Level::Error,
        &format!("token-exchange-filter: {what}: refusing the request"),
    );
    let _ = abi::send_local_response(500, &[("cache-control", "no-store")], b"", None);
}

/// Lets every request of `root_id` that waited for keys go on, when its wait is over.
fn resume_waiting(c: &mut Contexts, root_id: u32) {
    let Some(root) = c.roots.get_mut(&root_id) else {
        return;
    };
    let mut waiting: Vec<u32> = c
        .requests
        .iter()
        .filter(|(_, (r, request))| *r == root_id && request.is_waiting())
        .map(|(id, _)| *id)
        .collect();
    waiting.sort_unstable();
    for id in waiting {
        if let Some((_, request)) = c.requests.get_mut(&id) {
            if request.wait_is_over(root) && abi::set_effective_context(id).is_ok() {
                request.resume(root);
            }
        }
    }
}

#[no_mangle]
pub extern "C" fn proxy_on_done(_context_id: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_log(_context_id: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    with(|c| {
        if let Some((root_id, _)) = c.requests.remove(&context_id) {
            // The host cancels the calls a request made: they will not answer.
            if let Some(root) = c.roots.get_mut(&root_id) {
                root.forget_calls_of(context_id);
            }
            resume_waiting(c, root_id);
        } else {
            c.roots.remove(&context_id);
        }
    });
}

// Callbacks the filter has nothing to do in: exported so that every host finds them.

#[no_mangle]
pub extern "C" fn proxy_on_request_body(_: u32, _: usize, _: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(_: u32, _: usize) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_: u32, _: usize, _: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(_: u32, _: usize, _: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_: u32, _: usize) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_queue_ready(_: u32, _: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_new_connection(_: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_downstream_data(_: u32, _: usize, _: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_downstream_connection_close(_: u32, _: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_upstream_data(_: u32, _: usize, _: u32) -> u32 {
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_upstream_connection_close(_: u32, _: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_initial_metadata(_: u32, _: u32, _: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive(_: u32, _: u32, _: usize) {}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_trailing_metadata(_: u32, _: u32, _: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_close(_: u32, _: u32, _: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_foreign_function(_: u32, _: u32, _: usize) {}
