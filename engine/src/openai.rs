//! OpenAI request bodies and their translation into mistral.rs requests.

use std::collections::HashMap;

use either::Either;
use flywheel_api::openai::{ResponseFormat, Stop, StreamOptions};
use indexmap::IndexMap;
use mistralrs::{Constraint, MessageContent, SamplingParams, StopTokens, Tool, ToolChoice};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// Largest `n` accepted (non-streaming only).
pub const MAX_N: usize = 16;

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

/// Sampling fields shared by chat and text completions.
#[derive(Debug, Default, Deserialize)]
pub struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Extension (vLLM-style).
    pub top_k: Option<usize>,
    /// Extension (vLLM-style).
    pub min_p: Option<f64>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub stop: Option<Stop>,
    /// Accepted for compatibility; mistral.rs 0.8.1 has one sampler RNG per engine, so a
    /// per-request seed is not honoured (greedy decoding is deterministic regardless).
    pub seed: Option<u64>,
    pub n: Option<usize>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    /// Extension.
    pub repetition_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<String, f32>>,
}

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    #[serde(default)]
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    pub sampling: Sampling,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: String,
    pub prompt: Prompt,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    pub sampling: Sampling,
    #[serde(default)]
    pub echo: bool,
    /// Extension: constrained decoding for text completions too.
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
}

impl Sampling {
    /// OpenAI semantics: temperature defaults to 1; 0 means greedy (argmax with top_k = 1,
    /// not mistral.rs's `set_deterministic_sampler`).
    pub fn to_params(
        &self,
        default_max_tokens: usize,
        stream: bool,
    ) -> Result<SamplingParams, ApiError> {
        let mut p = SamplingParams::neutral();
        let t = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&t) || t.is_nan() {
            return Err(ApiError::bad_param(
                "temperature",
                format!("temperature must be between 0 and 2, got {t}"),
            ));
        }
        if let Some(tp) = self.top_p {
            if !(tp > 0.0 && tp <= 1.0) {
                return Err(ApiError::bad_param(
                    "top_p",
                    format!("top_p must be in (0, 1], got {tp}"),
                ));
            }
        }
        if t < 1e-5 {
            p.temperature = None;
            p.top_k = Some(1);
        } else {
            p.temperature = Some(t);
            p.top_k = self.top_k.filter(|&k| k > 0);
            p.top_p = self.top_p.filter(|&tp| tp < 1.0);
            p.min_p = self.min_p.filter(|&m| m > 0.0);
        }
        let max = self
            .max_completion_tokens
            .or(self.max_tokens)
            .unwrap_or(default_max_tokens);
        if max == 0 {
            return Err(ApiError::bad_param(
                "max_tokens",
                "max_tokens must be at least 1",
            ));
        }
        p.max_len = Some(max);
        p.stop_toks = match &self.stop {
            None => None,
            Some(Stop::One(s)) if s.is_empty() => None,
            Some(Stop::One(s)) => Some(StopTokens::Seqs(vec![s.clone()])),
            Some(Stop::Many(v)) => {
                if v.len() > 4 {
                    return Err(ApiError::bad_param(
                        "stop",
                        "at most 4 stop sequences are allowed",
                    ));
                }
                let v: Vec<String> = v.iter().filter(|s| !s.is_empty()).cloned().collect();
                (!v.is_empty()).then_some(StopTokens::Seqs(v))
            }
        };
        let n = self.n.unwrap_or(1);
        if n == 0 || n > MAX_N {
            return Err(ApiError::bad_param(
                "n",
                format!("n must be between 1 and {MAX_N}"),
            ));
        }
        if n > 1 && stream {
            return Err(ApiError::bad_param(
                "n",
                "n > 1 is not supported with stream=true",
            ));
        }
        p.n_choices = n;
        p.frequency_penalty = self.frequency_penalty.filter(|&x| x != 0.0);
        p.presence_penalty = self.presence_penalty.filter(|&x| x != 0.0);
        p.repetition_penalty = self.repetition_penalty.filter(|&x| x != 1.0);
        if let Some(bias) = &self.logit_bias {
            let mut m = HashMap::new();
            for (k, v) in bias {
                let id: u32 = k.parse().map_err(|_| {
                    ApiError::bad_param(
                        "logit_bias",
                        format!("logit_bias key `{k}` is not a token id"),
                    )
                })?;
                m.insert(id, *v);
            }
            if !m.is_empty() {
                p.logits_bias = Some(m);
            }
        }
        Ok(p)
    }
}

