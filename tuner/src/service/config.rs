//! The tuner service's configuration: a `[tuner]` table, in the gateway's
//! TOML or a file of its own, parsed as written ([`File`]) and then
//! validated by [`File::load`] into the runtime types ([`ServiceConfig`],
//! [`Job`]). Every key has a documented default unless marked required;
//! unknown keys are errors that name them, and so is every bad value (with
//! its path, `tuner.jobs[1].gate.non_inferiority`).
//!
//! ```toml
//! [tuner]
//! state_dir = "/var/tmp/flywheel/tuner"  # required: run directories and the journal
//! gateway_url = "http://127.0.0.1:8080"  # gate and canary traffic go through it
//! engines = ["http://127.0.0.1:18101"]   # where versions are deployed (at least one)
//! poll_secs = 10                         # how often triggers and canaries are looked at
//! encryption_key_files = []              # seal each run's dataset snapshot (first seals, all open)
//!
//! [[tuner.jobs]]
//! name = "extract"                 # required, [a-z0-9-], unique: part of version names
//! route = "extract"                # required: the gateway route it tunes
//! base_model = "/models/smollm2"   # required: HF directory trained from
//! grader = "graders/extract.json"  # required: the reward (OpenAI grader JSON)
//!
//! [tuner.jobs.trigger]             # whichever comes first, never closer than the minimum
//! every_secs = 86400               # on a schedule (0: no schedule)
//! new_rows = 500                   # graded or feedback rows since the last run (0: off)
//! min_interval_secs = 3600         # between two runs' starts
//!
//! [tuner.jobs.dataset]             # `flywheel-tuner dataset`'s options
//! window_secs = 604800             # traffic of the last week
//! min_rows = 50                    # fewer kept rows: the run ends as skipped
//! heldout_fraction = 0.2
//! include_shadow = false
//! drop_validation_failures = false
//! # variant = "chain"              # only this variant's traffic (default: all)
//!
//! [tuner.jobs.hyperparameters]     # named as OpenAI's and Bedrock's RFT jobs name them
//! n_epochs = 1                     # passes over the training prompts...
//! # steps = 50                     # ...or optimizer steps (not both)
//! batch_size = 4                   # prompts per step
//! group_size = 8                   # completions per prompt (GRPO's G)
//! learning_rate = 1e-4
//! eval_interval = 10               # held-out evaluation every N steps
//! early_stopping_patience = 0      # evaluations without improvement (0: never stop)
//! lora_rank = 16
//! guide = false                    # all-failed groups learn from the reference (`train --guide`)
//!
//! [tuner.jobs.gate]                # the offline gate, on held-out items through the gateway
//! heldout_items = 50
//! min_gain = 0.05                  # quality per dollar beats incumbent and chain by 5 %
//! non_inferiority = 0.02           # quality at most this far below the incumbent's
//! confidence = 0.95                # of the intervals both tests use
//! max_tokens = 256                 # of each held-out request (greedy)
//!
//! chain_variant = "chain"          # (in [[tuner.jobs]]) the route's fallback chain
//!
//! [[tuner.jobs.slots]]             # default: tuned-a → <job>-a, tuned-b → <job>-b
//! variant = "tuned-a"              # a route variant whose first target is...
//! model = "extract-a"              # ...this engine alias, pointed at each run's version
//!
//! [tuner.jobs.online_grading]      # live answers graded as feedback `grader_<job>`
//! fraction = 1.0
//! interval_secs = 10
//!
//! [tuner.jobs.canary]              # `flywheel-canary create --spec`'s JSON, as TOML
//! quality = [{ metric = "grader_extract" }]
//! ```

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Arc,
};

