//! The HTTP API: our own axum router in front of mistral.rs (mistral.rs's server router is
//! not mounted: it exposes unauthenticated admin routes).

use std::{convert::Infallible, sync::Arc};

use axum::{
    body::{Body, Bytes},
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use either::Either;
use flywheel_api::keys;
use indexmap::IndexMap;
use mistralrs::{
    core::{MistralRs, RequestMessage, TokenizationRequest},
    Constraint, MessageContent, NormalRequest, Request, SamplingParams, Tool, ToolChoice,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::{
    error::ApiError,
    openai::{self, ChatCompletionRequest, CompletionRequest, Prompt},
    registry::{Deployment, Lease, Registry},
};

/// Shared state of the server.
pub struct AppState {
    pub registry: Registry,
    /// sha256 of the admin bearer token; `None`: the admin routes do not exist (404).
    pub admin_sha256: Option<[u8; 32]>,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: usize,
}

pub fn router(state: Arc<AppState>) -> Router {
    let mut r = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions));
    if state.admin_sha256.is_some() {
        r = r
            .route("/admin/models", get(admin_list).post(admin_deploy))
            .route(
                "/admin/models/{name}",
                get(admin_get).delete(admin_undeploy),
            );
    }
    r.fallback(fallback).with_state(state)
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such route")
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

fn respond(r: Result<Response, ApiError>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------- public routes

async fn health(State(st): State<Arc<AppState>>) -> Json<Value> {
    let models: Vec<String> = st.registry.list().iter().map(|v| v.name.clone()).collect();
    Json(json!({"status": "ok", "models": models, "default": st.registry.default_name()}))
}

async fn list_models(State(st): State<Arc<AppState>>) -> Json<Value> {
    let data: Vec<Value> = st
        .registry
        .list()
        .iter()
        .map(|v| json!({"id": v.name, "object": "model", "created": v.created, "owned_by": "flywheel"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// How engine responses map onto the HTTP response.
#[derive(Clone, Copy)]
enum Mode {
    /// A chat request rendered by mistral.rs.
    Chat,
    /// An assistant-prefix continuation: sent as prompt tokens, answered as chat.
    ChatFromTokens { prompt_tokens: usize },
    /// `/v1/completions`.
    Completion { prompt_tokens: usize },
}

struct Job {
    lease: Lease,
    mode: Mode,
    stream: bool,
    include_usage: bool,
    id: String,
    /// Token-prompt modes: mistral.rs trims the leading whitespace of a completion (right
    /// for a fresh chat answer, wrong for a continuation or a text completion, where
    /// " Paris" must stay " Paris"). Logprobs are requested to learn the first tokens'
    /// text and restore it.
    restore_leading_ws: bool,
    /// Whether the client asked for logprobs (otherwise they are removed from the answer).
    client_logprobs: bool,
}

fn leading_ws(s: &str) -> &str {
    &s[..s.len() - s.trim_start().len()]
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

async fn tokenize(
    runner: &Arc<MistralRs>,
    model: &str,
    text: Either<Vec<IndexMap<String, MessageContent>>, String>,
    tools: Option<Vec<Tool>>,
    add_generation_prompt: bool,
    add_special_tokens: bool,
) -> Result<Vec<u32>, ApiError> {
    // On a task of its own: mistral.rs panics if the receiver of a tokenization request
    // goes away (a client disconnecting mid-request would otherwise drop it).
    let runner = runner.clone();
    let model = model.to_string();
    tokio::spawn(async move {
        tokenize_on(
            &runner,
            &model,
            text,
            tools,
            add_generation_prompt,
            add_special_tokens,
        )
        .await
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenization task failed: {e}")))?
}

async fn tokenize_on(
    runner: &MistralRs,
    model: &str,
    text: Either<Vec<IndexMap<String, MessageContent>>, String>,
    tools: Option<Vec<Tool>>,
    add_generation_prompt: bool,
    add_special_tokens: bool,
) -> Result<Vec<u32>, ApiError> {
    let (tx, mut rx) = mpsc::channel(1);
    let req = Request::Tokenize(TokenizationRequest {
        text,
        tools,
        add_generation_prompt,
        add_special_tokens,
        enable_thinking: None,
        reasoning_effort: None,
        response: tx,
    });
    let sender = runner
        .get_sender(Some(model))
        .map_err(|_| ApiError::model_not_found(model))?;
    sender
        .send(req)
        .await
        .map_err(|_| ApiError::unavailable(format!("the engine of `{model}` is not running")))?;
    match rx.recv().await {
        Some(Ok(ids)) => Ok(ids),
        Some(Err(e)) => Err(ApiError::bad_request(format!(
            "could not render/tokenize the prompt: {e:#}"
        ))),
        None => Err(ApiError::internal(
            "the engine dropped a tokenization request",
        )),
    }
}

#[allow(clippy::too_many_arguments)]
async fn submit(
    runner: &MistralRs,
    model: &str,
    messages: RequestMessage,
    sampling: SamplingParams,
    constraint: Constraint,
    tools: Option<Vec<Tool>>,
    tool_choice: Option<ToolChoice>,
    return_logprobs: bool,
    stream: bool,
) -> Result<mpsc::Receiver<mistralrs::Response>, ApiError> {
    let (tx, rx) = mpsc::channel(64);
    let req = Request::Normal(Box::new(NormalRequest {
        messages,
        sampling_params: sampling,
        response: tx,
        return_logprobs,
        is_streaming: stream,
        id: 0,
        constraint,
        suffix: None,
        tools,
        tool_choice,
        logits_processors: None,
        return_raw_logits: false,
        web_search_options: None,
        model_id: Some(model.to_string()),
        truncate_sequence: false,
    }));
    let sender = runner
        .get_sender(Some(model))
        .map_err(|_| ApiError::model_not_found(model))?;
    sender
        .send(req)
        .await
        .map_err(|_| ApiError::unavailable(format!("the engine of `{model}` is not running")))?;
    Ok(rx)
}

fn engine_error(resp: mistralrs::Response) -> Option<ApiError> {
    use mistralrs::Response as R;
    match resp {
        R::ValidationError(e) => Some(ApiError::bad_request(e.to_string())),
        R::InternalError(e) => Some(ApiError::internal(e.to_string())),
        R::ModelError(msg, _) | R::CompletionModelError(msg, _) => {
            Some(ApiError::internal(format!("model error: {msg}")))
        }
        _ => None,
    }
}

async fn chat_completions(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    respond(chat_inner(st, body).await)
}

async fn chat_inner(st: Arc<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: ChatCompletionRequest = parse_json(&body)?;
    let mut sampling = req.sampling.to_params(st.default_max_tokens, req.stream)?;
    let constraint = openai::constraint(&req.response_format)?;
    let mut msgs = openai::messages(&req.messages)?;
    let tools = req.tools.clone().filter(|t| !t.is_empty());
    let tool_choice = openai::tool_choice(&req.tool_choice, tools.as_deref().unwrap_or(&[]))?;
    let return_logprobs = req.logprobs.unwrap_or(false);
    if return_logprobs {
        sampling.top_n_logprobs = req.top_logprobs.unwrap_or(0).min(20);
    }
    let lease = st.registry.acquire(&req.model)?;
    let model = lease.version.name.clone();
    let runner = st.registry.runner().clone();

    let continuation = req.messages.last().is_some_and(|m| m.role == "assistant");
    let (message, mode) = if continuation {
        // Assistant-prefix continuation (the gateway resumes a cut stream this way):
        // mistral.rs always appends a generation prompt to chat messages, so render the
        // earlier turns with the model's own template plus its generation prompt, append
        // the prefix's tokens, and decode from there as a raw token prompt.
        let last = msgs.pop().expect("continuation has a last message");
        let prefix = match last.get("content") {
            Some(Either::Left(s)) => s.clone(),
            _ => String::new(),
        };
        let mut ids = tokenize(
            &runner,
            &model,
            Either::Left(msgs),
            tools.clone(),
            true,
            true,
        )
        .await?;
        if !prefix.is_empty() {
            ids.extend(tokenize(&runner, &model, Either::Right(prefix), None, false, false).await?);
        }
        let n = ids.len();
        (
            RequestMessage::CompletionTokens(ids),
            Mode::ChatFromTokens { prompt_tokens: n },
        )
    } else {
        (
            RequestMessage::Chat {
                messages: msgs,
                enable_thinking: None,
                reasoning_effort: None,
            },
            Mode::Chat,
        )
    };
    let rx = submit(
        &runner,
        &model,
        message,
        sampling,
        constraint,
        tools,
        tool_choice,
        return_logprobs || continuation,
        req.stream,
    )
    .await?;
    let job = Job {
        lease,
        mode,
        stream: req.stream,
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
        id: format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
        restore_leading_ws: continuation,
        client_logprobs: return_logprobs,
    };
    finish(job, rx).await
}

async fn completions(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    respond(completions_inner(st, body).await)
}

async fn completions_inner(st: Arc<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse_json(&body)?;
    let sampling = req.sampling.to_params(st.default_max_tokens, req.stream)?;
    let constraint = openai::constraint(&req.response_format)?;
    let prompt = match req.prompt {
        Prompt::Text(s) => Either::Left(s),
        Prompt::Texts(mut v) if v.len() == 1 => Either::Left(v.remove(0)),
        Prompt::Texts(_) => {
            return Err(ApiError::bad_param(
                "prompt",
                "batched prompts are not supported; send one prompt per request",
            ))
        }
        Prompt::Tokens(t) => Either::Right(t),
    };
    let lease = st.registry.acquire(&req.model)?;
    let model = lease.version.name.clone();
    let runner = st.registry.runner().clone();
    let (message, prompt_tokens) = match prompt {
        Either::Left(text) => {
            let ids = tokenize(
                &runner,
                &model,
                Either::Right(text.clone()),
                None,
                false,
                true,
            )
            .await?;
            let n = ids.len();
            if req.echo {
                (
                    RequestMessage::Completion {
                        text,
                        echo_prompt: true,
                        best_of: None,
                    },
                    n,
                )
            } else {
                (RequestMessage::CompletionTokens(ids), n)
            }
        }
        Either::Right(ids) => {
            let n = ids.len();
            (RequestMessage::CompletionTokens(ids), n)
        }
    };
    if prompt_tokens == 0 {
        return Err(ApiError::bad_param("prompt", "the prompt is empty"));
    }
    let rx = submit(
        &runner, &model, message, sampling, constraint, None, None, true, req.stream,
    )
    .await?;
    let job = Job {
        lease,
        mode: Mode::Completion { prompt_tokens },
        stream: req.stream,
        include_usage: req.stream_options.is_some_and(|o| o.include_usage),
        id: format!("cmpl-{}", uuid::Uuid::now_v7().simple()),
        restore_leading_ws: !req.echo,
        client_logprobs: false,
    };
    finish(job, rx).await
}

fn usage_json(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// Waits for the engine's first response (so that request errors get a proper status even
/// when streaming), then answers with JSON or SSE.
async fn finish(
    job: Job,
    mut rx: mpsc::Receiver<mistralrs::Response>,
) -> Result<Response, ApiError> {
    use mistralrs::Response as R;
    let model = job.lease.version.name.clone();
    if !job.stream {
        loop {
            let resp = rx.recv().await.ok_or_else(|| {
                ApiError::internal("the engine closed the request without an answer")
            })?;
            match resp {
                R::Done(done) => {
                    let mut v = serde_json::to_value(&done)
                        .map_err(|e| ApiError::internal(e.to_string()))?;
                    v["id"] = json!(job.id);
                    v["model"] = json!(model);
                    v["object"] = json!("chat.completion");
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
                    let mut v = serde_json::to_value(&done)
                        .map_err(|e| ApiError::internal(e.to_string()))?;
                    v["id"] = json!(job.id);
                    v["model"] = json!(model);
                    if let Mode::ChatFromTokens { .. } = job.mode {
                        let choices: Vec<Value> = done
                            .choices
                            .iter()
                            .map(|c| {
                                json!({
                                    "index": c.index,
                                    "message": {"role": "assistant", "content": c.text},
                                    "finish_reason": c.finish_reason,
                                    "logprobs": c.logprobs,
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
                other => {
                    if let Some(e) = engine_error(other) {
                        return Err(e);
                    }
                }
            }
        }
    }

    let first = rx
        .recv()
        .await
        .ok_or_else(|| ApiError::internal("the engine closed the request without an answer"))?;
    let first = match engine_error_or(first) {
        Ok(r) => r,
        Err(e) => return Err(e),
    };
    let (btx, mut brx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(stream_task(job, model, first, rx, btx));
    let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| {
        brx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>))
    }));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response())
}

fn engine_error_or(resp: mistralrs::Response) -> Result<mistralrs::Response, ApiError> {
    use mistralrs::Response as R;
    match resp {
        R::ValidationError(_)
        | R::InternalError(_)
        | R::ModelError(..)
        | R::CompletionModelError(..) => Err(engine_error(resp).expect("an error")),
        other => Ok(other),
    }
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
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
                    let _ = out.send(Bytes::from(e.body().to_sse_event())).await;
                    return;
                }
            },
        };
        let mut events: Vec<Value> = Vec::new();
        let mut finished = false;
        let mut usage: Option<Value> = None;
        match resp {
            R::Chunk(chunk) => {
                created = chunk.created;
                finished = !chunk.choices.is_empty()
                    && chunk.choices.iter().all(|c| c.finish_reason.is_some());
                let mut v = serde_json::to_value(&chunk).unwrap_or(Value::Null);
                v["id"] = json!(job.id);
                v["model"] = json!(model);
                if let Some(u) = v.as_object_mut().and_then(|o| o.remove("usage")) {
                    if !u.is_null() {
                        usage = Some(u);
                    }
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
                                    "logprobs": c.logprobs,
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
            other => {
                if let Some(e) = engine_error(other) {
                    let _ = out.send(Bytes::from(e.body().to_sse_event())).await;
                    return;
                }
            }
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

// ---------------------------------------------------------------- admin routes

fn check_admin(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &st.admin_sha256 else {
        return Err(ApiError::not_found("no such route"));
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(keys::bearer)
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    if !keys::token_matches(token, expected) {
        return Err(ApiError::unauthorized("invalid admin token"));
    }
    Ok(())
}

async fn admin_list(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    respond((|| -> Result<Response, ApiError> {
        check_admin(&st, &headers)?;
        let data: Vec<Value> = st.registry.list().iter().map(|v| v.info()).collect();
        Ok(
            Json(json!({"object": "list", "data": data, "default": st.registry.default_name()}))
                .into_response(),
        )
    })())
}

async fn admin_get(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    respond((|| -> Result<Response, ApiError> {
        check_admin(&st, &headers)?;
        let v = st
            .registry
            .list()
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| ApiError::model_not_found(&name))?;
        Ok(Json(v.info()).into_response())
    })())
}

#[derive(Deserialize)]
struct DeployBody {
    name: String,
    path: std::path::PathBuf,
}

async fn admin_deploy(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(
        async {
            check_admin(&st, &headers)?;
            let b: DeployBody = parse_json(&body)?;
            let v = st
                .registry
                .deploy(Deployment::checkpoint(b.name, b.path))
                .await?;
            Ok::<Response, ApiError>((StatusCode::CREATED, Json(v.info())).into_response())
        }
        .await,
    )
}

#[derive(Deserialize)]
struct UndeployQuery {
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

async fn admin_undeploy(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<UndeployQuery>,
) -> Response {
    respond(
        async {
            check_admin(&st, &headers)?;
            let version = st.registry.begin_undeploy(&name)?;
            let in_flight = version.inflight();
            if q.wait {
                st.registry.finish_undeploy(version).await?;
                Ok::<Response, ApiError>(
                    Json(json!({"id": name, "deleted": true, "drained": in_flight}))
                        .into_response(),
                )
            } else {
                let st2 = st.clone();
                tokio::spawn(async move {
                    if let Err(e) = st2.registry.finish_undeploy(version).await {
                        tracing::error!(error = %e, "unload failed");
                    }
                });
                Ok((
                    StatusCode::ACCEPTED,
                    Json(json!({"id": name, "deleted": false, "draining": in_flight})),
                )
                    .into_response())
            }
        }
        .await,
    )
}
