//! Streaming requests, with mid-stream failover.
//!
//! Chunks are forwarded as they arrive. If the upstream stream breaks after
//! part of the answer reached the client (connection cut, stall past
//! `stream_idle_timeout_ms`, malformed chunk, error), the next attempt
//! continues the answer (see [`crate::config::Continuation`]) and the client
//! sees one well-formed stream that ends in `data: [DONE]`.
//!
//! When the request asks for structured output, the answer must be validated
//! as a whole before the client sees any of it, so chunks are buffered and
//! replayed once the answer passed.
//!
//! An upstream's stream is bounded like the rest of the request: the
//! request's deadline (`retry.total_timeout_ms`) cuts a stream that never
//! ends (the client's stream then ends with an error event), an event over
//! `upstream.max_sse_event_bytes` or an answer over
//! `upstream.max_response_bytes` fails the attempt as a bad answer.

// Untrusted bytes (client bodies, upstream answers): a malformed input
// must become an error, never a panic.
#![deny(clippy::indexing_slicing, clippy::string_slice, clippy::panic)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::{
    attempts::{self, exhausted_error, send, Attempt, Ended, Failed, Reader, Tried},
    Call, Operation,
};
use crate::{
    config::{Continuation, UpstreamConfig},
    error::GatewayError,
    metering::{self, AttemptOutcome, Outcome},
    upstream::{
        preview,
        sse::{SseEvent, SseParser},
    },
    AppState,
};

/// Time the end of a stream (`[DONE]`, an error event, a validated answer)
/// may take to reach a client that reads slowly, past the request's
/// deadline; a client that does not read at all is not waited for longer.
const TRAILER_GRACE: Duration = Duration::from_secs(5);

/// 499: the client closed the request (nginx's convention).
const CLIENT_CLOSED: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// What the endpoint needs to start the response.
pub struct Started {
    pub provider: String,
    pub model: String,
}

/// Where the stream goes: the client's body channel, with the state needed
/// to continue it on another attempt.
struct Output {
    started: Option<oneshot::Sender<Result<Started, GatewayError>>>,
    tx: mpsc::Sender<Bytes>,
    /// Hold chunks until the whole answer passed validation.
    buffered: bool,
    buffer: Vec<Bytes>,
    /// Bytes in `buffer`.
    buffer_bytes: usize,
    /// Text of choice 0 that the client has (or will get from the buffer).
    text: String,
    /// The client went away.
    closed: bool,
    /// A tool call or a second choice was streamed: such answers cannot be
    /// continued from a text prefix.
    continuable: bool,
    first_byte: Option<Duration>,
    created: Option<Value>,
}

impl Output {
    fn new(
        started: Option<oneshot::Sender<Result<Started, GatewayError>>>,
        tx: mpsc::Sender<Bytes>,
        call: &Call,
    ) -> Self {
        Self {
            started,
            tx,
            buffered: call.validator.is_some(),
            buffer: Vec::new(),
            buffer_bytes: 0,
            text: String::new(),
            closed: false,
            continuable: call.can_continue,
            first_byte: None,
            created: None,
        }
    }

    fn sent_any(&self) -> bool {
        !self.buffered && self.first_byte.is_some()
    }

    /// Sends or buffers one SSE event.
    async fn emit(&mut self, call: &Call, data: &[u8], who: (&str, &str)) {
        let mut frame = Vec::with_capacity(data.len() + 8);
        frame.extend_from_slice(b"data: ");
        frame.extend_from_slice(data);
        frame.extend_from_slice(b"\n\n");
        let frame = Bytes::from(frame);
        if self.buffered {
            self.buffer_bytes += frame.len();
            self.buffer.push(frame);
            return;
        }
        self.start(call, who);
        if self.tx.send(frame).await.is_err() {
            self.closed = true;
        }
    }

    fn start(&mut self, call: &Call, (provider, model): (&str, &str)) {
        if let Some(tx) = self.started.take() {
            self.first_byte = Some(call.start.elapsed());
            let _ = tx.send(Ok(Started {
                provider: provider.to_owned(),
                model: model.to_owned(),
            }));
        }
    }

    async fn flush_buffer(&mut self, call: &Call, who: (&str, &str)) {
        self.buffered = false;
        self.start(call, who);
        self.buffer_bytes = 0;
        for frame in std::mem::take(&mut self.buffer) {
            if !self.send_trailer(call, frame).await {
                self.closed = true;
                return;
            }
        }
    }

