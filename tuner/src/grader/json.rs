//! The `json` extension grader, for structured outputs: the input must
//! parse as JSON, optionally match a JSON Schema, and then either equal the
//! reference as a whole or match it on a weighted set of fields.
//!
//! Equality is lenient where models are noisy and strict where it matters:
//! numbers compare by value (`1` == `1.0`), strings after trimming but with
//! case kept, objects key by key, arrays element by element.

use serde_json::Value;

use super::{config::Cfg, template::Template, GraderError};

pub(crate) const FIELDS: &[&str] = &["input", "schema", "reference", "fields", "extract"];

const DEFAULT_INPUT: &str = "{{sample.output_text}}";
const DEFAULT_REFERENCE: &str = "{{item.reference_answer}}";
/// How many schema errors a reason quotes; more would drown the message.
const MAX_SCHEMA_ERRORS: usize = 3;

struct Field {
    /// As written in the config, for reasons.
    key: String,
    pointer: String,
    weight: f64,
}

pub(crate) struct JsonGrader {
    input: Template,
    schema: Option<jsonschema::Validator>,
    reference: Template,
    /// A default reference is optional: without fields, an item with no
    /// reference_answer is graded on validity alone.
    reference_required: bool,
    fields: Vec<Field>,
    validity_only: bool,
    /// Grade the first JSON object found in the text (inside a code fence
    /// or after some chatter) instead of requiring the whole text to be
    /// JSON. For content rewards that should not collapse to 0 on format
    /// alone; pair with a strict `json` grader to reward the format too.
    extract: bool,
}

/// The first `{...}` in `text` that parses as a JSON object.
fn first_object(text: &str) -> Option<Value> {
    text.match_indices('{').find_map(|(i, _)| {
        let mut values = serde_json::Deserializer::from_str(&text[i..]).into_iter::<Value>();
        values.next()?.ok().filter(Value::is_object)
    })
}

impl JsonGrader {
    pub fn from_cfg(cfg: &Cfg) -> Result<Self, GraderError> {
        let input = cfg.template("input", cfg.opt_str("input")?.unwrap_or(DEFAULT_INPUT))?;
        // `"reference": null`: validity (and the schema) only, even when the
        // item has a reference_answer: a format reward.
        let validity_only = matches!(cfg.opt("reference"), Some(Value::Null));
        let explicit_reference = if validity_only {
            None
        } else {
            cfg.opt_str("reference")?
        };
        let reference =
            cfg.template("reference", explicit_reference.unwrap_or(DEFAULT_REFERENCE))?;
        let schema = cfg
            .opt("schema")
            .map(|s| {
                jsonschema::validator_for(s)
                    .map_err(|e| cfg.err("schema", format!("invalid JSON Schema: {e}")))
            })
            .transpose()?;
        let mut fields = Vec::new();
        if let Some(spec) = cfg.opt("fields") {
            let map = spec
                .as_object()
                .ok_or_else(|| cfg.err("fields", "must be an object of field -> weight"))?;
            if map.is_empty() {
                return Err(cfg.err("fields", "must name at least one field"));
            }
            for (key, weight) in map {
                let path = format!("fields.{key}");
                let weight = weight
                    .as_f64()
                    .filter(|w| *w >= 0.0 && w.is_finite())
                    .ok_or_else(|| cfg.err(&path, "weight must be a non-negative number"))?;
                let pointer = if key.starts_with('/') {
                    key.clone()
                } else {
                    format!("/{}", key.replace('~', "~0").replace('/', "~1"))
                };
                fields.push(Field {
                    key: key.clone(),
                    pointer,
                    weight,
                });
            }
            if fields.iter().all(|f| f.weight == 0.0) {
                return Err(cfg.err("fields", "weights must not all be zero"));
            }
        }
        let reference_required = explicit_reference.is_some() || !fields.is_empty();
        let extract = match cfg.opt("extract") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(cfg.err("extract", "must be true or false")),
        };
        if validity_only && !fields.is_empty() {
            return Err(cfg.err("reference", "null (validity only) cannot go with `fields`"));
        }
        Ok(Self {
            input,
            schema,
            reference,
            reference_required,
            fields,
            validity_only,
            extract,
        })
    }

    pub fn score(&self, ctx: &Value) -> Result<(f64, String), String> {
        let text = self.input.render(ctx).map_err(|e| format!("input: {e}"))?;
        let value: Value = match serde_json::from_str(text.trim()) {
            Ok(v) => v,
            Err(e) => match self.extract.then(|| first_object(&text)).flatten() {
                Some(v) => v,
                None if self.extract => return Ok((0.0, "input holds no JSON object".into())),
                None => return Ok((0.0, format!("input is not valid JSON: {e}"))),
            },
        };
        if let Some(schema) = &self.schema {
            let errors: Vec<String> = schema
                .iter_errors(&value)
                .take(MAX_SCHEMA_ERRORS)
                .map(|e| format!("at `{}`: {e}", e.instance_path()))
                .collect();
            if !errors.is_empty() {
                return Ok((
                    0.0,
                    format!("input does not match the schema: {}", errors.join("; ")),
                ));
            }
        }
        if self.validity_only {
            return Ok((
                1.0,
                if self.schema.is_some() {
                    "valid JSON matching the schema"
                } else {
                    "valid JSON"
                }
                .into(),
            ));
        }
        let reference = match self.reference.render_value(ctx) {
            Ok(v) => Some(parse_if_json(v)),
            Err(e) if self.reference_required => return Err(format!("reference: {e}")),
            Err(_) => None,
        };
        let Some(reference) = reference else {
            return Ok((1.0, "valid JSON; no reference to compare".into()));
        };
        if self.fields.is_empty() {
            return Ok(if equal(&value, &reference) {
                (1.0, "input equals reference".into())
            } else {
                (0.0, "input differs from reference".into())
            });
        }
        let total: f64 = self.fields.iter().map(|f| f.weight).sum();
        let mut got = 0.0;
        let mut mismatched = Vec::new();
        for f in &self.fields {
            match (value.pointer(&f.pointer), reference.pointer(&f.pointer)) {
                (Some(a), Some(b)) if equal(a, b) => got += f.weight,
                (None, _) => mismatched.push(format!("{} (missing in input)", f.key)),
                (_, None) => mismatched.push(format!("{} (missing in reference)", f.key)),
                _ => mismatched.push(f.key.clone()),
            }
        }
        let reason = if mismatched.is_empty() {
            "all fields match".to_owned()
        } else {
            format!("mismatched fields: {}", mismatched.join(", "))
        };
        Ok((got / total, reason))
    }
}

