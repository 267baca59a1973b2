//! (placeholder)
pub mod event;
pub use event::{AttemptEvent, AttemptOutcome, AttemptSummary, InferenceEvent, Validation};
