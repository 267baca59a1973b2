//! Streaming answers: the engine's chunks as OpenAI SSE events (`data: {...}\n\n`), an
//! optional usage event, then `data: [DONE]`. An error after the stream started is sent as
//! one error event (the OpenAI envelope) and ends the stream.

use std::convert::Infallible;

use axum::{
    body::{Body, Bytes},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{
    reply::{leading_ws, Job, Mode},
    runner, wire,
};
use crate::error::ApiError;

/// The SSE response of `job`, whose first engine response `first` (not an error) has
/// arrived; a task forwards the rest of `rx` as events.
pub(super) fn respond(
    job: Job,
    model: String,
    first: mistralrs::Response,
    rx: mpsc::Receiver<mistralrs::Response>,
) -> Response {
    let (btx, mut brx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(stream_task(job, model, first, rx, btx));
    let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| {
        brx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>))
    }));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn sse_error(e: &ApiError) -> Bytes {
    Bytes::from(e.body().to_sse_event())
}

fn usage_json(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

async fn stream_task(
    job: Job,
    model: String,
    first: mistralrs::Response,
    mut rx: mpsc::Receiver<mistralrs::Response>,
    out: mpsc::Sender<Bytes>,
) {
    use mistralrs::Response as R;
    // Held until the last event: unloading this version waits for it.
    let _lease = job.lease;
    let mut next = Some(first);
    let mut completion_tokens = 0usize;
    let mut created: u128 = 0;
    let mut first_chunk = true;
    loop {
        let resp = match next.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => {
                    let e = ApiError::internal("the engine ended the stream early");
                    let _ = out.send(sse_error(&e)).await;
                    return;
                }
            },
        };
        let resp = match runner::check(resp) {
            Ok(r) => r,
            Err(e) => {
                let _ = out.send(sse_error(&e)).await;
                return;
            }
        };
        let mut events: Vec<Value> = Vec::new();
        let mut finished = false;
        let mut usage: Option<Value> = None;
        match resp {
            R::Chunk(chunk) => {
                created = chunk.created;
                finished = !chunk.choices.is_empty()
                    && chunk.choices.iter().all(|c| c.finish_reason.is_some());
                let mut v = wire::chat_chunk(&chunk, &job.id, &model, job.client_logprobs);
                if let Some(u) = &chunk.usage {
                    usage = serde_json::to_value(u).ok();
                }
                if job.include_usage {
                    v["usage"] = Value::Null;
                }
                events.push(v);
            }
            R::CompletionChunk(mut chunk) => {
                created = chunk.created;
                for c in chunk.choices.iter_mut() {
                    // Only the first delta is trimmed by mistral.rs.
                    if first_chunk
                        && job.restore_leading_ws
                        && !c.text.starts_with(char::is_whitespace)
                    {
                        if let Some(lp) = &c.logprobs {
                            let tok = match &lp.bytes {
                                Some(b) => String::from_utf8_lossy(b).into_owned(),
                                None => lp.token.clone(),
                            };
                            c.text.insert_str(0, leading_ws(&tok));
                        }
                    }
                    if !job.client_logprobs {
                        c.logprobs = None;
                    }
                }
                first_chunk = false;
                finished = !chunk.choices.is_empty()
                    && chunk.choices.iter().all(|c| c.finish_reason.is_some());
                completion_tokens += chunk.choices.iter().filter(|c| !c.text.is_empty()).count();
                let (object, choices): (&str, Vec<Value>) = match job.mode {
                    Mode::ChatFromTokens { .. } => (
                        "chat.completion.chunk",
                        chunk
                            .choices
                            .iter()
                            .map(|c| {
                                json!({
                                    "index": c.index,
                                    "delta": {"role": "assistant", "content": c.text},
                                    "finish_reason": c.finish_reason,
                                    "logprobs": wire::choice_logprobs(
                                        c.logprobs.as_ref().map(std::iter::once)
                                    ),
                                })
                            })
                            .collect(),
                    ),
                    _ => (
                        "text_completion",
                        chunk
                            .choices
                            .iter()
                            .map(|c| {
                                json!({
                                    "index": c.index,
                                    "text": c.text,
                                    "finish_reason": c.finish_reason,
                                    "logprobs": c.logprobs,
                                })
                            })
                            .collect(),
                    ),
                };
                let mut v = json!({
                    "id": job.id, "object": object, "created": chunk.created, "model": model,
                    "system_fingerprint": chunk.system_fingerprint, "choices": choices,
                });
                if job.include_usage {
                    v["usage"] = Value::Null;
                }
                events.push(v);
                if finished {
                    let prompt = match job.mode {
                        Mode::ChatFromTokens { prompt_tokens }
                        | Mode::Completion { prompt_tokens } => prompt_tokens,
                        Mode::Chat => 0,
                    };
                    usage = Some(usage_json(prompt, completion_tokens));
                }
            }
            R::Done(_) | R::CompletionDone(_) => {
                finished = true;
            }
            // Other responses (none expected while streaming) are skipped.
            _ => {}
        }
        for e in &events {
            if out.send(sse(e)).await.is_err() {
                return; // client gone: dropping `rx` stops the sequence
            }
        }
        if finished {
            if job.include_usage {
                let object = match job.mode {
                    Mode::Completion { .. } => "text_completion",
                    _ => "chat.completion.chunk",
                };
                let v = json!({
                    "id": job.id, "object": object, "created": created, "model": model,
                    "choices": [], "usage": usage.unwrap_or(Value::Null),
                });
                if out.send(sse(&v)).await.is_err() {
                    return;
                }
            }
            let _ = out.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
            return;
        }
    }
}
