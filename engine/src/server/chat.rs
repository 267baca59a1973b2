//! `POST /v1/chat/completions`, including assistant-prefix continuations.

use std::sync::Arc;

use axum::{body::Bytes, extract::State, response::Response};
use either::Either;
use mistralrs::core::RequestMessage;

use super::{
    parse_json,
    reply::{self, Job, Mode},
    runner::{self, Generation},
    AppState,
};
use crate::{
    error::ApiError,
    openai::{self, ChatCompletionRequest},
};

pub(super) async fn chat_completions(
    State(st): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
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
    // mistral.rs knows versions only: an alias was resolved by `acquire`.
    let model = lease.version.name.clone();
    let runner = st.registry.runner().clone();

    // Assistant-prefix continuation (the gateway resumes a cut stream this way):
    // mistral.rs always appends a generation prompt to chat messages, so render the
    // earlier turns with the model's own template plus its generation prompt, append
    // the prefix's tokens, and decode from there as a raw token prompt.
    let prefix = match req.messages.last() {
        Some(m) if m.role == "assistant" => msgs.pop().map(|last| match last.get("content") {
            Some(Either::Left(s)) => s.clone(),
            _ => String::new(),
        }),
        _ => None,
    };
    let continuation = prefix.is_some();
    let (messages, mode) = match prefix {
        Some(prefix) => {
            let mut ids = runner::chat_prompt(&runner, &model, msgs, tools.clone()).await?;
            if !prefix.is_empty() {
                ids.extend(runner::text_tokens(&runner, &model, prefix, false).await?);
            }
            let n = ids.len();
            (
                RequestMessage::CompletionTokens(ids),
                Mode::ChatFromTokens { prompt_tokens: n },
            )
        }
        None => (
            RequestMessage::Chat {
                messages: msgs,
                enable_thinking: None,
                reasoning_effort: None,
            },
            Mode::Chat,
        ),
    };
    let rx = runner::submit(
        &runner,
        &model,
        Generation {
            messages,
            sampling,
            constraint,
            tools,
            tool_choice,
            return_logprobs: return_logprobs || continuation,
            stream: req.stream,
        },
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
    reply::finish(job, rx).await
}
