//! A client's body is untrusted: the JSON a request carries goes through
//! the same parse and checks as in `/v1/chat/completions`,
//! `/v1/completions` and `/v1/embeddings` (the typed view, the id and
//! field checks, the response-format schema compiled for validation)
//! without a panic.
#![no_main]

use flywheel_gateway::{
    dispatcher::Validator,
    endpoints::body::{
        check_client_fields, view, ChatRequest, CompletionRequest, EmbeddingRequest,
    },
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = check_client_fields(&value);
    if let Ok(chat) = view::<ChatRequest>(&value) {
        let _ = chat.check();
        let _ = Validator::for_format(chat.response_format.as_ref());
    }
    if let Ok(completion) = view::<CompletionRequest>(&value) {
        let _ = completion.check();
    }
    let _ = view::<EmbeddingRequest>(&value);
});
