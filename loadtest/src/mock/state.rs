//! Shared mutable state of the mock: request counters per scenario (for
//! fail-first, fault budgets and `/mock/stats`) and the deterministic RNG.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::knobs::Knobs;

#[derive(Default)]
struct Scenario {
    requests: u64,
    streaming: u64,
    last_body: Option<Bytes>,
}

pub struct MockState {
    pub defaults: Knobs,
    seed: u64,
    total: AtomicU64,
    ids: AtomicU64,
    draws: AtomicU64,
    // A plain mutex: it is held for a hash lookup and two increments, far
    // shorter than any contention that would matter on a few cores.
    scenarios: Mutex<HashMap<String, Scenario>>,
}

/// SplitMix64: tiny, fast, and good enough to decide injected faults.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl MockState {
    pub fn new(defaults: Knobs, seed: u64) -> Self {
        Self {
            defaults,
            seed,
            total: AtomicU64::new(0),
            ids: AtomicU64::new(0),
            draws: AtomicU64::new(0),
            scenarios: Mutex::new(HashMap::new()),
        }
    }

    fn scenarios(&self) -> std::sync::MutexGuard<'_, HashMap<String, Scenario>> {
        // A panic elsewhere must not take the mock down with poisoned stats.
        self.scenarios.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a request in its scenario and returns its 0-based index there.
    /// `body` (if any) becomes the scenario's `last_body`.
    pub fn admit(&self, scenario: &str, body: Option<&Bytes>) -> u64 {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut map = self.scenarios();
        let entry = match map.get_mut(scenario) {
            Some(e) => e,
            None => map.entry(scenario.to_string()).or_default(),
        };
        entry.requests += 1;
        if let Some(b) = body {
            entry.last_body = Some(b.clone());
        }
        entry.requests - 1
    }

    /// Counts a streaming response in its scenario; returns its 0-based index
    /// among the scenario's streams (the fault budget is spent in this order).
    pub fn admit_stream(&self, scenario: &str) -> u64 {
        let mut map = self.scenarios();
        let entry = match map.get_mut(scenario) {
            Some(e) => e,
            None => map.entry(scenario.to_string()).or_default(),
        };
        entry.streaming += 1;
        entry.streaming - 1
    }

    /// True with probability `p`, from a seeded sequence so runs are repeatable.
    pub fn chance(&self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        let x = splitmix64(self.seed ^ splitmix64(n));
        ((x >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    pub fn reset(&self) {
        let mut map = self.scenarios();
        map.clear();
        self.total.store(0, Ordering::Relaxed);
        self.ids.store(0, Ordering::Relaxed);
        self.draws.store(0, Ordering::Relaxed);
    }

    /// `{"requests": N, "scenarios": {KEY: {"requests", "streaming_requests", "last_body"}}}`.
    pub fn stats(&self) -> Value {
        let map = self.scenarios();
        let mut scenarios = Map::with_capacity(map.len());
        for (key, s) in map.iter() {
            let last_body = match &s.last_body {
                None => Value::Null,
                Some(b) => serde_json::from_slice(b)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(b).into_owned())),
            };
            scenarios.insert(
                key.clone(),
                json!({
                    "requests": s.requests,
                    "streaming_requests": s.streaming,
                    "last_body": last_body,
                }),
            );
        }
        json!({
            "requests": self.total.load(Ordering::Relaxed),
            "scenarios": scenarios,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chance_is_seeded_and_roughly_calibrated() {
        let a = MockState::new(Knobs::default(), 7);
        let b = MockState::new(Knobs::default(), 7);
        let xs: Vec<bool> = (0..1000).map(|_| a.chance(0.3)).collect();
        let ys: Vec<bool> = (0..1000).map(|_| b.chance(0.3)).collect();
        assert_eq!(xs, ys);
        let hits = xs.iter().filter(|x| **x).count();
        assert!((200..400).contains(&hits), "{hits}");
    }

    #[test]
    fn scenario_counters() {
        let s = MockState::new(Knobs::default(), 0);
        assert_eq!(s.admit("a", None), 0);
        assert_eq!(s.admit("a", Some(&Bytes::from_static(b"{\"x\":1}"))), 1);
        assert_eq!(s.admit("b", None), 0);
        assert_eq!(s.admit_stream("a"), 0);
        let st = s.stats();
        assert_eq!(st["requests"], 3);
        assert_eq!(st["scenarios"]["a"]["requests"], 2);
        assert_eq!(st["scenarios"]["a"]["last_body"]["x"], 1);
        s.reset();
        assert_eq!(s.stats()["requests"], 0);
    }
}
