//! The host: VMs, contexts, the request lifecycle and the test-facing API.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Engine, Instance, Linker, Module, Store, WasmParams, WasmResults};

use crate::types::{
    find_header, Action, Error, ErrorKind, HttpCall, HttpCallResponse, LocalResponse, LogEntry,
    LogLevel, MetricKind, Profile,
};

/// Context id of every VM's root context.
pub(crate) const ROOT_ID: u32 = 1;
/// How many log lines an [`Error`] carries.
const ERROR_LOG_LINES: usize = 20;
/// Default clock: 2026-01-01T00:00:00Z.
const DEFAULT_EPOCH_SECS: u64 = 1_767_225_600;

// ---------------------------------------------------------------------------------------------
// Engine and module cache (per process).

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

/// Compiles `wasm` once per process (compiling is the slow part of every test).
type ModuleCache = Mutex<Vec<(Vec<u8>, Module)>>;

fn module(wasm: &[u8]) -> Result<Module, Error> {
    static CACHE: OnceLock<ModuleCache> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, m)) = cache.iter().find(|(bytes, _)| bytes.as_slice() == wasm) {
        return Ok(m.clone());
    }
    let m = Module::new(engine(), wasm)
        .map_err(|e| Error::new(ErrorKind::Load, format!("compiling the module: {e:#}")))?;
    cache.push((wasm.to_vec(), m.clone()));
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// State shared by all VMs of one host.

pub(crate) struct Metric {
    pub name: String,
    pub kind: MetricKind,
    pub value: u64,
}

pub(crate) struct HostShared {
    pub profile: Profile,
    /// Wall clock, nanoseconds since the Unix epoch.
    pub now_ns: Cell<u64>,
    /// Monotonic clock, nanoseconds; only moves forward ([`Host::advance`]).
    pub mono_ns: Cell<u64>,
    pub log_level: Cell<LogLevel>,
    pub logs: RefCell<Vec<LogEntry>>,
    pub stdout: RefCell<Vec<u8>>,
    pub stderr: RefCell<Vec<u8>>,
    /// key -> (value, cas)
    pub shared_data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    pub next_cas: Cell<u32>,
    pub queues: RefCell<Vec<(String, std::collections::VecDeque<Vec<u8>>)>>,
    pub metrics: RefCell<Vec<Metric>>,
    pub pending_calls: RefCell<Vec<HttpCall>>,
    pub next_token: Cell<u32>,
    pub rng: Cell<u64>,
    pub next_request_id: Cell<u64>,
    /// Upstream names `proxy_http_call` accepts; empty = accept all.
    pub known_upstreams: RefCell<Vec<String>>,
    /// Host functions forced to answer a status (ABI or WASI errno) instead of running.
    pub faults: RefCell<HashMap<String, i32>>,
}

impl HostShared {
    pub fn log(&self, level: LogLevel, vm: usize, context_id: u32, message: String) {
        if level >= self.log_level.get() {
            self.logs.borrow_mut().push(LogEntry {
                level,
                vm,
                context_id,
                message,
            });
        }
    }

