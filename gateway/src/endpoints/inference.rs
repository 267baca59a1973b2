//! `POST /v1/chat/completions`, `/v1/completions` and `/v1/embeddings`.
//!
//! # Shadow mirrors
//!
//! While a route has a mirror (the canary's shadow step, polled from
//! Redis: [`crate::router::Mirror`]), a sampled fraction of its chat and
//! completion requests served by another variant is also sent to the
//! mirror's variant, in a task of its own: same body, same streaming (the
//! mirror streams when the original does, read at the upstream's pace, so
//! TTFTs compare), same clock. Its event is marked `shadow` and both events
//! carry the served request's id as `pair_id`; its answer goes nowhere, and
//! it counts against no token limit (the tenant is not billed for it).
//!
//! # Pinned variants
//!
//! A request with `x-flywheel-variant: NAME` is served by that variant of
//! its route, whatever the weights and stickiness say (a weight-0 candidate
//! included), and is never mirrored: the tuner's offline eval sends its
//! held-out prompts this way so that they are metered and captured like
//! live traffic. Only keys with `pin_variants = true` (or anyone with auth
//! off) may pin: pinning bypasses experiments and can choose the expensive
//! fallback chain.

// Untrusted bytes (client bodies, upstream answers): a malformed input
// must become an error, never a panic.
#![deny(clippy::indexing_slicing, clippy::string_slice, clippy::panic)]

use axum::{
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
    Extension, Json,
};
use bytes::Bytes;
use flywheel_api::headers::{self as fw, Totals};
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::{wrappers::ReceiverStream, StreamExt};

use super::body::{
    check_client_fields, check_id, read_json, view, ChatRequest, CompletionRequest,
    EmbeddingRequest,
};
use crate::{
    dispatcher::{run_stream, run_unary, Call, Operation, Validator},
    error::GatewayError,
    metering::tokens,
    middleware::{RequestStart, Tenant},
    AppState,
};

const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(fw::REQUEST_ID);

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Extension(start): Extension<RequestStart>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let (value, request): (_, ChatRequest) = parse(&state, body).await?;
    request.check()?;
    let mut call = new_call(
        &state,
        Operation::Chat,
        (tenant, start),
        &request.model,
        value,
        &headers,
    )?;
    call.set_streaming(request.stream, request.stream_options.as_ref());
    call.can_continue = request.n.unwrap_or(1) == 1;
    call.validator = Validator::for_format(request.response_format.as_ref())?;
    let mirror = mirror_of(&state, &mut call, || {
        Validator::for_format(request.response_format.as_ref())
            .ok()
            .flatten()
    });
    let completion = request.max_completion_tokens.or(request.max_tokens);
    reserve_tokens(&state, &mut call, completion, request.n).await?;
    respond(state, call, mirror).await
}

pub async fn completions(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Extension(start): Extension<RequestStart>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let (value, request): (_, CompletionRequest) = parse(&state, body).await?;
    request.check()?;
    let mut call = new_call(
        &state,
        Operation::Completion,
        (tenant, start),
        &request.model,
        value,
        &headers,
    )?;
    call.set_streaming(request.stream, request.stream_options.as_ref());
    call.can_continue = request.n.unwrap_or(1) == 1 && request.prompt.is_string();
    let mirror = mirror_of(&state, &mut call, || None);
    reserve_tokens(&state, &mut call, request.max_tokens, request.n).await?;
    respond(state, call, mirror).await
}

pub async fn embeddings(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    Extension(start): Extension<RequestStart>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let (value, request): (_, EmbeddingRequest) = parse(&state, body).await?;
    if !(request.input.is_string() || request.input.as_array().is_some_and(|a| !a.is_empty())) {
        return Err(GatewayError::invalid(
            "`input` must be a string or a non-empty array",
            Some("input"),
        ));
    }
    let mut call = new_call(
        &state,
        Operation::Embedding,
        (tenant, start),
        &request.model,
        value,
        &headers,
    )?;
    reserve_tokens(&state, &mut call, None, None).await?;
    respond(state, call, None).await
}

/// The body as JSON (forwarded as it came) and its checked typed view.
async fn parse<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: Body,
) -> Result<(Value, T), GatewayError> {
    let value = read_json(
        body,
        state.config.server.max_body_bytes,
        state.body_timeout(),
    )
    .await?;
    let request = view(&value)?;
    check_client_fields(&value)?;
    Ok((value, request))
}

