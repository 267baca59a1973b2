//! Requests to the mistral.rs runner (tokenization and generation), and how its errors map
//! onto [`ApiError`]s.

use std::sync::Arc;

use either::Either;
use indexmap::IndexMap;
use mistralrs::{
    core::{MistralRs, RequestMessage, TokenizationRequest},
    Constraint, MessageContent, NormalRequest, Request, SamplingParams, Tool, ToolChoice,
};
use tokio::sync::mpsc;

use crate::error::ApiError;

type Messages = Vec<IndexMap<String, MessageContent>>;

/// The tokens of chat messages rendered with the model's template, ending with its
/// generation prompt.
pub(super) async fn chat_prompt(
    runner: &Arc<MistralRs>,
    model: &str,
    messages: Messages,
    tools: Option<Vec<Tool>>,
) -> Result<Vec<u32>, ApiError> {
    tokenize(runner, model, Either::Left(messages), tools, true, true).await
}

/// The tokens of a plain text (with the tokenizer's special tokens, e.g. BOS, if
/// `add_special_tokens`).
pub(super) async fn text_tokens(
    runner: &Arc<MistralRs>,
    model: &str,
    text: String,
    add_special_tokens: bool,
) -> Result<Vec<u32>, ApiError> {
    tokenize(
        runner,
        model,
        Either::Right(text),
        None,
        false,
        add_special_tokens,
    )
    .await
}

async fn tokenize(
    runner: &Arc<MistralRs>,
    model: &str,
    text: Either<Messages, String>,
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
    text: Either<Messages, String>,
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
    send(runner, model, req).await?;
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

/// What to generate, and how.
pub(super) struct Generation {
    pub messages: RequestMessage,
    pub sampling: SamplingParams,
    pub constraint: Constraint,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<ToolChoice>,
    pub return_logprobs: bool,
    pub stream: bool,
}

/// Queues a generation on `model`'s engine; its responses arrive on the receiver.
pub(super) async fn submit(
    runner: &MistralRs,
    model: &str,
    g: Generation,
) -> Result<mpsc::Receiver<mistralrs::Response>, ApiError> {
    let (tx, rx) = mpsc::channel(64);
    let req = Request::Normal(Box::new(NormalRequest {
        messages: g.messages,
        sampling_params: g.sampling,
        response: tx,
        return_logprobs: g.return_logprobs,
        is_streaming: g.stream,
        id: 0,
        constraint: g.constraint,
        suffix: None,
        tools: g.tools,
        tool_choice: g.tool_choice,
        logits_processors: None,
        return_raw_logits: false,
        web_search_options: None,
        model_id: Some(model.to_string()),
        truncate_sequence: false,
    }));
    send(runner, model, req).await?;
    Ok(rx)
}

async fn send(runner: &MistralRs, model: &str, req: Request) -> Result<(), ApiError> {
    let sender = runner
        .get_sender(Some(model))
        .map_err(|_| ApiError::model_not_found(model))?;
    sender
        .send(req)
        .await
        .map_err(|_| ApiError::unavailable(format!("the engine of `{model}` is not running")))
}

/// An engine response that reports an error becomes that error; any other passes through.
pub(super) fn check(resp: mistralrs::Response) -> Result<mistralrs::Response, ApiError> {
    use mistralrs::Response as R;
    match resp {
        R::ValidationError(e) => Err(ApiError::bad_request(e.to_string())),
        R::InternalError(e) => Err(ApiError::internal(e.to_string())),
        R::ModelError(msg, _) | R::CompletionModelError(msg, _) => {
            Err(ApiError::internal(format!("model error: {msg}")))
        }
        other => Ok(other),
    }
}