    /// Drops what was held back for validation: the next attempt starts over.
    fn discard(&mut self) {
        self.buffer.clear();
        self.buffer_bytes = 0;
        self.text.clear();
    }

    /// Bytes of the answer held in memory: the buffered frames, or the text
    /// kept to continue the answer.
    fn held_bytes(&self) -> usize {
        self.buffer_bytes.max(self.text.len())
    }

    /// Sends one of the frames that end the stream, within the request's
    /// deadline and [`TRAILER_GRACE`]: whether it was sent.
    async fn send_trailer(&self, call: &Call, frame: Bytes) -> bool {
        let until = call.deadline().max(Instant::now()) + TRAILER_GRACE;
        matches!(
            tokio::time::timeout_at(until.into(), self.tx.send(frame)).await,
            Ok(Ok(()))
        )
    }
}

/// How one streaming attempt ended.
enum StreamEnd {
    Done,
    Broken {
        outcome: AttemptOutcome,
        reason: String,
    },
    /// The answer outgrew `upstream.max_response_bytes`.
    TooLarge(String),
    /// The request's deadline passed: no attempt may follow.
    Deadline(String),
    ClientClosed,
}

/// Runs the request; reports the start (or the error) on `started`, then
/// writes SSE frames to `tx`.
pub async fn run(
    state: AppState,
    call: Call,
    started: oneshot::Sender<Result<Started, GatewayError>>,
    tx: mpsc::Sender<Bytes>,
) {
    let mut streamer = Streamer {
        out: Output::new(Some(started), tx, &call),
        first_contributor: None,
        diverged: false,
        limits: state.config.upstream,
    };
    let (ended, mut ledger) = attempts::run(&call, &mut streamer).await;
    ledger.failover_diverged = streamer.diverged;
    let Streamer {
        mut out,
        first_contributor,
        ..
    } = streamer;
    match ended {
        Ended::Answered { index, .. } => {
            #[expect(
                clippy::indexing_slicing,
                reason = "the index is the ledger's own, from attempts::run"
            )]
            let a = &ledger.attempts[index];
            // The answer is the text of every attempt that broke after the
            // client got part of it, then of this one; its prompt is the
            // first such attempt's.
            // Upstream counts: saturate rather than overflow.
            let continued = ledger
                .attempts
                .iter()
                .filter(|a| a.outcome == AttemptOutcome::MidStreamFailover)
                .fold(0u64, |sum, a| sum.saturating_add(a.completion_tokens));
            #[expect(
                clippy::indexing_slicing,
                reason = "the index is the ledger's own, from attempts::run"
            )]
            let prompt = ledger.attempts[first_contributor.unwrap_or(index)].prompt_tokens;
            let tokens = (prompt, continued.saturating_add(a.completion_tokens));
            if out.buffered {
                out.flush_buffer(&call, (&a.provider, &a.model)).await;
            }
            // The event is in the log before the client sees [DONE].
            let outcome = Outcome {
                status: StatusCode::OK,
                answered_by: Some(index),
                tokens,
                ttft: out.first_byte,
                response: state
                    .capture_bodies()
                    .then(|| streamed_answer(&call, &out.text)),
            };
            if metering::record_request(&state, &call, ledger, outcome)
                .await
                .withheld
            {
                withhold(&call, &mut out).await;
            } else {
                finish_stream(&call, &mut out, tokens).await;
            }
        }
        Ended::Rejected { status, body } => {
            let _ = metering::record_request(&state, &call, ledger, Outcome::failed(status, None))
                .await;
            if let Some(tx) = out.started.take() {
                let _ = tx.send(Err(GatewayError::UpstreamRejected { status, body }));
            }
        }
        Ended::GaveUp if out.closed => {
            let outcome = Outcome::failed(CLIENT_CLOSED, out.first_byte);
            let _ = metering::record_request(&state, &call, ledger, outcome).await;
        }
        Ended::GaveUp => {
            let error = exhausted_error(&call, &ledger);
            let status = error.status();
            if let Some(tx) = out.started.take() {
                let _ = tx.send(Err(error));
            } else {
                // The client already has part of the answer: end the stream
                // with an error event, as OpenAI does for mid-stream errors.
                out.send_trailer(&call, Bytes::from(error.sse_event()))
                    .await;
            }
            let outcome = Outcome::failed(status, out.first_byte);
            let _ = metering::record_request(&state, &call, ledger, outcome).await;
        }
    }
}

