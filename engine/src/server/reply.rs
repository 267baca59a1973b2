//! The engine's answer to one request as the HTTP response: one JSON body, or an SSE stream
//! ([`super::stream`]). Errors the engine reports before the first token get a proper status
//! either way.

use axum::{
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{runner, stream, wire};
use crate::{error::ApiError, registry::Lease};

/// How engine responses map onto the HTTP response.
#[derive(Clone, Copy)]
pub(super) enum Mode {
    /// A chat request rendered by mistral.rs.
    Chat,
    /// An assistant-prefix continuation: sent as prompt tokens, answered as chat.
    ChatFromTokens { prompt_tokens: usize },
    /// `/v1/completions`.
    Completion { prompt_tokens: usize },
}

/// One request being answered.
pub(super) struct Job {
    /// Held until the answer is complete: unloading this version waits for it.
    pub lease: Lease,
    pub mode: Mode,
    pub stream: bool,
    pub include_usage: bool,
    pub id: String,
    /// Token-prompt modes: mistral.rs trims the leading whitespace of a completion (right
    /// for a fresh chat answer, wrong for a continuation or a text completion, where
    /// " Paris" must stay " Paris"). Logprobs are requested to learn the first tokens'
    /// text and restore it.
    pub restore_leading_ws: bool,
    /// Whether the client asked for logprobs (otherwise they are removed from the answer).
    pub client_logprobs: bool,
}

/// Waits for the engine's first response (so that request errors get a proper status even
/// when streaming), then answers with JSON or SSE.
pub(super) async fn finish(
    job: Job,
    mut rx: mpsc::Receiver<mistralrs::Response>,
) -> Result<Response, ApiError> {
    use mistralrs::Response as R;
    // The name the client asked for (an alias stays the alias), not the version behind it.
    let model = job.lease.model.clone();
    loop {
        let resp = rx
            .recv()
            .await
            .ok_or_else(|| ApiError::internal("the engine closed the request without an answer"))?;
        let resp = runner::check(resp)?;
        if job.stream {
            return Ok(stream::respond(job, model, resp, rx));
        }
        match resp {
            R::Done(done) => {
                let v = wire::chat_completion(&done, &job.id, &model, job.client_logprobs);
                return Ok(Json(v).into_response());
            }
            R::CompletionDone(mut done) => {
                for c in done.choices.iter_mut() {
                    if job.restore_leading_ws && !c.text.starts_with(char::is_whitespace) {
                        c.text.insert_str(0, &trimmed_prefix(c.logprobs.as_ref()));
                    }
                    if !job.client_logprobs {
                        c.logprobs = None;
                    }
                }
                let mut v =
                    serde_json::to_value(&done).map_err(|e| ApiError::internal(e.to_string()))?;
                v["id"] = json!(job.id);
                v["model"] = json!(model);
                if let Mode::ChatFromTokens { .. } = job.mode {
                    let choices: Vec<Value> = done
                        .choices
                        .iter()
                        .map(|c| {
                            json!({
                                "index": c.index,
                                "message": {"role": "assistant", "content": c.text, "refusal": null},
                                "finish_reason": c.finish_reason,
                                "logprobs": wire::choice_logprobs(
                                    c.logprobs.as_ref().map(|l| l.content.iter().flatten())
                                ),
                            })
                        })
                        .collect();
                    v["choices"] = json!(choices);
                    v["object"] = json!("chat.completion");
                } else {
                    v["object"] = json!("text_completion");
                }
                return Ok(Json(v).into_response());
            }
            // Anything else (not expected without streaming) is skipped.
            _ => {}
        }
    }
}

/// The leading whitespace of `s`.
pub(super) fn leading_ws(s: &str) -> &str {
    s.strip_suffix(s.trim_start()).unwrap_or_default()
}

/// The whitespace mistral.rs trimmed from the start of a whole completion: the leading
/// whitespace of its tokens' concatenated text.
fn trimmed_prefix(logprobs: Option<&mistralrs::Logprobs>) -> String {
    let mut text = String::new();
    for lp in logprobs
        .and_then(|l| l.content.as_ref())
        .into_iter()
        .flatten()
    {
        text.push_str(&lp.token);
        if !text.trim_start().is_empty() {
            break;
        }
    }
    leading_ws(&text).to_string()
}
