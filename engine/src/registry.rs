//! Model versions served by one mistral.rs runner: deploy at runtime, route by name, unload
//! after draining.
//!
//! Every version is one mistral.rs engine inside a single [`MistralRs`] runner, registered
//! under the version's name (`MistralRsBuilder::with_model_id` for the first one,
//! `MistralRs::add_model` for later ones). Requests hold a [`Lease`] on their version for as
//! long as they run; unloading removes the version from the routing table first (new
//! requests get 404), waits until its leases reach zero, and only then calls
//! `remove_model`.
//!
//! Names are routed by [`Routes`]: a request's `model` is a version's name, or an alias
//! pointing at one (`PUT /admin/aliases/{alias}`), so a gateway's fixed model name can follow
//! the versions the tuner ships.

mod routes;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use mistralrs::{
    core::{AddModelConfig, MistralRs, MistralRsBuilder, Pipeline, SchedulerConfig, TokenSource},
    model_builder_trait::build_text_pipeline,
    IsqType, ModelDType, TextModelBuilder,
};
use serde::Serialize;
use tokio::sync::Notify;

pub use self::routes::{AliasError, NameTaken, Routes};
use crate::error::ApiError;

/// How every version is loaded and scheduled.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub dtype: ModelDType,
    /// In-situ quantization of the weights at load (mistral.rs ISQ, candle's
    /// GGML kernels on the CPU); `None` keeps `dtype`.
    pub isq: Option<IsqType>,
    /// Most sequences one version decodes in one batch (mistral.rs
    /// `max_num_seqs`); the same default as `--max-seqs`.
    pub max_seqs: usize,
    /// Sequences kept in mistral.rs's prefix cache; 0 disables it.
    pub prefix_cache_n: usize,
    /// Run on the CPU even when built with CUDA.
    pub force_cpu: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            dtype: ModelDType::F32,
            isq: None,
            max_seqs: 32,
            prefix_cache_n: 16,
            force_cpu: false,
        }
    }
}

/// What a version is made of.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeploymentSource {
    /// A complete HF-style checkpoint directory (config.json, tokenizer.json,
    /// *.safetensors), e.g. a fine-tune with its LoRA already merged.
    Checkpoint { path: PathBuf },
    // Native LoRA plugs in here: `LoraAdapter { base: String, adapter: PathBuf }` would be
    // built in `Deployment::build_pipeline` with mistral.rs's `LoraModelBuilder` on top of
    // the base's `TextModelBuilder` (same directory), so a new fine-tune ships as a few MB
    // of adapter weights instead of a full copy. Routing, leases and unloading below do not
    // change: a version is still one named engine.
}

/// A request to serve a model version under a name.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub name: String,
    pub source: DeploymentSource,
}

/// Why a deployment could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("invalid version name `{0}`: use 1-64 characters from [A-Za-z0-9._:-]")]
    InvalidName(String),
    #[error("{0}")]
    InvalidModelDir(String),
    #[error("loading {path} failed: {message}")]
    Load { path: PathBuf, message: String },
    #[error(transparent)]
    Exists(#[from] NameTaken),
    #[error("registering version `{name}` failed: {message}")]
    Register { name: String, message: String },
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::InvalidName(_) => ApiError::bad_param("name", e.to_string()),
            DeployError::InvalidModelDir(_) | DeployError::Load { .. } => {
                let mut a = ApiError::unprocessable(e.to_string());
                a.param = Some("path");
                a
            }
            DeployError::Exists(_) => ApiError::conflict(e.to_string()),
            DeployError::Register { .. } => ApiError::internal(e.to_string()),
        }
    }
}

type PipelineParts = (
    Arc<tokio::sync::Mutex<dyn Pipeline>>,
    SchedulerConfig,
    AddModelConfig,
);

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