/// The log refused the event of a finished answer under the refuse policy:
/// the client gets a 503 if the stream has not started, else an error event
/// and no `[DONE]`, so that it does not take the answer as complete.
async fn withhold(call: &Call, out: &mut Output) {
    let error = GatewayError::NotRecorded("request");
    if let Some(tx) = out.started.take() {
        let _ = tx.send(Err(error));
        return;
    }
    out.send_trailer(call, Bytes::from(error.sse_event())).await;
}

/// Reads streamed answers into the client's stream, continuing it across
/// attempts.
struct Streamer {
    out: Output,
    /// Index of the first attempt whose text reached the client.
    first_contributor: Option<usize>,
    /// A restarted answer did not start with the text the client had.
    diverged: bool,
    limits: UpstreamConfig,
}

impl Reader for Streamer {
    type Answer = ();

    async fn read(&mut self, call: &Call, attempt: &mut Attempt<'_>) -> Tried<()> {
        let Self {
            out,
            first_contributor,
            diverged,
            limits,
        } = self;
        let continuing = out.sent_any();
        let restart = continuing && attempt.target.provider.continuation == Continuation::Restart;
        let prefix = (continuing && !restart).then_some(out.text.as_str());
        let sent = call.upstream_body(attempt.target, prefix);
        let response = match send(call, attempt, &sent).await {
            Ok(response) => response,
            Err(failed) => {
                return Tried {
                    sent,
                    completion_estimate: 0,
                    result: Err(failed),
                }
            }
        };
        let mut pump = Pump::new(call, continuing, restart.then(|| out.text.clone()));
        pump.limits = *limits;
        let end = pump.forward(response.into_body(), out, attempt).await;
        attempt.usage = pump.usage;
        *diverged |= pump.diverged;
        let result = match end {
            StreamEnd::Done => match call.validator.as_ref().map(|v| v.check(&out.text)) {
                Some(Err(reason)) => {
                    out.discard();
                    Err(Failed::invalid(reason))
                }
                None | Some(Ok(())) => Ok(()),
            },
            StreamEnd::ClientClosed => Err(Failed::client_closed()),
            StreamEnd::TooLarge(reason) if out.sent_any() => {
                // The client has part of an answer that cannot be continued
                // without growing past the limit again.
                Err(Failed::next_target(AttemptOutcome::BadResponse, reason).fatal())
            }
            StreamEnd::TooLarge(reason) => {
                out.discard();
                Err(Failed::retryable(AttemptOutcome::BadResponse, reason))
            }
            StreamEnd::Deadline(reason) => {
                Err(Failed::retryable(AttemptOutcome::Timeout, reason).fatal())
            }
            StreamEnd::Broken { outcome, reason } => {
                if pump.chunks_with_text > 0 && !out.buffered {
                    first_contributor.get_or_insert(attempt.index);
                }
                if out.buffered {
                    // Nothing was sent: start over on the next attempt.
                    out.discard();
                }
                Err(if !out.sent_any() {
                    Failed::retryable(outcome, reason)
                } else if out.continuable {
                    Failed::retryable(AttemptOutcome::MidStreamFailover, reason)
                } else {
                    // A tool call or several choices cannot be continued.
                    Failed::retryable(AttemptOutcome::MidStreamFailover, reason).fatal()
                })
            }
        };
        Tried {
            sent,
            completion_estimate: pump.chunks_with_text,
            result,
        }
    }

    fn can_reject(&self) -> bool {
        !self.out.sent_any()
    }
}

/// A streamed answer in the shape of a non-streamed one, for capture.
fn streamed_answer(call: &Call, text: &str) -> String {
    let choice = match call.op {
        Operation::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text}}),
        _ => json!({"index": 0, "text": text}),
    };
    json!({"id": call.id, "model": call.route.name, "choices": [choice]}).to_string()
}

