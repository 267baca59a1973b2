//! Request routing and the endpoint implementations.

use std::{
    borrow::Cow,
    convert::Infallible,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::{Bytes, BytesMut};
use flywheel_api::error::ErrorBody;
use http::{
    header::{CONTENT_TYPE, RETRY_AFTER},
    HeaderValue, Method, Request, Response, StatusCode,
};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use super::{
    knobs::{Knobs, DEFAULT_TEXT},
    openai::*,
    sse::{full, push_event, Faults, MockBody, SsePlan, Timing, DONE},
    state::{splitmix64, MockState},
};
use crate::tokenize;

/// JSON-mode output when the RNG says "valid".
pub const VALID_JSON: &str = r#"{"name":"Alice","age":31}"#;
/// JSON-mode output when the RNG says "invalid": a truncated object.
pub const INVALID_JSON: &str = r#"{"name": "Alice", "age": "#;
const MAX_BODY: usize = 32 << 20;
const MODEL: &str = "mock-model";

type Resp = Response<MockBody>;

/// Entry point for every request; never fails at the HTTP level.
pub async fn handle<B>(state: Arc<MockState>, req: Request<B>) -> Result<Resp, Infallible>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = req.into_parts();
    let resp = match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/v1/chat/completions") => match prepare(&state, &parts, body).await {
            Ok(p) => chat(&state, p).await,
            Err(r) => r,
        },
        (&Method::POST, "/v1/completions") => match prepare(&state, &parts, body).await {
            Ok(p) => completions(&state, p).await,
            Err(r) => r,
        },
        (&Method::POST, "/v1/embeddings") => match prepare(&state, &parts, body).await {
            Ok(p) => embeddings(&state, p).await,
            Err(r) => r,
        },
        (&Method::GET, "/v1/models") => {
            let mut knobs = state.defaults.clone();
            // Only the scenario matters here; a bad knob is not this endpoint's problem.
            let _ = knobs.apply_headers(&parts.headers);
            state.admit(&knobs.scenario, None);
            json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "object": "list",
                    "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "flywheel-mock"}],
                }),
            )
        }
        (&Method::GET, "/mock/stats") => json_response(StatusCode::OK, &state.stats()),
        (&Method::POST, "/mock/reset") => {
            state.reset();
            json_bytes(StatusCode::OK, b"{\"reset\":true}".to_vec())
        }
        (&Method::GET, "/health") => Response::new(full(Bytes::from_static(b"ok"))),
        (
            _,
            "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/embeddings"
            | "/v1/models"
            | "/mock/stats"
            | "/mock/reset"
            | "/health",
        ) => error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
            "invalid_request_error",
            None,
        ),
        _ => error_response(
            StatusCode::NOT_FOUND,
            "unknown endpoint",
            "invalid_request_error",
            None,
        ),
    };
    Ok(resp)
}

/// A counted request with its effective knobs.
struct Prepared {
    knobs: Knobs,
    body: Bytes,
    /// 0-based index of this request within its scenario.
    index: u64,
}

async fn prepare<B>(
    state: &MockState,
    parts: &http::request::Parts,
    body: B,
) -> Result<Prepared, Resp>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut knobs = state.defaults.clone();
    let knob_result = knobs.apply_headers(&parts.headers);
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return Err(bad_request(
                &format!("could not read request body: {e}"),
                None,
            ))
        }
    };
    // Count even bad requests: tests count attempts, whatever they carried.
    let index = state.admit(&knobs.scenario, Some(&body));
    if let Err(e) = knob_result {
        return Err(bad_request(&e.to_string(), None));
    }
    Ok(Prepared { knobs, body, index })
}

/// The fail-first / error-rate fault, if this request draws it.
async fn injected_error(state: &MockState, p: &Prepared) -> Option<Resp> {
    let k = &p.knobs;
    if !(p.index < k.fail_first || state.chance(k.error_rate)) {
        return None;
    }
    delay_ms(k.latency_ms).await;
    let mut resp = error_response(k.error_status, "mock injected error", "server_error", None);
    if let Some(secs) = k.retry_after {
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    Some(resp)
}

// The error is the finished 400 response; this runs once per mock request, so its size is irrelevant.
#[allow(clippy::result_large_err)]
fn parse<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, Resp> {
    serde_json::from_slice(body).map_err(|e| {
        let param = e.to_string().contains("`messages`").then_some("messages");
        bad_request(&format!("invalid request body: {e}"), param)
    })
}

/// Output of a text-producing request after continuation and truncation.
struct TextOut<'a> {
    text: &'a str,
    finish: &'static str,
    tokens: u64,
}

