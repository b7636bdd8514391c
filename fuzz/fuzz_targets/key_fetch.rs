//! Fetched keys: the answers to key fetches and the fetch schedule.
//!
//! The first byte picks what the rest is:
//! - 0..=2: a key set response body (with a JSON content type and status 200), parsed for
//!   three pinned-algorithm lists (`fetch::parse_jwks`, `jwks::import_fetched_jwks`);
//! - 3: a discovery document body (`fetch::parse_discovery`);
//! - 4: a response head and body: a first line `<status> <content-type>`, then the body;
//! - 5: a shared schedule state as stored in shared data (`FetchState`, serde JSON);
//! - 6..: events driving the schedule of two workers, one byte each.
//!
//! Never panics. An accepted key set has 1..=100 usable keys with unique `kid`s (present
//! when there are several); an accepted discovery names the expected issuer and an http(s)
//! key set URL; the schedule keeps its invariants (below).
#![no_main]

use libfuzzer_sys::fuzz_target;
use token_exchange_filter::core::fetch::{
    parse_discovery, parse_jwks, CallResponse, FetchFailure, FetchState, Health, Plan, Schedule,
    Trigger,
};
use token_exchange_filter::core::jwks::{import_fetched_jwks, MAX_FETCHED_KEYS};
use token_exchange_filter::core::keys::Alg;
use token_exchange_filter::core::url::HttpUrl;
use token_exchange_filter::core::{Entropy, EntropyError};

const PINNED: [&[Alg]; 3] = [&Alg::VERIFY, &[Alg::EdDSA], &[Alg::RS256, Alg::ES256]];
const ISSUER: &str = "https://idp.fuzz/realm";

struct Bytes(u8);
impl Entropy for Bytes {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        self.0 = self.0.wrapping_mul(31).wrapping_add(7);
        buf.fill(self.0);
        Ok(())
    }
}

fn json_head() -> Vec<(String, String)> {
    vec![
        (":status".into(), "200".into()),
        ("content-type".into(), "application/json".into()),
    ]
}

fn check_keys(body: &[u8], headers: &[(String, String)]) {
    for pinned in PINNED {
        let response = CallResponse {
            headers,
            body,
            body_size: body.len(),
        };
        match parse_jwks(&response, 1 << 20, pinned) {
            Ok(set) => {
                assert!(!set.keys.is_empty() && set.keys.len() <= MAX_FETCHED_KEYS);
                let mut kids: Vec<Option<&str>> = set.keys.iter().map(|k| k.kid()).collect();
                if kids.len() > 1 {
                    assert!(kids.iter().all(Option::is_some), "kid-less key among several");
                }
                let n = kids.len();
                kids.sort_unstable();
                kids.dedup();
                assert_eq!(kids.len(), n, "duplicate usable kid");
                for key in &set.keys {
                    assert!(Alg::VERIFY.iter().any(|a| key.accepts(*a) && pinned.contains(a)));
                    assert!(!key.verify(Alg::EdDSA, b"e30.e30", &[0u8; 64]));
                }
            }
            Err(e) => assert!(!e.to_string().is_empty() && !e.kind().is_empty()),
        }
    }
    // The importer alone, on the body whatever the head said.
    if let Ok(set) = import_fetched_jwks(body, &Alg::VERIFY) {
        assert!(!set.keys.is_empty());
    }
}

