//! Non-streaming requests: the first acceptable answer wins.

// Untrusted bytes (client bodies, upstream answers): a malformed input
// must become an error, never a panic.
#![deny(clippy::indexing_slicing, clippy::string_slice, clippy::panic)]

use flywheel_api::headers::Totals;
use http::StatusCode;
use serde_json::Value;

use super::{
    attempts::{self, exhausted_error, read_body, send, Attempt, Ended, Failed, Reader, Tried},
    Call,
};
use crate::{
    error::GatewayError,
    metering::{self, tokens, AttemptOutcome, Outcome},
    AppState,
};

/// A successful answer and who gave it.
pub struct Answer {
    pub body: Value,
    pub provider: String,
    pub model: String,
}

/// The answer or the error, and in both cases what the attempts cost.
pub async fn run(state: &AppState, call: &Call) -> (Result<Answer, GatewayError>, Totals) {
    let mut reader = Unary {
        max_bytes: state.config.upstream.max_response_bytes,
    };
    let (ended, ledger) = attempts::run(call, &mut reader).await;
    let error = match ended {
        Ended::Answered {
            answer: body,
            index,
        } => {
            #[expect(
                clippy::indexing_slicing,
                reason = "the index is the ledger's own, from attempts::run"
            )]
            let a = &ledger.attempts[index];
            let outcome = Outcome {
                status: StatusCode::OK,
                answered_by: Some(index),
                tokens: (a.prompt_tokens, a.completion_tokens),
                ttft: None,
                response: state.capture_bodies().then(|| body.to_string()),
            };
            let answer = Answer {
                body,
                provider: a.provider.clone(),
                model: a.model.clone(),
            };
            let recorded = metering::record_request(state, call, ledger, outcome).await;
            if recorded.withheld {
                return (Err(GatewayError::NotRecorded("request")), recorded.totals);
            }
            return (Ok(answer), recorded.totals);
        }
        Ended::Rejected { status, body } => GatewayError::UpstreamRejected { status, body },
        Ended::GaveUp => exhausted_error(call, &ledger),
    };
    let outcome = Outcome::failed(error.status(), None);
    let recorded = metering::record_request(state, call, ledger, outcome).await;
    (Err(error), recorded.totals)
}

/// Reads a whole JSON answer, of at most `max_bytes`
/// (`upstream.max_response_bytes`).
struct Unary {
    max_bytes: usize,
}

impl Reader for Unary {
    type Answer = Value;

    async fn read(&mut self, call: &Call, attempt: &mut Attempt<'_>) -> Tried<Value> {
        let sent = call.upstream_body(attempt.target, None);
        let result = read_answer(call, attempt, &sent, self.max_bytes).await;
        let completion_estimate = result.as_ref().map_or(0, estimate_completion);
        Tried {
            sent,
            completion_estimate,
            result,
        }
    }
}

/// Sends `body` and reads an OpenAI answer that passes validation.
async fn read_answer(
    call: &Call,
    attempt: &mut Attempt<'_>,
    body: &Value,
    max_bytes: usize,
) -> Result<Value, Failed> {
    let response = send(call, attempt, body).await?;
    // The attempt timeout covers reading the answer too.
    let left = attempt.timeout.saturating_sub(attempt.started.elapsed());
    let bytes = read_body(response.into_body(), max_bytes, left)
        .await
        .map_err(|(outcome, reason)| Failed::retryable(outcome, reason))?;
    let answer = match serde_json::from_slice::<Value>(&bytes) {
        Ok(answer) if answer.get("choices").is_some() || answer.get("data").is_some() => answer,
        Ok(_) | Err(_) => {
            return Err(Failed::retryable(
                AttemptOutcome::BadResponse,
                "upstream answered 200 with a body that is not an OpenAI answer",
            ))
        }
    };
    attempt.usage = usage_of(&answer);
    validate(call, &answer).map_err(Failed::invalid)?;
    Ok(answer)
}

/// `usage.{prompt_tokens, completion_tokens}` of an answer, if present.
fn usage_of(answer: &Value) -> Option<(u64, u64)> {
    let usage = answer.get("usage")?;
    let prompt = usage.get("prompt_tokens")?.as_u64()?;
    let completion = usage
        .get("completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some((prompt, completion))
}

/// Every choice with text content must pass the requested validation.
fn validate(call: &Call, answer: &Value) -> Result<(), String> {
    let Some(validator) = &call.validator else {
        return Ok(());
    };
    let choices = answer
        .get("choices")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for choice in choices {
        match choice.pointer("/message/content") {
            Some(Value::String(content)) => validator.check(content)?,
            // A tool call answers with no content; there is nothing to validate.
            _ if choice.pointer("/message/tool_calls").is_some() => {}
            _ => return Err("answer has no content".to_owned()),
        }
    }
    Ok(())
}

/// Completion tokens estimated from the answer's text, for upstreams that
/// report no usage.
fn estimate_completion(answer: &Value) -> u64 {
    let choices = answer
        .get("choices")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    choices
        .iter()
        .filter_map(|c| {
            c.pointer("/message/content")
                .or_else(|| c.get("text"))
                .and_then(Value::as_str)
        })
        .map(tokens::estimate_text)
        .sum()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::response::IntoResponse;
    use http::StatusCode;

    use crate::{
        metering::AttemptOutcome,
        testing::{self, chat},
    };

    /// An upstream that always answers 429 with this `Retry-After`.
    async fn throttled(retry_after: &'static str) -> std::net::SocketAddr {
        testing::chat_upstream(move || async move {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(http::header::RETRY_AFTER, retry_after)],
                "{}",
            )
                .into_response()
        })
        .await
    }

    #[tokio::test]
    async fn an_absurd_retry_after_moves_on_instead_of_panicking() {
        for retry_after in ["1e20", "1e300", "18446744073709551616", "-1", "NaN", "inf"] {
            let addr = throttled(retry_after).await;
            let (state, sink) = testing::state(addr, "[retry]\nmax_retries = 3\n");
            let within = Duration::from_secs(10);
            let answer =
                testing::post(&state, "/v1/chat/completions", &[], &chat(false), within).await;
            assert_eq!(answer.status, 502, "{retry_after}: {}", answer.body);
            let events = testing::inferences(&sink, 1).await;
            assert_eq!(events.len(), 1, "{retry_after}: the request has its event");
            let outcomes: Vec<_> = events[0].attempts.iter().map(|a| a.outcome).collect();
            assert!(
                outcomes.iter().all(|o| *o == AttemptOutcome::ErrorStatus),
                "{retry_after}: {outcomes:?}"
            );
        }
    }
}