/// Sends the usage chunk (when the client asked for it) and `[DONE]`.
async fn finish_stream(call: &Call, out: &mut Output, (prompt, completion): (u64, u64)) {
    if call.include_usage {
        let object = if call.op == Operation::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let chunk = json!({
            "id": call.id, "object": object, "created": out.created.clone().unwrap_or(json!(call.ts_ms / 1000)),
            "model": call.route.name, "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt.saturating_add(completion)},
        });
        out.send_trailer(call, Bytes::from(format!("data: {chunk}\n\n")))
            .await;
    }
    out.send_trailer(call, Bytes::from_static(b"data: [DONE]\n\n"))
        .await;
}

/// Reads one upstream stream and forwards its chunks.
struct Pump<'a> {
    call: &'a Call,
    /// This attempt continues an answer the client already has part of.
    continuing: bool,
    /// Restart continuation: text the new answer should repeat, not re-sent.
    skip: Option<String>,
    diverged: bool,
    chunks_with_text: u64,
    usage: Option<(u64, u64)>,
    limits: UpstreamConfig,
}

impl<'a> Pump<'a> {
    fn new(call: &'a Call, continuing: bool, skip: Option<String>) -> Self {
        Self {
            call,
            continuing,
            skip,
            diverged: false,
            chunks_with_text: 0,
            usage: None,
            limits: UpstreamConfig::default(),
        }
    }

    /// Forwards the stream until it ends or the request's deadline passes
    /// (a stream that never stalls nor ends, or a client too slow to take
    /// it, would otherwise hold the request forever).
    async fn forward(
        &mut self,
        body: Incoming,
        out: &mut Output,
        attempt: &mut Attempt<'_>,
    ) -> StreamEnd {
        let deadline = self.call.deadline();
        match tokio::time::timeout_at(deadline.into(), self.pump(body, out, attempt)).await {
            Ok(end) => end,
            Err(_) => StreamEnd::Deadline(format!(
                "request timed out mid-stream (retry.total_timeout_ms = {})",
                self.call.route.retry.total_timeout_ms
            )),
        }
    }