/// llguidance's JSON compile options for the engine's constrained output, read from the
/// schema's top-level `"x-guidance"` (`llguidance::json::JsonCompileOptions`).
///
/// llguidance's default (`whitespace_flexible: true`) lets the model put any run of
/// whitespace between tokens (`[\x20\x0A\x0D\x09]+`, unbounded); sampled at the default
/// temperature, constrained objects carried runs of dozens of spaces. Without flexible
/// whitespace, and with OpenAI's `", "` / `": "` separators, the output is one-line JSON
/// like `{"name": "Alice", "age": 31}`: whitespace only inside strings.
pub fn json_compile_options() -> Value {
    serde_json::json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    })
}

/// `schema` with [`json_compile_options`] as its `"x-guidance"`, unless the client's schema
/// gives its own (then it is the client's choice). The schema `true` (anything) becomes
/// `{}`, which means the same and can carry the options; `false` stays (nothing matches).
fn with_compile_options(schema: &Value) -> Value {
    let mut schema = match schema {
        Value::Bool(true) => Value::Object(serde_json::Map::new()),
        other => other.clone(),
    };
    if let Some(o) = schema.as_object_mut() {
        o.entry("x-guidance").or_insert_with(json_compile_options);
    }
    schema
}

/// `response_format` → a mistral.rs (llguidance) constraint.
pub fn constraint(format: &Option<ResponseFormat>) -> Result<Constraint, ApiError> {
    let object = || with_compile_options(&serde_json::json!({"type": "object"}));
    Ok(match format {
        None | Some(ResponseFormat::Text) => Constraint::None,
        Some(ResponseFormat::JsonObject) => Constraint::JsonSchema(object()),
        Some(ResponseFormat::JsonSchema { json_schema }) => match &json_schema.schema {
            Some(s) if s.is_object() || s.is_boolean() => {
                Constraint::JsonSchema(with_compile_options(s))
            }
            Some(_) => {
                return Err(ApiError::bad_param(
                    "response_format",
                    "response_format.json_schema.schema must be a JSON object",
                ))
            }
            None => Constraint::JsonSchema(object()),
        },
    })
}

fn content_text(content: &Option<Value>) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") | None => {
                        if let Some(t) = part.get("text").and_then(Value::as_str) {
                            out.push_str(t);
                        } else if let Some(t) = part.as_str() {
                            out.push_str(t);
                        }
                    }
                    Some(other) => {
                        return Err(ApiError::bad_param(
                            "messages",
                            format!(
                            "content parts of type `{other}` are not supported by this text model"
                        ),
                        ))
                    }
                }
            }
            Ok(out)
        }
        Some(other) => Err(ApiError::bad_param(
            "messages",
            format!("message content must be a string or an array of parts, got {other}"),
        )),
    }
}

/// OpenAI messages → mistral.rs messages (role/content plus tool fields for templates).
pub fn messages(msgs: &[ChatMessage]) -> Result<Vec<IndexMap<String, MessageContent>>, ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::bad_param(
            "messages",
            "messages must not be empty",
        ));
    }
    let mut out = Vec::with_capacity(msgs.len());
    for m in msgs {
        match m.role.as_str() {
            "system" | "developer" | "user" | "assistant" | "tool" => {}
            other => {
                return Err(ApiError::bad_param(
                    "messages",
                    format!("unknown message role `{other}`"),
                ))
            }
        }
        let role = if m.role == "developer" {
            "system"
        } else {
            m.role.as_str()
        };
        let mut map: IndexMap<String, MessageContent> = IndexMap::new();
        map.insert("role".into(), Either::Left(role.to_string()));
        map.insert("content".into(), Either::Left(content_text(&m.content)?));
        if let Some(name) = &m.name {
            map.insert("name".into(), Either::Left(name.clone()));
        }
        if let Some(id) = &m.tool_call_id {
            map.insert("tool_call_id".into(), Either::Left(id.clone()));
        }
        if let Some(calls) = &m.tool_calls {
            let calls = calls
                .iter()
                .filter_map(|c| c.as_object())
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<IndexMap<_, _>>()
                })
                .collect();
            map.insert("tool_calls".into(), Either::Right(calls));
        }
        out.push(map);
    }
    Ok(out)
}

