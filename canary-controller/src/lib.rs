//! Flywheel's canary controller: the I/O around the pure statistics of
//! [`flywheel_canary`].
//!
//! ```text
//!   experiments (ClickHouse) ──▶ Controller::tick, every interval, per running experiment
//!                                   │ store::arms: inferences + feedback of the step's window
//!                                   ▼
//!                              flywheel_canary::decide ──▶ Decision + Evidence
//!                                   │
//!        canary_evaluations ◀── record (row, then the experiment's new revision)
//!                                   │
//!   {prefix}weights:{route} ◀── weights::Weights (Redis, the path every gateway polls)
//! ```
//!
//! * [`spec`]: an experiment's definition (settings, quality metrics,
//!   ramp, weight scale), stored as JSON.
//! * [`experiment`]: its state and transitions (pure).
//! * [`store`]: ClickHouse reads and writes, the arms' SQL.
//! * [`weights`]: Redis keys.
//! * [`controller`]: the loop, crash recovery, outage handling.
//! * [`unload`]: when an ended experiment's model version is unloaded
//!   from the engines, and the grace period after a promotion (pure);
//!   [`engines`]: the engines' admin calls.
//! * [`ops`]: creation and manual actions (the CLI).
//! * [`report`]: the CLI's tables.
//! * [`config`]: the TOML file and flags of `flywheel-canary`.

pub mod config;
pub mod controller;
pub mod engines;
pub mod experiment;
pub mod ops;
pub mod report;
pub mod spec;
pub mod store;
pub mod unload;
pub mod weights;

pub use controller::{Controller, ControllerConfig, TickReport};
pub use experiment::{Action, Experiment, Status};
pub use spec::{QualityMetric, Spec};
pub use store::CanaryStore;
pub use weights::Weights;