fn new_call(
    state: &AppState,
    op: Operation,
    (tenant, start): (Tenant, RequestStart),
    model: &str,
    body: Value,
    headers: &HeaderMap,
) -> Result<Call, GatewayError> {
    // Before any upstream cost or token reservation: under "refuse", no
    // answer goes out that the log could not keep.
    if state.refuses_unrecorded() && !state.sink.accepting() {
        return Err(GatewayError::NotRecorded("request"));
    }
    let route = state
        .router
        .get(model)
        .ok_or_else(|| GatewayError::ModelNotFound(model.to_owned()))?;
    let episode = headers
        .get(fw::EPISODE_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(episode) = &episode {
        check_id(episode, fw::EPISODE_ID)?;
    }
    let pinned = pinned_variant(headers, &tenant)?;
    Ok(Call::new(
        op, tenant, route, body, episode, pinned, start.0,
    )?)
}

/// Reserves the request's tokens against its key's `tokens_per_minute`
/// before any attempt (429 when they do not fit): the prompt's estimate
/// plus `max_tokens` × `n`. Without `max_tokens` only the prompt is
/// reserved, and the completion counts when the request ends. Called last
/// before [`respond`], whose request always ends in
/// [`crate::metering::record_request`], which settles the reservation.
async fn reserve_tokens(
    state: &AppState,
    call: &mut Call,
    max_tokens: Option<u32>,
    n: Option<u32>,
) -> Result<(), GatewayError> {
    let Some(key) = &call.token_key else {
        return Ok(());
    };
    let completion = u64::from(max_tokens.unwrap_or(0)) * u64::from(n.unwrap_or(1).max(1));
    let tokens = tokens::estimate_prompt(&call.body).saturating_add(completion);
    match state
        .limiter
        .reserve(key, call.tokens_per_minute, tokens)
        .await
    {
        Ok(reservation) => {
            call.reservation = Some(reservation);
            Ok(())
        }
        Err(retry_after_s) => {
            state
                .metrics
                .rate_limited
                .with_label_values(&[&call.tenant])
                .inc();
            Err(GatewayError::RateLimited { retry_after_s })
        }
    }
}

/// The variant the request pins with `x-flywheel-variant`, if any; 403 when
/// its key may not pin. Checked before the name, so that a caller without
/// the permission learns nothing about a route's variants.
fn pinned_variant<'h>(
    headers: &'h HeaderMap,
    tenant: &Tenant,
) -> Result<Option<&'h str>, GatewayError> {
    let Some(value) = headers.get(fw::VARIANT) else {
        return Ok(None);
    };
    if !tenant.pin_variants {
        return Err(GatewayError::PinForbidden);
    }
    let name = value.to_str().map_err(|_| {
        GatewayError::invalid(
            format!("the `{}` header must be a variant name", fw::VARIANT),
            Some(fw::VARIANT),
        )
    })?;
    Ok(Some(name))
}

/// The shadow twin of `call`, when its route has a mirror on another
/// variant and this request is in the sampled fraction (module docs). A
/// pinned call has none: it is an eval's request, not live traffic to
/// compare the candidate on, and its caller chose exactly what runs.
fn mirror_of(
    state: &AppState,
    call: &mut Call,
    validator: impl FnOnce() -> Option<Validator>,
) -> Option<Call> {
    if call.pinned {
        return None;
    }
    let mirror = state.router.mirror(&call.route.name)?;
    let index = call
        .route
        .variants
        .iter()
        .position(|v| v.name == mirror.variant)?;
    if index == call.variant || rand::random::<f64>() >= mirror.fraction {
        return None;
    }
    Some(call.mirror(index, validator()))
}

/// Runs a shadow call to its end in its own task; its answer is read and
/// dropped.
fn spawn_mirror(state: AppState, call: Call) {
    tokio::spawn(async move {
        if call.stream {
            let (started_tx, started_rx) = oneshot::channel();
            let (tx, mut rx) = mpsc::channel::<Bytes>(16);
            // Read like a client, so the mirror streams at the upstream's pace.
            let reader = tokio::spawn(async move {
                let _ = tokio::join!(started_rx, async { while rx.recv().await.is_some() {} });
            });
            run_stream(state, call, started_tx, tx).await;
            let _ = reader.await;
        } else {
            let _ = run_unary(&state, &call).await;
        }
    });
}