use flywheel_canary_controller::{QualityMetric, Spec};
use flywheel_feedback::wal::Keyring;
use serde::Deserialize;
use thiserror::Error;

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The file as written. Other top-level tables (the gateway's own) are
/// ignored, so the `[tuner]` table can live in the gateway's TOML.
#[derive(Debug, Deserialize)]
pub struct File {
    pub tuner: Option<TunerFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunerFile {
    pub state_dir: Option<PathBuf>,
    #[serde(default = "default_gateway_url")]
    pub gateway_url: String,
    #[serde(default)]
    pub engines: Vec<String>,
    #[serde(default = "default_poll_secs")]
    pub poll_secs: u64,
    /// Key files (64 hex digits) that seal each run's dataset snapshot:
    /// the first seals, every one opens (rotation). Default: none, plain.
    #[serde(default)]
    pub encryption_key_files: Vec<PathBuf>,
    #[serde(default)]
    pub jobs: Vec<JobFile>,
}

fn default_poll_secs() -> u64 {
    10
}

fn default_gateway_url() -> String {
    "http://127.0.0.1:8080".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub name: Option<String>,
    pub route: Option<String>,
    pub base_model: Option<PathBuf>,
    pub grader: Option<PathBuf>,
    #[serde(default)]
    pub trigger: Trigger,
    #[serde(default)]
    pub dataset: DatasetSettings,
    #[serde(default)]
    pub hyperparameters: HyperparametersFile,
    #[serde(default)]
    pub gate: Gate,
    /// The route's fallback chain: the offline gate's second yardstick,
    /// and the incumbent until a tuned version is promoted.
    #[serde(default = "default_chain_variant")]
    pub chain_variant: String,
    /// Default: `tuned-a` → `<job>-a`, `tuned-b` → `<job>-b`.
    pub slots: Option<Vec<Slot>>,
    #[serde(default)]
    pub online_grading: OnlineGrading,
    /// Kept as written: checked for unknown keys, then read as a [`Spec`].
    #[serde(default)]
    pub canary: Option<toml::Value>,
}

fn default_chain_variant() -> String {
    "chain".into()
}

/// A variant of the route that serves a tuned version: its first target
/// names `model`, an alias on the engines that each run points at its own
/// version. Two slots take turns: the candidate goes into the one that
/// is not the incumbent, so a promoted version keeps serving while the
/// next one is tested.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    pub variant: String,
    pub model: String,
}

/// The service grades a share of the route's live answers with the job's
/// grader (as `flywheel-tuner grade-online` does), written as the feedback
/// metric `grader_<job>`: the canary's default quality.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnlineGrading {
    /// Share of answers graded, in [0, 1] (0: off; then name another
    /// quality metric in `[tuner.jobs.canary]`).
    pub fraction: f64,
    /// Time between grading passes.
    pub interval_secs: u64,
}

impl Default for OnlineGrading {
    fn default() -> Self {
        Self {
            fraction: 1.0,
            interval_secs: 10,
        }
    }
}

/// When a job runs ([`super::trigger`]).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Trigger {
    /// A run this long after the last run started (0: no schedule).
    pub every_secs: u64,
    /// A run once this many graded or feedback rows arrived on the route
    /// since the last run's dataset was cut (0: off).
    pub new_rows: u64,
    /// Never two runs of the job closer than this (start to start).
    pub min_interval_secs: u64,
}

impl Default for Trigger {
    fn default() -> Self {
        Self {
            every_secs: 86_400,
            new_rows: 500,
            min_interval_secs: 3_600,
        }
    }
}

/// Which captured traffic becomes the run's dataset.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetSettings {
    /// The traffic of this many seconds before the run.
    pub window_secs: u64,
    /// Only this variant's traffic (default: all of the route's).
    pub variant: Option<String>,
    /// Fewer rows kept than this: the run ends as skipped, nothing trained.
    pub min_rows: u64,
    pub heldout_fraction: f64,
    pub include_shadow: bool,
    pub drop_validation_failures: bool,
}

