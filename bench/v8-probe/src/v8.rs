//! The probe inside a Proxy-Wasm host: a singleton service whose root context runs one round
//! of every candidate per tick (interleaved), timed with the host clock, and logs the
//! medians after the last round. Configuration: "ROUNDS BATCH [FILTER]" (default "21 200"; FILTER: comma-separated
//! words, a case runs when its name contains one).
use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::LogLevel;
use std::time::Duration;

use crate::{cases, median, select, Case};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Probe::default()) });
}}

#[derive(Default)]
struct Probe {
    rounds: u32,
    done: u32,
    cases: Vec<Case>,
    times: Vec<Vec<f64>>,
}

impl Context for Probe {}

fn now_us() -> f64 {
    proxy_wasm::hostcalls::get_current_time()
        .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64() * 1e6)
        .unwrap_or(0.0)
}

impl RootContext for Probe {
    fn on_configure(&mut self, _: usize) -> bool {
        let conf = self
            .get_plugin_configuration()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let mut it = conf.split_whitespace().filter_map(|x| x.parse::<u32>().ok());
        self.rounds = it.next().unwrap_or(21);
        let batch = it.next().unwrap_or(200);
        let filter = conf.split_whitespace().nth(2).unwrap_or("").to_string();
        let start = now_us();
        self.cases = select(cases(batch), &filter);
        self.times = vec![Vec::new(); self.cases.len()];
        log::info!("probe: {} cases, vectors ready in {:.0} ms", self.cases.len(), (now_us() - start) / 1e3);
        // Warm-up: one batch of each (the first calls cost up to 1.3x the steady state).
        for c in &self.cases {
            for _ in 0..c.batch {
                c.run();
            }
        }
        self.set_tick_period(Duration::from_millis(10));
        true
    }

    fn on_tick(&mut self) {
        if self.done >= self.rounds {
            return;
        }
        for (c, t) in self.cases.iter().zip(self.times.iter_mut()) {
            let start = now_us();
            let mut ok = true;
            for _ in 0..c.batch {
                ok &= c.run();
            }
            let us = (now_us() - start) / f64::from(c.batch);
            if !ok {
                log::error!("probe: {} gave a wrong answer", c.name);
            }
            t.push(us);
        }
        self.done += 1;
        if self.done == self.rounds {
            for (c, t) in self.cases.iter().zip(self.times.iter_mut()) {
                log::info!("probe-result\tv8\t{}\t{:.1}", c.name, median(t));
            }
            log::info!("probe-done");
            self.set_tick_period(Duration::from_secs(0));
        }
    }
}