/// Tells the client which request id, variant and upstream served it.
fn flywheel_headers(headers: &mut HeaderMap, id: &str, variant: &str, provider: &str, model: &str) {
    for (name, value) in [
        (REQUEST_ID_HEADER, id),
        (HeaderName::from_static(fw::VARIANT), variant),
        (HeaderName::from_static(fw::PROVIDER), provider),
        (HeaderName::from_static(fw::MODEL), model),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
}

/// What the request cost over all its attempts (unary answers and errors;
/// a stream's headers leave before its attempts are done).
fn totals_headers(headers: &mut HeaderMap, totals: &Totals) {
    for (name, value) in totals.to_headers() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
}

fn error_response(error: GatewayError, id: &str) -> Response {
    let mut response = error.into_response();
    if let Ok(v) = HeaderValue::from_str(id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

async fn respond(
    state: AppState,
    call: Call,
    mirror: Option<Call>,
) -> Result<Response, GatewayError> {
    if let Some(mirror) = mirror {
        spawn_mirror(state.clone(), mirror);
    }
    if call.stream {
        return respond_stream(state, call).await;
    }
    // The dispatch runs in its own task so that a client that goes away does
    // not cancel it half-way: the attempts and the event are always complete.
    let task = tokio::spawn(async move {
        let result = run_unary(&state, &call).await;
        (call, result)
    });
    let (call, (result, totals)) = task.await.map_err(task_failed)?;
    let mut answer = match result {
        Ok(answer) => answer,
        Err(e) => {
            let mut response = error_response(e, &call.id);
            totals_headers(response.headers_mut(), &totals);
            return Ok(response);
        }
    };
    if let Some(obj) = answer.body.as_object_mut() {
        if call.op != Operation::Embedding {
            obj.insert("id".into(), Value::String(call.id.clone()));
        }
        obj.insert("model".into(), Value::String(call.route.name.clone()));
    }
    let mut response = Json(answer.body).into_response();
    flywheel_headers(
        response.headers_mut(),
        &call.id,
        call.variant_name(),
        &answer.provider,
        &answer.model,
    );
    totals_headers(response.headers_mut(), &totals);
    Ok(response)
}

/// A dispatch task that panicked or was cancelled: the gateway's fault, not
/// the client's.
fn task_failed(e: tokio::task::JoinError) -> GatewayError {
    let what = if e.is_panic() {
        "panicked"
    } else {
        "was cancelled"
    };
    GatewayError::Internal(format!("the dispatch task {what}"))
}

async fn respond_stream(state: AppState, call: Call) -> Result<Response, GatewayError> {
    let (started_tx, started_rx) = oneshot::channel();
    // A small buffer: backpressure from a slow client reaches the upstream.
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let id = call.id.clone();
    let variant = call.variant_name().to_owned();
    tokio::spawn(run_stream(state, call, started_tx, tx));
    let started = match started_rx.await {
        Ok(Ok(started)) => started,
        Ok(Err(e)) => return Ok(error_response(e, &id)),
        Err(_) => return Err(GatewayError::Internal("the stream task ended early".into())),
    };
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>));
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    flywheel_headers(h, &id, &variant, &started.provider, &started.model);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http_body_util::BodyExt;

    use super::*;

    fn tenant(pin_variants: bool) -> Tenant {
        Tenant {
            name: "t".into(),
            key_id: Arc::from("k"),
            tokens_per_minute: 0,
            pin_variants,
        }
    }

    #[test]
    fn a_request_without_the_header_pins_nothing_whoever_sends_it() {
        let headers = HeaderMap::new();
        assert_eq!(pinned_variant(&headers, &tenant(false)).unwrap(), None);
        assert_eq!(pinned_variant(&headers, &tenant(true)).unwrap(), None);
    }

    #[test]
    fn only_a_tenant_allowed_to_pin_may_send_the_header() {
        let mut headers = HeaderMap::new();
        headers.insert(fw::VARIANT, HeaderValue::from_static("cand"));
        assert_eq!(
            pinned_variant(&headers, &tenant(true)).unwrap(),
            Some("cand")
        );
        let e = pinned_variant(&headers, &tenant(false)).unwrap_err();
        assert!(matches!(e, GatewayError::PinForbidden), "{e}");
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn a_pinned_request_is_never_mirrored() {
        let config = crate::config::Config::parse(crate::router::TWO_VARIANTS).unwrap();
        let state = AppState::new(config).unwrap();
        let every_request = crate::router::Mirror {
            variant: "cand".into(),
            fraction: 1.0,
        };
        state.router.set_mirror("r", Some(every_request)).unwrap();
        let route = state.router.get("r").unwrap();
        let call = |pin| {
            let body = serde_json::json!({"model": "r", "messages": []});
            let start = std::time::Instant::now();
            Call::new(
                Operation::Chat,
                tenant(true),
                route.clone(),
                body,
                None,
                pin,
                start,
            )
            .unwrap()
        };
        let mut live = call(None);
        assert!(mirror_of(&state, &mut live, || None).is_some());
        let mut pinned = call(Some("base"));
        assert_eq!(pinned.variant_name(), "base");
        assert!(mirror_of(&state, &mut pinned, || None).is_none());
        assert_eq!(pinned.pair_id, None, "an unmirrored call has no pair");
    }

    mod limits {
        use std::time::Duration;

        use serde_json::json;

        use crate::testing::{self, chat};

        const CHAT: &str = "/v1/chat/completions";
        const WITHIN: Duration = Duration::from_secs(10);

        #[tokio::test]
        async fn client_supplied_ids_and_fields_over_their_limit_are_a_400_naming_them() {
            let addr = testing::chat_upstream(|| async { testing::chat_answer(3, 1) }).await;
            let (state, sink) = testing::state(addr, "");
            let long = "e".repeat(10_000);
            let header = testing::post(
                &state,
                CHAT,
                &[("x-flywheel-episode-id", &long)],
                &chat(false),
                WITHIN,
            )
            .await;
            let mut user = chat(false);
            user["user"] = json!(long);
            let mut metadata = chat(false);
            metadata["metadata"] = json!({"k": long});
            let mut many = chat(false);
            many["metadata"] = (0..100).map(|i| (format!("k{i}"), json!("v"))).collect();
            for (answer, param) in [
                (header, "x-flywheel-episode-id"),
                (
                    testing::post(&state, CHAT, &[], &user, WITHIN).await,
                    "user",
                ),
                (
                    testing::post(&state, CHAT, &[], &metadata, WITHIN).await,
                    "metadata.k",
                ),
                (
                    testing::post(&state, CHAT, &[], &many, WITHIN).await,
                    "metadata",
                ),
            ] {
                assert_eq!(answer.status, 400, "{param}: {}", answer.body);
                assert_eq!(answer.json()["error"]["param"], param, "{}", answer.body);
            }
            assert!(sink.inferences().is_empty(), "refused before any attempt");
            // At the limit is fine.
            let ok = "e".repeat(256);
            let answer = testing::post(
                &state,
                CHAT,
                &[("x-flywheel-episode-id", &ok)],
                &chat(false),
                WITHIN,
            )
            .await;
            assert_eq!(answer.status, 200, "{}", answer.body);
        }

        #[tokio::test]
        async fn the_token_limit_reserves_max_tokens_times_n_up_front() {
            // Each answer takes 300 ms and uses 60 tokens.
            let addr = testing::chat_upstream(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                testing::chat_answer(10, 50)
            })
            .await;
            let key = format!(
                "[[auth.keys]]\ntenant = \"t\"\nsha256 = \"{}\"\ntokens_per_minute = 100\n",
                flywheel_api::keys::sha256_hex("k")
            );
            let (state, _) = testing::state(addr, &key);
            let auth = [("authorization", "Bearer k")];
            let mut body = chat(false);
            body["max_tokens"] = json!(40);
            body["n"] = json!(2);
            // Two at once, each reserving 80 of the 100: one must wait.
            let (a, b) = tokio::join!(
                testing::post(&state, CHAT, &auth, &body, WITHIN),
                testing::post(&state, CHAT, &auth, &body, WITHIN),
            );
            let mut statuses = [a.status.as_u16(), b.status.as_u16()];
            statuses.sort_unstable();
            assert_eq!(statuses, [200, 429], "{} / {}", a.body, b.body);
            // The answer used 60, not 80: the rest of the reservation is
            // released, and 30 more fit.
            body["max_tokens"] = json!(30);
            body["n"] = json!(1);
            let answer = testing::post(&state, CHAT, &auth, &body, WITHIN).await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            let answer = testing::post(&state, CHAT, &auth, &body, WITHIN).await;
            assert_eq!(answer.status, 429, "{}", answer.body);
        }
    }

    #[test]
    fn a_pinned_name_that_is_not_text_is_a_400() {
        let mut headers = HeaderMap::new();
        headers.insert(fw::VARIANT, HeaderValue::from_bytes(b"\xff").unwrap());
        let e = pinned_variant(&headers, &tenant(true)).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_panicked_dispatch_task_is_a_500_internal_error() {
        let join = tokio::spawn(async { panic!("boom") }).await;
        let Err(e) = join else {
            panic!("the task panicked, so joining it fails");
        };
        let response = task_failed(e).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["type"], "internal_error");
        assert_eq!(
            body["error"]["message"],
            "internal error: the dispatch task panicked"
        );
    }

    #[tokio::test]
    async fn a_cancelled_dispatch_task_is_a_500_internal_error() {
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        let Err(e) = task.await else {
            panic!("an aborted task does not finish");
        };
        let error = task_failed(e);
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(error.to_string().contains("cancelled"), "{error}");
    }
}
