//! The attempt loop, once for unary and streaming requests: walk the
//! [`Plan`], stop at the deadline, take the provider's circuit-breaker
//! permit, run one attempt, record it, and back off before the next.
//!
//! How an answer is read (a whole JSON body, or a stream forwarded as it
//! arrives) is the [`Reader`]'s business; what each attempt tells the plan
//! is a [`Failed`].

// Untrusted bytes (client bodies, upstream answers): a malformed input
// must become an error, never a panic.
#![deny(clippy::indexing_slicing, clippy::string_slice, clippy::panic)]

use std::{
    future::Future,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

use super::{Call, Failure, Plan};
use crate::{
    error::GatewayError,
    metering::{tokens, AttemptEvent, AttemptOutcome, AttemptSummary, Ledger},
    router::Target,
    upstream::{is_retryable, retry_after, Permit, UpstreamError},
};

/// How one kind of request reads an upstream's answer.
pub trait Reader {
    /// What an acceptable answer gives the caller.
    type Answer;

    /// Sends one attempt to `attempt.target` and reads the answer: the
    /// answer when it is acceptable, else how the attempt failed.
    fn read(
        &mut self,
        call: &Call,
        attempt: &mut Attempt<'_>,
    ) -> impl Future<Output = Tried<Self::Answer>> + Send;

    /// Whether an upstream's rejection of the request can still go to the
    /// client as it came (not once part of a stream was sent).
    fn can_reject(&self) -> bool {
        true
    }
}

/// What an attempt sent and what came of it.
pub struct Tried<T> {
    /// The upstream body as sent, to estimate prompt tokens when the
    /// upstream reports no usage.
    pub sent: Value,
    /// Completion tokens of the answer read, for the same case.
    pub completion_estimate: u64,
    pub result: Result<T, Failed>,
}

/// How the attempts ended.
pub enum Ended<T> {
    /// The attempt at `index` in the ledger gave an acceptable answer.
    Answered { answer: T, index: usize },
    /// An upstream refused the request itself: the client's request is at
    /// fault and gets the upstream's answer as it came.
    Rejected { status: StatusCode, body: Bytes },
    /// No attempt succeeded: the plan ran out, the deadline passed, or an
    /// attempt failed in a way no later attempt can repair.
    GaveUp,
}

/// Runs attempts in the order of the plan until one gives an acceptable
/// answer; returns how it ended and every attempt made.
pub async fn run<R: Reader>(call: &Call, reader: &mut R) -> (Ended<R::Answer>, Ledger) {
    let retry = &call.route.retry;
    let targets = call.targets();
    let mut plan = Plan::new(retry, targets.len());
    let mut ledger = Ledger::default();
    while let Some(target) = targets.get(plan.target) {
        let remaining = call.deadline().saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let timeout = retry.attempt_timeout().min(remaining);
        let mut attempt = Attempt::begin(call, &plan, target, &ledger, timeout);
        let (failed, sent, completion_estimate) = match target.provider.breaker.acquire() {
            None => (
                Failed::next_target(AttemptOutcome::CircuitOpen, "circuit open"),
                None,
                0,
            ),
            Some(permit) => {
                let tried = reader.read(call, &mut attempt).await;
                match tried.result {
                    Ok(answer) => {
                        permit.success();
                        let index = ledger.attempts.len();
                        attempt.finish(
                            &mut ledger,
                            AttemptOutcome::Ok,
                            None,
                            &tried.sent,
                            tried.completion_estimate,
                        );
                        return (Ended::Answered { answer, index }, ledger);
                    }
                    Err(failed) => {
                        failed.settle(permit, attempt.status);
                        (failed, Some(tried.sent), tried.completion_estimate)
                    }
                }
            }
        };
        let Failed {
            outcome,
            reason,
            failure,
            rejected,
            fatal,
        } = failed;
        let sent = sent.as_ref().unwrap_or(&call.body);
        attempt.finish(&mut ledger, outcome, reason, sent, completion_estimate);
        if outcome == AttemptOutcome::MidStreamFailover {
            ledger.failovers += 1;
        }
        if fatal {
            break;
        }
        if let Some((status, body)) = rejected {
            if client_at_fault(status) && reader.can_reject() {
                return (Ended::Rejected { status, body }, ledger);
            }
        }
        if let Some(wait) = plan.next(failure) {
            let left = call.deadline().saturating_duration_since(Instant::now());
            backoff(&mut ledger, wait.min(left)).await;
        }
    }
    (Ended::GaveUp, ledger)
}

/// Upstream statuses that blame the request itself: it would fail on any
/// target, so it is not retried and the client gets the upstream's answer.
/// (401, 403 and the like blame the provider's setup: the next target may
/// do better.)
fn client_at_fault(status: StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 404 | 413 | 422)
}

