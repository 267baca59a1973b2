//! mistral.rs's response types as OpenAI's wire shapes.
//!
//! The shapes are those of OpenAI's published OpenAPI schema (`openai/openai-openapi`,
//! `openapi.yaml`): `CreateChatCompletionResponse`, `CreateChatCompletionStreamResponse`,
//! `ChatCompletionResponseMessage`, `ChatCompletionStreamResponseDelta`,
//! `ChatCompletionTokenLogprob`. Serialising mistral.rs's structs as they are departs from
//! them in four ways, fixed here:
//!
//! * a message or delta without tool calls carries `"tool_calls": null` (the schema allows
//!   an array or no field): the field is left out;
//! * a message has no `refusal`, which the schema requires (`null` when there is none);
//! * a choice's `logprobs` is `{"content": [...]}` without the required `refusal`, and a
//!   stream chunk's is one bare token logprob instead of `{"content": [..], "refusal": ..}`;
//! * a top logprob is `{"token": <id>, "bytes": "<text>"}` where the schema has the token's
//!   text and its UTF-8 bytes as integers. The id stays, as the extension field `token_id`
//!   (the schema allows extra fields; the trainer's tests compare token ids with it).
//!
//! `tests/fixtures/openai-response-shapes.json` holds the schema these are tested against.

use mistralrs::core::{
    ChatCompletionChunkResponse, ChatCompletionResponse, Delta, ResponseLogprob, ResponseMessage,
    ToolCallResponse, TopLogprob,
};
use serde_json::{json, Map, Value};

/// OpenAI's value for a token too unlikely to have a logprob: JSON has no `-inf`, and
/// serde_json would write a non-finite float as `null`, which is not a number.
const UNLIKELY: f64 = -9999.0;

fn logprob_value(lp: f32) -> f64 {
    if lp.is_finite() {
        f64::from(lp)
    } else {
        UNLIKELY
    }
}

fn top_logprob(t: &TopLogprob) -> Value {
    let text = t.bytes.clone().unwrap_or_default();
    json!({
        "token": text,
        "logprob": logprob_value(t.logprob),
        "bytes": t.bytes.as_ref().map(|s| s.as_bytes().to_vec()),
        "token_id": t.token,
    })
}

/// One token's `ChatCompletionTokenLogprob`.
pub(super) fn token_logprob(lp: &ResponseLogprob) -> Value {
    json!({
        "token": lp.token,
        "logprob": logprob_value(lp.logprob),
        "bytes": lp.bytes,
        "top_logprobs": lp.top_logprobs.iter().map(top_logprob).collect::<Vec<_>>(),
    })
}

/// A choice's `logprobs`: `{"content": [...], "refusal": null}`, or `null` without any.
pub(super) fn choice_logprobs<'a>(
    tokens: Option<impl IntoIterator<Item = &'a ResponseLogprob>>,
) -> Value {
    match tokens {
        None => Value::Null,
        Some(tokens) => json!({
            "content": tokens.into_iter().map(token_logprob).collect::<Vec<_>>(),
            "refusal": null,
        }),
    }
}

/// A non-streamed tool call (`ChatCompletionMessageToolCall`); mistral.rs's `index` is kept
/// (an extra field the schema allows; clients ignore it).
fn tool_call(c: &ToolCallResponse) -> Value {
    json!({
        "index": c.index,
        "id": c.id,
        "type": c.tp.to_string(),
        "function": {"name": c.function.name, "arguments": c.function.arguments},
    })
}

/// `ChatCompletionResponseMessage`.
pub(super) fn message(m: &ResponseMessage) -> Value {
    let mut o = Map::new();
    o.insert("role".into(), json!(m.role));
    o.insert("content".into(), json!(m.content));
    o.insert("refusal".into(), Value::Null);
    if let Some(calls) = m.tool_calls.as_ref().filter(|c| !c.is_empty()) {
        o.insert(
            "tool_calls".into(),
            Value::Array(calls.iter().map(tool_call).collect()),
        );
    }
    if let Some(r) = &m.reasoning_content {
        o.insert("reasoning_content".into(), json!(r));
    }
    Value::Object(o)
}

/// `ChatCompletionStreamResponseDelta`.
pub(super) fn delta(d: &Delta) -> Value {
    let mut o = Map::new();
    o.insert("role".into(), json!(d.role));
    o.insert("content".into(), json!(d.content));
    if let Some(calls) = d.tool_calls.as_ref().filter(|c| !c.is_empty()) {
        // The same fields as a message's call; `index` is the one a chunk requires.
        o.insert(
            "tool_calls".into(),
            Value::Array(calls.iter().map(tool_call).collect()),
        );
    }
    if let Some(r) = &d.reasoning_content {
        o.insert("reasoning_content".into(), json!(r));
    }
    Value::Object(o)
}

