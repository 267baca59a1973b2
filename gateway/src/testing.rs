//! In-process fixtures for tests of the whole request path: a fake upstream
//! on loopback (any axum router), the real [`crate::app`] in front of it,
//! and a sink that keeps its records. Faster and more precise than the
//! end-to-end tests (which need release binaries), and they can feed the
//! gateway bytes the mock never sends.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::body::Body;
use bytes::Bytes;
use flywheel_feedback::Record;
use futures_util::{future::BoxFuture, Stream};
use http::{Request, StatusCode};
use parking_lot::Mutex;
use serde_json::Value;
use tower::ServiceExt;

use crate::{
    config::Config,
    metering::{EventSink, InferenceEvent},
    AppState,
};

/// Keeps every record, for assertions; refuses them all while told to (a
/// failing log).
#[derive(Default)]
pub struct RecordingSink(Mutex<Vec<Record>>, AtomicBool);

impl RecordingSink {
    pub fn refuse(&self, refusing: bool) {
        self.1.store(refusing, Ordering::Relaxed);
    }

    pub fn inferences(&self) -> Vec<InferenceEvent> {
        self.0
            .lock()
            .iter()
            .filter_map(|r| match r {
                Record::Inference(e) => Some(e.clone()),
                Record::Feedback(_) => None,
            })
            .collect()
    }
}

impl EventSink for RecordingSink {
    fn record(&self, record: Record) -> BoxFuture<'_, Result<(), crate::metering::NotRecorded>> {
        if self.1.load(Ordering::Relaxed) {
            let refused = crate::metering::NotRecorded("told to refuse".into());
            return Box::pin(async { Err(refused) });
        }
        self.0.lock().push(record);
        Box::pin(async { Ok(()) })
    }
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Serves `router` on a loopback port; returns its address.
pub async fn upstream(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// An upstream whose chat endpoint answers with `respond`.
pub async fn chat_upstream<F, Fut>(respond: F) -> SocketAddr
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = axum::response::Response> + Send + 'static,
{
    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let respond = respond.clone();
            async move { respond().await }
        }),
    );
    upstream(router).await
}

/// A 200 `text/event-stream` response whose body is `chunks`.
pub fn sse_response(
    chunks: impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static,
) -> axum::response::Response {
    let mut response = axum::response::Response::new(Body::from_stream(chunks));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// One SSE chunk of a chat stream with `content` in choice 0.
pub fn sse_chunk(content: &str) -> Bytes {
    let chunk = serde_json::json!({
        "id": "u", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}],
    });
    Bytes::from(format!("data: {chunk}\n\n"))
}

/// Route `r` (one variant, one target: provider `a`, model `m`) on the
/// upstream at `addr`, auth off, then `extra` TOML (`[retry]`, `[server]`,
/// ...). Returns the state and the sink its events go to.
pub fn state(addr: SocketAddr, extra: &str) -> (AppState, Arc<RecordingSink>) {
    let text = format!(
        r#"
        {extra}
        [providers.a]
        base_url = "http://{addr}/v1"
        [[routes]]
        name = "r"
        [[routes.variants]]
        name = "v"
        targets = [{{ provider = "a", model = "m" }}]
        "#
    );
    let mut text = text;
    if !extra.contains("[auth]") && !extra.contains("[[auth.keys]]") {
        text = format!("[auth]\nenabled = false\n{text}");
    }
    state_from(&text)
}

/// The state of a whole config text, with a recording sink.
pub fn state_from(text: &str) -> (AppState, Arc<RecordingSink>) {
    let config = Config::parse(text).unwrap();
    let mut state = AppState::new(config).unwrap();
    let sink = Arc::new(RecordingSink::default());
    Arc::get_mut(&mut state.0).unwrap().sink = sink.clone();
    (state, sink)
}

/// What the client got.
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// POSTs `body` (with `headers`) through the whole app and reads the whole
/// answer, within `within` (a stream that never ends fails the test).
pub async fn post(
    state: &AppState,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
    within: Duration,
) -> Answer {
    let mut request = Request::post(path).header("content-type", "application/json");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Body::from(body.to_string())).unwrap();
    let app = crate::app(state.clone());
    let read = async {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Answer {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or_else(|_| panic!("no complete answer within {within:?}"))
}

/// A one-message chat body for route `r`.
pub fn chat(stream: bool) -> Value {
    serde_json::json!({
        "model": "r", "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
    })
}

/// Waits until the sink holds `n` inference events (they are recorded just
/// before the client's answer ends, so this is short).
pub async fn inferences(sink: &RecordingSink, n: usize) -> Vec<InferenceEvent> {
    for _ in 0..200 {
        let found = sink.inferences();
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sink.inferences()
}

/// A non-streamed chat answer with this usage.
pub fn chat_answer(prompt_tokens: u64, completion_tokens: u64) -> axum::response::Response {
    use axum::response::IntoResponse;
    axum::Json(serde_json::json!({
        "id": "u", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }))
    .into_response()
}