/// Sleeps for a backoff, counted as waiting rather than overhead.
async fn backoff(ledger: &mut Ledger, wait: Duration) {
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
        ledger.waited += wait;
    }
}

/// One attempt on one target: where it goes, its time allowed, and the
/// facts filled in as it runs.
pub struct Attempt<'a> {
    pub target: &'a Target,
    /// Time allowed: the attempt timeout, within the request's deadline.
    pub timeout: Duration,
    /// Its index in the ledger once recorded.
    pub index: usize,
    target_index: usize,
    try_index: u32,
    pub started: Instant,
    started_ms: u64,
    pub ttft: Option<Duration>,
    pub status: Option<u16>,
    pub usage: Option<(u64, u64)>,
}

impl<'a> Attempt<'a> {
    fn begin(
        call: &Call,
        plan: &Plan<'_>,
        target: &'a Target,
        ledger: &Ledger,
        timeout: Duration,
    ) -> Self {
        Self {
            target,
            timeout,
            index: ledger.attempts.len(),
            target_index: plan.target,
            try_index: plan.tries,
            started: Instant::now(),
            started_ms: call.ts_ms + call.start.elapsed().as_millis() as u64,
            ttft: None,
            status: None,
            usage: None,
        }
    }

    /// Records the attempt. Without upstream usage, tokens are estimated
    /// from the body sent and the `completion_estimate` of the answer seen.
    fn finish(
        self,
        ledger: &mut Ledger,
        outcome: AttemptOutcome,
        reason: Option<String>,
        sent_body: &Value,
        completion_estimate: u64,
    ) {
        let elapsed = self.started.elapsed();
        ledger.waited += elapsed;
        let sent_anything = !matches!(
            outcome,
            AttemptOutcome::CircuitOpen | AttemptOutcome::ConnectError
        );
        let (prompt, completion, estimated) = match self.usage {
            Some((p, c)) => (p, c, false),
            None if sent_anything => (
                tokens::estimate_prompt(sent_body),
                completion_estimate,
                true,
            ),
            None => (0, 0, false),
        };
        let provider = &self.target.provider;
        ledger.attempts.push(AttemptEvent {
            provider: provider.name.clone(),
            model: self.target.model.clone(),
            target_index: self.target_index as u32,
            try_index: self.try_index,
            outcome,
            status: self.status,
            reason,
            started_ms: self.started_ms,
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            ttft_ms: self.ttft.map(|t| t.as_secs_f64() * 1000.0),
            prompt_tokens: prompt,
            completion_tokens: completion,
            tokens_estimated: estimated,
            cost_usd: provider.cost(prompt, completion, elapsed),
        });
    }
}

/// An attempt that got no usable answer: how it is recorded and what the
/// plan does next.
#[derive(Debug)]
pub struct Failed {
    outcome: AttemptOutcome,
    reason: Option<String>,
    failure: Failure,
    /// The upstream refused the request: its status and answer.
    rejected: Option<(StatusCode, Bytes)>,
    /// No later attempt can help.
    fatal: bool,
}

impl Failed {
    fn new(outcome: AttemptOutcome, reason: Option<String>, failure: Failure) -> Self {
        Self {
            outcome,
            reason,
            failure,
            rejected: None,
            fatal: false,
        }
    }

    /// Worth another try on the same target, after a backoff.
    pub fn retryable(outcome: AttemptOutcome, reason: impl Into<String>) -> Self {
        Self::new(
            outcome,
            Some(reason.into()),
            Failure::Retryable { retry_after: None },
        )
    }

