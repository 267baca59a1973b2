//! OpenAI grader templates: `{{ sample.output_text }}`, `{{item.a.b}}`,
//! `{{item.list.0}}`. Strings are inserted raw and other JSON values as
//! compact JSON, matching how OpenAI renders them. Templates are parsed
//! when the config is read so syntax errors surface before any grading.

use std::fmt;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// A dotted path; the first segment is `sample` or `item`.
    Var(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

/// A template named a field the sample or item does not have.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingField {
    pub path: String,
}

impl fmt::Display for MissingField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template refers to missing field `{}`", self.path)
    }
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in template {text:?}"))?;
            let inner = after[..end].trim();
            let segments: Vec<String> = inner.split('.').map(|s| s.trim().to_owned()).collect();
            if segments.iter().any(String::is_empty) {
                return Err(format!("empty path segment in `{{{{ {inner} }}}}`"));
            }
            if !matches!(segments[0].as_str(), "sample" | "item") {
                return Err(format!(
                    "template variable `{inner}` must start with `sample.` or `item.`"
                ));
            }
            parts.push(Part::Var(segments));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// Renders to text. `ctx` is `{"sample": ..., "item": ...}`.
    pub fn render(&self, ctx: &Value) -> Result<String, MissingField> {
        self.render_with(ctx, &|_, text| text)
    }

    /// Renders to text, passing each variable's text through `wrap` with
    /// its path (a judge fences the graded sample's text with it).
    pub fn render_with(
        &self,
        ctx: &Value,
        wrap: &dyn Fn(&[String], String) -> String,
    ) -> Result<String, MissingField> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(path) => {
                    let text = match lookup(ctx, path)? {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    out.push_str(&wrap(path, text));
                }
            }
        }
        Ok(out)
    }

    /// Renders keeping JSON types when the template is a single variable,
    /// so `{{item.reference_answer}}` can yield an object, not its text.
    pub fn render_value(&self, ctx: &Value) -> Result<Value, MissingField> {
        match self.parts.as_slice() {
            [Part::Var(path)] => lookup(ctx, path).cloned(),
            _ => self.render(ctx).map(Value::String),
        }
    }
}

fn lookup<'v>(ctx: &'v Value, path: &[String]) -> Result<&'v Value, MissingField> {
    let mut cur = ctx;
    for seg in path {
        let next = match cur {
            Value::Object(map) => map.get(seg),
            Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        cur = next.ok_or_else(|| MissingField {
            path: path.join("."),
        })?;
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx() -> Value {
        json!({
            "sample": {"output_text": "hello", "output_json": {"answer": 42, "tags": ["x", "y"]}},
            "item": {"reference_answer": "hi", "a": {"b": "deep"}, "list": [10, {"k": "v"}], "obj": {"n": 1}}
        })
    }

    fn render(t: &str) -> Result<String, MissingField> {
        Template::parse(t).unwrap().render(&ctx())
    }

    #[test]
    fn renders_paths_with_and_without_spaces() {
        assert_eq!(render("{{ sample.output_text }}").unwrap(), "hello");
        assert_eq!(render("{{sample.output_json.answer}}").unwrap(), "42");
        assert_eq!(render("{{ item.reference_answer }}").unwrap(), "hi");
        assert_eq!(render("x={{item.a.b}}!").unwrap(), "x=deep!");
        assert_eq!(render("{{item.list.0}} {{item.list.1.k}}").unwrap(), "10 v");
        assert_eq!(render("{{sample.output_json.tags.1}}").unwrap(), "y");
    }

    #[test]
    fn non_strings_are_compact_json() {
        assert_eq!(render("{{item.obj}}").unwrap(), r#"{"n":1}"#);
        assert_eq!(
            render("{{sample.output_json.tags}}").unwrap(),
            r#"["x","y"]"#
        );
    }

    #[test]
    fn plain_text_passes_through() {
        assert_eq!(
            render("no variables here } {").unwrap(),
            "no variables here } {"
        );
        assert_eq!(render("").unwrap(), "");
    }

    #[test]
    fn missing_path_is_an_error_naming_it() {
        let e = render("{{item.nope.x}}").unwrap_err();
        assert_eq!(e.path, "item.nope.x");
        assert!(e.to_string().contains("item.nope.x"));
        assert!(render("{{item.list.7}}").is_err());
        assert!(render("{{item.list.first}}").is_err());
        assert!(render("{{sample.output_text.length}}").is_err());
    }

    #[test]
    fn render_value_keeps_types_for_a_lone_variable() {
        let t = Template::parse("{{ item.obj }}").unwrap();
        assert_eq!(t.render_value(&ctx()).unwrap(), json!({"n": 1}));
        let t = Template::parse("n={{ item.obj.n }}").unwrap();
        assert_eq!(t.render_value(&ctx()).unwrap(), json!("n=1"));
    }

    #[test]
    fn syntax_errors_are_rejected() {
        assert!(Template::parse("{{ sample.output_text").is_err());
        assert!(Template::parse("{{ output_text }}").is_err());
        assert!(Template::parse("{{ item..a }}").is_err());
        assert!(Template::parse("{{ }}").is_err());
    }
}
