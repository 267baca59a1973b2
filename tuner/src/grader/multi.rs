//! OpenAI's `multi`: runs named sub-graders and combines their scores with
//! the arithmetic expression `calculate_output`.

use std::collections::HashMap;

use serde_json::Value;

use super::{config::Cfg, expr::Expr, Grader, GraderError, GraderOptions, Scored};

pub(crate) const FIELDS: &[&str] = &["graders", "calculate_output"];

pub(crate) struct Multi {
    graders: Vec<(String, Grader)>,
    expr: Expr,
}

impl Multi {
    pub fn from_cfg(cfg: &Cfg, options: &GraderOptions) -> Result<Self, GraderError> {
        let map = cfg
            .req("graders")?
            .as_object()
            .ok_or_else(|| cfg.err("graders", "must be an object of name -> grader config"))?;
        if map.is_empty() {
            return Err(cfg.err("graders", "must hold at least one grader"));
        }
        let graders = map
            .iter()
            .map(|(key, sub)| {
                Ok((
                    key.clone(),
                    Grader::from_config_at(sub, &cfg.path(&format!("graders.{key}")), options)?,
                ))
            })
            .collect::<Result<Vec<_>, GraderError>>()?;
        let names: Vec<&str> = graders.iter().map(|(k, _)| k.as_str()).collect();
        // Parsed now so that a typo in a sub-grader name fails before training starts.
        let expr = Expr::parse(cfg.req_str("calculate_output")?, &names)
            .map_err(|m| cfg.err("calculate_output", m))?;
        Ok(Self { graders, expr })
    }

    pub fn score(&self, ctx: &Value) -> Scored {
        let grades: Vec<_> = self.graders.iter().map(|(_, g)| g.grade_ctx(ctx)).collect();
        self.combine(grades)
    }

    /// Each sub-grader grades the whole batch (so an `endpoint` or `python`
    /// sub-grader batches too), then the scores are combined per sample.
    pub fn score_batch(&self, ctxs: &[Value]) -> Vec<Scored> {
        let mut per_grader: Vec<std::vec::IntoIter<_>> = self
            .graders
            .iter()
            .map(|(_, g)| g.grade_batch_ctx(ctxs).into_iter())
            .collect();
        (0..ctxs.len())
            .map(|_| {
                let grades = per_grader
                    .iter_mut()
                    .map(|it| {
                        it.next().unwrap_or_else(|| {
                            Err(GraderError::Grading {
                                grader: "?".into(),
                                message: "no result".into(),
                            })
                        })
                    })
                    .collect();
                self.combine(grades)
            })
            .collect()
    }

    fn combine(&self, grades: Vec<Result<super::Grade, GraderError>>) -> Scored {
        let mut scores = HashMap::new();
        let mut parts = Vec::new();
        for ((key, _), grade) in self.graders.iter().zip(grades) {
            let grade = grade.map_err(|e| format!("sub-grader `{key}` failed: {e}"))?;
            parts.push(format!("{key}={:.4}", grade.score));
            scores.insert(key.clone(), grade.score);
        }
        let score = self
            .expr
            .eval(&scores)
            .map_err(|e| format!("calculate_output: {e}"))?;
        Ok((score, parts.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::{
        grader::{Grader, GraderError},
        item::{Item, Message, Sample},
    };

    fn config(expr: &str) -> Value {
        json!({
            "type": "multi", "name": "m", "calculate_output": expr, "pass_threshold": 0.6,
            "graders": {
                "exact": {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.reference_answer}}", "operation": "eq"},
                "has_digit": {"type": "regex", "name": "has_digit", "input": "{{sample.output_text}}", "pattern": "[0-9]"}
            }
        })
    }

    fn item() -> Item {
        Item::new(vec![Message::new("user", "q")], Some(json!("42")))
    }

    #[test]
    fn combines_sub_scores_with_precedence() {
        let g = Grader::from_config(&config("0.5 * exact + 0.5 * has_digit")).unwrap();
        let full = g.grade(&Sample::from_text("42"), &item()).unwrap();
        assert_eq!((full.score, full.passed), (1.0, true));
        assert!(
            full.reason.contains("exact=1") && full.reason.contains("has_digit=1"),
            "{}",
            full.reason
        );
        let half = g.grade(&Sample::from_text("41"), &item()).unwrap();
        assert_eq!((half.score, half.passed), (0.5, false));
        let g = Grader::from_config(&config("exact + has_digit * 2 - 1")).unwrap();
        assert_eq!(
            g.grade(&Sample::from_text("41"), &item()).unwrap().score,
            1.0
        );
        let g = Grader::from_config(&config("(exact + has_digit) * 2 - 1")).unwrap();
        assert_eq!(
            g.grade(&Sample::from_text("41"), &item()).unwrap().score,
            1.0
        );
        assert_eq!(
            g.grade(&Sample::from_text("none"), &item()).unwrap().score,
            -1.0
        );
    }

    #[test]
    fn unknown_name_is_rejected_at_config_time() {
        let e = Grader::from_config(&config("0.5 * exact + 0.5 * has_digits")).unwrap_err();
        assert!(
            matches!(&e, GraderError::Config { path, .. } if path == "$.calculate_output"),
            "{e}"
        );
        assert!(e.to_string().contains("has_digits"), "{e}");
    }

    #[test]
    fn sub_grader_config_errors_carry_their_path() {
        let mut c = config("exact");
        c["graders"]["exact"]["operation"] = json!("similar");
        let e = Grader::from_config(&c).unwrap_err();
        assert!(e.to_string().contains("$.graders.exact.operation"), "{e}");
    }

    #[test]
    fn division_by_zero_is_a_grading_error() {
        let g = Grader::from_config(&config("has_digit / exact")).unwrap();
        assert_eq!(
            g.grade(&Sample::from_text("42"), &item()).unwrap().score,
            1.0
        );
        let e = g.grade(&Sample::from_text("41"), &item()).unwrap_err();
        assert!(matches!(&e, GraderError::Grading { grader, .. } if grader == "m"));
        assert!(e.to_string().contains("division by zero"), "{e}");
    }

    #[test]
    fn batch_matches_one_by_one() {
        let g = Grader::from_config(&config("0.5 * exact + 0.5 * has_digit")).unwrap();
        let pairs: Vec<(Sample, Item)> = ["42", "41", "none"]
            .iter()
            .map(|t| (Sample::from_text(*t), item()))
            .collect();
        let batch = g.grade_batch(&pairs);
        let single: Vec<_> = pairs.iter().map(|(s, i)| g.grade(s, i)).collect();
        assert_eq!(batch, single);
        assert_eq!(
            batch
                .iter()
                .map(|r| r.as_ref().unwrap().score)
                .collect::<Vec<_>>(),
            vec![1.0, 0.5, 0.0]
        );
    }

    #[test]
    fn failing_sub_grader_fails_the_whole_grade() {
        let mut c = config("exact + has_digit");
        c["graders"]["exact"]["reference"] = json!("{{item.missing}}");
        let e = Grader::from_config(&c)
            .unwrap()
            .grade(&Sample::from_text("42"), &item())
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("sub-grader `exact` failed") && msg.contains("item.missing"),
            "{msg}"
        );
    }
}
