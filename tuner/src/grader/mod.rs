//! Graders, configured in the JSON shapes of OpenAI's graders so that an
//! existing OpenAI RFT grader config works unchanged.
//!
//! Supported `type`s: OpenAI's `string_check`, `text_similarity`, `multi`,
//! `python`, `score_model` and `endpoint`, plus three extensions: `regex`,
//! `json` and `feedback` (a reward from users' feedback on a logged output,
//! see [`feedback`]). OpenAI's `label_model` is recognised but rejected as
//! not implemented yet.
//!
//! - `python` runs the config's `source` (`def grade(sample, item) -> float`)
//!   in a `python3` worker (stdlib only) sandboxed with bubblewrap; see
//!   [`python`] for the sandbox and the limits (wall clock, CPU, memory,
//!   processes, files, no network).
//! - `score_model` asks an OpenAI-compatible chat model (by default the
//!   Flywheel gateway, [`GraderOptions::judge_base_url`]) for
//!   `{"result": number}`, normalised to [0, 1] by the config's `range`;
//!   replies are cached by content (see [`score_model`]).
//! - `endpoint` posts samples to an HTTP reward function speaking the
//!   Bedrock RFT reward-Lambda contract (see [`endpoint`]); [`serve`] is the
//!   server side of that contract (`flywheel-tuner serve-reward`).
//!
//! `pass_threshold` is accepted by every type and defaults to 1.0: the
//! rule-based graders score 0 or 1, so "passed" means a full score unless
//! the config says otherwise. For `score_model` it applies to the
//! normalised score.
//!
//! [`Grader::grade`] is synchronous and may block (subprocesses, HTTP): call
//! it from plain threads or `spawn_blocking`, never on an async executor
//! thread. [`Grader::grade_batch`] grades many samples at once: one HTTP
//! request for `endpoint`, one worker process for `python`, concurrent
//! requests for `score_model`.

mod config;
pub mod endpoint;
mod expr;
mod feedback;
mod http;
mod json;
mod multi;
mod pattern;
pub mod python;
pub mod score_model;
pub mod serve;
mod string_check;
pub mod template;
#[cfg(test)]
mod testutil;
mod text_similarity;

use std::{fmt, path::PathBuf, time::Duration};

use config::Cfg;
pub use python::PythonSandbox;
use serde_json::{json, Value};

use crate::item::{Item, Sample};

/// The grader types this crate implements.
pub const SUPPORTED_TYPES: &[&str] = &[
    "string_check",
    "text_similarity",
    "regex",
    "json",
    "multi",
    "python",
    "score_model",
    "endpoint",
    "feedback",
];
/// OpenAI grader types that are recognised but not implemented here.
pub const NOT_IMPLEMENTED_TYPES: &[&str] = &["label_model"];

const DEFAULT_PASS_THRESHOLD: f64 = 1.0;

/// Runtime settings for the graders that reach outside the process
/// (`score_model`, `python`, `endpoint`); they are not part of the grader
/// config because they depend on where it runs, not on what it grades.
#[derive(Debug, Clone)]
pub struct GraderOptions {
    /// The OpenAI-compatible API `score_model` posts `/chat/completions` to.
    pub judge_base_url: String,
    /// Sent as `Authorization: Bearer ...` to the judge when set.
    pub judge_api_key: Option<String>,
    /// Per-request timeout for the judge.
    pub judge_timeout: Duration,
    /// Where `score_model` keeps `score_model.cache.jsonl`; `None`: in memory only.
    pub cache_dir: Option<PathBuf>,
    /// The interpreter `python` graders run under.
    pub python: PathBuf,
    /// Wall-clock limit per sample; the CPU limit is derived from it.
    pub python_timeout: Duration,
    /// Address-space limit (RLIMIT_AS) of a python worker.
    pub python_memory_bytes: u64,
    /// Without the sandbox ([`PythonSandbox::None`]), run python workers in
    /// a fresh network namespace where the kernel allows it (the audit hook
    /// applies either way). The sandbox always has an empty one.
    pub python_network_namespace: bool,
    /// How python workers are isolated: in bubblewrap (the default; a
    /// python grader fails to load where it cannot run) or, as an explicit
    /// opt-out for trusted graders, not at all. See [`python`].
    pub python_sandbox: PythonSandbox,
    /// Per-request timeout for `endpoint` graders.
    pub endpoint_timeout: Duration,
}

