//! Token counts when an upstream does not report usage. The estimate is the
//! common 4-characters-per-token rule; events mark such counts as estimated.

use serde_json::Value;

pub fn estimate_text(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Estimated prompt tokens of a chat or completion request body.
pub fn estimate_prompt(body: &Value) -> u64 {
    let mut chars = 0usize;
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for m in messages {
            match m.get("content") {
                Some(Value::String(s)) => chars += s.chars().count(),
                // Content parts: count the text parts.
                Some(Value::Array(parts)) => {
                    for p in parts {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            chars += t.chars().count();
                        }
                    }
                }
                _ => {}
            }
        }
    }
    match body.get("prompt").or_else(|| body.get("input")) {
        Some(Value::String(s)) => chars += s.chars().count(),
        Some(Value::Array(items)) => {
            for i in items {
                if let Some(s) = i.as_str() {
                    chars += s.chars().count();
                }
            }
        }
        _ => {}
    }
    (chars as u64).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_chat_prompt() {
        let body = serde_json::json!({"messages": [{"role": "user", "content": "12345678"}]});
        assert_eq!(estimate_prompt(&body), 2);
        assert_eq!(estimate_text("abcde"), 2);
    }
}