    pub fn next_random(&self) -> u64 {
        // splitmix64: deterministic per host.
        let mut z = self.rng.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.rng.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

// ---------------------------------------------------------------------------------------------
// Per-VM state (the wasmtime store data).

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the request headers to be let through (paused or not started).
    Request,
    /// Forwarded upstream; waiting for the response headers to be let through.
    Response,
    /// on_done/on_log/on_delete ran.
    Done,
}

pub(crate) struct Stream {
    pub request_headers: Vec<(String, String)>,
    pub request_trailers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    pub response_trailers: Vec<(String, String)>,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    pub properties: BTreeMap<String, Vec<u8>>,
    /// Request line values the nginx hosts answer for pseudo-headers.
    pub method: String,
    pub path: String,
    pub scheme: String,
    pub authority: String,
    pub start_ns: u64,
    pub phase: Phase,
    pub request_action: Option<Action>,
    pub response_action: Option<Action>,
    pub continue_request: bool,
    pub continue_response: bool,
    pub forwarded: Option<Vec<(String, String)>>,
    pub local_response: Option<LocalResponse>,
    pub upstream_status: u16,
    pub upstream_headers: Vec<(String, String)>,
    pub response_sent: bool,
}

pub(crate) struct VmData {
    pub host: Rc<HostShared>,
    pub vm_index: usize,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    pub effective: u32,
    pub streams: HashMap<u32, Stream>,
    pub properties: BTreeMap<String, Vec<u8>>,
    pub tick_period_ms: u32,
    /// The HTTP-call response being delivered (during `proxy_on_http_call_response`).
    pub call_response: Option<HttpCallResponse>,
    /// Inside `proxy_on_configure` (Kong's host refuses calls out there).
    pub in_configure: bool,
}

impl VmData {
    pub fn stream(&mut self) -> Option<&mut Stream> {
        let id = self.effective;
        self.streams.get_mut(&id)
    }
}

// ---------------------------------------------------------------------------------------------
// Host

struct HostInner {
    shared: Rc<HostShared>,
    vms: RefCell<Vec<Vm>>,
}

/// A Proxy-Wasm host imitating one real proxy ([`Profile`]). Cheap to clone (a handle).
#[derive(Clone)]
pub struct Host {
    inner: Rc<HostInner>,
}

impl Host {
    /// A host with the given profile, the clock at 2026-01-01T00:00:00Z, capturing all log levels.
    pub fn new(profile: Profile) -> Host {
        let shared = HostShared {
            profile,
            now_ns: Cell::new(DEFAULT_EPOCH_SECS * 1_000_000_000),
            mono_ns: Cell::new(1_000_000_000),
            log_level: Cell::new(LogLevel::Trace),
            logs: RefCell::new(Vec::new()),
            stdout: RefCell::new(Vec::new()),
            stderr: RefCell::new(Vec::new()),
            shared_data: RefCell::new(HashMap::new()),
            next_cas: Cell::new(1),
            queues: RefCell::new(Vec::new()),
            metrics: RefCell::new(Vec::new()),
            pending_calls: RefCell::new(Vec::new()),
            next_token: Cell::new(1),
            rng: Cell::new(0x5EED),
            next_request_id: Cell::new(1),
            known_upstreams: RefCell::new(Vec::new()),
            faults: RefCell::new(HashMap::new()),
        };
        Host {
            inner: Rc::new(HostInner {
                shared: Rc::new(shared),
                vms: RefCell::new(Vec::new()),
            }),
        }
    }

    /// [`Profile::Envoy`].
    pub fn envoy() -> Host {
        Host::new(Profile::Envoy)
    }

    /// [`Profile::Kong`].
    pub fn kong() -> Host {
        Host::new(Profile::Kong)
    }

    /// [`Profile::Apisix`].
    pub fn apisix() -> Host {
        Host::new(Profile::Apisix)
    }

    pub fn profile(&self) -> Profile {
        self.inner.shared.profile
    }

    /// Loads a new VM of `wasm` with this plugin configuration (and no VM configuration):
    /// runs `_initialize`/`_start`, creates root context 1, `proxy_on_vm_start`,
    /// `proxy_on_configure`. Fails (with the guest's logs) if either returns false.
    pub fn load(&self, wasm: &[u8], plugin_config: &[u8]) -> Result<Vm, Error> {
        self.load_with_vm_config(wasm, b"", plugin_config)
    }

    /// [`Host::load`] with a VM configuration too.
    pub fn load_with_vm_config(
        &self,
        wasm: &[u8],
        vm_config: &[u8],
        plugin_config: &[u8],
    ) -> Result<Vm, Error> {
        let module = module(wasm)?;
        let vm_index = self.inner.vms.borrow().len();
        let data = VmData {
            host: self.inner.shared.clone(),
            vm_index,
            vm_config: vm_config.to_vec(),
            plugin_config: plugin_config.to_vec(),
            effective: ROOT_ID,
            streams: HashMap::new(),
            properties: BTreeMap::new(),
            tick_period_ms: 0,
            call_response: None,
            in_configure: false,
        };
        let mut store = Store::new(engine(), data);
        let mut linker: Linker<VmData> = Linker::new(engine());
        crate::abi::add_to_linker(&mut linker, self.profile())
            .map_err(|e| Error::new(ErrorKind::Load, format!("{e:#}")))?;
        let instance = linker
            .instantiate(&mut store, &module)
            .map_err(|e| Error::new(ErrorKind::Load, format!("instantiating: {e:#}")))?;
        let vm = Vm {
            inner: Rc::new(VmInner {
                index: vm_index,
                host: self.clone_weakless(),
                store: RefCell::new(store),
                instance,
                failed: RefCell::new(None),
                next_context: Cell::new(ROOT_ID + 1),
            }),
        };
        if vm.has_export("_initialize") {
            vm.call::<(), ()>(ROOT_ID, "_initialize", ())?;
        } else if vm.has_export("_start") {
            vm.call::<(), ()>(ROOT_ID, "_start", ())?;
        }
        if !vm.has_export("proxy_abi_version_0_2_1") && !vm.has_export("proxy_abi_version_0_2_0") {
            return Err(Error::new(
                ErrorKind::Load,
                "module exports no supported ABI version (proxy_abi_version_0_2_1)",
            ));
        }
        vm.call_opt::<(i32, i32), ()>(ROOT_ID, "proxy_on_context_create", (ROOT_ID as i32, 0))?;
        let ok = vm
            .call_opt::<(i32, i32), i32>(
                ROOT_ID,
                "proxy_on_vm_start",
                (ROOT_ID as i32, vm_config.len() as i32),
            )?
            .unwrap_or(1);
        if ok == 0 {
            return Err(vm.error_with_logs(
                ErrorKind::VmStartRejected,
                "proxy_on_vm_start returned false",
            ));
        }
        vm.configure()?;
        self.inner.vms.borrow_mut().push(vm.clone());
        Ok(vm)
    }

