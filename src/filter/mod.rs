//! The Proxy-Wasm glue: configuration in `root`, the request path in `http`, counters in
//! `metrics`, host calls that cannot panic in `abi`. Only built for wasm32: the policy core
//! is what native tests cover.

mod abi;
mod http;
mod metrics;
mod root;

proxy_wasm::main! {{
    // A panic aborts the VM; at least say why, through a log call that cannot itself panic
    // (the SDK's hook unwraps its log call).
    std::panic::set_hook(Box::new(|info| {
        abi::log(abi::Level::Critical, &format!("token-exchange-filter panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::ExchangeRoot::default())
    });
}}