/// References are often stored as JSON text (`"reference_answer": "{\"a\":1}"`).
fn parse_if_json(v: Value) -> Value {
    match &v {
        Value::String(s) => serde_json::from_str(s.trim()).unwrap_or(v),
        _ => v,
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::String(x), Value::String(y)) => x.trim() == y.trim(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::{
        grader::{Grade, Grader, GraderError},
        item::{Item, Message, Sample},
    };

    fn grade(config: Value, output: &str, reference: Option<Value>) -> Result<Grade, GraderError> {
        let item = Item::new(vec![Message::new("user", "q")], reference);
        Grader::from_config(&config)
            .unwrap()
            .grade(&Sample::from_text(output), &item)
    }

    #[test]
    fn invalid_json_scores_zero_with_reason() {
        let g = grade(
            json!({"type": "json", "name": "j"}),
            "```json\n{}\n```",
            None,
        )
        .unwrap();
        assert_eq!(g.score, 0.0);
        assert!(g.reason.contains("not valid JSON"), "{}", g.reason);
        let g = grade(json!({"type": "json", "name": "j"}), " {\"a\": 1} ", None).unwrap();
        assert_eq!(g.score, 1.0);
        assert!(g.passed);
    }

    #[test]
    fn schema_errors_are_reported() {
        let config = json!({"type": "json", "name": "j", "schema": {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "integer"}}}});
        let g = grade(config.clone(), r#"{"answer": "seven"}"#, None).unwrap();
        assert_eq!(g.score, 0.0);
        assert!(
            g.reason.contains("schema") && g.reason.contains("/answer"),
            "{}",
            g.reason
        );
        assert_eq!(grade(config, r#"{"answer": 7}"#, None).unwrap().score, 1.0);
        let e = Grader::from_config(
            &json!({"type": "json", "name": "j", "schema": {"type": "no-such-type"}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("$.schema"), "{e}");
    }

    #[test]
    fn whole_value_equality_is_lenient_on_numbers_and_whitespace() {
        let config = json!({"type": "json", "name": "j"});
        let reference = Some(json!({"n": 1, "s": "x", "l": [1, 2]}));
        assert_eq!(
            grade(
                config.clone(),
                r#"{"n": 1.0, "s": " x ", "l": [1, 2.0]}"#,
                reference.clone()
            )
            .unwrap()
            .score,
            1.0
        );
        assert_eq!(
            grade(
                config.clone(),
                r#"{"n": 1, "s": "X", "l": [1, 2]}"#,
                reference.clone()
            )
            .unwrap()
            .score,
            0.0
        );
        assert_eq!(
            grade(
                config,
                r#"{"n": 1, "s": "x", "l": [1, 2], "more": 0}"#,
                reference
            )
            .unwrap()
            .score,
            0.0
        );
    }

    #[test]
    fn weighted_fields_and_string_reference() {
        let config = json!({"type": "json", "name": "j", "fields": {"city": 3, "/geo/lat": 1}, "pass_threshold": 0.7});
        // The reference arrives as JSON text and is parsed.
        let reference = Some(json!(r#"{"city": "Paris", "geo": {"lat": 48.85}}"#));
        let g = grade(
            config.clone(),
            r#"{"city": "Paris", "geo": {"lat": 48.85}}"#,
            reference.clone(),
        )
        .unwrap();
        assert_eq!((g.score, g.passed), (1.0, true));
        let g = grade(
            config.clone(),
            r#"{"city": "Paris", "geo": {"lat": 0}}"#,
            reference.clone(),
        )
        .unwrap();
        assert_eq!((g.score, g.passed), (0.75, true));
        assert!(g.reason.contains("/geo/lat"), "{}", g.reason);
        let g = grade(config, r#"{"geo": {"lat": 48.85}}"#, reference).unwrap();
        assert_eq!((g.score, g.passed), (0.25, false));
        assert!(g.reason.contains("city (missing in input)"), "{}", g.reason);
    }

    #[test]
    fn null_reference_grades_validity_only() {
        let config = json!({"type": "json", "name": "j", "reference": null,
                            "schema": {"type": "object", "required": ["a"]}});
        let reference = Some(json!({"a": 1}));
        assert_eq!(
            grade(config.clone(), r#"{"a": 2}"#, reference.clone())
                .unwrap()
                .score,
            1.0
        );
        assert_eq!(
            grade(config.clone(), r#"{"b": 2}"#, reference.clone())
                .unwrap()
                .score,
            0.0
        );
        assert_eq!(grade(config, "{\"a\": 2", reference).unwrap().score, 0.0);
        let e = Grader::from_config(
            &json!({"type": "json", "name": "j", "reference": null, "fields": {"a": 1}}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("$.reference"), "{e}");
    }

    #[test]
    fn extract_finds_the_first_object_in_chatter() {
        let config = json!({"type": "json", "name": "j", "extract": true, "fields": {"a": 1}});
        let reference = Some(json!({"a": 1}));
        let g = grade(
            config.clone(),
            "Sure! ```json\n{\"a\": 1}\n``` and {\"a\": 2}",
            reference.clone(),
        )
        .unwrap();
        assert_eq!(g.score, 1.0, "{}", g.reason);
        // A brace that opens no object is skipped.
        assert_eq!(
            grade(config.clone(), "set {x} then {\"a\": 1}", reference.clone())
                .unwrap()
                .score,
            1.0
        );
        let g = grade(config.clone(), "no json here", reference.clone()).unwrap();
        assert_eq!(g.score, 0.0);
        assert!(g.reason.contains("no JSON object"), "{}", g.reason);
        // Strict (the default) still rejects the fenced answer.
        let strict = json!({"type": "json", "name": "j", "fields": {"a": 1}});
        assert_eq!(
            grade(strict, "```json\n{\"a\": 1}\n```", reference)
                .unwrap()
                .score,
            0.0
        );
        assert!(
            Grader::from_config(&json!({"type": "json", "name": "j", "extract": "yes"})).is_err()
        );
    }

    #[test]
    fn fields_need_a_reference() {
        let e = grade(
            json!({"type": "json", "name": "j", "fields": {"a": 1}}),
            r#"{"a": 1}"#,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("item.reference_answer"), "{e}");
        let e = Grader::from_config(&json!({"type": "json", "name": "j", "fields": {"a": -1}}))
            .unwrap_err();
        assert!(e.to_string().contains("$.fields.a"), "{e}");
    }
}