    /// Loads `count` VMs of the same module and configuration (like Envoy's worker threads;
    /// `on_configure` runs in each).
    pub fn load_workers(
        &self,
        wasm: &[u8],
        plugin_config: &[u8],
        count: usize,
    ) -> Result<Vec<Vm>, Error> {
        (0..count).map(|_| self.load(wasm, plugin_config)).collect()
    }

    fn clone_weakless(&self) -> Rc<HostShared> {
        self.inner.shared.clone()
    }

    #[cfg(test)]
    pub(crate) fn shared_state(&self) -> Rc<HostShared> {
        self.inner.shared.clone()
    }

    /// All VMs loaded so far, in load order.
    pub fn vms(&self) -> Vec<Vm> {
        self.inner.vms.borrow().clone()
    }

    // --- logs -----------------------------------------------------------------------------

    /// Every captured `proxy_log` line, in order, from all VMs.
    pub fn logs(&self) -> Vec<LogEntry> {
        self.inner.shared.logs.borrow().clone()
    }

    /// Captured log messages at `level` or above.
    pub fn logs_at_least(&self, level: LogLevel) -> Vec<LogEntry> {
        self.logs()
            .into_iter()
            .filter(|l| l.level >= level)
            .collect()
    }

    /// Forgets captured logs (and stdout/stderr).
    pub fn clear_logs(&self) {
        self.inner.shared.logs.borrow_mut().clear();
        self.inner.shared.stdout.borrow_mut().clear();
        self.inner.shared.stderr.borrow_mut().clear();
    }

    /// The host's log level: lines below it are dropped, and `proxy_get_log_level` returns it.
    /// Default: `Trace` (capture everything).
    pub fn set_log_level(&self, level: LogLevel) {
        self.inner.shared.log_level.set(level);
    }

    /// What the guests wrote to stdout / stderr via WASI `fd_write`.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.inner.shared.stdout.borrow()).into_owned()
    }