impl Default for GraderOptions {
    fn default() -> Self {
        Self {
            judge_base_url: "http://127.0.0.1:8080/v1".into(),
            judge_api_key: None,
            judge_timeout: Duration::from_secs(120),
            cache_dir: None,
            python: PathBuf::from("python3"),
            python_timeout: Duration::from_secs(10),
            python_memory_bytes: 512 << 20,
            python_network_namespace: true,
            python_sandbox: PythonSandbox::Bwrap,
            endpoint_timeout: Duration::from_secs(60),
        }
    }
}

/// The outcome of grading one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Grade {
    pub score: f64,
    /// `score >= pass_threshold`.
    pub passed: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraderError {
    /// The config is malformed; `path` names the offending field (`$.graders.a.operation`).
    #[error("invalid grader config at {path}: {message}")]
    Config { path: String, message: String },
    #[error("invalid grader config at {path}: unknown grader type `{kind}` (supported: {})", SUPPORTED_TYPES.join(", "))]
    UnknownType { path: String, kind: String },
    #[error("invalid grader config at {path}: grader type {kind} is not implemented yet")]
    NotImplemented { path: String, kind: String },
    /// The config was valid but this sample/item could not be graded
    /// (e.g. a template names a field the item lacks, the judge is down,
    /// the python code raised).
    #[error("grader `{grader}` failed: {message}")]
    Grading { grader: String, message: String },
}

/// A validated grader, ready to score samples.
pub struct Grader {
    name: String,
    kind_name: &'static str,
    pass_threshold: f64,
    kind: Kind,
}

enum Kind {
    StringCheck(string_check::StringCheck),
    TextSimilarity(text_similarity::TextSimilarity),
    Regex(pattern::RegexGrader),
    Json(Box<json::JsonGrader>),
    Multi(multi::Multi),
    Python(python::PythonGrader),
    ScoreModel(Box<score_model::ScoreModel>),
    Endpoint(endpoint::Endpoint),
    Feedback(feedback::FeedbackGrader),
}

impl fmt::Debug for Grader {
    // Hand-written because compiled schemas and regexes make poor debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grader")
            .field("name", &self.name)
            .field("type", &self.kind_name)
            .field("pass_threshold", &self.pass_threshold)
            .finish()
    }
}

type Scored = Result<(f64, String), String>;

impl Grader {
    /// Parses and strictly validates a grader config with default
    /// [`GraderOptions`]: unknown types and fields, missing fields, bad
    /// regexes, schemas, operations, metrics and expressions are all
    /// rejected here rather than at grading time.
    pub fn from_config(config: &Value) -> Result<Grader, GraderError> {
        Self::from_config_with(config, &GraderOptions::default())
    }

    /// As [`Grader::from_config`], with runtime options; `multi`'s nested
    /// graders get the same options. A `python` grader's source is loaded
    /// here once, so syntax errors and a missing `grade` are config errors.
    pub fn from_config_with(
        config: &Value,
        options: &GraderOptions,
    ) -> Result<Grader, GraderError> {
        Self::from_config_at(config, "$", options)
    }