    /// A retryable failure whose upstream asked to wait `retry_after` first.
    pub fn after(mut self, wait: Option<Duration>) -> Self {
        if let Failure::Retryable { retry_after } = &mut self.failure {
            *retry_after = wait;
        }
        self
    }

    /// Not worth retrying on this target; the next one may do better.
    pub fn next_target(outcome: AttemptOutcome, reason: impl Into<String>) -> Self {
        Self::new(outcome, Some(reason.into()), Failure::NextTarget)
    }

    /// The answer failed output validation (retried on its own budget).
    pub fn invalid(reason: impl Into<String>) -> Self {
        Self::new(
            AttemptOutcome::ValidationFailed,
            Some(reason.into()),
            Failure::Validation,
        )
    }

    /// The upstream refused the request with a 4xx `status` and `body`.
    /// When the status blames the request itself, the client gets this
    /// answer; otherwise the next target is tried.
    pub fn rejected(status: StatusCode, body: Bytes, reason: impl Into<String>) -> Self {
        Self {
            rejected: Some((status, body)),
            ..Self::next_target(AttemptOutcome::ErrorStatus, reason)
        }
    }

    /// The client went away: the attempt is recorded and nothing more is tried.
    pub fn client_closed() -> Self {
        Self::new(AttemptOutcome::ClientClosed, None, Failure::NextTarget).fatal()
    }

    /// No later attempt can help: record this one and give up.
    pub fn fatal(mut self) -> Self {
        self.fatal = true;
        self
    }

    /// Reports the attempt to the provider's circuit breaker. An answer that
    /// failed validation came from a healthy upstream; a rejected request, a
    /// 429 or a client that went away say nothing about its health.
    fn settle(&self, permit: Permit<'_>, status: Option<u16>) {
        match self.outcome {
            AttemptOutcome::ValidationFailed => permit.success(),
            AttemptOutcome::ClientClosed => drop(permit),
            _ if self.rejected.is_some() || status == Some(429) => drop(permit),
            _ => permit.failure(),
        }
    }
}

/// Sends one attempt and returns the response once it is a 200.
pub async fn send(
    call: &Call,
    attempt: &mut Attempt<'_>,
    body: &Value,
) -> Result<http::Response<Incoming>, Failed> {
    let bytes = Bytes::from(body.to_string());
    let provider = &attempt.target.provider;
    let affinity = call
        .episode_id
        .as_deref()
        .or(call.user.as_deref())
        .unwrap_or(&call.id);
    let timeout = attempt.timeout;
    let response = match provider
        .post(call.op.path(), bytes, timeout, affinity.as_bytes())
        .await
    {
        Ok(r) => r,
        Err(UpstreamError::Timeout) => {
            return Err(Failed::retryable(
                AttemptOutcome::Timeout,
                format!("no response within {} ms", timeout.as_millis()),
            ))
        }
        Err(UpstreamError::Connect(e)) => {
            return Err(Failed::retryable(AttemptOutcome::ConnectError, e))
        }
    };
    let status = response.status();
    attempt.status = Some(status.as_u16());
    if status == StatusCode::OK {
        return Ok(response);
    }
    let wait = retry_after(response.headers());
    // The error body explains the failure; read a bounded amount of it.
    let body = read_body(response.into_body(), 64 * 1024, Duration::from_secs(2))
        .await
        .unwrap_or_default();
    let reason = format!(
        "upstream status {}: {}",
        status.as_u16(),
        String::from_utf8_lossy(body.get(..body.len().min(300)).unwrap_or_default())
    );
    Err(if is_retryable(status) {
        Failed::retryable(AttemptOutcome::ErrorStatus, reason).after(wait)
    } else if status.is_client_error() {
        Failed::rejected(status, body, reason)
    } else {
        // 1xx/3xx and other oddities: try elsewhere.
        Failed::next_target(AttemptOutcome::BadResponse, reason)
    })
}

/// Reads a whole body within a size limit and a deadline; else how the
/// attempt failed: `bad_response` over the limit, `timeout` otherwise (a
/// cut or a deadline, as before the limit was told apart).
pub async fn read_body(
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, (AttemptOutcome, String)> {
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err((
            AttemptOutcome::BadResponse,
            format!("answer larger than {limit} bytes (upstream.max_response_bytes)"),
        )),
        Ok(Err(e)) => Err((
            AttemptOutcome::Timeout,
            format!("reading the answer failed: {e}"),
        )),
        Err(_) => Err((
            AttemptOutcome::Timeout,
            "timed out reading the answer".to_owned(),
        )),
    }
}