/// A whole chat completion (`CreateChatCompletionResponse`) under our id and model name.
/// `client_logprobs`: whether the client asked for logprobs (else `logprobs` is `null`).
pub(super) fn chat_completion(
    done: &ChatCompletionResponse,
    id: &str,
    model: &str,
    client_logprobs: bool,
) -> Value {
    let choices: Vec<Value> = done
        .choices
        .iter()
        .map(|c| {
            let logprobs = if client_logprobs {
                choice_logprobs(c.logprobs.as_ref().map(|l| l.content.iter().flatten()))
            } else {
                Value::Null
            };
            json!({
                "index": c.index,
                "message": message(&c.message),
                "logprobs": logprobs,
                "finish_reason": c.finish_reason,
            })
        })
        .collect();
    json!({
        "id": id,
        "object": "chat.completion",
        "created": done.created,
        "model": model,
        "system_fingerprint": done.system_fingerprint,
        "choices": choices,
        "usage": done.usage,
    })
}

/// One chat stream chunk (`CreateChatCompletionStreamResponse`) under our id and model
/// name, without usage (the caller adds `"usage": null` when the client asked for usage).
pub(super) fn chat_chunk(
    chunk: &ChatCompletionChunkResponse,
    id: &str,
    model: &str,
    client_logprobs: bool,
) -> Value {
    let choices: Vec<Value> = chunk
        .choices
        .iter()
        .map(|c| {
            let logprobs = if client_logprobs {
                choice_logprobs(c.logprobs.as_ref().map(std::iter::once))
            } else {
                Value::Null
            };
            json!({
                "index": c.index,
                "delta": delta(&c.delta),
                "logprobs": logprobs,
                "finish_reason": c.finish_reason,
            })
        })
        .collect();
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": chunk.created,
        "model": model,
        "system_fingerprint": chunk.system_fingerprint,
        "choices": choices,
    })
}

#[cfg(test)]
mod tests {
    use mistralrs::core::{CalledFunction, ToolCallType};

    use super::*;

    fn lp(token: &str, logprob: f32) -> ResponseLogprob {
        ResponseLogprob {
            token: token.into(),
            logprob,
            bytes: Some(token.as_bytes().to_vec()),
            top_logprobs: vec![TopLogprob {
                token: 7,
                logprob: f32::NEG_INFINITY,
                bytes: Some("é".into()),
            }],
        }
    }

    #[test]
    fn message_has_refusal_and_no_null_tool_calls() {
        let m = ResponseMessage {
            content: Some("hi".into()),
            role: "assistant".into(),
            tool_calls: None,
            reasoning_content: None,
        };
        assert_eq!(
            message(&m),
            json!({"role": "assistant", "content": "hi", "refusal": null})
        );
        let m = ResponseMessage {
            content: None,
            role: "assistant".into(),
            tool_calls: Some(vec![ToolCallResponse {
                index: 0,
                id: "call-1".into(),
                tp: ToolCallType::Function,
                function: CalledFunction {
                    name: "f".into(),
                    arguments: "{}".into(),
                },
            }]),
            reasoning_content: None,
        };
        let v = message(&m);
        assert_eq!(v["content"], Value::Null);
        assert_eq!(
            v["tool_calls"],
            json!([{"index": 0, "id": "call-1", "type": "function", "function": {"name": "f", "arguments": "{}"}}])
        );
    }

    #[test]
    fn delta_leaves_out_absent_tool_calls() {
        let d = Delta {
            content: Some("x".into()),
            role: "assistant".into(),
            tool_calls: None,
            reasoning_content: None,
        };
        assert_eq!(delta(&d), json!({"role": "assistant", "content": "x"}));
    }

    #[test]
    fn logprobs_have_openai_shape() {
        let tokens = [lp("Hi", -0.5)];
        let v = choice_logprobs(Some(tokens.iter()));
        assert_eq!(
            v,
            json!({"content": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105],
                "top_logprobs": [{"token": "é", "logprob": -9999.0, "bytes": [195, 169], "token_id": 7}]}],
                "refusal": null})
        );
        assert_eq!(
            choice_logprobs(None::<std::iter::Empty<&ResponseLogprob>>),
            Value::Null
        );
    }
}
