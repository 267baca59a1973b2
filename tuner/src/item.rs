//! The unit of every dataset: an [`Item`] (a prompt with its reference
//! answer, in the JSONL shape OpenAI RFT and Bedrock RFT accept) and a
//! [`Sample`] (one model output for it, as graders see it).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// One chat message. `content` is a string or an array of parts; other
/// fields (`name`, `tool_calls`, `tool_call_id`) are kept as they came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_owned(),
            content: Value::String(content.into()),
            extra: Map::new(),
        }
    }

    /// The text of the content: the string, or its text parts joined.
    pub fn text(&self) -> String {
        match &self.content {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        }
    }
}

/// A reference answer as the text a model would write: a string as it is,
/// any other JSON compactly serialised.
pub fn answer_text(reference: &Value) -> String {
    match reference {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One dataset row: `{"messages": [...], "reference_answer": ..., ...}`.
/// Fields other than the two known ones (`id`, `task`, `response_format`,
/// `tools`, `inference_id`, whatever a user's graders read as `item.x`)
/// are kept in `extra` and written back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_answer: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Item {
    pub fn new(messages: Vec<Message>, reference_answer: Option<Value>) -> Self {
        Self {
            messages,
            reference_answer,
            extra: Map::new(),
        }
    }

    /// The item's `id` field, or a stable id derived from its prompt and
    /// reference (so that an item without one gets the same id every run).
    pub fn id(&self) -> String {
        match self.extra.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => {
                let mut h = Sha256::new();
                h.update(serde_json::to_vec(&self.messages).unwrap_or_default());
                h.update(serde_json::to_vec(&self.reference_answer).unwrap_or_default());
                let d = h.finalize();
                d[..8].iter().map(|b| format!("{b:02x}")).collect()
            }
        }
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(Value::as_str)
    }

    /// The item as graders' templates see it (`item.<field>`).
    pub fn as_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The prompt: every message but a trailing assistant answer.
    pub fn prompt(&self) -> &[Message] {
        match self.messages.last() {
            Some(m) if m.role == "assistant" => &self.messages[..self.messages.len() - 1],
            _ => &self.messages,
        }
    }
}

/// A model output to grade, with the fields OpenAI's grader templates name:
/// `sample.output_text`, `sample.output_json`, `sample.output_tools`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub output_text: String,
    /// `output_text` parsed as JSON, when it is JSON (no repair: a fenced
    /// or chatty answer is not JSON).
    #[serde(default)]
    pub output_json: Option<Value>,
    /// The answer's `tool_calls`, if any.
    #[serde(default)]
    pub output_tools: Vec<Value>,
}

impl Sample {
    pub fn from_text(text: impl Into<String>) -> Self {
        let output_text = text.into();
        let output_json = serde_json::from_str(output_text.trim()).ok();
        Self {
            output_text,
            output_json,
            output_tools: Vec::new(),
        }
    }

    /// The first choice of an OpenAI chat completion.
    pub fn from_chat_answer(answer: &Value) -> Self {
        let message = answer.pointer("/choices/0/message");
        let text = message
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut sample = Self::from_text(text);
        if let Some(Value::Array(calls)) = message.and_then(|m| m.get("tool_calls")) {
            sample.output_tools = calls.clone();
        }
        sample
    }

    /// The sample as graders' templates see it (`sample.<field>`).
    pub fn as_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_keeps_unknown_fields_and_round_trips() {
        let line = r#"{"messages":[{"role":"user","content":"hi"}],"reference_answer":{"a":1},"task":"t","id":"x1"}"#;
        let item: Item = serde_json::from_str(line).unwrap();
        assert_eq!(item.id(), "x1");
        assert_eq!(item.get_str("task"), Some("t"));
        let back: Value = serde_json::to_value(&item).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(line).unwrap());
    }

    #[test]
    fn derived_id_is_stable_and_content_based() {
        let a = Item::new(vec![Message::new("user", "q")], Some(Value::from(1)));
        let b = Item::new(vec![Message::new("user", "q")], Some(Value::from(2)));
        assert_eq!(a.id(), a.clone().id());
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn sample_parses_json_strictly() {
        assert_eq!(
            Sample::from_text(" {\"a\": 1}\n").output_json,
            Some(serde_json::json!({"a": 1}))
        );
        assert_eq!(
            Sample::from_text("```json\n{\"a\": 1}\n```").output_json,
            None
        );
    }
}