impl Default for DatasetSettings {
    fn default() -> Self {
        Self {
            window_secs: 7 * 86_400,
            variant: None,
            min_rows: 50,
            heldout_fraction: 0.2,
            include_shadow: false,
            drop_validation_failures: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HyperparametersFile {
    pub n_epochs: Option<u64>,
    pub steps: Option<u64>,
    #[serde(default = "default_batch_size")]
    pub batch_size: u64,
    #[serde(default = "default_group_size")]
    pub group_size: u64,
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    #[serde(default = "default_eval_interval")]
    pub eval_interval: u64,
    #[serde(default)]
    pub early_stopping_patience: u64,
    #[serde(default = "default_lora_rank")]
    pub lora_rank: u64,
    #[serde(default)]
    pub guide: bool,
}

impl Default for HyperparametersFile {
    fn default() -> Self {
        Self {
            n_epochs: None,
            steps: None,
            batch_size: default_batch_size(),
            group_size: default_group_size(),
            learning_rate: default_learning_rate(),
            eval_interval: default_eval_interval(),
            early_stopping_patience: 0,
            lora_rank: default_lora_rank(),
            guide: false,
        }
    }
}

fn default_batch_size() -> u64 {
    4
}
fn default_group_size() -> u64 {
    8
}
fn default_learning_rate() -> f64 {
    1e-4
}
fn default_eval_interval() -> u64 {
    10
}
fn default_lora_rank() -> u64 {
    16
}

/// How long training lasts: epochs over the dataset (OpenAI's and
/// Bedrock's unit) or optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Length {
    Epochs(u64),
    Steps(u64),
}

impl Length {
    /// Optimizer steps for `train_prompts` prompts at `batch_size` a step
    /// (at least one).
    pub fn steps(self, train_prompts: u64, batch_size: u64) -> u64 {
        match self {
            Length::Steps(s) => s,
            Length::Epochs(e) => (e * train_prompts).div_ceil(batch_size.max(1)).max(1),
        }
    }
}

/// The trainer's settings for a job, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Hyperparameters {
    pub length: Length,
    pub batch_size: u64,
    pub group_size: u64,
    pub learning_rate: f64,
    pub eval_interval: u64,
    pub early_stopping_patience: u64,
    pub lora_rank: u64,
    /// Flywheel's own: a group whose completions all failed trains on the
    /// item's reference answer as one of them (`train --guide`), for tasks
    /// whose right answers the base model never samples.
    pub guide: bool,
}

/// The offline gate: the candidate against the incumbent and against the
/// fallback chain on held-out items.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gate {
    pub heldout_items: u64,
    /// Quality per dollar must beat both by this relative margin. Negative
    /// values (above −1) admit a candidate up to that much worse per
    /// dollar: for demos and tests that must reach the canary.
    pub min_gain: f64,
    /// The candidate's quality may be at most this far below the
    /// incumbent's (absolute, on the grader's 0..1 scale).
    pub non_inferiority: f64,
    /// Of the intervals both comparisons use.
    pub confidence: f64,
    /// `max_tokens` of each held-out request (greedy, the item's
    /// `response_format` sent as users send it).
    pub max_tokens: u32,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            heldout_items: 50,
            min_gain: 0.05,
            non_inferiority: 0.02,
            confidence: 0.95,
            max_tokens: 256,
        }
    }
}

/// The whole service, validated.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub state_dir: PathBuf,
    pub gateway_url: String,
    pub engines: Vec<String>,
    /// How often triggers and running canaries are looked at.
    pub poll_secs: u64,
    /// The key files of `encryption_key_files`, absolute, passed on to the
    /// training child; empty: snapshots are plain.
    pub encryption_key_files: Vec<PathBuf>,
    /// Their keyring, read and checked at load.
    pub keys: Option<Arc<Keyring>>,
    pub jobs: Vec<Job>,
}

/// One job, validated: it tunes one route.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub route: String,
    pub base_model: PathBuf,
    pub grader: PathBuf,
    pub trigger: Trigger,
    pub dataset: DatasetSettings,
    pub hyperparameters: Hyperparameters,
    pub gate: Gate,
    pub chain_variant: String,
    /// At least two, variants and models distinct.
    pub slots: Vec<Slot>,
    pub online_grading: OnlineGrading,
    /// The experiment each run starts (variants and engine versions are
    /// filled in per run).
    pub canary: Spec,
}

impl ServiceConfig {
    /// Reads, parses and validates a TOML file; relative paths in it are
    /// taken from its directory.
    pub fn from_file(path: &Path) -> Result<ServiceConfig, ConfigError> {
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        File::read(path)?.load(&base)
    }
}

impl File {
    /// Reads and parses a TOML file (the gateway's or the tuner's own).
    pub fn read(path: &Path) -> Result<File, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Validates everything; relative paths are taken from `base_dir` (the
    /// file's directory).
    pub fn load(self, base_dir: &Path) -> Result<ServiceConfig, ConfigError> {
        let t = self
            .tuner
            .ok_or_else(|| invalid("tuner", "the file has no [tuner] table"))?;
        let state_dir = t
            .state_dir
            .map(|p| base_dir.join(p))
            .ok_or_else(|| invalid("tuner.state_dir", "required"))?;
        check_url("tuner.gateway_url", &t.gateway_url)?;
        if t.engines.is_empty() {
            return Err(invalid(
                "tuner.engines",
                "at least one engine URL, where versions are deployed",
            ));
        }
        for (i, e) in t.engines.iter().enumerate() {
            check_url(&format!("tuner.engines[{i}]"), e)?;
        }
        if t.jobs.is_empty() {
            return Err(invalid("tuner.jobs", "no [[tuner.jobs]]: nothing to do"));
        }
        let mut names = BTreeSet::new();
        let mut jobs = Vec::new();
        for (i, j) in t.jobs.into_iter().enumerate() {
            let job = j.load(&format!("tuner.jobs[{i}]"), base_dir)?;
            if !names.insert(job.name.clone()) {
                return Err(invalid(
                    format!("tuner.jobs[{i}].name"),
                    format!("{:?} is used by another job", job.name),
                ));
            }
            jobs.push(job);
        }
        if t.poll_secs == 0 {
            return Err(invalid("tuner.poll_secs", "must be at least 1"));
        }
        let encryption_key_files: Vec<PathBuf> = t
            .encryption_key_files
            .iter()
            .map(|p| base_dir.join(p))
            .collect();
        let keys = flywheel_feedback::sealed_file::keyring_from_files(&encryption_key_files)
            .map_err(|e| invalid("tuner.encryption_key_files", e.to_string()))?
            .map(Arc::new);
        Ok(ServiceConfig {
            state_dir,
            gateway_url: t.gateway_url.trim_end_matches('/').to_string(),
            engines: t.engines,
            poll_secs: t.poll_secs,
            encryption_key_files,
            keys,
            jobs,
        })
    }
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(invalid(key, format!("{url:?} is not an http(s) URL")))
    }
}

