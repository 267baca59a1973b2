//! `flywheel-mock`: an OpenAI-compatible provider with deterministic fault
//! injection. It stands in for paid external providers in tests, and for a
//! zero-cost upstream when benchmarking the gateway's own overhead, so the
//! request path avoids logging and needless allocation.

pub mod cli;
pub mod handlers;
pub mod knobs;
pub mod openai;
pub mod server;
#[cfg(test)]
mod shape_tests;
pub mod sse;
pub mod state;