/// The error for a request whose every attempt failed: 504 when the last
/// failure was a deadline, 503 when no upstream could be reached, 502 when
/// upstreams answered badly.
pub fn exhausted_error(call: &Call, ledger: &Ledger) -> GatewayError {
    let attempts: Vec<AttemptSummary> = ledger.attempts.iter().map(AttemptSummary::from).collect();
    let last = ledger.attempts.last().map(|a| a.outcome);
    let unreachable = ledger.attempts.iter().all(|a| {
        matches!(
            a.outcome,
            AttemptOutcome::CircuitOpen | AttemptOutcome::ConnectError
        )
    });
    let (status, what) =
        if last == Some(AttemptOutcome::Timeout) || Instant::now() >= call.deadline() {
            (StatusCode::GATEWAY_TIMEOUT, "timed out")
        } else if unreachable {
            (StatusCode::SERVICE_UNAVAILABLE, "no upstream is reachable")
        } else {
            (StatusCode::BAD_GATEWAY, "every upstream attempt failed")
        };
    // The reasons (upstream body excerpts, connect errors with addresses)
    // go to the log and the event, not to the client (see
    // `GatewayError::Upstream`).
    for a in &attempts {
        tracing::warn!(
            request_id = %call.id,
            tenant = %call.tenant,
            provider = %a.provider,
            model = %a.model,
            outcome = ?a.outcome,
            status = ?a.status,
            reason = a.reason.as_deref().unwrap_or(""),
            "upstream attempt failed"
        );
    }
    GatewayError::Upstream {
        status,
        message: format!(
            "{what} for model `{}` after {} attempt(s) (status {}, request id {})",
            call.route.name,
            attempts.len(),
            status.as_u16(),
            call.id
        ),
        attempts,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::{
        dispatcher::{testing, Operation},
        upstream::CircuitState,
    };

    /// Backoffs of a millisecond, so that retries do not slow the tests.
    const FAST: &str = "[retry]\ninitial_backoff_ms = 1\nmax_backoff_ms = 1\n";
    /// A breaker that opens on one failure.
    const FRAGILE: &str = "[circuit_breaker]\nwindow = 1\nmin_requests = 1\nerror_ratio = 1.0\n";

    /// Answers attempts from a script: the upstream status and the result.
    struct Script {
        steps: VecDeque<(Option<u16>, Result<&'static str, Failed>)>,
        /// Model of the target of each attempt read.
        models: Vec<String>,
        can_reject: bool,
    }

    impl Script {
        fn new(
            steps: impl IntoIterator<Item = (Option<u16>, Result<&'static str, Failed>)>,
        ) -> Self {
            Self {
                steps: steps.into_iter().collect(),
                models: Vec::new(),
                can_reject: true,
            }
        }
    }

    impl Reader for Script {
        type Answer = &'static str;

        async fn read(&mut self, call: &Call, attempt: &mut Attempt<'_>) -> Tried<&'static str> {
            self.models.push(attempt.target.model.clone());
            let (status, result) = self.steps.pop_front().expect("a step for every attempt");
            attempt.status = status;
            attempt.usage = Some((10, 2));
            Tried {
                sent: call.body.clone(),
                completion_estimate: 0,
                result,
            }
        }

        fn can_reject(&self) -> bool {
            self.can_reject
        }
    }

    fn ok() -> (Option<u16>, Result<&'static str, Failed>) {
        (Some(200), Ok("answer"))
    }

    fn fail(status: Option<u16>, failed: Failed) -> (Option<u16>, Result<&'static str, Failed>) {
        (status, Err(failed))
    }

    fn rejected(status: u16) -> (Option<u16>, Result<&'static str, Failed>) {
        let code = StatusCode::from_u16(status).unwrap();
        fail(
            Some(status),
            Failed::rejected(code, Bytes::from_static(b"{\"error\":{}}"), "no"),
        )
    }

    fn outcomes(ledger: &Ledger) -> Vec<AttemptOutcome> {
        ledger.attempts.iter().map(|a| a.outcome).collect()
    }

    fn chat(extra: &str) -> Call {
        let body =
            serde_json::json!({"model": "r", "messages": [{"role": "user", "content": "hi"}]});
        testing::call_with(Operation::Chat, body, extra)
    }

    #[tokio::test]
    async fn the_first_acceptable_answer_ends_the_attempts() {
        let call = chat("");
        let mut script = Script::new([ok()]);
        let (ended, ledger) = run(&call, &mut script).await;
        assert!(matches!(
            ended,
            Ended::Answered {
                answer: "answer",
                index: 0
            }
        ));
        assert_eq!(outcomes(&ledger), [AttemptOutcome::Ok]);
        assert_eq!(ledger.attempts[0].prompt_tokens, 10);
        assert_eq!(script.models, ["ma"]);
    }

    #[tokio::test]
    async fn a_request_the_upstream_blames_on_the_client_goes_back_without_another_attempt() {
        let call = chat("");
        let mut script = Script::new([rejected(422)]);
        let (ended, ledger) = run(&call, &mut script).await;
        let Ended::Rejected { status, body } = ended else {
            panic!("a 422 is the client's fault");
        };
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body, Bytes::from_static(b"{\"error\":{}}"));
        assert_eq!(script.models, ["ma"]);
        assert_eq!(outcomes(&ledger), [AttemptOutcome::ErrorStatus]);
    }

    #[tokio::test]
    async fn a_rejection_that_blames_the_provider_falls_back_and_leaves_its_circuit_closed() {
        let call = chat(FRAGILE);
        let mut script = Script::new([rejected(401), ok()]);
        let (ended, ledger) = run(&call, &mut script).await;
        assert!(matches!(ended, Ended::Answered { index: 1, .. }));
        assert_eq!(script.models, ["ma", "mb"]);
        assert_eq!(ledger.attempts[1].target_index, 1);
        let a = &call.targets()[0].provider.breaker;
        assert_eq!(a.state(), CircuitState::Closed);
    }

    #[tokio::test]
    async fn a_rejection_once_the_client_has_part_of_a_stream_falls_back() {
        let call = chat("");
        let mut script = Script::new([rejected(400), ok()]);
        script.can_reject = false;
        let (ended, _) = run(&call, &mut script).await;
        assert!(matches!(ended, Ended::Answered { index: 1, .. }));
        assert_eq!(script.models, ["ma", "mb"]);
    }

    #[tokio::test]
    async fn retryable_failures_retry_the_target_then_fall_back() {
        let call = chat(&format!("{FAST}max_retries = 1\n"));
        let timeout = || fail(None, Failed::retryable(AttemptOutcome::Timeout, "slow"));
        let mut script = Script::new([timeout(), timeout(), ok()]);
        let (ended, ledger) = run(&call, &mut script).await;
        assert!(matches!(ended, Ended::Answered { index: 2, .. }));
        assert_eq!(script.models, ["ma", "ma", "mb"]);
        let tries: Vec<(u32, u32)> = ledger
            .attempts
            .iter()
            .map(|a| (a.target_index, a.try_index))
            .collect();
        assert_eq!(tries, [(0, 0), (0, 1), (1, 0)]);
        assert_eq!(ledger.attempts[0].reason.as_deref(), Some("slow"));
    }

    #[tokio::test]
    async fn an_open_circuit_skips_its_target_without_sending() {
        let call = chat(FRAGILE);
        let a = &call.targets()[0].provider.breaker;
        a.acquire().unwrap().failure();
        let mut script = Script::new([ok()]);
        let (ended, ledger) = run(&call, &mut script).await;
        assert!(matches!(ended, Ended::Answered { index: 1, .. }));
        assert_eq!(script.models, ["mb"]);
        assert_eq!(
            outcomes(&ledger),
            [AttemptOutcome::CircuitOpen, AttemptOutcome::Ok]
        );
        let skipped = &ledger.attempts[0];
        assert_eq!(
            (skipped.prompt_tokens, skipped.tokens_estimated),
            (0, false)
        );
    }

    #[tokio::test]
    async fn a_server_error_opens_the_circuit_but_a_429_or_a_bad_answer_format_does_not() {
        let call = chat(&format!("{FAST}{FRAGILE}"));
        let a = &call.targets()[0].provider.breaker;
        let throttled = fail(
            Some(429),
            Failed::retryable(AttemptOutcome::ErrorStatus, "slow down"),
        );
        let invalid = fail(Some(200), Failed::invalid("not JSON"));
        let mut script = Script::new([throttled, invalid, ok()]);
        let (ended, _) = run(&call, &mut script).await;
        assert!(matches!(ended, Ended::Answered { index: 2, .. }));
        assert_eq!(a.state(), CircuitState::Closed);

        let broken = fail(
            Some(500),
            Failed::retryable(AttemptOutcome::ErrorStatus, "oops"),
        );
        let mut script = Script::new([broken, ok()]);
        let (ended, ledger) = run(&call, &mut script).await;
        assert!(matches!(a.state(), CircuitState::Open { .. }));
        // The retry on `a` finds its circuit open and moves on to `b`.
        assert!(matches!(ended, Ended::Answered { index: 2, .. }));
        assert_eq!(
            outcomes(&ledger),
            [
                AttemptOutcome::ErrorStatus,
                AttemptOutcome::CircuitOpen,
                AttemptOutcome::Ok
            ]
        );
    }

    #[tokio::test]
    async fn a_fatal_failure_gives_up_with_targets_left() {
        let call = chat("");
        let cut = Failed::retryable(AttemptOutcome::MidStreamFailover, "cut").fatal();
        let mut script = Script::new([fail(Some(200), cut)]);
        let (ended, ledger) = run(&call, &mut script).await;
        assert!(matches!(ended, Ended::GaveUp));
        assert_eq!(script.models, ["ma"]);
        assert_eq!(ledger.failovers, 1);
    }

    #[tokio::test]
    async fn each_mid_stream_failover_is_counted() {
        let call = chat(FAST);
        let cut = || {
            fail(
                Some(200),
                Failed::retryable(AttemptOutcome::MidStreamFailover, "cut"),
            )
        };
        let mut script = Script::new([cut(), cut(), ok()]);
        let (ended, ledger) = run(&call, &mut script).await;
        assert!(matches!(ended, Ended::Answered { index: 2, .. }));
        assert_eq!(ledger.failovers, 2);
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_makes_no_attempt_and_times_out() {
        let call = chat("[retry]\ntotal_timeout_ms = 1\n");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut script = Script::new([]);
        let (ended, ledger) = run(&call, &mut script).await;
        assert!(matches!(ended, Ended::GaveUp));
        assert!(ledger.attempts.is_empty());
        let error = exhausted_error(&call, &ledger);
        assert_eq!(error.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    /// The error after every target failed in the given way.
    async fn exhausted_by(first: Failed, second: Failed) -> GatewayError {
        let call = chat("[retry]\nmax_retries = 0\n");
        let mut script = Script::new([fail(None, first), fail(None, second)]);
        let (ended, ledger) = run(&call, &mut script).await;
        assert!(matches!(ended, Ended::GaveUp));
        assert_eq!(ledger.attempts.len(), 2);
        exhausted_error(&call, &ledger)
    }

    #[tokio::test]
    async fn no_reachable_upstream_is_a_503_bad_answers_a_502_and_a_last_timeout_a_504() {
        let refused = || Failed::retryable(AttemptOutcome::ConnectError, "refused");
        let error = exhausted_by(refused(), refused()).await;
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        let GatewayError::Upstream {
            message, attempts, ..
        } = error
        else {
            panic!("an upstream error")
        };
        assert_eq!(attempts.len(), 2);
        assert!(message.contains("no upstream is reachable"), "{message}");

        let bad = || Failed::next_target(AttemptOutcome::BadResponse, "not JSON");
        let error = exhausted_by(refused(), bad()).await;
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);

        let slow = Failed::retryable(AttemptOutcome::Timeout, "slow");
        let error = exhausted_by(bad(), slow).await;
        assert_eq!(error.status(), StatusCode::GATEWAY_TIMEOUT);
    }
}
