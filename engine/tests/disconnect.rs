//! A client that goes away mid-generation (a gateway's attempt timeout, a user closing a
//! stream) costs its own sequence only. mistral.rs 0.8.1 turned the failed delivery of a
//! finished non-streamed answer into an error of the whole decode step (`completion step -
//! Model failed with error: channel closed`: every request batched with it got a model
//! error), then panicked reporting that error to the departed client, which killed the
//! engine thread (`Engine base is dead, rebooting`), losing every request in flight.
//! `vendor/PATCHES.md` §7 has the fix.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use serde_json::{json, Value};

/// `flywheel-engine serve` on SmolLM2, batching, with its stderr kept (and echoed) so
/// that a test can look for the errors it logs.
struct LoggedEngine {
    child: Child,
    _stdin: ChildStdin,
    addr: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl LoggedEngine {
    fn spawn() -> LoggedEngine {
        let dir = smollm2_dir();
        let mut child = Command::new(engine_bin())
            .arg("serve")
            .args(["--model", dir.to_str().unwrap(), "--name", "base"])
            // Batched explicitly whatever the default.
            .args(["--max-seqs", "8", "--exit-on-stdin-eof"])
            .env_remove("FLYWHEEL_ENGINE_ADMIN_TOKEN_SHA256")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning flywheel-engine");
        let stdin = child.stdin.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("{line}");
                log.lock().unwrap().push(line);
            }
        });
        let addr = listening_addr(&mut child);
        LoggedEngine {
            child,
            _stdin: stdin,
            addr,
            stderr,
        }
    }

    fn client(&self) -> Http {
        Http::new(&self.addr)
    }

    /// Panics if the engine logged a failed step, a panic or a reboot.
    fn assert_no_engine_errors(&self) {
        let log = self.stderr.lock().unwrap();
        let bad: Vec<&String> = log
            .iter()
            .filter(|l| {
                l.contains("Model failed")
                    || l.contains("panicked")
                    || l.contains("is dead, rebooting")
            })
            .collect();
        assert!(bad.is_empty(), "the engine logged errors: {bad:#?}");
    }
}

impl Drop for LoggedEngine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A text completion that counts on (SmolLM2 does not stop counting on its own), streamed:
/// the request that keeps running while another client goes away.
fn counting(max_tokens: u32) -> Value {
    json!({
        "model": "base",
        "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": true,
    })
}

/// A chat request with a long answer (SmolLM2 counts on as a numbered list).
fn long_chat(max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": "base",
        "messages": [{"role": "user", "content": "Count from 1 to 500, separated by commas."}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": stream,
    })
}

/// Starts the counting stream and waits for its first token: from then on it is decoded
/// in every step, batched with whatever else runs.
async fn start_counting(http: &Http, max_tokens: u32) -> SseReader {
    let (status, mut reader) = http
        .post_stream("/v1/completions", &counting(max_tokens))
        .await;
    assert_eq!(status, 200);
    let first = reader.next_event().await.expect("a first chunk");
    assert!(!first.contains("\"error\""), "{first}");
    reader
}

/// Reads the rest of the counting stream: it must end normally, at its length.
async fn assert_counted_to_the_end(reader: SseReader) {
    let events = reader.collect().await;
    let tail = &events[events.len().saturating_sub(3)..];
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "the stream ended with {tail:#?}"
    );
    let finish: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .inspect(|v| assert!(v.get("error").is_none(), "error event: {v}"))
        .filter_map(|v| v["choices"][0].get("finish_reason").cloned())
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [json!("length")], "the stream ended with {tail:#?}");
}

/// The engine still answers, and logged nothing wrong.
async fn assert_engine_healthy(engine: &LoggedEngine) {
    let (status, v) = engine
        .client()
        .post(
            "/v1/chat/completions",
            &json!({
                "model": "base",
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "temperature": 0,
                "max_tokens": 24,
            }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(content(&v).contains("Paris"), "{v}");
    engine.assert_no_engine_errors();
}

/// A non-streamed chat request whose client gives up (times out) while another request is
/// decoded in the same batch: the other one ends normally, the engine lives on. This is the
/// case that failed: the abandoned answer finished while the counting stream still ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streamed_client_timing_out_costs_only_its_own_request() {
    let engine = LoggedEngine::spawn();
    let http = engine.client();
    // 300 tokens: still counting when the 100-token answer below would have finished.
    let other = start_counting(&http, 300).await;
    let gave_up = tokio::time::timeout(
        Duration::from_secs(1),
        http.post("/v1/chat/completions", &long_chat(100, false)),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "a 100-token answer came within 1 s: {:?}",
        gave_up.map(|r| r.1)
    );
    assert_counted_to_the_end(other).await;
    assert_engine_healthy(&engine).await;
}

/// A streamed chat request whose client closes the stream mid-way while another request is
/// decoded in the same batch: the other one ends normally, the engine lives on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_client_leaving_mid_stream_costs_only_its_own_request() {
    let engine = LoggedEngine::spawn();
    let http = engine.client();
    let other = start_counting(&http, 200).await;
    let (status, mut leaving) = http
        .post_stream("/v1/chat/completions", &long_chat(300, true))
        .await;
    assert_eq!(status, 200);
    for _ in 0..5 {
        let e = leaving.next_event().await.expect("a chunk");
        let v: Value = serde_json::from_str(&e).unwrap_or_else(|_| panic!("{e}"));
        assert!(
            v["choices"][0]["finish_reason"].is_null(),
            "ended early: {v}"
        );
    }
    // The client goes away: the connection closes with the body unread.
    drop(leaving);
    assert_counted_to_the_end(other).await;
    assert_engine_healthy(&engine).await;
}
