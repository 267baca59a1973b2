//! The `regex` extension grader: 1 if the pattern matches the rendered
//! input (anywhere, or the whole of it with `full_match`), else 0.
//! Named `pattern` so the module does not shadow the `regex` crate.

use regex::Regex;
use serde_json::Value;

use super::{config::Cfg, template::Template, GraderError};

pub(crate) const FIELDS: &[&str] = &["input", "pattern", "full_match"];

pub(crate) struct RegexGrader {
    input: Template,
    regex: Regex,
}

impl RegexGrader {
    pub fn from_cfg(cfg: &Cfg) -> Result<Self, GraderError> {
        let pattern = cfg.req_str("pattern")?;
        let full = cfg.opt_bool("full_match")?.unwrap_or(false);
        // Anchoring with \A..\z rather than checking the match span, since a
        // leftmost-first search can pick a shorter alternative than the one
        // that would cover the whole input.
        let source = if full {
            format!(r"\A(?:{pattern})\z")
        } else {
            pattern.to_owned()
        };
        let regex =
            Regex::new(&source).map_err(|e| cfg.err("pattern", format!("invalid regex: {e}")))?;
        Ok(Self {
            input: cfg.req_template("input")?,
            regex,
        })
    }

    pub fn score(&self, ctx: &Value) -> Result<(f64, String), String> {
        let input = self.input.render(ctx).map_err(|e| format!("input: {e}"))?;
        Ok(if self.regex.is_match(&input) {
            (1.0, format!("matches /{}/", self.regex.as_str()))
        } else {
            (0.0, format!("does not match /{}/", self.regex.as_str()))
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::{
        grader::{Grader, GraderError},
        item::{Item, Message, Sample},
    };

    fn grade(config: Value, output: &str) -> f64 {
        let item = Item::new(vec![Message::new("user", "q")], None);
        Grader::from_config(&config)
            .unwrap()
            .grade(&Sample::from_text(output), &item)
            .unwrap()
            .score
    }

    #[test]
    fn search_and_full_match() {
        let search = json!({"type": "regex", "name": "r", "input": "{{sample.output_text}}", "pattern": r"\d+"});
        assert_eq!(grade(search.clone(), "answer: 42"), 1.0);
        assert_eq!(grade(search, "no digits"), 0.0);
        let full = json!({"type": "regex", "name": "r", "input": "{{sample.output_text}}", "pattern": r"a|ab", "full_match": true});
        assert_eq!(grade(full.clone(), "ab"), 1.0);
        assert_eq!(grade(full, "abc"), 0.0);
    }

    #[test]
    fn bad_regex_is_a_config_error() {
        let e = Grader::from_config(
            &json!({"type": "regex", "name": "r", "input": "x", "pattern": "(unclosed"}),
        )
        .unwrap_err();
        assert!(
            matches!(&e, GraderError::Config { path, .. } if path == "$.pattern"),
            "{e}"
        );
        let e = Grader::from_config(&json!({"type": "regex", "name": "r", "input": "x", "pattern": "x", "full_match": "yes"})).unwrap_err();
        assert!(e.to_string().contains("$.full_match"), "{e}");
    }
}
