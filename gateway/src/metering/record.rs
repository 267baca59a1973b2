//! The end of a request: what the dispatcher reports (the call, its attempts
//! and how it ended) becomes one [`InferenceEvent`] in the sink, with what
//! follows from it: the key's token count, the recent-inference index and
//! the implicit feedback signals.

use std::{sync::Arc, time::Duration};

use flywheel_api::headers::Totals;
use flywheel_feedback::Record;
use http::StatusCode;

use super::{AttemptEvent, AttemptOutcome, InferenceEvent, Validation};
use crate::{
    dispatcher::{Call, Operation},
    signals::{Observed, Owner},
    AppState,
};

/// Attempts made so far and the time spent waiting on upstreams.
#[derive(Default)]
pub struct Ledger {
    pub attempts: Vec<AttemptEvent>,
    /// Time spent waiting on upstreams or sleeping in backoff: everything
    /// that is not gateway overhead.
    pub waited: Duration,
    pub failovers: u32,
    pub failover_diverged: bool,
}

/// How a request ended.
pub struct Outcome {
    pub status: StatusCode,
    /// Index in the ledger of the attempt whose answer the client got.
    pub answered_by: Option<usize>,
    /// (prompt, completion) tokens of the answer the client got.
    pub tokens: (u64, u64),
    pub ttft: Option<Duration>,
    /// The answer as the client got it (JSON text), for capture.
    pub response: Option<String>,
}

impl Outcome {
    pub fn failed(status: StatusCode, ttft: Option<Duration>) -> Self {
        Self {
            status,
            answered_by: None,
            tokens: (0, 0),
            ttft,
            response: None,
        }
    }
}

/// What recording a finished request gave its caller.
#[must_use = "an answer whose event was withheld must not reach the client"]
pub struct Recorded {
    /// What the attempts cost, for the `x-flywheel-*` response headers.
    pub totals: Totals,
    /// The sink refused the event and `capture.when_log_refuses = "refuse"`:
    /// the caller answers 503 (or ends the stream with an error and no
    /// `[DONE]`) instead of the answer, which the log could not keep.
    pub withheld: bool,
}

/// Records the event of a finished request. Callers record it before the
/// client gets the end of the answer, so that an answered request always
/// has its event in the log; under the refuse policy they withhold the
/// answer when the log refused it ([`Recorded::withheld`]).
pub async fn record_request(
    state: &AppState,
    call: &Call,
    ledger: Ledger,
    outcome: Outcome,
) -> Recorded {
    // A shadow call has no token key: the tenant is not billed for it.
    let used = outcome.tokens.0.saturating_add(outcome.tokens.1);
    match (&call.reservation, &call.token_key) {
        (Some(reservation), _) => state.limiter.settle(reservation, used),
        (None, Some(key)) => state.limiter.record_tokens(key, used),
        (None, None) => {}
    }
    let status = outcome.status;
    let event = inference_event(call, ledger, outcome, state.capture_bodies());
    let owner = Owner {
        tenant: Arc::from(event.tenant.as_str()),
        route: Arc::from(event.route.as_str()),
        variant: Arc::from(event.variant.as_str()),
        episode_id: event.episode_id.as_deref().map(Arc::from),
    };
    state.recent.insert(&event.id, owner);
    // A mirror repeats its served request: not a user's regeneration.
    let implied = if status == StatusCode::OK && call.op == Operation::Chat && !call.shadow {
        state.signals.observe(&observed(call, &event))
    } else {
        Vec::new()
    };
    let totals = totals(&event);
    // A refused event is logged and counted by the sink; the policy says
    // whether the answer is served anyway (module docs of `sink`).
    // Implicit signals are dropped with it.
    let kept = state.sink.record(Record::Inference(event)).await.is_ok();
    if kept {
        for feedback in implied {
            let _ = state.sink.record(Record::Feedback(feedback)).await;
        }
    }
    Recorded {
        totals,
        withheld: !kept && status == StatusCode::OK && state.refuses_unrecorded(),
    }
}