impl Deployment {
    pub fn checkpoint(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            source: DeploymentSource::Checkpoint { path: path.into() },
        }
    }

    /// Checks the name and the directory without loading anything. mistral.rs takes a path
    /// that does not exist for a model-hub id, so this must run before the loader.
    pub fn validate(&self) -> Result<PathBuf, DeployError> {
        if !valid_name(&self.name) {
            return Err(DeployError::InvalidName(self.name.clone()));
        }
        match &self.source {
            DeploymentSource::Checkpoint { path } => {
                flywheel_models::check_model_dir(path)
                    .map_err(|e| DeployError::InvalidModelDir(e.to_string()))?;
                path.canonicalize()
                    .map_err(|e| DeployError::InvalidModelDir(format!("{}: {e}", path.display())))
            }
        }
    }

    fn text_builder(path: &Path, opts: &EngineOptions) -> TextModelBuilder {
        let mut b = TextModelBuilder::new(path.display().to_string())
            .with_token_source(TokenSource::None)
            .with_dtype(opts.dtype)
            .with_max_num_seqs(opts.max_seqs.max(1))
            .with_prefix_cache_n((opts.prefix_cache_n > 0).then_some(opts.prefix_cache_n));
        if opts.force_cpu {
            b = b.with_force_cpu();
        }
        if let Some(isq) = opts.isq {
            b = b.with_isq(isq);
        }
        b
    }

    /// Validates, then loads the weights on a blocking thread (3-4 s for 135M F32), so that
    /// serving threads keep running.
    async fn build_pipeline(
        &self,
        opts: &EngineOptions,
    ) -> Result<(PathBuf, PipelineParts), DeployError> {
        let path = self.validate()?;
        let builder = Self::text_builder(&path, opts);
        let handle = tokio::runtime::Handle::current();
        let p = path.clone();
        let joined =
            tokio::task::spawn_blocking(move || handle.block_on(build_text_pipeline(builder)))
                .await;
        match joined {
            Ok(Ok(parts)) => Ok((path, parts)),
            Ok(Err(e)) => Err(DeployError::Load {
                path: p,
                message: format!("{e:#}"),
            }),
            Err(e) => Err(DeployError::Load {
                path: p,
                message: format!("the loader panicked: {}", panic_message(e)),
            }),
        }
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into()),
        Err(e) => e.to_string(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A loaded version.
#[derive(Debug)]
pub struct Version {
    pub name: String,
    pub source: DeploymentSource,
    /// Canonical directory the weights came from.
    pub path: PathBuf,
    pub created: u64,
    pub load_seconds: f64,
    inflight: AtomicUsize,
    idle: Notify,
}

impl Version {
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }

    pub fn info(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "flywheel",
            "source": self.source,
            "path": self.path,
            "load_seconds": self.load_seconds,
            "in_flight": self.inflight(),
        })
    }
}

/// Held by a request for as long as it uses its version.
#[derive(Debug)]
pub struct Lease {
    pub version: Arc<Version>,
    /// The name the answer carries as its `model`: the alias when the request named one
    /// (clients see the name they asked for), otherwise the version's name.
    pub model: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.version.inflight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.version.idle.notify_waiters();
        }
    }
}

/// A version that no longer takes requests, and the aliases that pointed at it; finish with
/// [`Registry::finish_undeploy`].
#[derive(Debug)]
pub struct Unloading {
    pub version: Arc<Version>,
    pub aliases_removed: Vec<String>,
}

/// All versions and the runner that serves them.
pub struct Registry {
    runner: Arc<MistralRs>,
    routes: RwLock<Routes<Arc<Version>>>,
    opts: EngineOptions,
}

