//! Signals about inferences that the gateway keeps or infers itself: who
//! owns each recent inference and episode (so that `POST /v1/feedback` can
//! be authorised before ClickHouse has them), and the implicit feedback read
//! from how clients behave (regenerations, re-asks, first-try validity).
//!
//! Not to be confused with the `flywheel_feedback` crate, which stores the
//! events and the feedback.

mod implicit;
mod recent;

pub use implicit::{Observed, Signals};
pub use recent::{index_unshipped, Owner, RecentInferences};
