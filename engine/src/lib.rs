//! Flywheel's inference engine: mistral.rs behind an OpenAI-compatible HTTP API, with
//! authenticated runtime deploys of model versions.
//!
//! * [`registry`]: model versions (deploy, route, drain, unload) and their aliases on one
//!   mistral.rs runner.
//! * [`server`]: the axum router (`/v1/chat/completions`, `/v1/completions`, `/v1/models`,
//!   `/health`, `/admin/models`, `/admin/aliases`).
//! * [`openai`]: request bodies and their translation into mistral.rs requests.

pub mod error;
pub mod openai;
pub mod registry;
pub mod server;

pub use error::ApiError;
pub use registry::{Deployment, DeploymentSource, EngineOptions, Registry};
pub use server::{router, AppState};