/// The table even if a thread panicked holding its lock: every change to it is a single map
/// operation, so it is never left half-changed.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// Loads the first version and starts the runner.
    pub async fn start(base: Deployment, opts: EngineOptions) -> Result<Self, DeployError> {
        let t0 = Instant::now();
        let (path, (pipeline, sched, cfg)) = base.build_pipeline(&opts).await?;
        let ec = &cfg.engine_config;
        let mut rb = MistralRsBuilder::new(pipeline, sched, false, None)
            .with_model_id(base.name.clone())
            .with_no_kv_cache(ec.no_kv_cache)
            .with_no_prefix_cache(ec.no_prefix_cache)
            .with_prefix_cache_n(ec.prefix_cache_n);
        if let Some(lc) = cfg.loader_config.clone() {
            rb = rb.with_loader_config(lc);
        }
        let runner = rb.build().await;
        let version = Arc::new(Version {
            name: base.name.clone(),
            source: base.source.clone(),
            path,
            created: unix_now(),
            load_seconds: t0.elapsed().as_secs_f64(),
            inflight: AtomicUsize::new(0),
            idle: Notify::new(),
        });
        Ok(Self {
            runner,
            routes: RwLock::new(Routes::new(base.name, version)),
            opts,
        })
    }

    pub fn runner(&self) -> &Arc<MistralRs> {
        &self.runner
    }

    pub fn list(&self) -> Vec<Arc<Version>> {
        read(&self.routes).versions().cloned().collect()
    }

    /// The versions and the aliases (alias → version name) at one instant: every alias's
    /// version is in the list.
    pub fn snapshot(&self) -> (Vec<Arc<Version>>, BTreeMap<String, String>) {
        let routes = read(&self.routes);
        (
            routes.versions().cloned().collect(),
            routes.aliases().clone(),
        )
    }

    pub fn default_name(&self) -> String {
        read(&self.routes).default_name().to_string()
    }

    /// Takes a lease on the version `name` routes to (empty: the default version; an alias:
    /// the version it points at now); 404 when it is not served.
    pub fn acquire(&self, name: &str) -> Result<Lease, ApiError> {
        let routes = read(&self.routes);
        let version = routes
            .resolve(name)
            .ok_or_else(|| ApiError::model_not_found(name))?
            .clone();
        // Incremented under the read lock: `undeploy` removes the entry under the write
        // lock, so once it starts waiting no new lease can appear.
        version.inflight.fetch_add(1, Ordering::SeqCst);
        let model = if name.is_empty() {
            version.name.clone()
        } else {
            name.to_string()
        };
        Ok(Lease { version, model })
    }

    /// Points `alias` at the loaded version `version` (creating or re-pointing it; requests
    /// already running keep the version they resolved). Returns the previous target.
    pub fn set_alias(&self, alias: &str, version: &str) -> Result<Option<String>, AliasError> {
        let previous = write(&self.routes).set_alias(alias, version)?;
        tracing::info!(alias, version, previous, "alias set");
        Ok(previous)
    }

    /// Deletes an alias; returns the version it pointed at.
    pub fn remove_alias(&self, alias: &str) -> Result<String, AliasError> {
        let version = write(&self.routes).remove_alias(alias)?;
        tracing::info!(alias, version, "alias deleted");
        Ok(version)
    }

    /// Loads a new version and makes it routable. Serving continues meanwhile; on failure
    /// nothing changes.
    pub async fn deploy(&self, dep: Deployment) -> Result<Arc<Version>, DeployError> {
        if !valid_name(&dep.name) {
            return Err(DeployError::InvalidName(dep.name));
        }
        // Validate the directory before reserving the name, so a bad path is reported as
        // such even when the name is taken.
        dep.validate()?;
        write(&self.routes).reserve(&dep.name)?;
        let result = self.deploy_reserved(&dep).await;
        // A no-op after success (`insert_version` took the reservation over).
        write(&self.routes).release(&dep.name);
        result
    }

    async fn deploy_reserved(&self, dep: &Deployment) -> Result<Arc<Version>, DeployError> {
        let t0 = Instant::now();
        let (path, (pipeline, sched, cfg)) = dep.build_pipeline(&self.opts).await?;
        self.runner
            .add_model(dep.name.clone(), pipeline, sched, cfg)
            .await
            .map_err(|message| DeployError::Register {
                name: dep.name.clone(),
                message,
            })?;
        let version = Arc::new(Version {
            name: dep.name.clone(),
            source: dep.source.clone(),
            path,
            created: unix_now(),
            load_seconds: t0.elapsed().as_secs_f64(),
            inflight: AtomicUsize::new(0),
            idle: Notify::new(),
        });
        write(&self.routes).insert_version(dep.name.clone(), version.clone());
        tracing::info!(name = %dep.name, path = %version.path.display(), secs = version.load_seconds, "deployed");
        Ok(version)
    }

    /// Stops routing to `name` and deletes the aliases pointing at it (new requests for
    /// either get 404 from now on). Finish with [`Registry::finish_undeploy`].
    pub fn begin_undeploy(&self, name: &str) -> Result<Unloading, ApiError> {
        let mut routes = write(&self.routes);
        if routes.version_count() == 1 && routes.has_version(name) {
            return Err(ApiError::conflict(format!(
                "`{name}` is the only loaded version; deploy another before unloading it"
            )));
        }
        let (version, aliases_removed) = routes
            .remove_version(name)
            .ok_or_else(|| ApiError::model_not_found(name))?;
        tracing::info!(
            name,
            in_flight = version.inflight(),
            ?aliases_removed,
            "unloading: draining"
        );
        Ok(Unloading {
            version,
            aliases_removed,
        })
    }

    /// Waits for the version's in-flight requests, then frees its engine.
    pub async fn finish_undeploy(&self, version: Arc<Version>) -> Result<(), ApiError> {
        loop {
            let notified = version.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if version.inflight() == 0 {
                break;
            }
            notified.await;
        }
        let runner = self.runner.clone();
        let name = version.name.clone();
        let id = name.clone();
        // `remove_model` uses `blocking_send`, which panics on a runtime thread.
        tokio::task::spawn_blocking(move || runner.remove_model(&id))
            .await
            .map_err(|e| ApiError::internal(format!("unloading `{name}` panicked: {e}")))?
            .map_err(|e| ApiError::internal(format!("unloading `{name}` failed: {e}")))?;
        tracing::info!(name, "unloaded");
        Ok(())
    }

    /// Stops routing to `name`, waits for its in-flight requests, then frees the engine.
    /// Returns how many requests were in flight when the unload began.
    pub async fn undeploy(&self, name: &str) -> Result<usize, ApiError> {
        let Unloading { version, .. } = self.begin_undeploy(name)?;
        let draining = version.inflight();
        self.finish_undeploy(version).await?;
        Ok(draining)
    }
}
