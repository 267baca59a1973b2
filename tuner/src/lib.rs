//! Flywheel's tuner: turns captured traffic into reinforcement fine-tuning.
//!
//! - [`dataset`]: JSONL import/export in the OpenAI / Bedrock RFT shape, PII filters, splits.
//! - [`grader`]: reward functions in the JSON shapes of OpenAI's graders.
//! - [`tasks`]: the verifiable task suite, generated from a seed.
//! - [`rft`]: the RFT training loop (`flywheel-tuner train`) on [`flywheel_trainer`].
//! - [`eval`]: offline evaluation of gateway configurations: quality, cost, quality per dollar.
//! - [`online`]: online grading: a grader scores a sampled fraction of a route's live
//!   answers, written as feedback (what the canary controller counts as quality).
//! - [`simulate`]: simulated users: open-loop traffic with graded thumbs and re-asks.
//! - [`service`]: the tuner service's jobs: their configuration and triggers.

pub mod dataset;
pub mod eval;
pub mod grader;
pub mod item;
pub mod online;
pub mod rft;
pub mod service;
pub mod simulate;
pub mod tasks;

pub use item::{Item, Message, Sample};
