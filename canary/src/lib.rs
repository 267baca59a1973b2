//! The statistics core of Flywheel's canary controller: pure, seeded,
//! unit-tested decision code with no I/O. The controller (elsewhere) reads
//! per-arm aggregates from the analytics store, calls [`decide`] at every
//! look, records the returned [`Decision`] with its [`Evidence`] as a
//! row, and moves the traffic weights as the [`Ramp`] says.
//!
//! ```text
//! requests ─▶ summary::ArmSummary (n, Σq, Σq², Σc, Σc², Σqc, errors, …)
//!                   │
//!                   ▼
//! decision::decide ─┬─ ratio:      quality per dollar, delta-method variance
//!                   ├─ sequential: always-valid one-sided bounds (mSPRT | CS)
//!                   ├─ rates:      error / fallback rate increase
//!                   ├─ ranks:      Mann-Whitney U, Hodges-Lehmann (latency)
//!                   └─ srm:        sample-ratio mismatch
//!                   ▼
//!           Decision: Promote | Hold | Rollback | KeepIncumbent (+ Evidence)
//!                   ▼
//!           ramp::Ramp: shadow → 1 % → 5 % → 25 % → 50 % → 100 %
//! ```
//!
//! * [`summary`]: streamable per-arm sufficient statistics; a request
//!   without a quality score is "no data", never a zero.
//! * [`ratio`]: quality per dollar `R = q̄/c̄` over the graded requests and
//!   the relative advantage `R_C/R_I − 1`, delta-method variances.
//! * [`sequential`]: always-valid one-sided lower bounds and p-values for
//!   a difference: the one-sided mSPRT (default) and Waudby-Smith's
//!   asymptotic confidence sequence, sharing one `N*` tuning.
//! * [`rates`]: the same bounds on a difference of two Bernoulli rates.
//! * [`ranks`]: Mann-Whitney U and Hodges-Lehmann shift with its
//!   distribution-free interval.
//! * [`srm`]: chi-square sample-ratio check at p < 0.001.
//! * [`decision`]: the rules (promote only when quality per dollar clears
//!   its margin **and** quality is non-inferior, both always valid).
//! * [`ramp`]: the steps as a state machine.
//! * [`dist`]: normal CDF/quantile and chi-square tail, written out.
//! * [`sim`]: seeded traffic simulations for the A/A tests and
//!   `examples/aa_sim.rs`.
//!
//! # Error rates under continuous monitoring
//!
//! The A/A test in [`sim`] runs 1000 simulated steps per method with a look
//! after every 50 requests per arm (60 looks): the default decision's
//! false-promotion rate stays under α = 0.05, while a fixed-horizon z test
//! peeking at the same looks promotes several times as often
//! (`cargo run --release -p flywheel-canary --example aa_sim` prints the
//! table).

pub mod decision;
pub mod dist;
pub mod ramp;
pub mod ranks;
pub mod rates;
pub mod ratio;
pub mod sequential;
pub mod sim;
pub mod srm;
pub mod summary;

pub use decision::{decide, Action, ArmData, Decision, Evidence, Input, Reason, Settings};
pub use ramp::{Ramp, RampState, RampStep};
pub use summary::{ArmSummary, Request};