    /// See [`Host::stdout`].
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.inner.shared.stderr.borrow()).into_owned()
    }

    // --- clock ----------------------------------------------------------------------------

    /// The test clock (what `proxy_get_current_time_nanoseconds` and WASI realtime return).
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.inner.shared.now_ns.get())
    }

    /// Moves the wall and monotonic clocks forward. Does not fire ticks or time out calls.
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let s = &self.inner.shared;
        s.now_ns.set(s.now_ns.get().saturating_add(ns));
        s.mono_ns.set(s.mono_ns.get().saturating_add(ns));
    }

    /// Sets the wall clock (may go backwards; the monotonic clock does not move).
    pub fn set_time(&self, t: SystemTime) {
        let ns = t
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.inner.shared.now_ns.set(ns);
    }

    /// Sets the wall clock in seconds since the Unix epoch.
    pub fn set_unix_time(&self, secs: u64) {
        self.set_time(UNIX_EPOCH + Duration::from_secs(secs));
    }

    /// Calls `proxy_on_tick` on every VM that set a tick period (in load order).
    pub fn tick(&self) -> Result<(), Error> {
        for vm in self.vms() {
            if vm.tick_period().is_some() {
                vm.tick()?;
            }
        }
        Ok(())
    }

    // --- shared data and metrics -------------------------------------------------------------

    /// Reads shared data: (value, cas).
    pub fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.inner.shared.shared_data.borrow().get(key).cloned()
    }

    /// Writes shared data as the host (bumps the cas).
    pub fn set_shared_data(&self, key: &str, value: &[u8]) {
        let s = &self.inner.shared;
        let mut map = s.shared_data.borrow_mut();
        let cas = match (s.profile, map.get(key)) {
            // Kong: one counter per key.
            (Profile::Kong, Some((_, c))) => c.wrapping_add(1).max(1),
            (Profile::Kong, None) => 1,
            _ => {
                let cas = s.next_cas.get();
                s.next_cas.set(cas.wrapping_add(1).max(1));
                cas
            }
        };
        map.insert(key.to_string(), (value.to_vec(), cas));
    }

    /// Current value of a metric by name.
    pub fn metric(&self, name: &str) -> Option<u64> {
        self.inner
            .shared
            .metrics
            .borrow()
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// All metrics: (name, kind, value).
    pub fn metrics(&self) -> Vec<(String, MetricKind, u64)> {
        self.inner
            .shared
            .metrics
            .borrow()
            .iter()
            .map(|m| (m.name.clone(), m.kind, m.value))
            .collect()
    }

    // --- HTTP calls -----------------------------------------------------------------------------

    /// Restricts the upstreams (Envoy cluster names / Kong `host:port`) `proxy_http_call`
    /// accepts; others get `BadArgument`. By default every upstream is accepted.
    pub fn set_known_upstreams(&self, upstreams: &[&str]) {
        *self.inner.shared.known_upstreams.borrow_mut() =
            upstreams.iter().map(|s| s.to_string()).collect();
    }

    /// Makes host function `name` (any Proxy-Wasm ABI function, e.g.
    /// `"proxy_replace_header_map_value"` or `"proxy_define_metric"`, or any WASI function but
    /// `proc_exit`, e.g. `"random_get"`) answer `status` instead of running, until
    /// [`Host::clear_faults`]. Panics on a name the harness does not provide, so a typo
    /// cannot make a fault test pass vacuously.
    pub fn inject_fault(&self, name: &str, status: i32) {
        assert!(
            crate::abi::is_host_function(name) && name != "proc_exit",
            "inject_fault: {name:?} is not a host function the harness can fail"
        );
        self.inner
            .shared
            .faults
            .borrow_mut()
            .insert(name.to_string(), status);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.inner.shared.faults.borrow_mut().clear();
    }

    /// HTTP calls dispatched and not yet answered, oldest first.
    pub fn pending_http_calls(&self) -> Vec<HttpCall> {
        self.inner.shared.pending_calls.borrow().clone()
    }

    /// Delivers a response to a pending call: `proxy_on_http_call_response(ctx, token,
    /// headers, body size, trailers)`; then a paused request that the guest resumed
    /// continues its lifecycle.
    pub fn answer_http_call(&self, token: u32, response: HttpCallResponse) -> Result<(), Error> {
        self.finish_call(token, response)
    }

    /// Fails a pending call (connection failure): the callback gets 0 headers, 0 body bytes.
    pub fn fail_http_call(&self, token: u32) -> Result<(), Error> {
        self.finish_call(token, HttpCallResponse::default())
    }

    /// Times out a pending call; like Envoy, this is delivered as a failure (no headers).
    pub fn time_out_http_call(&self, token: u32) -> Result<(), Error> {
        self.finish_call(token, HttpCallResponse::default())
    }

    /// Delivers `proxy_on_http_call_response(context_id, token, ...)` to `vm` for a call the
    /// host never recorded, as Kong's host does to a new instance after a trap (the answer
    /// to a call the trapped instance made).
    pub fn deliver_unknown_http_call_response(
        &self,
        vm: &Vm,
        context_id: u32,
        token: u32,
        response: HttpCallResponse,
    ) -> Result<(), Error> {
        let call = HttpCall {
            token,
            vm: vm.index(),
            context_id,
            upstream: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
            timeout: Duration::ZERO,
        };
        vm.deliver_http_call_response(&call, response)
    }

    fn finish_call(&self, token: u32, response: HttpCallResponse) -> Result<(), Error> {
        let call = {
            let mut pending = self.inner.shared.pending_calls.borrow_mut();
            let pos = pending
                .iter()
                .position(|c| c.token == token)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Usage,
                        format!("no pending HTTP call with token {token}"),
                    )
                })?;
            pending.remove(pos)
        };
        let vm = self
            .vms()
            .into_iter()
            .nth(call.vm)
            .ok_or_else(|| Error::new(ErrorKind::Usage, "HTTP call of an unknown VM"))?;
        vm.deliver_http_call_response(&call, response)
    }
}

// ---------------------------------------------------------------------------------------------
// Vm

struct VmInner {
    index: usize,
    host: Rc<HostShared>,
    store: RefCell<Store<VmData>>,
    instance: Instance,
    failed: RefCell<Option<String>>,
    next_context: Cell<u32>,
}

/// One VM (one instance of the module, with root context 1). Cheap to clone (a handle).
#[derive(Clone)]
pub struct Vm {
    inner: Rc<VmInner>,
}