/// The event of a request; bodies only when the gateway captures them.
fn inference_event(
    call: &Call,
    ledger: Ledger,
    outcome: Outcome,
    capture_bodies: bool,
) -> InferenceEvent {
    let Outcome {
        status,
        answered_by,
        tokens,
        ttft,
        response,
    } = outcome;
    let latency = call.start.elapsed();
    let answered = answered_by.and_then(|i| ledger.attempts.get(i));
    let validation = match (&call.validator, answered) {
        (None, _) => Validation::NotRequested,
        (Some(_), Some(_)) => Validation::Passed,
        (Some(_), None) => Validation::Failed,
    };
    InferenceEvent {
        id: call.id.clone(),
        ts_ms: call.ts_ms,
        tenant: call.tenant.clone(),
        endpoint: call.op.name().to_owned(),
        route: call.route.name.clone(),
        variant: call.variant_name().to_owned(),
        provider: answered.map(|a| a.provider.clone()).unwrap_or_default(),
        model: answered.map(|a| a.model.clone()).unwrap_or_default(),
        episode_id: call.episode_id.clone(),
        user: call.user.clone(),
        stream: call.stream,
        status: status.as_u16(),
        prompt_tokens: tokens.0,
        completion_tokens: tokens.1,
        tokens_estimated: answered.is_some_and(|a| a.tokens_estimated),
        ttft_ms: ttft.map(|t| t.as_secs_f64() * 1000.0),
        latency_ms: latency.as_secs_f64() * 1000.0,
        overhead_ms: latency.saturating_sub(ledger.waited).as_secs_f64() * 1000.0,
        retries: (ledger.attempts.len() as u32).saturating_sub(1),
        fallback_depth: answered.map(|a| a.target_index).unwrap_or(0),
        failovers: ledger.failovers,
        failover_diverged: ledger.failover_diverged,
        validation,
        cost_usd: ledger.attempts.iter().map(|a| a.cost_usd).sum(),
        attempts: ledger.attempts,
        request_body: capture_bodies.then(|| call.body.to_string()),
        response_body: response.filter(|_| capture_bodies),
        shadow: call.shadow,
        pair_id: call.pair_id.clone(),
    }
}

/// What the implicit signals look at in an answered chat request.
fn observed<'a>(call: &'a Call, event: &'a InferenceEvent) -> Observed<'a> {
    let first_answer = event.attempts.iter().find(|a| {
        matches!(
            a.outcome,
            AttemptOutcome::Ok | AttemptOutcome::ValidationFailed
        )
    });
    Observed {
        inference_id: &event.id,
        ts_ms: event.ts_ms,
        tenant: &event.tenant,
        route: &event.route,
        variant: &event.variant,
        who: call.episode_id.as_deref().or(call.user.as_deref()),
        messages: call.body.get("messages"),
        validated_first_try: call
            .validator
            .as_ref()
            .and(first_answer)
            .map(|a| a.outcome == AttemptOutcome::Ok),
    }
}