fn required<T>(key: &str, v: Option<T>) -> Result<T, ConfigError> {
    v.ok_or_else(|| invalid(key, "required"))
}

impl JobFile {
    fn load(self, key: &str, base_dir: &Path) -> Result<Job, ConfigError> {
        let name = required(&format!("{key}.name"), self.name)?;
        // Part of every model version's name, which goes into engine URLs.
        if name.is_empty()
            || name.len() > 40
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                format!("{key}.name"),
                format!("{name:?}: 1-40 characters of a-z, 0-9 and -"),
            ));
        }
        let route = required(&format!("{key}.route"), self.route)?;
        if route.is_empty() {
            return Err(invalid(format!("{key}.route"), "empty"));
        }
        let base_model = base_dir.join(required(&format!("{key}.base_model"), self.base_model)?);
        let grader = base_dir.join(required(&format!("{key}.grader"), self.grader)?);

        let t = &self.trigger;
        if t.every_secs == 0 && t.new_rows == 0 {
            return Err(invalid(
                format!("{key}.trigger"),
                "every_secs and new_rows are both 0: the job would never run",
            ));
        }
        let d = &self.dataset;
        if !(d.heldout_fraction > 0.0 && d.heldout_fraction < 1.0) {
            return Err(invalid(
                format!("{key}.dataset.heldout_fraction"),
                format!("{} is not in (0, 1)", d.heldout_fraction),
            ));
        }
        if d.window_secs == 0 {
            return Err(invalid(format!("{key}.dataset.window_secs"), "0"));
        }
        let hyperparameters = self
            .hyperparameters
            .load(&format!("{key}.hyperparameters"))?;
        let g = &self.gate;
        for (field, ok) in [
            ("heldout_items", g.heldout_items > 0),
            ("min_gain", g.min_gain.is_finite() && g.min_gain > -1.0),
            (
                "non_inferiority",
                g.non_inferiority.is_finite() && g.non_inferiority >= 0.0,
            ),
            ("confidence", g.confidence > 0.5 && g.confidence < 1.0),
            ("max_tokens", g.max_tokens > 0),
        ] {
            if !ok {
                return Err(invalid(
                    format!("{key}.gate.{field}"),
                    "out of range (heldout_items and max_tokens > 0, min_gain > -1, non_inferiority >= 0, confidence in (0.5, 1))",
                ));
            }
        }
        let slots = self.slots.unwrap_or_else(|| {
            ["a", "b"]
                .map(|s| Slot {
                    variant: format!("tuned-{s}"),
                    model: format!("{name}-{s}"),
                })
                .to_vec()
        });
        check_slots(&format!("{key}.slots"), &slots, &self.chain_variant)?;
        let o = &self.online_grading;
        if !(0.0..=1.0).contains(&o.fraction) || o.interval_secs == 0 {
            return Err(invalid(
                format!("{key}.online_grading"),
                "fraction must be in [0, 1] and interval_secs at least 1",
            ));
        }
        let canary = canary_spec(&format!("{key}.canary"), self.canary, &name)?;
        Ok(Job {
            name,
            route,
            base_model,
            grader,
            trigger: self.trigger,
            dataset: self.dataset,
            hyperparameters,
            gate: self.gate,
            chain_variant: self.chain_variant,
            slots,
            online_grading: self.online_grading,
            canary,
        })
    }
}