fn check_discovery(body: &[u8], headers: &[(String, String)]) {
    let response = CallResponse {
        headers,
        body,
        body_size: body.len(),
    };
    match parse_discovery(&response, 1 << 16, ISSUER) {
        Ok(uri) => {
            assert!(HttpUrl::parse(&uri).is_ok());
            let text = String::from_utf8_lossy(body);
            assert!(text.contains("issuer"));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fn check_schedule(events: &[u8]) {
    let s = Schedule {
        refresh_ms: 60_000,
        max_stale_ms: 600_000,
        timeout_ms: 2_000,
        min_refetch_ms: 30_000,
        discovery: events.first().is_some_and(|b| b & 1 == 1),
    };
    let mut state = FetchState::default();
    let mut now: u64 = 1_767_225_600_000;
    let mut entropy = Bytes(1);
    for &e in events {
        let me = u64::from(e & 1) + 1;
        let before = state.clone();
        match e >> 1 {
            // Time passes.
            0..=15 => now += u64::from(e) * 1_000,
            16..=31 => now += u64::from(e) * 97,
            // A worker looks at the schedule.
            32..=79 => {
                let trigger = match e % 3 {
                    0 => Trigger::Scheduled,
                    1 => Trigger::UnknownKid,
                    _ => Trigger::NoKeys,
                };
                match s.plan(&state, trigger, now, me) {
                    Plan::Claim { state: claimed, .. } => {
                        if let Some(l) = before.lease {
                            assert!(now >= l.until_ms, "claimed over a live lease");
                        }
                        if trigger == Trigger::UnknownKid {
                            assert!(now >= before.attempted_ms + s.min_refetch_ms, "refetch rate limit");
                            assert!(before.failures == 0 || now >= before.due_ms, "refetch in back-off");
                        }
                        if trigger != Trigger::UnknownKid {
                            assert!(now >= before.due_ms);
                        }
                        assert_eq!(claimed.lease.map(|l| l.holder), Some(me));
                        assert!(claimed.lease.is_some_and(|l| l.until_ms > now));
                        state = claimed;
                    }
                    Plan::InFlight { until_ms } => assert!(until_ms > now),
                    Plan::Refused | Plan::Idle => {}
                }
            }
            // An attempt ends.
            80..=103 => {
                let result = match e % 4 {
                    0 => Ok(true),
                    1 => Ok(false),
                    2 => Err(FetchFailure::Status(503)),
                    _ => Err(FetchFailure::TimedOut),
                };
                if let Some(a) = s.fetched(&state, now, me, result.clone(), &mut entropy) {
                    assert_eq!(before.lease.map(|l| l.holder), Some(me));
                    assert!(a.state.lease.is_none());
                    assert!(a.state.version >= before.version);
                    match result {
                        Ok(_) => {
                            assert_eq!(a.state.failures, 0);
                            assert_eq!(a.state.health, Health::Ok);
                            assert_eq!(a.state.due_ms, now + s.refresh_ms);
                            assert!(a.state.version >= 1 && s.fresh(&a.state, now));
                        }
                        Err(_) => {
                            assert_eq!(a.state.failures, before.failures + 1);
                            assert!(a.state.due_ms > now && a.state.due_ms <= now + s.refresh_ms);
                            assert!(matches!(a.state.health, Health::Failing { .. } | Health::Unavailable { .. }));
                        }
                    }
                    if let Some(c) = &a.change {
                        assert_ne!(c.from, c.to);
                    }
                    state = a.state;
                } else {
                    assert_ne!(before.lease.map(|l| l.holder), Some(me));
                }
            }
            104..=115 => {
                let result = if e % 2 == 0 {
                    Ok("https://idp.fuzz/certs".to_owned())
                } else {
                    Err(FetchFailure::IssuerMismatch)
                };
                if let Some(a) = s.discovered(&state, now, me, result, &mut entropy) {
                    state = a.state;
                }
            }
            116..=121 => {
                if let Some((next, change)) = s.observe(&state, now) {
                    assert!(matches!(next.health, Health::Unavailable { .. }));
                    assert!(change.is_warning());
                    state = next;
                }
            }
            _ => {
                if let Some(next) = s.abandoned(&state, me) {
                    assert!(next.lease.is_none());
                    state = next;
                }
            }
        }
        assert!(state.version >= before.version, "version went back");
        if s.fresh(&state, now) {
            assert!(state.version > 0);
        }
        // What is shared must read back as written.
        let text = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<FetchState>(&text).unwrap(), state);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0..=2 => check_keys(rest, &json_head()),
        3 => check_discovery(rest, &json_head()),
        4 => {
            let split = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            let (head, body) = rest.split_at(split);
            let head = String::from_utf8_lossy(head);
            let (status, ctype) = head.split_once(' ').unwrap_or((&head, ""));
            let headers = vec![
                (":status".to_owned(), status.to_owned()),
                ("Content-Type".to_owned(), ctype.to_owned()),
            ];
            let body = body.get(1..).unwrap_or_default();
            check_keys(body, &headers);
            check_discovery(body, &headers);
        }
        5 => {
            if let Ok(state) = serde_json::from_slice::<FetchState>(rest) {
                let text = serde_json::to_string(&state).unwrap();
                assert_eq!(serde_json::from_str::<FetchState>(&text).unwrap(), state);
            }
        }
        _ => check_schedule(rest),
    }
});
