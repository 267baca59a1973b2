//! End-to-end tests: the real gateway in front of the mock provider, both as
//! processes on loopback. One test binary, one module per concern.

// A test harness: a failed setup step should fail the test loudly, so it
// may unwrap and sleep (clippy.toml only exempts #[test] functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod ab_split;
mod api;
mod canary;
mod canary_actions;
mod capture;
mod dashboards;
mod engine;
mod errors;
mod failover;
mod feedback;
mod flywheel_loop;
mod grafana;
mod hardening;
mod openai_sdk;
mod pin;
mod pool;
mod redis;
mod reliability;
mod shutdown;
mod simulate;
mod tenants;
mod tls;
mod trainer;
mod tuner;
mod validation;
