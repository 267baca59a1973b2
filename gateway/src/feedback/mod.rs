//! Feedback: the metrics clients may report (`POST /v1/feedback`), who may
//! report on what, and the implicit signals the gateway infers itself.

mod recent;
mod signals;

pub use recent::{index_unshipped, Owner, RecentInferences};
pub use signals::{Observed, Signals};
