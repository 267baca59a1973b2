//! Test and benchmark tooling for the Flywheel gateway.
//!
//! Two binaries share this library:
//! - `flywheel-mock`: a fast, fault-injecting stand-in for an OpenAI-compatible
//!   provider, so tests and benchmarks never need a paid external API.
//! - `flywheel-load`: an open-loop, constant-rate load generator whose latency
//!   numbers are safe from coordinated omission.

pub mod duration;
pub mod load;
pub mod mock;
pub mod tokenize;