impl Vm {
    /// This VM's index in its host (order of loading).
    pub fn index(&self) -> usize {
        self.inner.index
    }

    /// Sends a new plugin configuration to the live VM (`proxy_on_configure`).
    /// `Err(ConfigureRejected)` if the guest returns false; whatever configuration the guest
    /// keeps in force then is up to the guest.
    pub fn reconfigure(&self, plugin_config: &[u8]) -> Result<(), Error> {
        self.inner.store.borrow_mut().data_mut().plugin_config = plugin_config.to_vec();
        self.configure()
    }

    fn configure(&self) -> Result<(), Error> {
        let len = self.inner.store.borrow().data().plugin_config.len();
        self.inner.store.borrow_mut().data_mut().in_configure = true;
        let ok = self.call_opt::<(i32, i32), i32>(
            ROOT_ID,
            "proxy_on_configure",
            (ROOT_ID as i32, len as i32),
        );
        self.inner.store.borrow_mut().data_mut().in_configure = false;
        let ok = ok?.unwrap_or(1);
        if ok == 0 {
            return Err(self.error_with_logs(
                ErrorKind::ConfigureRejected,
                "proxy_on_configure returned false",
            ));
        }
        Ok(())
    }

    /// Sets a VM-wide property (dotted path, e.g. `"plugin_name"`); request properties
    /// ([`RequestSpec::property`]) take precedence.
    pub fn set_property(&self, path: &str, value: &[u8]) {
        self.inner
            .store
            .borrow_mut()
            .data_mut()
            .properties
            .insert(path.to_string(), value.to_vec());
    }

    /// The tick period the guest asked for, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        let ms = self.inner.store.borrow().data().tick_period_ms;
        (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
    }

    /// Calls `proxy_on_tick` on this VM's root context.
    pub fn tick(&self) -> Result<(), Error> {
        self.call_opt::<i32, ()>(ROOT_ID, "proxy_on_tick", ROOT_ID as i32)?;
        self.drive_all()
    }

    /// Sends a request (headers only, no body) and runs its lifecycle as far as it goes.
    ///
    /// # Panics
    /// If the guest traps (the panic message includes the guest's last log lines); use
    /// [`Vm::try_request`] to get the error instead.
    #[allow(clippy::panic)]
    pub fn request(&self, headers: &[(&str, &str)]) -> Request {
        match self.try_send(RequestSpec::new(headers)) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`Vm::request`] without panicking.
    pub fn try_request(&self, headers: &[(&str, &str)]) -> Result<Request, Error> {
        self.try_send(RequestSpec::new(headers))
    }