/// What every attempt of a request cost, answered or not.
fn totals(event: &InferenceEvent) -> Totals {
    Totals {
        attempts: event.attempts.len() as u32,
        fallback_depth: event.fallback_depth,
        // Upstream counts: saturate rather than overflow.
        prompt_tokens: event
            .attempts
            .iter()
            .fold(0u64, |sum, a| sum.saturating_add(a.prompt_tokens)),
        completion_tokens: event
            .attempts
            .iter()
            .fold(0u64, |sum, a| sum.saturating_add(a.completion_tokens)),
        cost_usd: event.cost_usd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatcher::testing;

    fn attempt(provider: &str, target_index: u32, outcome: AttemptOutcome) -> AttemptEvent {
        AttemptEvent {
            provider: provider.into(),
            model: format!("m{provider}"),
            target_index,
            try_index: 0,
            outcome,
            status: Some(200),
            reason: None,
            started_ms: 0,
            latency_ms: 1.0,
            ttft_ms: None,
            prompt_tokens: 10,
            completion_tokens: 3,
            tokens_estimated: outcome == AttemptOutcome::Ok,
            cost_usd: 0.5,
        }
    }

    fn answered_after_a_failure() -> (Ledger, Outcome) {
        let ledger = Ledger {
            attempts: vec![
                attempt("a", 0, AttemptOutcome::Timeout),
                attempt("b", 1, AttemptOutcome::Ok),
            ],
            waited: Duration::from_secs(3600),
            failovers: 0,
            failover_diverged: false,
        };
        let outcome = Outcome {
            status: StatusCode::OK,
            answered_by: Some(1),
            tokens: (10, 3),
            ttft: None,
            response: Some("{}".into()),
        };
        (ledger, outcome)
    }

    #[test]
    fn the_event_names_the_attempt_that_answered_and_sums_every_attempt() {
        let call = testing::chat();
        let (ledger, outcome) = answered_after_a_failure();
        let event = inference_event(&call, ledger, outcome, false);
        assert_eq!((event.provider.as_str(), event.model.as_str()), ("b", "mb"));
        assert_eq!((event.retries, event.fallback_depth), (1, 1));
        assert!(event.tokens_estimated);
        assert_eq!(event.cost_usd, 1.0);
        assert_eq!(event.validation, Validation::NotRequested);
        assert_eq!(event.overhead_ms, 0.0, "the wait exceeds the latency");
        assert_eq!((event.route.as_str(), event.variant.as_str()), ("r", "v"));
        assert_eq!(event.request_body, None);
        assert_eq!(event.response_body, None);
        let totals = totals(&event);
        assert_eq!((totals.attempts, totals.fallback_depth), (2, 1));
        assert_eq!((totals.prompt_tokens, totals.completion_tokens), (20, 6));
    }

    #[test]
    fn the_event_carries_the_bodies_only_when_they_are_captured() {
        let call = testing::chat();
        let (ledger, outcome) = answered_after_a_failure();
        let event = inference_event(&call, ledger, outcome, true);
        assert_eq!(event.request_body, Some(call.body.to_string()));
        assert_eq!(event.response_body.as_deref(), Some("{}"));
    }

    #[test]
    fn a_mirror_is_paired_marked_shadow_and_bills_no_key() {
        let mut call = testing::chat();
        call.token_key = Some(Arc::from("key"));
        let mirror = call.mirror(0, None);
        assert!(mirror.shadow && !call.shadow);
        assert_eq!(mirror.token_key, None, "no token limit counts a mirror");
        assert_ne!(mirror.id, call.id);
        assert_eq!(mirror.pair_id.as_deref(), Some(call.id.as_str()));
        assert_eq!(call.pair_id.as_deref(), Some(call.id.as_str()));
        assert_eq!((mirror.ts_ms, mirror.start), (call.ts_ms, call.start));
        let (ledger, outcome) = answered_after_a_failure();
        let event = inference_event(&mirror, ledger, outcome, false);
        assert!(event.shadow);
        assert_eq!(event.pair_id, call.pair_id);
        let (ledger, outcome) = answered_after_a_failure();
        let served = inference_event(&call, ledger, outcome, false);
        assert!(!served.shadow);
        assert_eq!(served.pair_id.as_deref(), Some(served.id.as_str()));
    }

    #[test]
    fn a_failed_request_has_no_provider_and_fails_a_requested_validation() {
        let mut call = testing::chat();
        call.validator = Some(crate::dispatcher::Validator::JsonObject);
        let (ledger, _) = answered_after_a_failure();
        let outcome = Outcome::failed(StatusCode::BAD_GATEWAY, None);
        let event = inference_event(&call, ledger, outcome, false);
        assert_eq!(event.status, 502);
        assert_eq!((event.provider.as_str(), event.fallback_depth), ("", 0));
        assert_eq!(event.validation, Validation::Failed);
        assert!(!event.tokens_estimated);
    }

    /// A log that refuses the event of an answered request, under each
    /// policy, through the whole app (unary and streamed).
    mod withheld {
        use std::time::Duration;

        use futures_util::stream;

        use crate::testing::{self, chat, chat_answer, sse_chunk, sse_response};

        const CHAT: &str = "/v1/chat/completions";

        /// The state of an upstream answering both ways, with capture on
        /// (its log in a scratch directory, ClickHouse unreachable) and the
        /// given `when_log_refuses`; its sink refuses every record.
        async fn refusing(policy: &str) -> (crate::AppState, std::path::PathBuf) {
            let addr = testing::upstream(axum::Router::new().route(
                CHAT,
                axum::routing::post(|body: axum::Json<serde_json::Value>| async move {
                    if body["stream"] == true {
                        let frames = [
                            Ok(sse_chunk("hi")),
                            Ok(bytes::Bytes::from_static(b"data: [DONE]\n\n")),
                        ];
                        sse_response(stream::iter(frames))
                    } else {
                        chat_answer(3, 2)
                    }
                }),
            ))
            .await;
            let dir =
                std::env::temp_dir().join(format!("flywheel-withheld-{}", uuid::Uuid::now_v7()));
            let config = format!(
                "[capture]\nclickhouse_url = \"http://127.0.0.1:9\"\nwal_dir = \"{}\"\nwhen_log_refuses = \"{policy}\"\n",
                dir.display()
            );
            let (state, sink) = testing::state(addr, &config);
            sink.refuse(true);
            (state, dir)
        }

        #[tokio::test]
        async fn under_refuse_the_client_never_holds_an_answer_the_log_lost() {
            let (state, dir) = refusing("refuse").await;
            let unary =
                testing::post(&state, CHAT, &[], &chat(false), Duration::from_secs(10)).await;
            assert_eq!(unary.status, 503, "{}", unary.body);
            assert_eq!(
                unary.json()["error"]["code"],
                "not_recorded",
                "{}",
                unary.body
            );
            let streamed =
                testing::post(&state, CHAT, &[], &chat(true), Duration::from_secs(10)).await;
            assert_eq!(streamed.status, 200, "the stream had started");
            assert!(
                streamed.body.contains(r#""content":"hi""#),
                "{}",
                streamed.body
            );
            assert!(!streamed.body.contains("[DONE]"), "{}", streamed.body);
            let last = streamed
                .body
                .trim_end()
                .rsplit("data: ")
                .next()
                .unwrap_or_default();
            assert!(last.contains(r#""code":"not_recorded""#), "{last}");
            let _ = std::fs::remove_dir_all(dir);
        }

        #[tokio::test]
        async fn under_serve_the_answer_goes_out_and_only_the_event_is_lost() {
            let (state, dir) = refusing("serve").await;
            let unary =
                testing::post(&state, CHAT, &[], &chat(false), Duration::from_secs(10)).await;
            assert_eq!(unary.status, 200, "{}", unary.body);
            let streamed =
                testing::post(&state, CHAT, &[], &chat(true), Duration::from_secs(10)).await;
            assert!(
                streamed.body.ends_with("data: [DONE]\n\n"),
                "{}",
                streamed.body
            );
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
