//! Non-streaming requests: the first acceptable answer wins.

use std::time::Instant;

use flywheel_api::headers::Totals;
use http::StatusCode;
use serde_json::Value;

use super::{backoff, exhausted_error, send, usage_of, AttemptRecord, Call, Failed, Failure, Plan};
use crate::{
    error::GatewayError,
    metering::{self, tokens, AttemptOutcome, Ledger, Outcome},
    AppState,
};

/// Largest upstream answer accepted.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// A successful answer and who gave it.
pub struct Answer {
    pub body: Value,
    pub provider: String,
    pub model: String,
}

/// The answer or the error, and in both cases what the attempts cost.
pub async fn run(state: &AppState, call: &Call) -> (Result<Answer, GatewayError>, Totals) {
    let retry = &call.route.retry;
    let targets = call.targets();
    let mut plan = Plan::new(retry, targets.len());
    let mut ledger = Ledger::default();
    while !plan.exhausted() {
        let target = &targets[plan.target];
        let remaining = call.deadline().saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let mut record = AttemptRecord::begin(call, &plan, target);
        let Some(permit) = target.provider.breaker.acquire() else {
            record.finish(
                &mut ledger,
                AttemptOutcome::CircuitOpen,
                Some("circuit open".into()),
                &call.body,
                0,
            );
            plan.next(Failure::NextTarget);
            continue;
        };
        let body = call.upstream_body(target, None);
        let timeout = retry.attempt_timeout().min(remaining);
        let result = match send(call, &mut record, &body, timeout).await {
            Ok(response) => {
                // The attempt timeout covers reading the answer too.
                let left = timeout.saturating_sub(record.started.elapsed());
                match super::read_body(response.into_body(), MAX_ANSWER_BYTES, left).await {
                    Ok(bytes) => Ok(bytes),
                    Err(reason) => Err(Failed {
                        outcome: AttemptOutcome::Timeout,
                        reason,
                        failure: Failure::Retryable { retry_after: None },
                        rejected: None,
                    }),
                }
            }
            Err(failed) => Err(failed),
        };
        let failed = match result.map(|bytes| serde_json::from_slice::<Value>(&bytes)) {
            Ok(Ok(answer)) if answer.get("choices").is_some() || answer.get("data").is_some() => {
                permit.success();
                record.usage = usage_of(&answer);
                match validate(call, &answer) {
                    Ok(()) => {
                        let completion_estimate = estimate_completion(&answer);
                        record.finish(
                            &mut ledger,
                            AttemptOutcome::Ok,
                            None,
                            &body,
                            completion_estimate,
                        );
                        let a = ledger.attempts.last().expect("just recorded");
                        let tokens = (a.prompt_tokens, a.completion_tokens);
                        let answered = ledger.attempts.len() - 1;
                        let response = state.capture_bodies().then(|| answer.to_string());
                        let answer = Answer {
                            body: answer,
                            provider: a.provider.clone(),
                            model: a.model.clone(),
                        };
                        let outcome = Outcome {
                            status: StatusCode::OK,
                            answered_by: Some(answered),
                            tokens,
                            ttft: None,
                            response,
                        };
                        let totals = metering::record_request(state, call, ledger, outcome);
                        return (Ok(answer), totals);
                    }
                    Err(reason) => Failed {
                        outcome: AttemptOutcome::ValidationFailed,
                        reason,
                        failure: Failure::Validation,
                        rejected: None,
                    },
                }
            }
            Ok(Ok(_)) | Ok(Err(_)) => {
                permit.failure();
                Failed {
                    outcome: AttemptOutcome::BadResponse,
                    reason: "upstream answered 200 with a body that is not an OpenAI answer".into(),
                    failure: Failure::Retryable { retry_after: None },
                    rejected: None,
                }
            }
            Err(failed) => failed.settle(permit, &record),
        };
        record.finish(&mut ledger, failed.outcome, Some(failed.reason), &body, 0);
        if let Some((status, body)) = failed.rejected {
            if matches!(status.as_u16(), 400 | 404 | 413 | 422) {
                let totals =
                    metering::record_request(state, call, ledger, Outcome::failed(status, None));
                return (Err(GatewayError::UpstreamRejected { status, body }), totals);
            }
        }
        if let Some(wait) = plan.next(failed.failure) {
            backoff(
                &mut ledger,
                wait.min(call.deadline().saturating_duration_since(Instant::now())),
            )
            .await;
        }
    }
    let error = exhausted_error(call, &ledger);
    let totals =
        metering::record_request(state, call, ledger, Outcome::failed(error.status(), None));
    (Err(error), totals)
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