    /// Sends a request built with [`RequestSpec`].
    ///
    /// # Panics
    /// If the guest traps; see [`Vm::try_send`].
    #[allow(clippy::panic)]
    pub fn send(&self, spec: RequestSpec) -> Request {
        match self.try_send(spec) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Sends a request: creates an HTTP context, calls `proxy_on_request_headers`; if the
    /// request is let through, records the forwarded headers, calls
    /// `proxy_on_response_headers` with the scripted upstream response, then `proxy_on_done`,
    /// `proxy_on_log`, `proxy_on_delete`. A paused request stays open until the guest calls
    /// `proxy_continue_stream` (e.g. from an HTTP call response).
    pub fn try_send(&self, spec: RequestSpec) -> Result<Request, Error> {
        self.check_alive()?;
        let ctx = self.inner.next_context.get();
        self.inner.next_context.set(ctx + 1);
        let profile = self.inner.host.profile;
        let stream = self.new_stream(&spec, profile);
        let (count, eos) = match profile {
            Profile::Envoy => (stream.request_headers.len(), true),
            Profile::Kong => (stream.request_headers.len(), false),
            Profile::Apisix => (0, false),
        };
        {
            let mut store = self.inner.store.borrow_mut();
            store.data_mut().streams.insert(ctx, stream);
        }
        self.call_opt::<(i32, i32), ()>(
            ctx,
            "proxy_on_context_create",
            (ctx as i32, ROOT_ID as i32),
        )?;
        let action = self
            .call_opt::<(i32, i32, i32), i32>(
                ctx,
                "proxy_on_request_headers",
                (ctx as i32, count as i32, i32::from(eos)),
            )?
            .unwrap_or(0);
        self.with_stream(ctx, |s| {
            s.request_action = Some(if action == 0 {
                Action::Continue
            } else {
                Action::Pause
            });
            if action == 0 {
                s.continue_request = true;
            }
        });
        self.drive(ctx)?;
        Ok(Request {
            vm: self.clone(),
            ctx,
        })
    }

    fn new_stream(&self, spec: &RequestSpec, profile: Profile) -> Stream {
        let s = &self.inner.host;
        let mut method = "GET".to_string();
        let mut path = "/".to_string();
        let mut scheme = "http".to_string();
        let mut authority: Option<String> = None;
        let mut host_header: Option<String> = None;
        let mut regular: Vec<(String, String)> = Vec::new();
        for (k, v) in &spec.headers {
            match k.to_ascii_lowercase().as_str() {
                ":method" => method = v.clone(),
                ":path" => path = v.clone(),
                ":scheme" => scheme = v.clone(),
                ":authority" => authority = Some(v.clone()),
                "host" => {
                    host_header = Some(v.clone());
                    regular.push((k.clone(), v.clone()));
                }
                _ => regular.push((k.clone(), v.clone())),
            }
        }
        let request_id = format!("00000000-0000-4000-8000-{:012x}", s.next_request_id.get());
        s.next_request_id.set(s.next_request_id.get() + 1);
        let headers = match profile {
            Profile::Envoy => {
                let auth = host_header
                    .clone()
                    .or_else(|| authority.clone())
                    .unwrap_or_else(|| "localhost".to_string());
                let mut h = vec![
                    (":authority".to_string(), auth),
                    (":path".to_string(), path.clone()),
                    (":method".to_string(), method.clone()),
                    (":scheme".to_string(), scheme.clone()),
                ];
                for (k, v) in &regular {
                    let k = k.to_ascii_lowercase();
                    if k != "host" {
                        h.push((k, v.clone()));
                    }
                }
                if !h.iter().any(|(k, _)| k == "x-forwarded-proto") {
                    h.push(("x-forwarded-proto".to_string(), scheme.clone()));
                }
                if !h.iter().any(|(k, _)| k == "x-request-id") {
                    h.push(("x-request-id".to_string(), request_id));
                }
                h
            }
            Profile::Kong => {
                let mut h = regular.clone();
                if host_header.is_none() {
                    if let Some(a) = &authority {
                        h.insert(0, ("Host".to_string(), a.clone()));
                    }
                }
                h
            }
            Profile::Apisix => {
                let mut h: Vec<(String, String)> = regular
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect();
                if host_header.is_none() {
                    if let Some(a) = &authority {
                        h.insert(0, ("host".to_string(), a.clone()));
                    }
                }
                h.push((":path".to_string(), path.clone()));
                h.push((":method".to_string(), method.clone()));
                h.push((":scheme".to_string(), scheme.clone()));
                h
            }
        };
        let kong_authority = spec
            .kong_authority
            .clone()
            .unwrap_or_else(|| "localhost:8000".to_string());
        let authority = match profile {
            Profile::Kong => kong_authority,
            _ => host_header
                .or(authority)
                .unwrap_or_else(|| "localhost".to_string()),
        };
        Stream {
            request_headers: headers,
            request_trailers: Vec::new(),
            response_headers: Vec::new(),
            response_trailers: Vec::new(),
            request_body: Vec::new(),
            response_body: Vec::new(),
            properties: spec.properties.clone(),
            method,
            path,
            scheme,
            authority,
            start_ns: s.now_ns.get(),
            phase: Phase::Request,
            request_action: None,
            response_action: None,
            continue_request: false,
            continue_response: false,
            forwarded: None,
            local_response: None,
            upstream_status: spec.upstream_status,
            upstream_headers: spec.upstream_headers.clone(),
            response_sent: false,
        }
    }

    fn with_stream<R>(&self, ctx: u32, f: impl FnOnce(&mut Stream) -> R) -> Option<R> {
        let mut store = self.inner.store.borrow_mut();
        store.data_mut().streams.get_mut(&ctx).map(f)
    }

    fn drive_all(&self) -> Result<(), Error> {
        let ids: Vec<u32> = {
            let store = self.inner.store.borrow();
            let mut ids: Vec<u32> = store
                .data()
                .streams
                .iter()
                .filter(|(_, s)| s.phase != Phase::Done)
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            ids
        };
        for id in ids {
            self.drive(id)?;
        }
        Ok(())
    }

    /// Moves a stream's lifecycle forward as far as its state allows.
    fn drive(&self, ctx: u32) -> Result<(), Error> {
        loop {
            let Some((phase, local, cont_req, cont_resp)) = self.with_stream(ctx, |s| {
                (
                    s.phase,
                    s.local_response.is_some(),
                    s.continue_request,
                    s.continue_response,
                )
            }) else {
                return Ok(());
            };
            match phase {
                Phase::Done => return Ok(()),
                _ if local => return self.finish(ctx),
                Phase::Request if cont_req => {
                    let profile = self.inner.host.profile;
                    let (count, eos) = self
                        .with_stream(ctx, |s| {
                            s.forwarded = Some(s.request_headers.clone());
                            s.phase = Phase::Response;
                            let mut h = Vec::new();
                            if profile != Profile::Kong {
                                h.push((":status".to_string(), s.upstream_status.to_string()));
                            }
                            h.extend(s.upstream_headers.iter().cloned());
                            s.response_headers = h;
                            (s.response_headers.len(), profile == Profile::Envoy)
                        })
                        .unwrap_or((0, true));
                    let action = self
                        .call_opt::<(i32, i32, i32), i32>(
                            ctx,
                            "proxy_on_response_headers",
                            (ctx as i32, count as i32, i32::from(eos)),
                        )?
                        .unwrap_or(0);
                    self.with_stream(ctx, |s| {
                        s.response_action = Some(if action == 0 {
                            Action::Continue
                        } else {
                            Action::Pause
                        });
                        if action == 0 {
                            s.continue_response = true;
                        }
                    });
                }
                Phase::Response if cont_resp => {
                    self.with_stream(ctx, |s| s.response_sent = true);
                    return self.finish(ctx);
                }
                _ => return Ok(()),
            }
        }
    }

    fn finish(&self, ctx: u32) -> Result<(), Error> {
        self.with_stream(ctx, |s| s.phase = Phase::Done);
        self.call_opt::<i32, i32>(ctx, "proxy_on_done", ctx as i32)?;
        self.call_opt::<i32, ()>(ctx, "proxy_on_log", ctx as i32)?;
        self.call_opt::<i32, ()>(ctx, "proxy_on_delete", ctx as i32)?;
        Ok(())
    }

    fn deliver_http_call_response(
        &self,
        call: &HttpCall,
        response: HttpCallResponse,
    ) -> Result<(), Error> {
        let (nh, nb, nt) = (
            response.headers.len(),
            response.body.len(),
            response.trailers.len(),
        );
        self.inner.store.borrow_mut().data_mut().call_response = Some(response);
        let r = self.call_opt::<(i32, i32, i32, i32, i32), ()>(
            call.context_id,
            "proxy_on_http_call_response",
            (
                call.context_id as i32,
                call.token as i32,
                nh as i32,
                nb as i32,
                nt as i32,
            ),
        );
        self.inner.store.borrow_mut().data_mut().call_response = None;
        r?;
        self.drive_all()
    }

    // --- calling the guest ------------------------------------------------------------------

    fn has_export(&self, name: &str) -> bool {
        let mut store = self.inner.store.borrow_mut();
        self.inner.instance.get_func(&mut *store, name).is_some()
    }

    fn check_alive(&self) -> Result<(), Error> {
        if let Some(msg) = self.inner.failed.borrow().as_ref() {
            return Err(self.error_with_logs(
                ErrorKind::VmFailed,
                format!("the VM trapped earlier and is unusable: {msg}"),
            ));
        }
        Ok(())
    }

    /// Calls an export that must exist.
    fn call<P: WasmParams, R: WasmResults>(
        &self,
        ctx: u32,
        name: &str,
        params: P,
    ) -> Result<R, Error> {
        match self.call_opt(ctx, name, params)? {
            Some(r) => Ok(r),
            None => Err(Error::new(
                ErrorKind::Load,
                format!("module does not export {name}"),
            )),
        }
    }

    /// Calls an export if the module has it, with context `ctx` made effective.
    fn call_opt<P: WasmParams, R: WasmResults>(
        &self,
        ctx: u32,
        name: &str,
        params: P,
    ) -> Result<Option<R>, Error> {
        self.check_alive()?;
        let result = {
            let mut store = self.inner.store.borrow_mut();
            store.data_mut().effective = ctx;
            let Some(func) = self.inner.instance.get_func(&mut *store, name) else {
                return Ok(None);
            };
            let typed = func.typed::<P, R>(&*store).map_err(|e| {
                Error::new(
                    ErrorKind::Load,
                    format!("export {name} has the wrong type: {e:#}"),
                )
            })?;
            typed.call(&mut *store, params)
        };
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                let msg = format!("{name} trapped: {e:#}");
                *self.inner.failed.borrow_mut() = Some(msg.clone());
                Err(self.error_with_logs(ErrorKind::Trap, msg))
            }
        }
    }

    fn error_with_logs(&self, kind: ErrorKind, msg: impl Into<String>) -> Error {
        let logs: Vec<LogEntry> = self
            .inner
            .host
            .logs
            .borrow()
            .iter()
            .filter(|l| l.vm == self.inner.index)
            .cloned()
            .collect();
        let skip = logs.len().saturating_sub(ERROR_LOG_LINES);
        Error {
            kind,
            message: msg.into(),
            logs: logs.into_iter().skip(skip).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

/// A request to send: headers plus what the test scripts around it.
#[derive(Clone, Debug)]
pub struct RequestSpec {
    headers: Vec<(String, String)>,
    properties: BTreeMap<String, Vec<u8>>,
    upstream_status: u16,
    upstream_headers: Vec<(String, String)>,
    kong_authority: Option<String>,
}

impl RequestSpec {
    /// A request with these headers as the client sent them (pseudo-headers `:method`,
    /// `:path`, `:scheme`, `:authority` describe the request line; each profile turns them into
    /// what that proxy shows the filter).
    pub fn new(headers: &[(&str, &str)]) -> Self {
        RequestSpec {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            properties: BTreeMap::new(),
            upstream_status: 200,
            upstream_headers: vec![("content-type".to_string(), "application/json".to_string())],
            kong_authority: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A request-scoped property (dotted path, e.g. `"xds.route_name"`), overriding VM
    /// properties and profile defaults.
    pub fn property(mut self, path: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties.insert(path.to_string(), value.into());
        self
    }

    /// The upstream's response (default: 200 with `content-type: application/json`).
    pub fn upstream_response(mut self, status: u16, headers: &[(&str, &str)]) -> Self {
        self.upstream_status = status;
        self.upstream_headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }

    /// Kong only: the `:authority` value the host reports (default `localhost:8000`).
    pub fn kong_authority(mut self, authority: &str) -> Self {
        self.kong_authority = Some(authority.to_string());
        self
    }
}

/// A handle on a sent request; its accessors show the current state (a paused request
/// changes when the test answers an HTTP call).
#[derive(Clone)]
pub struct Request {
    vm: Vm,
    ctx: u32,
}

impl Request {
    fn get<R>(&self, f: impl FnOnce(&Stream) -> R) -> Option<R> {
        let store = self.vm.inner.store.borrow();
        store.data().streams.get(&self.ctx).map(f)
    }

    /// The HTTP context id.
    pub fn context_id(&self) -> u32 {
        self.ctx
    }

    /// The headers as forwarded upstream, or `None` if the request was not (yet) let
    /// through — it was answered locally or is still paused.
    pub fn forwarded_headers(&self) -> Option<Vec<(String, String)>> {
        self.get(|s| {
            if s.local_response.is_some() {
                None
            } else {
                s.forwarded.clone()
            }
        })
        .flatten()
    }

    /// First forwarded header with this name (case-insensitive).
    pub fn forwarded_header(&self, name: &str) -> Option<String> {
        self.forwarded_headers()
            .and_then(|h| find_header(&h, name).map(str::to_string))
    }

    /// All forwarded values of this header (case-insensitive).
    pub fn forwarded_header_all(&self, name: &str) -> Vec<String> {
        self.forwarded_headers()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    /// Whether the request went upstream.
    pub fn is_forwarded(&self) -> bool {
        self.forwarded_headers().is_some()
    }

    /// The local response the filter sent, if any.
    pub fn local_response(&self) -> Option<LocalResponse> {
        self.get(|s| s.local_response.clone()).flatten()
    }

    /// What `proxy_on_request_headers` returned.
    pub fn action(&self) -> Action {
        self.get(|s| s.request_action)
            .flatten()
            .unwrap_or(Action::Continue)
    }

    /// What `proxy_on_response_headers` returned, if it ran.
    pub fn response_action(&self) -> Option<Action> {
        self.get(|s| s.response_action).flatten()
    }

    /// True while the request waits for the guest to resume it.
    pub fn is_paused(&self) -> bool {
        self.get(|s| s.phase != Phase::Done).unwrap_or(false)
    }

    /// The upstream response headers as the filter left them (sent to the client), when the
    /// request was forwarded and the response let through.
    pub fn response_headers(&self) -> Option<Vec<(String, String)>> {
        self.get(|s| s.response_sent.then(|| s.response_headers.clone()))
            .flatten()
    }

    /// Status the client got: the local response's, or the upstream's.
    pub fn status(&self) -> Option<u32> {
        if let Some(l) = self.local_response() {
            return Some(l.status);
        }
        self.get(|s| s.response_sent.then_some(u32::from(s.upstream_status)))
            .flatten()
    }
}