/// Two slots at least (one holds the incumbent while the other tests the
/// next candidate), all distinct, none the chain; model names as the
/// engines accept them.
fn check_slots(key: &str, slots: &[Slot], chain: &str) -> Result<(), ConfigError> {
    if slots.len() < 2 {
        return Err(invalid(
            key,
            "at least two: a promoted version keeps one while the next candidate uses another",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, s) in slots.iter().enumerate() {
        let model_ok = !s.model.is_empty()
            && s.model.len() <= 64
            && s.model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
        if !model_ok {
            return Err(invalid(
                format!("{key}[{i}].model"),
                format!("{:?}: 1-64 characters of A-Z, a-z, 0-9 and _-.:", s.model),
            ));
        }
        if s.variant.is_empty() || s.variant == chain {
            return Err(invalid(
                format!("{key}[{i}].variant"),
                format!("{:?}: empty, or the chain's variant", s.variant),
            ));
        }
        if !seen.insert(s.variant.clone()) || !seen.insert(format!("model:{}", s.model)) {
            return Err(invalid(
                format!("{key}[{i}]"),
                "variant or model used by another slot",
            ));
        }
    }
    Ok(())
}

/// The feedback metric of a job's online grades (`grader_<job>`): the
/// canary's default quality, written by the service's online grading.
pub fn grader_metric(job: &str) -> String {
    format!("grader_{job}")
}

/// The job's experiment template: the table as the controller's [`Spec`],
/// its unknown keys named (the spec itself accepts and drops them, so that
/// stored specs stay readable), quality by default the job's online grader
/// metric `grader_<job>`. The engine plan is the service's to fill per run.
fn canary_spec(key: &str, table: Option<toml::Value>, job: &str) -> Result<Spec, ConfigError> {
    let table = table.unwrap_or_else(|| toml::Value::Table(Default::default()));
    let mut spec: Spec = table
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| invalid(key, e.message().to_string()))?;
    let known = toml::Value::try_from(&spec).map_err(|e| invalid(key, e.to_string()))?;
    if let Some(unknown) = unknown_keys(&table, &known, key).into_iter().next() {
        return Err(invalid(unknown, "unknown key"));
    }
    if table.get("engine").is_some() {
        return Err(invalid(
            format!("{key}.engine"),
            "set by the service for each run (the run's version and the [tuner] engines)",
        ));
    }
    if spec.quality.is_empty() {
        spec.quality = vec![QualityMetric {
            metric: grader_metric(job),
            weight: 1.0,
            invert: false,
        }];
    }
    spec.validate().map_err(|e| invalid(key, e.to_string()))?;
    Ok(spec)
}

/// Keys of `written` that `parsed` (the same value read and written back)
/// lacks: the ones the reader ignored. Arrays are compared element by element.
fn unknown_keys(written: &toml::Value, parsed: &toml::Value, at: &str) -> Vec<String> {
    match (written, parsed) {
        (toml::Value::Table(w), toml::Value::Table(p)) => w
            .iter()
            .flat_map(|(k, v)| match p.get(k) {
                None => vec![format!("{at}.{k}")],
                Some(pv) => unknown_keys(v, pv, &format!("{at}.{k}")),
            })
            .collect(),
        (toml::Value::Array(w), toml::Value::Array(p)) => w
            .iter()
            .zip(p)
            .enumerate()
            .flat_map(|(i, (wv, pv))| unknown_keys(wv, pv, &format!("{at}[{i}]")))
            .collect(),
        _ => vec![],
    }
}

impl HyperparametersFile {
    fn load(self, key: &str) -> Result<Hyperparameters, ConfigError> {
        let length = match (self.n_epochs, self.steps) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    key,
                    "n_epochs and steps both set: training lasts one or the other",
                ))
            }
            (Some(0), None) | (None, Some(0)) => {
                return Err(invalid(key, "n_epochs or steps is 0"))
            }
            (Some(e), None) => Length::Epochs(e),
            (None, Some(s)) => Length::Steps(s),
            (None, None) => Length::Epochs(1),
        };
        for (field, v) in [
            ("batch_size", self.batch_size),
            ("group_size", self.group_size),
            ("eval_interval", self.eval_interval),
            ("lora_rank", self.lora_rank),
        ] {
            if v == 0 {
                return Err(invalid(format!("{key}.{field}"), "must be at least 1"));
            }
        }
        if self.group_size < 2 {
            return Err(invalid(
                format!("{key}.group_size"),
                "GRPO compares completions within a group: at least 2",
            ));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(invalid(
                format!("{key}.learning_rate"),
                format!("{} is not a positive number", self.learning_rate),
            ));
        }
        Ok(Hyperparameters {
            length,
            batch_size: self.batch_size,
            group_size: self.group_size,
            learning_rate: self.learning_rate,
            eval_interval: self.eval_interval,
            early_stopping_patience: self.early_stopping_patience,
            lora_rank: self.lora_rank,
            guide: self.guide,
        })
    }
}

#[cfg(test)]
#[path = "tests/config.rs"]
mod tests;