    async fn pump(
        &mut self,
        mut body: Incoming,
        out: &mut Output,
        attempt: &mut Attempt<'_>,
    ) -> StreamEnd {
        let target = attempt.target;
        let who = (target.provider.name.as_str(), target.model.as_str());
        let mut parser = SseParser::new(self.limits.max_sse_event_bytes);
        loop {
            // Until the first chunk the attempt deadline applies; after it,
            // the idle deadline detects stalls.
            let wait = match attempt.ttft {
                None => attempt.timeout.saturating_sub(attempt.started.elapsed()),
                Some(_) => self.call.route.retry.stream_idle_timeout(),
            };
            let frame = match tokio::time::timeout(wait, body.frame()).await {
                Err(_) => {
                    return StreamEnd::Broken {
                        outcome: AttemptOutcome::Timeout,
                        reason: format!("stream stalled for {} ms", wait.as_millis()),
                    }
                }
                Ok(None) => {
                    return StreamEnd::Broken {
                        outcome: AttemptOutcome::BadResponse,
                        reason: "stream ended without [DONE]".into(),
                    }
                }
                Ok(Some(Err(e))) => {
                    return StreamEnd::Broken {
                        outcome: AttemptOutcome::ConnectError,
                        reason: format!("stream cut: {e}"),
                    }
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            parser.push(&data);
            loop {
                let event = match parser.next_event() {
                    Ok(Some(event)) => event,
                    Ok(None) => break,
                    Err(e) => {
                        return StreamEnd::Broken {
                            outcome: AttemptOutcome::BadResponse,
                            reason: e.to_string(),
                        }
                    }
                };
                let data = match event {
                    SseEvent::Done => return StreamEnd::Done,
                    SseEvent::Data(d) => d,
                };
                let Ok(mut chunk) = serde_json::from_str::<Value>(&data) else {
                    return StreamEnd::Broken {
                        outcome: AttemptOutcome::BadResponse,
                        reason: format!("malformed chunk: {}", preview(&data, 200)),
                    };
                };
                if let Some(error) = chunk.get("error") {
                    return StreamEnd::Broken {
                        outcome: AttemptOutcome::ErrorStatus,
                        reason: format!("error event in stream: {error}"),
                    };
                }
                attempt
                    .ttft
                    .get_or_insert_with(|| attempt.started.elapsed());
                if self.rewrite(&mut chunk, out) {
                    let frame = chunk.to_string();
                    if out.held_bytes() + frame.len() > self.limits.max_response_bytes {
                        return StreamEnd::TooLarge(format!(
                            "answer larger than {} bytes (upstream.max_response_bytes)",
                            self.limits.max_response_bytes
                        ));
                    }
                    out.emit(self.call, frame.as_bytes(), who).await;
                    if out.closed {
                        return StreamEnd::ClientClosed;
                    }
                }
            }
        }
    }

    /// Takes usage out of a chunk, names the request and the route in it,
    /// tracks choice 0's text, and returns whether anything is left to
    /// forward.
    fn rewrite(&mut self, chunk: &mut Value, out: &mut Output) -> bool {
        let Some(obj) = chunk.as_object_mut() else {
            return false;
        };
        if let Some(usage) = obj.remove("usage") {
            if let Some(p) = usage.get("prompt_tokens").and_then(Value::as_u64) {
                let c = usage
                    .get("completion_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                self.usage = Some((p, c));
            }
        }
        if out.created.is_none() {
            out.created = obj.get("created").cloned();
        }
        obj.insert("id".into(), Value::String(self.call.id.clone()));
        obj.insert("model".into(), Value::String(self.call.route.name.clone()));
        let Some(choices) = obj.get_mut("choices").and_then(Value::as_array_mut) else {
            return false;
        };
        if choices.is_empty() {
            return false;
        }
        let chat = self.call.op == Operation::Chat;
        let mut keep = false;
        for choice in choices.iter_mut() {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let has_finish = choice.get("finish_reason").is_some_and(|f| !f.is_null());
            let container = if chat {
                choice.get_mut("delta")
            } else {
                Some(&mut *choice)
            };
            let Some(container) = container.and_then(Value::as_object_mut) else {
                keep |= has_finish;
                continue;
            };
            if chat && self.continuing {
                // The client already got the role in the first attempt's chunk.
                container.remove("role");
            }
            if container.contains_key("tool_calls") || index > 0 {
                out.continuable = false;
            }
            let field = if chat { "content" } else { "text" };
            if index == 0 {
                if let Some(Value::String(text)) = container.get_mut(field) {
                    let kept = self.skip_repeated(text);
                    *text = kept;
                    if !text.is_empty() {
                        out.text.push_str(text);
                        self.chunks_with_text += 1;
                    }
                }
            }
            let has_content = container.iter().any(|(k, v)| match v {
                Value::Null => false,
                Value::String(s) => !(k == field && s.is_empty() && self.continuing),
                _ => true,
            });
            keep |= has_content || has_finish || !self.continuing;
        }
        keep
    }

    /// For a restarted answer: drops the part the client already has.
    fn skip_repeated(&mut self, text: &str) -> String {
        let Some(skip) = self.skip.as_mut() else {
            return text.to_owned();
        };
        if skip.starts_with(text) {
            skip.drain(..text.len());
            if skip.is_empty() {
                self.skip = None;
            }
            return String::new();
        }
        let rest = text.strip_prefix(skip.as_str()).map(str::to_owned);
        self.skip = None;
        rest.unwrap_or_else(|| {
            self.diverged = true;
            text.to_owned()
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::dispatcher::testing;

    fn output(call: &Call) -> (Output, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(4);
        (Output::new(None, tx, call), rx)
    }

    /// An upstream chat chunk with one choice.
    fn delta(index: u64, delta: Value) -> Value {
        json!({
            "id": "upstream-id", "object": "chat.completion.chunk", "created": 7,
            "model": "upstream-model",
            "choices": [{"index": index, "delta": delta, "finish_reason": null}],
        })
    }

    #[test]
    fn rewrite_names_the_request_and_the_route_and_keeps_the_text() {
        let call = testing::chat();
        let (mut out, _rx) = output(&call);
        let mut pump = Pump::new(&call, false, None);
        let mut chunk = delta(0, json!({"content": "Hel"}));
        assert!(pump.rewrite(&mut chunk, &mut out));
        assert_eq!(chunk["id"], call.id.as_str());
        assert_eq!(chunk["model"], "r");
        assert_eq!(chunk["choices"][0]["delta"]["content"], "Hel");
        let mut chunk = delta(0, json!({"content": "lo"}));
        assert!(pump.rewrite(&mut chunk, &mut out));
        assert_eq!(out.text, "Hello");
        assert_eq!(pump.chunks_with_text, 2);
        assert_eq!(out.created, Some(json!(7)));
        assert!(out.continuable);
    }

    #[test]
    fn rewrite_takes_the_usage_out_and_drops_a_usage_only_chunk() {
        let call = testing::chat();
        let (mut out, _rx) = output(&call);
        let mut pump = Pump::new(&call, false, None);
        let usage = json!({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17});
        let mut chunk = json!({"id": "x", "choices": [], "usage": usage});
        assert!(!pump.rewrite(&mut chunk, &mut out));
        assert_eq!(pump.usage, Some((12, 5)));

        let mut chunk = delta(0, json!({"content": "a"}));
        chunk["usage"] = json!({"prompt_tokens": 13, "completion_tokens": 6});
        assert!(pump.rewrite(&mut chunk, &mut out));
        assert!(chunk.get("usage").is_none(), "{chunk}");
        assert_eq!(pump.usage, Some((13, 6)));
    }

    #[test]
    fn rewrite_drops_what_is_not_a_chunk_with_choices() {
        let call = testing::chat();
        let (mut out, _rx) = output(&call);
        let mut pump = Pump::new(&call, false, None);
        assert!(!pump.rewrite(&mut json!([1, 2]), &mut out));
        assert!(!pump.rewrite(&mut json!({"id": "x"}), &mut out));
    }

    #[test]
    fn the_first_attempt_forwards_the_role_chunk() {
        let call = testing::chat();
        let (mut out, _rx) = output(&call);
        let mut pump = Pump::new(&call, false, None);
        let mut chunk = delta(0, json!({"role": "assistant", "content": ""}));
        assert!(pump.rewrite(&mut chunk, &mut out));
        assert_eq!(chunk["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(pump.chunks_with_text, 0);
    }

    #[test]
    fn a_continuation_drops_the_repeated_role_and_empty_deltas() {
        let call = testing::chat();
        let (mut out, _rx) = output(&call);
        let mut pump = Pump::new(&call, true, None);
        let mut chunk = delta(0, json!({"role": "assistant", "content": ""}));
        assert!(!pump.rewrite(&mut chunk, &mut out));
        let mut chunk = delta(0, json!({"role": "assistant", "content": " world"}));
        assert!(pump.rewrite(&mut chunk, &mut out));
        assert_eq!(chunk["choices"][0]["delta"], json!({"content": " world"}));
        // The last chunk carries the finish reason: it goes through.
        let mut chunk = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        assert!(pump.rewrite(&mut chunk, &mut out));
    }

    #[test]
    fn tool_calls_and_second_choices_cannot_be_continued() {
        let call = testing::chat();
        let (mut out, _rx) = output(&call);
        let mut pump = Pump::new(&call, false, None);
        let call_delta = json!({"tool_calls": [{"index": 0, "function": {"name": "f"}}]});
        assert!(pump.rewrite(&mut delta(0, call_delta), &mut out));
        assert!(!out.continuable);

        let (mut out, _rx) = output(&call);
        assert!(pump.rewrite(&mut delta(1, json!({"content": "b"})), &mut out));
        assert!(!out.continuable);
        assert_eq!(out.text, "", "only choice 0's text is kept");
    }

    #[test]
    fn completions_keep_the_text_field() {
        let body = json!({"model": "r", "prompt": "Say"});
        let call = testing::call_with(Operation::Completion, body, "");
        let (mut out, _rx) = output(&call);
        let mut pump = Pump::new(&call, false, None);
        let mut chunk = json!({"choices": [{"index": 0, "text": " hi", "finish_reason": null}]});
        assert!(pump.rewrite(&mut chunk, &mut out));
        assert_eq!(out.text, " hi");
        assert_eq!(chunk["model"], "r");
    }

    #[test]
    fn rewrite_sends_only_the_new_part_of_a_restarted_answer() {
        let call = testing::chat();
        let (mut out, _rx) = output(&call);
        out.text = "Hi".to_owned();
        let mut pump = Pump::new(&call, true, Some("Hi".to_owned()));
        assert!(!pump.rewrite(&mut delta(0, json!({"content": "Hi"})), &mut out));
        let mut chunk = delta(0, json!({"content": " there"}));
        assert!(pump.rewrite(&mut chunk, &mut out));
        assert_eq!(chunk["choices"][0]["delta"]["content"], " there");
        assert_eq!(out.text, "Hi there");
        assert_eq!(pump.chunks_with_text, 1);
    }

    #[test]
    fn restart_drops_the_part_the_client_already_has() {
        let call = testing::chat();
        let mut pump = Pump::new(&call, true, Some("Hello world".to_owned()));
        assert_eq!(pump.skip_repeated("Hello"), "");
        assert_eq!(pump.skip_repeated(" wor"), "");
        assert_eq!(pump.skip_repeated("ld, again"), ", again");
        assert_eq!(pump.skip_repeated(" and more"), " and more");
        assert!(pump.skip.is_none());
        assert!(!pump.diverged);
    }

    #[test]
    fn restart_stops_skipping_exactly_at_the_end_of_the_known_text() {
        let call = testing::chat();
        let mut pump = Pump::new(&call, true, Some("ab".to_owned()));
        assert_eq!(pump.skip_repeated("ab"), "");
        assert!(pump.skip.is_none());
        assert_eq!(pump.skip_repeated("ab"), "ab");
        assert!(!pump.diverged);
    }

    #[test]
    fn a_restart_that_says_something_else_is_sent_whole_and_marked_diverged() {
        let call = testing::chat();
        let mut pump = Pump::new(&call, true, Some("Hello world".to_owned()));
        assert_eq!(pump.skip_repeated("Hello"), "");
        assert_eq!(pump.skip_repeated(" there"), " there");
        assert!(pump.diverged);
        assert_eq!(pump.skip_repeated(" world"), " world", "no more skipping");
    }

    /// Upstream bytes through the whole app: see [`crate::testing`].
    mod whole_path {
        use std::time::{Duration, Instant};

        use bytes::Bytes;
        use futures_util::stream;

        use crate::{
            metering::AttemptOutcome,
            testing::{self, chat, sse_chunk, sse_response},
        };

        const CHAT: &str = "/v1/chat/completions";

        #[tokio::test]
        async fn a_malformed_chunk_cut_inside_a_multibyte_character_fails_the_attempt() {
            // 199 ASCII bytes, then `é` (2 bytes): byte 200, where the reason
            // is cut, falls inside it.
            let bad = Bytes::from(format!("data: {}é not JSON\n\n", "x".repeat(199)));
            let addr = testing::chat_upstream(move || {
                let bad = bad.clone();
                async move { sse_response(stream::iter([Ok(bad)])) }
            })
            .await;
            let (state, sink) = testing::state(addr, "[retry]\nmax_retries = 0\n");
            let answer =
                testing::post(&state, CHAT, &[], &chat(true), Duration::from_secs(10)).await;
            assert_eq!(answer.status, 502, "{}", answer.body);
            let events = testing::inferences(&sink, 1).await;
            assert_eq!(events.len(), 1, "the failed request has its event");
            let attempt = &events[0].attempts[0];
            assert_eq!(attempt.outcome, AttemptOutcome::BadResponse);
            let reason = attempt.reason.as_deref().unwrap_or_default();
            assert!(reason.starts_with("malformed chunk: xxx"), "{reason}");
        }

        #[tokio::test]
        async fn the_request_deadline_cuts_a_stream_that_never_ends() {
            // A token every 50 ms, forever: never idle, never done.
            let addr = testing::chat_upstream(|| async {
                let tokens = stream::unfold((), |()| async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Some((Ok(sse_chunk("la ")), ()))
                });
                sse_response(tokens)
            })
            .await;
            let retry = "[retry]\nmax_retries = 0\ntotal_timeout_ms = 800\nstream_idle_timeout_ms = 500\nattempt_timeout_ms = 5000\n";
            let (state, sink) = testing::state(addr, retry);
            let start = Instant::now();
            let answer =
                testing::post(&state, CHAT, &[], &chat(true), Duration::from_secs(5)).await;
            let took = start.elapsed();
            assert!(took < Duration::from_millis(2500), "cut after {took:?}");
            assert_eq!(answer.status, 200);
            let tokens = answer.body.matches(r#""content":"la ""#).count();
            assert!(
                tokens >= 5,
                "{tokens} tokens before the cut: {}",
                answer.body
            );
            // The client's stream ends with an error event, not [DONE].
            let last = testing_last_event(&answer.body);
            assert!(
                last.contains("\"error\"") && last.contains("timed out"),
                "{last}"
            );
            let events = testing::inferences(&sink, 1).await;
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].status, 504);
            assert_eq!(events[0].attempts[0].outcome, AttemptOutcome::Timeout);
        }

        #[tokio::test]
        async fn an_event_over_max_sse_event_bytes_fails_the_attempt() {
            let line = Bytes::from(format!("data: {}", "x".repeat(8 * 1024)));
            let addr = testing::chat_upstream(move || {
                let line = line.clone();
                async move { sse_response(stream::iter([Ok(line)])) }
            })
            .await;
            let config = "[retry]\nmax_retries = 0\n[upstream]\nmax_sse_event_bytes = 4096\n";
            let (state, sink) = testing::state(addr, config);
            let answer =
                testing::post(&state, CHAT, &[], &chat(true), Duration::from_secs(10)).await;
            assert_eq!(answer.status, 502, "{}", answer.body);
            let events = testing::inferences(&sink, 1).await;
            let attempt = &events[0].attempts[0];
            assert_eq!(attempt.outcome, AttemptOutcome::BadResponse);
            let reason = attempt.reason.as_deref().unwrap_or_default();
            assert!(reason.contains("max_sse_event_bytes"), "{reason}");
        }

        #[tokio::test]
        async fn a_validated_stream_over_max_response_bytes_fails_the_attempt() {
            // Held back for validation, never ending: 100 chunks of 1 KiB.
            let addr = testing::chat_upstream(|| async {
                let chunk = sse_chunk(&"y".repeat(1024));
                sse_response(stream::iter((0..100).map(move |_| Ok(chunk.clone()))))
            })
            .await;
            let config = "[retry]\nmax_retries = 0\n[upstream]\nmax_response_bytes = 16384\n";
            let (state, sink) = testing::state(addr, config);
            let mut body = chat(true);
            body["response_format"] = serde_json::json!({"type": "json_object"});
            let answer = testing::post(&state, CHAT, &[], &body, Duration::from_secs(10)).await;
            assert_eq!(answer.status, 502, "{}", answer.body);
            let events = testing::inferences(&sink, 1).await;
            let attempt = &events[0].attempts[0];
            assert_eq!(attempt.outcome, AttemptOutcome::BadResponse);
            let reason = attempt.reason.as_deref().unwrap_or_default();
            assert!(reason.contains("max_response_bytes"), "{reason}");
        }

        #[tokio::test]
        async fn usage_counts_past_u64_sums_saturate() {
            let usage = serde_json::json!({
                "choices": [], "usage": {"prompt_tokens": u64::MAX, "completion_tokens": u64::MAX},
            });
            let frames = [
                Ok(sse_chunk("hi")),
                Ok(Bytes::from(format!("data: {usage}\n\n"))),
                Ok(Bytes::from_static(b"data: [DONE]\n\n")),
            ];
            let addr = testing::chat_upstream(move || {
                let frames = frames.clone();
                async move { sse_response(stream::iter(frames)) }
            })
            .await;
            let (state, sink) = testing::state(addr, "");
            let mut body = chat(true);
            body["stream_options"] = serde_json::json!({"include_usage": true});
            let answer = testing::post(&state, CHAT, &[], &body, Duration::from_secs(10)).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            assert!(answer.body.ends_with("data: [DONE]\n\n"), "{}", answer.body);
            assert!(answer
                .body
                .contains(&format!("\"total_tokens\":{}", u64::MAX)));
            let events = testing::inferences(&sink, 1).await;
            assert_eq!(events[0].completion_tokens, u64::MAX);
        }

        /// The last `data:` payload of an SSE body.
        fn testing_last_event(body: &str) -> String {
            body.split("\n\n")
                .filter_map(|e| e.strip_prefix("data: "))
                .last()
                .unwrap_or_default()
                .to_owned()
        }
    }

    #[test]
    fn without_a_restart_nothing_is_skipped() {
        let call = testing::chat();
        let mut pump = Pump::new(&call, true, None);
        assert_eq!(pump.skip_repeated("Hello"), "Hello");
        assert!(!pump.diverged);
    }
}
