//! The probe's candidates timed natively: `native-probe [ROUNDS] [BATCH]`, interleaved rounds,
//! medians in µs per operation (one line per candidate, tab-separated).
use std::time::Instant;

fn main() {
    let args: Vec<u32> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let rounds = args.first().copied().unwrap_or(11);
    let batch = args.get(1).copied().unwrap_or(100);
    let filter = std::env::var("PROBE_CASES").unwrap_or_default();
    let cases = v8_probe::select(v8_probe::cases(batch), &filter);
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for c in &cases {
        for _ in 0..c.batch {
            assert!(c.run());
        }
    }
    for _ in 0..rounds {
        for (c, t) in cases.iter().zip(times.iter_mut()) {
            let start = Instant::now();
            for _ in 0..c.batch {
                assert!(c.run());
            }
            t.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(c.batch));
        }
    }
    for (c, t) in cases.iter().zip(times.iter_mut()) {
        println!("native\t{}\t{:.1}", c.name, v8_probe::median(t));
    }
}
