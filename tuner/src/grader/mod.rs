//! Rule-based graders, configured in the JSON shapes of OpenAI's graders so
//! that an existing OpenAI RFT grader config works unchanged.
//!
//! Supported `type`s: `string_check`, `text_similarity`, `multi` (OpenAI's),
//! plus two extensions: `regex` and `json`. OpenAI's `python`,
//! `score_model`, `label_model` and `endpoint` are recognised but rejected
//! as not implemented yet.
//!
//! `pass_threshold` is accepted by every type and defaults to 1.0: the
//! rule-based graders score 0 or 1, so "passed" means a full score unless
//! the config says otherwise.

mod config;
mod expr;
mod json;
mod multi;
mod pattern;
mod string_check;
pub mod template;
mod text_similarity;

use std::fmt;

use serde_json::{Value, json};

use crate::item::{Item, Sample};
use config::Cfg;

/// The grader types this crate implements.
pub const SUPPORTED_TYPES: &[&str] = &["string_check", "text_similarity", "regex", "json", "multi"];
/// OpenAI grader types that are recognised but not implemented here.
pub const NOT_IMPLEMENTED_TYPES: &[&str] = &["python", "score_model", "label_model", "endpoint"];

const DEFAULT_PASS_THRESHOLD: f64 = 1.0;

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
    /// (e.g. a template names a field the item lacks).
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

impl Grader {
    /// Parses and strictly validates a grader config: unknown types and
    /// fields, missing fields, bad regexes, schemas, operations, metrics
    /// and expressions are all rejected here rather than at grading time.
    pub fn from_config(config: &Value) -> Result<Grader, GraderError> {
        Self::from_config_at(config, "$")
    }

    fn from_config_at(config: &Value, path: &str) -> Result<Grader, GraderError> {
        let kind_value = config.get("type").ok_or_else(|| GraderError::Config {
            path: format!("{path}.type"),
            message: if config.is_object() { "missing required field `type`".into() } else { "a grader config must be a JSON object".into() },
        })?;
        let kind_str = kind_value.as_str().ok_or_else(|| GraderError::Config {
            path: format!("{path}.type"),
            message: "must be a string".into(),
        })?;
        if NOT_IMPLEMENTED_TYPES.contains(&kind_str) {
            return Err(GraderError::NotImplemented { path: format!("{path}.type"), kind: kind_str.to_owned() });
        }
        let (kind_name, fields): (&'static str, &[&str]) = match kind_str {
            "string_check" => ("string_check", string_check::FIELDS),
            "text_similarity" => ("text_similarity", text_similarity::FIELDS),
            "regex" => ("regex", pattern::FIELDS),
            "json" => ("json", json::FIELDS),
            "multi" => ("multi", multi::FIELDS),
            other => return Err(GraderError::UnknownType { path: format!("{path}.type"), kind: other.to_owned() }),
        };
        let mut allowed = vec!["type", "name", "pass_threshold"];
        allowed.extend_from_slice(fields);
        let cfg = Cfg::new(config, path, &allowed)?;
        let name = cfg.req_str("name")?.to_owned();
        let pass_threshold = cfg.opt_f64("pass_threshold")?.unwrap_or(DEFAULT_PASS_THRESHOLD);
        let kind = match kind_name {
            "string_check" => Kind::StringCheck(string_check::StringCheck::from_cfg(&cfg)?),
            "text_similarity" => Kind::TextSimilarity(text_similarity::TextSimilarity::from_cfg(&cfg)?),
            "regex" => Kind::Regex(pattern::RegexGrader::from_cfg(&cfg)?),
            "json" => Kind::Json(Box::new(json::JsonGrader::from_cfg(&cfg)?)),
            _ => Kind::Multi(multi::Multi::from_cfg(&cfg)?),
        };
        Ok(Grader { name, kind_name, pass_threshold, kind })
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

    /// Scores one sample against its item. Anything that prevents an honest
    /// score (a missing template field, a failing sub-grader, a division by
    /// zero) is an `Err`, never a silent 0, so bad configs can't pass as
    /// bad models.
    pub fn grade(&self, sample: &Sample, item: &Item) -> Result<Grade, GraderError> {
        let ctx = json!({ "sample": sample.as_value(), "item": item.as_value() });
        self.grade_ctx(&ctx)
    }

    fn grade_ctx(&self, ctx: &Value) -> Result<Grade, GraderError> {
        let scored = match &self.kind {
            Kind::StringCheck(g) => g.score(ctx),
            Kind::TextSimilarity(g) => g.score(ctx),
            Kind::Regex(g) => g.score(ctx),
            Kind::Json(g) => g.score(ctx),
            Kind::Multi(g) => g.score(ctx),
        };
        let (score, reason) = scored.map_err(|message| GraderError::Grading { grader: self.name.clone(), message })?;
        if !score.is_finite() {
            return Err(GraderError::Grading { grader: self.name.clone(), message: format!("score is not finite ({score})") });
        }
        Ok(Grade { score, passed: score >= self.pass_threshold, reason })
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
        for t in NOT_IMPLEMENTED_TYPES {
            let e = err(json!({"type": t, "name": "m"}));
            assert!(matches!(e, GraderError::NotImplemented { .. }), "{e}");
            assert!(e.to_string().contains(&format!("grader type {t} is not implemented yet")));
        }
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let e = err(json!({"type": "string_check", "name": "s", "input": "a", "reference": "b", "operation": "eq", "extra": 1}));
        assert!(e.to_string().contains("$.extra"), "{e}");
        let e = err(json!({"type": "string_check", "name": "s", "input": "a", "operation": "eq"}));
        assert!(e.to_string().contains("$.reference"), "{e}");
        let e = err(json!({"type": "string_check", "input": "a", "reference": "b", "operation": "eq"}));
        assert!(e.to_string().contains("$.name"), "{e}");
        let e = err(json!({"name": "s"}));
        assert!(e.to_string().contains("$.type"), "{e}");
        let e = err(json!("string_check"));
        assert!(matches!(e, GraderError::Config { .. }));
    }

    #[test]
    fn pass_threshold_must_be_a_number() {
        let e = err(json!({"type": "regex", "name": "r", "input": "x", "pattern": "x", "pass_threshold": "high"}));
        assert!(e.to_string().contains("$.pass_threshold"), "{e}");
        let g = Grader::from_config(&json!({"type": "regex", "name": "r", "input": "x", "pattern": "x", "pass_threshold": 0.5})).unwrap();
        assert_eq!(g.pass_threshold(), 0.5);
        assert_eq!(g.name(), "r");
        assert_eq!(g.kind(), "regex");
    }
}
