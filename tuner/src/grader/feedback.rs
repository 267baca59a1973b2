//! The `feedback` extension grader: a reward from what users said about a
//! logged output (thumbs, scores), for datasets built from captured traffic
//! (`flywheel-tuner dataset` puts the joined feedback in `item.feedback`
//! and the answer in `item.logged_output`).
//!
//! Feedback judges one answer, so it scores only that answer: a sample
//! whose text differs from the logged output is a grading error, not a
//! guess. A boolean scores 1 or 0; a number is mapped from `range`
//! (default [0, 1]) to [0, 1]; a number outside the range, or no feedback
//! for the metric, is an error.

use serde_json::Value;

use super::{config::Cfg, GraderError};

pub(crate) const FIELDS: &[&str] = &["metric", "range"];

pub(crate) struct FeedbackGrader {
    metric: String,
    range: (f64, f64),
}

impl FeedbackGrader {
    pub fn from_cfg(cfg: &Cfg) -> Result<Self, GraderError> {
        let metric = cfg.req_str("metric")?.to_owned();
        let range = match cfg.opt("range") {
            None => (0.0, 1.0),
            Some(v) => match v
                .as_array()
                .map(|a| a.iter().map(Value::as_f64).collect::<Vec<_>>())
                .as_deref()
            {
                Some([Some(lo), Some(hi)]) if lo < hi => (*lo, *hi),
                _ => return Err(cfg.err("range", "must be [min, max] with min < max")),
            },
        };
        Ok(Self { metric, range })
    }

    pub fn score(&self, ctx: &Value) -> Result<(f64, String), String> {
        let item = &ctx["item"];
        let logged = item
            .get("logged_output")
            .and_then(Value::as_str)
            .ok_or("the item has no logged_output to match feedback to")?;
        let sample = ctx
            .pointer("/sample/output_text")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if sample != logged {
            return Err(
                "feedback scores only the logged output, and this sample differs from it".into(),
            );
        }
        let value = item
            .pointer(&format!(
                "/feedback/{}",
                self.metric.replace('~', "~0").replace('/', "~1")
            ))
            .ok_or_else(|| format!("no feedback `{}` for this item", self.metric))?;
        let (lo, hi) = self.range;
        match value {
            Value::Bool(b) => Ok((f64::from(u8::from(*b)), format!("{} = {b}", self.metric))),
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if !(lo..=hi).contains(&x) {
                    return Err(format!(
                        "feedback `{}` = {x} is outside the range [{lo}, {hi}]",
                        self.metric
                    ));
                }
                Ok(((x - lo) / (hi - lo), format!("{} = {x}", self.metric)))
            }
            other => Err(format!(
                "feedback `{}` is not a boolean or a number: {other}",
                self.metric
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::{
        grader::Grader,
        item::{Item, Message, Sample},
    };

    fn item(feedback: Value) -> Item {
        let mut item = Item::new(vec![Message::new("user", "q")], None);
        item.extra
            .insert("logged_output".into(), json!("the answer"));
        item.extra.insert("feedback".into(), feedback);
        item
    }

    #[test]
    fn thumbs_and_scores_of_the_logged_output() {
        let thumbs =
            Grader::from_config(&json!({"type": "feedback", "name": "f", "metric": "thumbs_up"}))
                .unwrap();
        let sample = Sample::from_text("the answer");
        assert_eq!(
            thumbs
                .grade(&sample, &item(json!({"thumbs_up": true})))
                .unwrap()
                .score,
            1.0
        );
        assert_eq!(
            thumbs
                .grade(&sample, &item(json!({"thumbs_up": false})))
                .unwrap()
                .score,
            0.0
        );
        let e = thumbs
            .grade(&sample, &item(json!({"other": true})))
            .unwrap_err();
        assert!(e.to_string().contains("no feedback `thumbs_up`"), "{e}");
        let e = thumbs
            .grade(
                &Sample::from_text("a new answer"),
                &item(json!({"thumbs_up": true})),
            )
            .unwrap_err();
        assert!(e.to_string().contains("logged output"), "{e}");

        let stars = Grader::from_config(&json!({"type": "feedback", "name": "f", "metric": "stars", "range": [1, 5], "pass_threshold": 0.7})).unwrap();
        let g = stars.grade(&sample, &item(json!({"stars": 4}))).unwrap();
        assert_eq!((g.score, g.passed), (0.75, true));
        assert!(stars.grade(&sample, &item(json!({"stars": 9}))).is_err());
        assert!(stars
            .grade(&sample, &item(json!({"stars": "great"})))
            .is_err());
        let e = Grader::from_config(
            &json!({"type": "feedback", "name": "f", "metric": "m", "range": [5, 1]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("$.range"), "{e}");
    }
}
