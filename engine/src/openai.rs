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

/// `response_format` → a mistral.rs (llguidance) constraint.
pub fn constraint(format: &Option<ResponseFormat>) -> Result<Constraint, ApiError> {
    Ok(match format {
        None | Some(ResponseFormat::Text) => Constraint::None,
        Some(ResponseFormat::JsonObject) => {
            Constraint::JsonSchema(serde_json::json!({"type": "object"}))
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => match &json_schema.schema {
            Some(s) if s.is_object() || s.is_boolean() => Constraint::JsonSchema(s.clone()),
            Some(_) => {
                return Err(ApiError::bad_param(
                    "response_format",
                    "response_format.json_schema.schema must be a JSON object",
                ))
            }
            None => Constraint::JsonSchema(serde_json::json!({"type": "object"})),
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
