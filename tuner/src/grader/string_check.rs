//! OpenAI's `string_check`: compares a rendered input with a rendered
//! reference and scores 1 or 0.

use serde_json::Value;

use super::{config::Cfg, template::Template, GraderError};

pub(crate) const FIELDS: &[&str] = &["input", "reference", "operation"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    /// The reference occurs in the input, case-sensitively.
    Like,
    /// As `Like`, ignoring case.
    Ilike,
}

pub(crate) struct StringCheck {
    input: Template,
    reference: Template,
    op: Op,
}

impl StringCheck {
    pub fn from_cfg(cfg: &Cfg) -> Result<Self, GraderError> {
        let op = match cfg.req_str("operation")? {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "like" => Op::Like,
            "ilike" => Op::Ilike,
            other => {
                return Err(cfg.err(
                    "operation",
                    format!("unknown operation `{other}` (supported: eq, ne, like, ilike)"),
                ))
            }
        };
        Ok(Self {
            input: cfg.req_template("input")?,
            reference: cfg.req_template("reference")?,
            op,
        })
    }

    pub fn score(&self, ctx: &Value) -> Result<(f64, String), String> {
        let input = self.input.render(ctx).map_err(|e| format!("input: {e}"))?;
        let reference = self
            .reference
            .render(ctx)
            .map_err(|e| format!("reference: {e}"))?;
        let (ok, what) = match self.op {
            Op::Eq => (input == reference, "equals"),
            Op::Ne => (input != reference, "differs from"),
            Op::Like => (input.contains(&reference), "contains"),
            Op::Ilike => (
                input.to_lowercase().contains(&reference.to_lowercase()),
                "contains (ignoring case)",
            ),
        };
        let reason = if ok {
            format!("input {what} reference")
        } else {
            format!("input does not satisfy `{what}` reference {reference:?}")
        };
        Ok((if ok { 1.0 } else { 0.0 }, reason))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::{
        grader::{Grader, GraderError},
        item::{Item, Message, Sample},
    };

    fn check(op: &str, output: &str, reference: &str) -> f64 {
        let g = Grader::from_config(&json!({
            "type": "string_check", "name": "s", "operation": op,
            "input": "{{ sample.output_text }}", "reference": "{{ item.reference_answer }}"
        }))
        .unwrap();
        let item = Item::new(vec![Message::new("user", "q")], Some(json!(reference)));
        let grade = g.grade(&Sample::from_text(output), &item).unwrap();
        assert_eq!(grade.passed, grade.score == 1.0);
        grade.score
    }

    #[test]
    fn operations() {
        assert_eq!(check("eq", "Paris", "Paris"), 1.0);
        assert_eq!(check("eq", "paris", "Paris"), 0.0);
        assert_eq!(check("ne", "London", "Paris"), 1.0);
        assert_eq!(check("ne", "Paris", "Paris"), 0.0);
        assert_eq!(check("like", "It is Paris.", "Paris"), 1.0);
        assert_eq!(check("like", "It is paris.", "Paris"), 0.0);
        assert_eq!(check("ilike", "It is PARIS.", "paris"), 1.0);
        assert_eq!(check("ilike", "It is Rome.", "paris"), 0.0);
    }

    #[test]
    fn bad_operation_is_a_config_error() {
        let e = Grader::from_config(&json!({"type": "string_check", "name": "s", "operation": "contains", "input": "a", "reference": "b"})).unwrap_err();
        assert!(
            matches!(&e, GraderError::Config { path, .. } if path == "$.operation"),
            "{e}"
        );
    }

    #[test]
    fn missing_template_field_is_a_grading_error() {
        let g = Grader::from_config(&json!({"type": "string_check", "name": "s", "operation": "eq", "input": "{{sample.output_text}}", "reference": "{{item.answer}}"})).unwrap();
        let item = Item::new(vec![Message::new("user", "q")], None);
        let e = g.grade(&Sample::from_text("x"), &item).unwrap_err();
        assert!(matches!(&e, GraderError::Grading { grader, .. } if grader == "s"));
        assert!(e.to_string().contains("item.answer"), "{e}");
    }
}