/// `tool_choice` → mistral.rs's. `required` is treated as `auto`.
pub fn tool_choice(choice: &Option<Value>, tools: &[Tool]) -> Result<Option<ToolChoice>, ApiError> {
    let Some(choice) = choice else {
        return Ok(None);
    };
    match choice {
        Value::String(s) if s == "none" => Ok(Some(ToolChoice::None)),
        Value::String(s) if s == "auto" || s == "required" => Ok(Some(ToolChoice::Auto)),
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::bad_param("tool_choice", "tool_choice.function.name is required")
                })?;
            let tool = tools
                .iter()
                .find(|t| t.function.name == name)
                .ok_or_else(|| {
                    ApiError::bad_param(
                        "tool_choice",
                        format!("tool_choice names `{name}`, which is not in tools"),
                    )
                })?;
            Ok(Some(ToolChoice::Tool(tool.clone())))
        }
        other => Err(ApiError::bad_param(
            "tool_choice",
            format!("unsupported tool_choice {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use flywheel_api::openai::JsonSchemaSpec;
    use mistralrs::core::llguidance::{
        api::TopLevelGrammar, toktrie::ApproximateTokEnv, Matcher, ParserFactory,
    };
    use serde_json::json;

    use super::*;

    /// Whether llguidance's grammar for the JSON schema `schema` accepts exactly `text`
    /// (a byte-level token environment: one token per byte).
    fn accepts(schema: &Value, text: &str) -> bool {
        let factory = ParserFactory::new_simple(&ApproximateTokEnv::single_byte_env()).unwrap();
        let parser = factory.create_parser(TopLevelGrammar::from_json_schema(schema.clone()));
        let mut m = Matcher::new(parser);
        let tokens: Vec<u32> = text.bytes().map(u32::from).collect();
        m.validate_tokens(&tokens).unwrap() == tokens.len()
            && m.consume_tokens(&tokens).is_ok()
            && m.is_accepting().unwrap()
    }

    fn schema_of(format: ResponseFormat) -> Value {
        match constraint(&Some(format)).unwrap() {
            Constraint::JsonSchema(s) => s,
            _ => panic!("not a JSON schema constraint"),
        }
    }

    fn json_schema(schema: Value) -> ResponseFormat {
        ResponseFormat::JsonSchema {
            json_schema: JsonSchemaSpec {
                name: Some("person".into()),
                schema: Some(schema),
                strict: Some(true),
            },
        }
    }

    fn person() -> Value {
        json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
               "required": ["name", "age"], "additionalProperties": false})
    }

    #[test]
    fn llguidance_reads_the_compile_options() {
        // The keys are JsonCompileOptions' (which denies unknown fields).
        let opts: mistralrs::core::llguidance::JsonCompileOptions =
            serde_json::from_value(json_compile_options()).unwrap();
        assert!(!opts.whitespace_flexible);
        // Without them, llguidance lets any run of whitespace through: the bug.
        assert!(accepts(
            &person(),
            "{\"name\":      \"Alice\",\n\n\"age\": 31   }"
        ));
    }

    #[test]
    fn json_schema_output_is_canonical_one_line_json() {
        let s = schema_of(json_schema(person()));
        assert_eq!(s["x-guidance"], json_compile_options());
        assert_eq!(s["required"], json!(["name", "age"]), "the schema is kept");
        assert!(accepts(&s, r#"{"name": "Alice", "age": 31}"#));
        // Whitespace only where the separators put it, and inside strings.
        assert!(accepts(&s, r#"{"name": "Alice  Smith", "age": 31}"#));
        for bad in [
            r#"{"name":      "Alice", "age": 31}"#,
            "{\n  \"name\": \"Alice\",\n  \"age\": 31\n}",
            r#"{"name":"Alice","age":31}"#,
            r#"{"name": "Alice", "age": 31} "#,
            r#" {"name": "Alice", "age": 31}"#,
        ] {
            assert!(!accepts(&s, bad), "accepted {bad:?}");
        }
    }

    #[test]
    fn json_object_output_is_canonical_one_line_json() {
        let s = schema_of(ResponseFormat::JsonObject);
        assert_eq!(
            s,
            json!({"type": "object", "x-guidance": json_compile_options()})
        );
        assert!(accepts(&s, r#"{"a": [1, 2, {"b": null}], "c": "x  y"}"#));
        assert!(!accepts(&s, r#"{"a": [1,   2]}"#));
        assert!(!accepts(&s, "{\"a\":\n1}"));
        // No schema in a json_schema format: any object, the same way.
        let none = ResponseFormat::JsonSchema {
            json_schema: JsonSchemaSpec {
                name: None,
                schema: None,
                strict: None,
            },
        };
        assert_eq!(schema_of(none), s);
    }

    #[test]
    fn a_client_x_guidance_and_boolean_schemas() {
        let mut own = person();
        own["x-guidance"] = json!({"whitespace_flexible": true});
        assert_eq!(
            schema_of(json_schema(own.clone()))["x-guidance"],
            own["x-guidance"]
        );
        let any = schema_of(json_schema(json!(true)));
        assert_eq!(any, json!({"x-guidance": json_compile_options()}));
        assert!(accepts(&any, r#"[1, "two", {"three": 3}]"#));
        assert_eq!(schema_of(json_schema(json!(false))), json!(false));
        assert!(constraint(&Some(json_schema(json!([1])))).is_err());
    }
}