    fn from_config_at(
        config: &Value,
        path: &str,
        options: &GraderOptions,
    ) -> Result<Grader, GraderError> {
        let kind_value = config.get("type").ok_or_else(|| GraderError::Config {
            path: format!("{path}.type"),
            message: if config.is_object() {
                "missing required field `type`".into()
            } else {
                "a grader config must be a JSON object".into()
            },
        })?;
        let kind_str = kind_value.as_str().ok_or_else(|| GraderError::Config {
            path: format!("{path}.type"),
            message: "must be a string".into(),
        })?;
        if NOT_IMPLEMENTED_TYPES.contains(&kind_str) {
            return Err(GraderError::NotImplemented {
                path: format!("{path}.type"),
                kind: kind_str.to_owned(),
            });
        }
        let (kind_name, fields): (&'static str, &[&str]) = match kind_str {
            "string_check" => ("string_check", string_check::FIELDS),
            "text_similarity" => ("text_similarity", text_similarity::FIELDS),
            "regex" => ("regex", pattern::FIELDS),
            "json" => ("json", json::FIELDS),
            "multi" => ("multi", multi::FIELDS),
            "python" => ("python", python::FIELDS),
            "score_model" => ("score_model", score_model::FIELDS),
            "endpoint" => ("endpoint", endpoint::FIELDS),
            "feedback" => ("feedback", feedback::FIELDS),
            other => {
                return Err(GraderError::UnknownType {
                    path: format!("{path}.type"),
                    kind: other.to_owned(),
                })
            }
        };
        let mut allowed = vec!["type", "name", "pass_threshold"];
        allowed.extend_from_slice(fields);
        let cfg = Cfg::new(config, path, &allowed)?;
        let name = cfg.req_str("name")?.to_owned();
        let pass_threshold = cfg
            .opt_f64("pass_threshold")?
            .unwrap_or(DEFAULT_PASS_THRESHOLD);
        let kind = match kind_name {
            "string_check" => Kind::StringCheck(string_check::StringCheck::from_cfg(&cfg)?),
            "text_similarity" => {
                Kind::TextSimilarity(text_similarity::TextSimilarity::from_cfg(&cfg)?)
            }
            "regex" => Kind::Regex(pattern::RegexGrader::from_cfg(&cfg)?),
            "json" => Kind::Json(Box::new(json::JsonGrader::from_cfg(&cfg)?)),
            "python" => Kind::Python(python::PythonGrader::from_cfg(&cfg, options)?),
            "score_model" => {
                Kind::ScoreModel(Box::new(score_model::ScoreModel::from_cfg(&cfg, options)?))
            }
            "endpoint" => Kind::Endpoint(endpoint::Endpoint::from_cfg(&cfg, options)?),
            "feedback" => Kind::Feedback(feedback::FeedbackGrader::from_cfg(&cfg)?),
            _ => Kind::Multi(multi::Multi::from_cfg(&cfg, options)?),
        };
        Ok(Grader {
            name,
            kind_name,
            pass_threshold,
            kind,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The config's `type`.
    pub fn kind(&self) -> &str {
        self.kind_name
    }

    pub fn pass_threshold(&self) -> f64 {
        self.pass_threshold
    }

    /// For a `python` grader, the sandbox layers that keep it off the
    /// network on this machine (e.g. "network namespace + audit hook").
    pub fn python_sandbox(&self) -> Option<&str> {
        match &self.kind {
            Kind::Python(p) => Some(p.sandbox_description()),
            _ => None,
        }
    }

    /// Scores one sample against its item. Anything that prevents an honest
    /// score (a missing template field, a failing sub-grader, a division by
    /// zero, an unreachable judge, a python exception) is an `Err`, never a
    /// silent 0, so bad configs can't pass as bad models. Blocking.
    pub fn grade(&self, sample: &Sample, item: &Item) -> Result<Grade, GraderError> {
        self.grade_ctx(&context(sample, item))
    }

    /// Scores many samples; the result has one entry per pair, in order.
    /// Batches where it helps: one HTTP request for `endpoint`, one python
    /// worker for `python`, concurrent judge requests for `score_model`.
    pub fn grade_batch(&self, pairs: &[(Sample, Item)]) -> Vec<Result<Grade, GraderError>> {
        let ctxs: Vec<Value> = pairs.iter().map(|(s, i)| context(s, i)).collect();
        self.grade_batch_ctx(&ctxs)
    }

    fn grade_ctx(&self, ctx: &Value) -> Result<Grade, GraderError> {
        let scored = match &self.kind {
            Kind::StringCheck(g) => g.score(ctx),
            Kind::TextSimilarity(g) => g.score(ctx),
            Kind::Regex(g) => g.score(ctx),
            Kind::Json(g) => g.score(ctx),
            Kind::Multi(g) => g.score(ctx),
            Kind::Python(g) => g.score(ctx),
            Kind::ScoreModel(g) => g.score(ctx),
            Kind::Feedback(g) => g.score(ctx),
            Kind::Endpoint(g) => g
                .score_batch(std::slice::from_ref(ctx))
                .pop()
                .unwrap_or_else(|| Err("no result".into())),
        };
        self.finish(scored)
    }

    fn grade_batch_ctx(&self, ctxs: &[Value]) -> Vec<Result<Grade, GraderError>> {
        let scored: Vec<Scored> = match &self.kind {
            Kind::Multi(g) => g.score_batch(ctxs),
            Kind::Python(g) => g.score_batch(ctxs),
            Kind::ScoreModel(g) => g.score_batch(ctxs),
            Kind::Endpoint(g) => g.score_batch(ctxs),
            _ => return ctxs.iter().map(|c| self.grade_ctx(c)).collect(),
        };
        scored.into_iter().map(|s| self.finish(s)).collect()
    }

    fn finish(&self, scored: Scored) -> Result<Grade, GraderError> {
        let (score, reason) = scored.map_err(|message| GraderError::Grading {
            grader: self.name.clone(),
            message,
        })?;
        if !score.is_finite() {
            return Err(GraderError::Grading {
                grader: self.name.clone(),
                message: format!("score is not finite ({score})"),
            });
        }
        Ok(Grade {
            score,
            passed: score >= self.pass_threshold,
            reason,
        })
    }
}

fn context(sample: &Sample, item: &Item) -> Value {
    json!({ "sample": sample.as_value(), "item": item.as_value() })
}

/// `10s`, `0.5s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// At most `max` characters of `text`, for error messages quoting replies.
pub(crate) fn snippet(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(config: Value) -> GraderError {
        Grader::from_config(&config).unwrap_err()
    }

    #[test]
    fn unknown_type_lists_supported_types() {
        let e = err(json!({"type": "magic", "name": "m"}));
        assert!(matches!(e, GraderError::UnknownType { .. }));
        let msg = e.to_string();
        for t in SUPPORTED_TYPES {
            assert!(msg.contains(t), "{msg}");
        }
    }

    #[test]
    fn openai_types_not_done_here_are_distinct_errors() {
        assert_eq!(NOT_IMPLEMENTED_TYPES, &["label_model"]);
        for t in NOT_IMPLEMENTED_TYPES {
            let e = err(json!({"type": t, "name": "m"}));
            assert!(matches!(e, GraderError::NotImplemented { .. }), "{e}");
            assert!(e
                .to_string()
                .contains(&format!("grader type {t} is not implemented yet")));
        }
        for t in ["python", "score_model", "endpoint"] {
            assert!(SUPPORTED_TYPES.contains(&t));
            // Implemented now: a bare config fails on its missing fields instead.
            let e = err(json!({"type": t, "name": "m"}));
            assert!(matches!(e, GraderError::Config { .. }), "{t}: {e}");
        }
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let e = err(
            json!({"type": "string_check", "name": "s", "input": "a", "reference": "b", "operation": "eq", "extra": 1}),
        );
        assert!(e.to_string().contains("$.extra"), "{e}");
        let e = err(json!({"type": "string_check", "name": "s", "input": "a", "operation": "eq"}));
        assert!(e.to_string().contains("$.reference"), "{e}");
        let e =
            err(json!({"type": "string_check", "input": "a", "reference": "b", "operation": "eq"}));
        assert!(e.to_string().contains("$.name"), "{e}");
        let e = err(json!({"name": "s"}));
        assert!(e.to_string().contains("$.type"), "{e}");
        let e = err(json!("string_check"));
        assert!(matches!(e, GraderError::Config { .. }));
    }

    #[test]
    fn pass_threshold_must_be_a_number() {
        let e = err(
            json!({"type": "regex", "name": "r", "input": "x", "pattern": "x", "pass_threshold": "high"}),
        );
        assert!(e.to_string().contains("$.pass_threshold"), "{e}");
        let g = Grader::from_config(&json!({"type": "regex", "name": "r", "input": "x", "pattern": "x", "pass_threshold": 0.5})).unwrap();
        assert_eq!(g.pass_threshold(), 0.5);
        assert_eq!(g.name(), "r");
        assert_eq!(g.kind(), "regex");
    }
}
