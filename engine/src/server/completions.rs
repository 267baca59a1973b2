//! `POST /v1/completions` (text completions of one prompt: a text or its token ids).

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
    openai::{self, CompletionRequest, Prompt},
};

pub(super) async fn completions(
    State(st): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
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
    // mistral.rs knows versions only: an alias was resolved by `acquire`.
    let model = lease.version.name.clone();
    let runner = st.registry.runner().clone();
    let (messages, prompt_tokens) = match prompt {
        Either::Left(text) => {
            let ids = runner::text_tokens(&runner, &model, text.clone(), true).await?;
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
    let rx = runner::submit(
        &runner,
        &model,
        Generation {
            messages,
            sampling,
            constraint,
            tools: None,
            tool_choice: None,
            return_logprobs: true,
            stream: req.stream,
        },
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
    reply::finish(job, rx).await
}