fn text_out(text: &str, max_tokens: Option<u64>) -> TextOut<'_> {
    let (text, cut) = match max_tokens {
        Some(m) => tokenize::truncate(text, m),
        None => (text, false),
    };
    TextOut {
        text,
        finish: if cut { "length" } else { "stop" },
        tokens: tokenize::count(text),
    }
}

fn stream_setup(state: &MockState, k: &Knobs) -> (Timing, Option<Faults>) {
    let timing = Timing {
        ttft: Duration::from_millis(k.ttft_ms),
        per_token: (k.tokens_per_s > 0.0).then(|| Duration::from_secs_f64(1.0 / k.tokens_per_s)),
    };
    let stream_index = state.admit_stream(&k.scenario);
    let faults =
        (k.has_stream_faults() && k.fault_times.is_none_or(|t| stream_index < t)).then(|| Faults {
            cut_after: k.cut_after,
            stall_after: k.stall_after,
            stall: Duration::from_millis(k.stall_ms),
            malformed_after: k.malformed_after,
        });
    (timing, faults)
}

async fn chat(state: &MockState, p: Prepared) -> Resp {
    let req: ChatRequest = match parse(&p.body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Some(r) = injected_error(state, &p).await {
        return r;
    }
    let k = &p.knobs;
    let model = req.model.as_deref().unwrap_or(MODEL);
    let n = req.n.unwrap_or(1).clamp(1, 128);
    let prompt_tokens = tokenize::prompt_tokens(req.messages.iter().map(ChatMessage::chars).sum());
    let id = format!("chatcmpl-mock-{}", state.next_id());
    let created = now_secs();
    let tool = req.forced_tool();

    let full_text: &str = match (&k.text, req.wants_json()) {
        (Some(t), _) => t,
        (None, true) if state.chance(k.json_valid_ratio) => VALID_JSON,
        (None, true) => INVALID_JSON,
        (None, false) => DEFAULT_TEXT,
    };
    let prefix = req
        .messages
        .last()
        .filter(|m| m.role == "assistant")
        .map(ChatMessage::text);
    let out = text_out(
        tokenize::continuation(full_text, prefix.as_deref()),
        req.max_completion_tokens.or(req.max_tokens),
    );
    let call_id = if tool.is_some() {
        format!("call_mock_{}", state.next_id())
    } else {
        String::new()
    };
    // A forced tool call answers with one call and no text; count it as one token.
    let completion_tokens = if tool.is_some() { 1 } else { out.tokens };
    let usage = Usage::new(prompt_tokens, completion_tokens * n as u64);

    if !req.stream.unwrap_or(false) {
        delay_ms(k.latency_ms).await;
        let choices = (0..n)
            .map(|index| ChatChoice {
                index,
                message: AssistantMessage {
                    role: "assistant",
                    content: if tool.is_some() { None } else { Some(out.text) },
                    refusal: None,
                    tool_calls: tool.as_deref().map(|name| {
                        [ToolCall {
                            index: None,
                            id: Some(&call_id),
                            kind: Some("function"),
                            function: FunctionCall {
                                name: Some(name),
                                arguments: "{}",
                            },
                        }]
                    }),
                },
                logprobs: None,
                finish_reason: if tool.is_some() {
                    "tool_calls"
                } else {
                    out.finish
                },
            })
            .collect();
        let body = ChatCompletion {
            id: &id,
            object: "chat.completion",
            created,
            model,
            choices,
            usage: (!k.no_usage).then_some(usage),
        };
        return json_response(StatusCode::OK, &body);
    }

    let include_usage = !k.no_usage
        && req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
    let chunk = |buf: &mut BytesMut, index: u32, delta: Delta<'_>, finish: Option<&'static str>| {
        let choices = [ChunkChoice {
            index,
            delta,
            logprobs: None,
            finish_reason: finish,
        }];
        push_event(
            buf,
            &ChatChunk {
                id: &id,
                object: "chat.completion.chunk",
                created,
                model,
                choices: &choices,
                usage: None,
            },
        );
    };
    let mut head = BytesMut::new();
    let mut steps = Vec::new();
    match tool.as_deref() {
        Some(name) => {
            for i in 0..n {
                let call = ToolCall {
                    index: Some(0),
                    id: Some(&call_id),
                    kind: Some("function"),
                    function: FunctionCall {
                        name: Some(name),
                        arguments: "",
                    },
                };
                let delta = Delta {
                    role: Some("assistant"),
                    content: None,
                    tool_calls: Some([call]),
                };
                chunk(&mut head, i, delta, None);
            }
            let mut step = BytesMut::new();
            for i in 0..n {
                let call = ToolCall {
                    index: Some(0),
                    id: None,
                    kind: None,
                    function: FunctionCall {
                        name: None,
                        arguments: "{}",
                    },
                };
                chunk(
                    &mut step,
                    i,
                    Delta {
                        tool_calls: Some([call]),
                        ..Delta::default()
                    },
                    None,
                );
            }
            steps.push(step.freeze());
        }
        None => {
            for i in 0..n {
                chunk(
                    &mut head,
                    i,
                    Delta {
                        role: Some("assistant"),
                        content: Some(""),
                        tool_calls: None,
                    },
                    None,
                );
            }
            for tok in tokenize::tokens(out.text) {
                let mut step = BytesMut::with_capacity(200 * n as usize);
                for i in 0..n {
                    chunk(
                        &mut step,
                        i,
                        Delta {
                            content: Some(tok),
                            ..Delta::default()
                        },
                        None,
                    );
                }
                steps.push(step.freeze());
            }
        }
    }
    let mut tail = BytesMut::new();
    let finish = if tool.is_some() {
        "tool_calls"
    } else {
        out.finish
    };
    for i in 0..n {
        chunk(&mut tail, i, Delta::default(), Some(finish));
    }
    if include_usage {
        push_event(
            &mut tail,
            &ChatChunk {
                id: &id,
                object: "chat.completion.chunk",
                created,
                model,
                choices: &[],
                usage: Some(usage),
            },
        );
    }
    tail.extend_from_slice(DONE);
    let (timing, faults) = stream_setup(state, k);
    let plan = SsePlan {
        head: head.freeze(),
        steps,
        tail: tail.freeze(),
    };
    sse_response(plan.into_body(timing, faults))
}

async fn completions(state: &MockState, p: Prepared) -> Resp {
    let req: CompletionRequest = match parse(&p.body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let Some(r) = injected_error(state, &p).await {
        return r;
    }
    let k = &p.knobs;
    let model = req.model.as_deref().unwrap_or(MODEL);
    let n = req.n.unwrap_or(1).clamp(1, 128);
    let prompt_tokens = tokenize::prompt_tokens(prompt_chars(req.prompt.as_ref()));
    let id = format!("cmpl-mock-{}", state.next_id());
    let created = now_secs();
    let out = text_out(k.text.as_deref().unwrap_or(DEFAULT_TEXT), req.max_tokens);
    let usage = Usage::new(prompt_tokens, out.tokens * n as u64);

    let event = |buf: &mut BytesMut, choices: &[TextChoice<'_>], usage: Option<Usage>| {
        push_event(
            buf,
            &TextCompletion {
                id: &id,
                object: "text_completion",
                created,
                model,
                choices,
                usage,
            },
        );
    };
    if !req.stream.unwrap_or(false) {
        delay_ms(k.latency_ms).await;
        let choices: Vec<_> = (0..n)
            .map(|index| TextChoice {
                text: out.text,
                index,
                logprobs: None,
                finish_reason: Some(out.finish),
            })
            .collect();
        let body = TextCompletion {
            id: &id,
            object: "text_completion",
            created,
            model,
            choices: &choices,
            usage: (!k.no_usage).then_some(usage),
        };
        return json_response(StatusCode::OK, &body);
    }
    let include_usage = !k.no_usage
        && req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
    let mut steps = Vec::new();
    for tok in tokenize::tokens(out.text) {
        let mut step = BytesMut::with_capacity(160 * n as usize);
        for index in 0..n {
            event(
                &mut step,
                &[TextChoice {
                    text: tok,
                    index,
                    logprobs: None,
                    finish_reason: None,
                }],
                None,
            );
        }
        steps.push(step.freeze());
    }
    let mut tail = BytesMut::new();
    for index in 0..n {
        event(
            &mut tail,
            &[TextChoice {
                text: "",
                index,
                logprobs: None,
                finish_reason: Some(out.finish),
            }],
            None,
        );
    }
    if include_usage {
        event(&mut tail, &[], Some(usage));
    }
    tail.extend_from_slice(DONE);
    let (timing, faults) = stream_setup(state, k);
    // Legacy completions have no role chunk: the head is empty.
    let plan = SsePlan {
        head: Bytes::new(),
        steps,
        tail: tail.freeze(),
    };
    sse_response(plan.into_body(timing, faults))
}

async fn embeddings(state: &MockState, p: Prepared) -> Resp {
    let req: EmbeddingRequest = match parse(&p.body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    // Inputs: a string, strings, one token array, or token arrays.
    let inputs: Vec<Cow<'_, [u8]>> = match &req.input {
        Value::String(s) => vec![Cow::Borrowed(s.as_bytes())],
        Value::Array(items) if items.first().is_some_and(Value::is_number) => {
            vec![Cow::Owned(req.input.to_string().into_bytes())]
        }
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Cow::Borrowed(s.as_bytes()),
                other => Cow::Owned(other.to_string().into_bytes()),
            })
            .collect(),
        _ => return bad_request("input must be a non-empty string or array", Some("input")),
    };
    if let Some(r) = injected_error(state, &p).await {
        return r;
    }
    let k = &p.knobs;
    delay_ms(k.latency_ms).await;
    let chars: usize = match &req.input {
        Value::String(s) => s.chars().count(),
        _ => inputs
            .iter()
            .map(|i| String::from_utf8_lossy(i).chars().count())
            .sum(),
    };
    let tokens = tokenize::prompt_tokens(chars);
    let body = EmbeddingList {
        object: "list",
        data: inputs
            .iter()
            .enumerate()
            .map(|(i, input)| Embedding {
                object: "embedding",
                index: i as u32,
                embedding: embed(input, k.embedding_dim),
            })
            .collect(),
        model: req.model.as_deref().unwrap_or(MODEL),
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    json_response(StatusCode::OK, &body)
}

/// Deterministic unit vector derived from an FNV-1a hash of the input, so
/// equal inputs embed equally (useful for cache tests) and different ones differ.
pub fn embed(input: &[u8], dim: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input {
        h = (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut v: Vec<f32> = (0..dim as u64)
        .map(|i| {
            let x = splitmix64(h ^ splitmix64(i));
            (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

async fn delay_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A JSON response; a value that cannot be serialised (a bug) is a 500.
fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Resp {
    let (status, bytes) = match serde_json::to_vec(body) {
        Ok(bytes) => (status, bytes),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorBody::new("server_error", format!("cannot serialise the answer: {e}")).to_vec(),
        ),
    };
    json_bytes(status, bytes)
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Resp {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn sse_response(body: MockBody) -> Resp {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    resp
}

/// An OpenAI-style error: `{"error":{"message","type","param","code"}}`,
/// the envelope the gateway and the engine answer with too.
pub fn error_response(status: StatusCode, message: &str, kind: &str, param: Option<&str>) -> Resp {
    json_bytes(status, ErrorBody::new(kind, message).param(param).to_vec())
}

fn bad_request(message: &str, param: Option<&str>) -> Resp {
    error_response(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        param,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embed(b"hello", 8);
        assert_eq!(a, embed(b"hello", 8));
        assert_ne!(a, embed(b"hellp", 8));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn truncation_sets_length_finish() {
        let o = text_out("a b c d", Some(2));
        assert_eq!((o.text, o.finish, o.tokens), ("a b ", "length", 2));
        let o = text_out("a b", Some(5));
        assert_eq!((o.text, o.finish, o.tokens), ("a b", "stop", 2));
    }
}
