//! `flywheel-load`: open-loop constant-rate load generation.
//!
//! Open loop means requests go out on a fixed schedule whatever the server
//! does, and latency is measured from each request's *scheduled* time, so a
//! stalled server shows up in the percentiles instead of silently lowering
//! the offered load (coordinated omission).

pub mod cli;
pub mod report;
pub mod runner;
pub mod stream_check;
