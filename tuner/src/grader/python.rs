//! OpenAI's `python` grader: `{"type": "python", "name", "source":
//! "def grade(sample, item) -> float: ...", "image_tag"?, "pass_threshold"?}`.
//!
//! The source runs under [`GraderOptions::python`] (`python3`, stdlib only;
//! `image_tag` is accepted for compatibility and ignored) in a worker
//! process speaking JSON lines with the runner script `python_runner.py`.
//! `sample` is `{"output_text", "output_json", "output_tools"}` and `item`
//! the item's fields, as dicts. `grade` must return a finite int or float;
//! anything else, an exception (reported by its traceback's last line) or a
//! limit hit is a grading error for that sample, never a 0.
//!
//! Limits and sandbox, per sample unless said otherwise:
//! - wall clock: [`GraderOptions::python_timeout`]. Each sample runs in a
//!   child forked from the worker, SIGKILLed at the deadline ("timed out
//!   after 10s"); the next sample gets a fresh child. The tuner also kills
//!   the whole worker (process group) if it stays silent 5 s past that, and
//!   starts a new one for the next sample.
//! - CPU: RLIMIT_CPU of the timeout rounded up + 1 s in each child.
//! - memory: RLIMIT_AS (soft and hard) of
//!   [`GraderOptions::python_memory_bytes`] for the worker and its children,
//!   set before the source is compiled: a big allocation is a `MemoryError`.
//! - network, two layers: (1) always, a `sys.addaudithook` hook, installed
//!   before the source is compiled, that raises `PermissionError` on
//!   `socket.connect/bind/getaddrinfo/sendto/sendmsg/gethostbyname/...`,
//!   on process creation (`subprocess.Popen`, `os.system`, `os.exec*`,
//!   `os.posix_spawn`; `_posixsubprocess` can't be imported) and on
//!   `ctypes` (`_ctypes` can't be imported, `dlopen`/`dlsym` raise), so
//!   the hook can't be bypassed with another process or a raw libc call;
//!   (2) where the kernel allows it, the worker starts in a fresh, empty
//!   network namespace (`unshare(CLONE_NEWNET)`, or with
//!   `CLONE_NEWUSER | CLONE_NEWNET` for an unprivileged user when user
//!   namespaces are enabled), so no socket could reach anything anyway.
//!   Which layers apply is probed once per grader:
//!   [`super::Grader::python_sandbox`].
//! - the worker gets an empty environment (no API keys) but `PATH`, runs
//!   with `python -I` (no `PYTHON*` variables, no user site-packages), its
//!   stdin is /dev/null and its stdout goes to stderr, so `print()` can't
//!   break the protocol; its stderr is kept (the tail) for error messages.
//!
//! Samples don't share state (each runs in its own fork); module-level code
//! runs once per worker. A worker serves a whole [`super::Grader::grade_batch`];
//! single `grade` calls reuse idle workers.

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        mpsc::{self, Receiver, RecvTimeoutError},
        Arc, Mutex,
    },
    time::Duration,
};

use serde_json::{json, Value};

use super::{config::Cfg, secs, GraderError, GraderOptions, Scored};

pub(crate) const FIELDS: &[&str] = &["source", "image_tag"];

const RUNNER: &str = include_str!("python_runner.py");
/// How long past the per-sample limit the tuner waits before it kills the
/// worker itself (the runner's own deadline should always fire first).
const GRACE: Duration = Duration::from_secs(5);
const MAX_IDLE_WORKERS: usize = 8;
const STDERR_TAIL: usize = 2000;

/// How a worker is kept off the network besides the audit hook.
#[derive(Debug, Clone, Copy, PartialEq)]
enum NetIsolation {
    /// `unshare(CLONE_NEWNET)` (needs CAP_SYS_ADMIN, e.g. root).
    NetNs,
    /// `unshare(CLONE_NEWUSER | CLONE_NEWNET)` (unprivileged user namespaces).
    UserNetNs,
    /// The audit hook alone.
    None,
}

impl NetIsolation {
    fn describe(self) -> &'static str {
        match self {
            NetIsolation::NetNs => "network namespace + audit hook",
            NetIsolation::UserNetNs => "user+network namespace + audit hook",
            NetIsolation::None => "audit hook only",
        }
    }
}

pub(crate) struct PythonGrader {
    source: String,
    options: GraderOptions,
    isolation: NetIsolation,
    idle: Mutex<Vec<Worker>>,
}

enum SpawnError {
    /// The interpreter could not be started (or the namespace not created).
    Start(std::io::Error),
    /// The source failed to load: syntax error, exception, no `grade`.
    Source(String),
    /// The worker died or hung while loading.
    Worker(String),
}

impl SpawnError {
    fn message(&self, python: &str) -> String {
        match self {
            SpawnError::Start(e) => format!("cannot start `{python}`: {e}"),
            SpawnError::Source(m) => format!("the source failed to load: {m}"),
            SpawnError::Worker(m) => m.clone(),
        }
    }
}

impl PythonGrader {
    pub fn from_cfg(cfg: &Cfg, options: &GraderOptions) -> Result<Self, GraderError> {
        let source = cfg.req_str("source")?.to_owned();
        cfg.opt_str("image_tag")?;
        if options.python_timeout.is_zero() {
            return Err(cfg.err("source", "the python timeout must be positive"));
        }
        let mut grader = Self {
            source,
            options: options.clone(),
            isolation: NetIsolation::None,
            idle: Mutex::new(Vec::new()),
        };
        let python = options.python.display().to_string();
        // Load the source once now, so that a syntax error or a missing
        // `grade` is a config error, and find the strongest isolation the
        // kernel grants: only a failed start falls through to the next.
        let modes: &[NetIsolation] =
            if options.python_network_namespace && cfg!(target_os = "linux") {
                &[
                    NetIsolation::NetNs,
                    NetIsolation::UserNetNs,
                    NetIsolation::None,
                ]
            } else {
                &[NetIsolation::None]
            };
        let mut last = None;
        for &mode in modes {
            grader.isolation = mode;
            match grader.spawn() {
                Ok(worker) => {
                    grader
                        .idle
                        .get_mut()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(worker);
                    return Ok(grader);
                }
                Err(SpawnError::Start(e))
                    if mode != NetIsolation::None && e.kind() != std::io::ErrorKind::NotFound =>
                {
                    last = Some(SpawnError::Start(e));
                }
                Err(e) => return Err(cfg.err("source", e.message(&python))),
            }
        }
        Err(cfg.err(
            "source",
            last.map(|e| e.message(&python)).unwrap_or_default(),
        ))
    }

    pub fn sandbox_description(&self) -> &'static str {
        self.isolation.describe()
    }

    pub fn score(&self, ctx: &Value) -> Scored {
        self.score_batch(std::slice::from_ref(ctx))
            .pop()
            .unwrap_or_else(|| Err("no result".into()))
    }

    /// Grades the batch on one worker, replacing it when it dies or hangs.
    pub fn score_batch(&self, ctxs: &[Value]) -> Vec<Scored> {
        let python = self.options.python.display().to_string();
        let mut worker = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut results = Vec::with_capacity(ctxs.len());
        for ctx in ctxs {
            let request = json!({"sample": ctx.get("sample"), "item": ctx.get("item")});
            // A pooled worker may have died while idle (OOM killer, say):
            // that one is replaced and the sample retried, once.
            let mut attempts = if worker.is_some() { 2 } else { 1 };
            let result = loop {
                attempts -= 1;
                let mut w = match worker.take() {
                    Some(w) => w,
                    None => match self.spawn() {
                        Ok(w) => w,
                        Err(e) => {
                            break Err(format!(
                                "starting the python worker: {}",
                                e.message(&python)
                            ))
                        }
                    },
                };
                match w.request(&request, self.options.python_timeout) {
                    Some((result, alive)) => {
                        if alive {
                            worker = Some(w);
                        }
                        break result;
                    }
                    None if attempts > 0 => continue,
                    None => break Err(w.died("before grading")),
                }
            };
            results.push(result);
        }
        if let Some(w) = worker {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE_WORKERS {
                idle.push(w);
            }
        }
        results
    }

    fn spawn(&self) -> Result<Worker, SpawnError> {
        let mut cmd = Command::new(&self.options.python);
        cmd.arg("-I").arg("-c").arg(RUNNER);
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        sandbox(&mut cmd, self.isolation);
        let mut child = cmd.spawn().map_err(SpawnError::Start)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // Cannot happen (all three are piped above); an error, not a panic.
            let _ = child.kill();
            let _ = child.wait();
            return Err(SpawnError::Worker("the worker's stdio is not piped".into()));
        };
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr_tail.clone();
        std::thread::spawn(move || {
            let mut stderr = stderr;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                t.extend(&buf[..n]);
                let excess = t.len().saturating_sub(STDERR_TAIL);
                t.drain(..excess);
            }
        });
        let mut worker = Worker {
            child,
            stdin,
            lines,
            stderr_tail,
        };
        let setup = json!({
            "source": self.source,
            "timeout": self.options.python_timeout.as_secs_f64(),
            "memory_bytes": self.options.python_memory_bytes,
        });
        if worker.send(&setup).is_err() {
            return Err(SpawnError::Worker(worker.died("while starting")));
        }
        match worker
            .lines
            .recv_timeout(self.options.python_timeout + GRACE)
        {
            Ok(line) => match serde_json::from_str::<Value>(&line) {
                Ok(v) if v.get("ready") == Some(&Value::Bool(true)) => Ok(worker),
                Ok(v) => match v.get("error").and_then(Value::as_str) {
                    Some(e) => Err(SpawnError::Source(e.to_owned())),
                    None => Err(SpawnError::Worker(format!(
                        "unexpected reply from the python worker: {line}"
                    ))),
                },
                Err(_) => Err(SpawnError::Worker(format!(
                    "unexpected reply from the python worker: {line}"
                ))),
            },
            Err(RecvTimeoutError::Timeout) => Err(SpawnError::Source(format!(
                "module-level code did not finish within {}",
                secs(self.options.python_timeout + GRACE)
            ))),
            Err(RecvTimeoutError::Disconnected) => {
                Err(SpawnError::Worker(worker.died("while loading the source")))
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn sandbox(cmd: &mut Command, isolation: NetIsolation) {
    use std::os::unix::process::CommandExt;
    // Its own process group, so that killing the worker kills the
    // per-sample children it forked too.
    cmd.process_group(0);
    let flags = match isolation {
        NetIsolation::NetNs => libc::CLONE_NEWNET,
        NetIsolation::UserNetNs => libc::CLONE_NEWUSER | libc::CLONE_NEWNET,
        NetIsolation::None => 0,
    };
    // No PR_SET_PDEATHSIG: it fires when the spawning *thread* exits (a
    // spawn_blocking thread, say), which would kill pooled workers. A
    // worker exits on its own when the tuner goes (EOF on its stdin).
    // SAFETY: between fork and exec only an async-signal-safe call
    // (unshare) is made and nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            if flags != 0 && libc::unshare(flags) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
fn sandbox(cmd: &mut Command, _isolation: NetIsolation) {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
}

#[cfg(not(unix))]
fn sandbox(_cmd: &mut Command, _isolation: NetIsolation) {}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr_tail: Arc<Mutex<VecDeque<u8>>>,
}

impl Worker {
    fn send(&mut self, msg: &Value) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.stdin.write_all(&line)?;
        self.stdin.flush()
    }

    /// One sample: the result, and whether the worker is still usable;
    /// `None` if the request could not even be sent (a dead worker).
    fn request(&mut self, msg: &Value, timeout: Duration) -> Option<(Scored, bool)> {
        if self.send(msg).is_err() {
            return None;
        }
        Some(match self.lines.recv_timeout(timeout + GRACE) {
            Ok(line) => match serde_json::from_str::<Value>(&line) {
                Ok(v) => match (
                    v.get("score").and_then(Value::as_f64),
                    v.get("error").and_then(Value::as_str),
                ) {
                    (Some(score), _) => (Ok((score, format!("grade() returned {score}"))), true),
                    (None, Some(e)) => (Err(e.to_owned()), true),
                    _ => (
                        Err(format!("unexpected reply from the python worker: {line}")),
                        false,
                    ),
                },
                Err(_) => (
                    Err(format!("unexpected reply from the python worker: {line}")),
                    false,
                ),
            },
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                (Err(format!("timed out after {}", secs(timeout))), false)
            }
            Err(RecvTimeoutError::Disconnected) => (Err(self.died("while grading")), false),
        })
    }

    /// Describes a worker that stopped answering: exit status and stderr tail.
    fn died(&mut self, when: &str) -> String {
        self.kill();
        let status = self
            .child
            .wait()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        // The stderr reader may still be draining the last lines. Graders
        // run on blocking threads, never on a runtime worker.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(50));
        let tail: Vec<u8> = self
            .stderr_tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        let tail = String::from_utf8_lossy(&tail).trim().to_owned();
        if tail.is_empty() {
            format!("the python worker died {when} ({status})")
        } else {
            format!("the python worker died {when} ({status}); stderr: {tail}")
        }
    }

    fn kill(&mut self) {
        #[cfg(unix)]
        {
            // The worker leads its own process group (see `sandbox`).
            if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: plain syscall; the group is ours.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
        }
        let _ = self.child.kill();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::{json, Value};

    use crate::{
        grader::{Grader, GraderError, GraderOptions},
        item::{Item, Message, Sample},
    };

    fn item(reference: &str) -> Item {
        Item::new(vec![Message::new("user", "q")], Some(json!(reference)))
    }

    fn config(source: &str) -> Value {
        json!({"type": "python", "name": "py", "source": source, "image_tag": "2025-05-08"})
    }

    fn grader_with(source: &str, options: &GraderOptions) -> Grader {
        Grader::from_config_with(&config(source), options).unwrap_or_else(|e| panic!("{e}"))
    }

    fn grader(source: &str) -> Grader {
        grader_with(source, &GraderOptions::default())
    }

    fn grade(g: &Grader, text: &str) -> Result<f64, String> {
        g.grade(&Sample::from_text(text), &item("42"))
            .map(|g| g.score)
            .map_err(|e| e.to_string())
    }

    const EXACT: &str = "def grade(sample, item):\n    return 1.0 if sample['output_text'] == item['reference_answer'] else 0\n";

    #[test]
    fn pass_and_fail() {
        let g = grader(EXACT);
        let pass = g.grade(&Sample::from_text("42"), &item("42")).unwrap();
        assert_eq!((pass.score, pass.passed), (1.0, true));
        let fail = g.grade(&Sample::from_text("41"), &item("42")).unwrap();
        assert_eq!((fail.score, fail.passed), (0.0, false));
        // The OpenAI dicts: output_json parsed, item fields as given.
        let g = grader("def grade(sample, item):\n    return sample['output_json']['x'] * 0.25 + len(item['messages']) + len(sample['output_tools'])\n");
        assert_eq!(grade(&g, r#"{"x": 2}"#).unwrap(), 1.5);
    }

    #[test]
    fn batch_uses_one_worker_and_matches_single_grades() {
        let g = grader("import os\ndef grade(sample, item):\n    return os.getppid()\n");
        let pairs: Vec<(Sample, Item)> = (0..5)
            .map(|i| (Sample::from_text(i.to_string()), item("42")))
            .collect();
        let pids: Vec<f64> = g
            .grade_batch(&pairs)
            .into_iter()
            .map(|r| r.unwrap().score)
            .collect();
        assert!(pids.iter().all(|p| *p == pids[0] && *p > 1.0), "{pids:?}");
        let g = grader(EXACT);
        let pairs: Vec<(Sample, Item)> = ["42", "1", "42"]
            .iter()
            .map(|t| (Sample::from_text(*t), item("42")))
            .collect();
        let scores: Vec<f64> = g
            .grade_batch(&pairs)
            .into_iter()
            .map(|r| r.unwrap().score)
            .collect();
        assert_eq!(scores, vec![1.0, 0.0, 1.0]);
    }

    #[test]
    fn samples_do_not_share_state() {
        let g = grader("n = 0\ndef grade(sample, item):\n    global n\n    n += 1\n    return n\n");
        let pairs: Vec<(Sample, Item)> = (0..3)
            .map(|_| (Sample::from_text("x"), item("42")))
            .collect();
        let scores: Vec<f64> = g
            .grade_batch(&pairs)
            .into_iter()
            .map(|r| r.unwrap().score)
            .collect();
        assert_eq!(scores, vec![1.0, 1.0, 1.0]);
    }

    #[test]
    fn infinite_loop_is_killed_and_the_next_sample_is_graded() {
        let options = GraderOptions {
            python_timeout: Duration::from_secs(1),
            ..GraderOptions::default()
        };
        let g = grader_with(
            "def grade(sample, item):\n    if sample['output_text'] == 'loop':\n        while True: pass\n    return 1\n",
            &options,
        );
        let pairs: Vec<(Sample, Item)> = ["loop", "ok", "loop", "ok"]
            .iter()
            .map(|t| (Sample::from_text(*t), item("42")))
            .collect();
        let start = Instant::now();
        let results = g.grade_batch(&pairs);
        let elapsed = start.elapsed();
        for i in [0, 2] {
            let e = results[i].as_ref().unwrap_err();
            assert!(matches!(e, GraderError::Grading { .. }), "{e}");
            assert!(e.to_string().contains("timed out after 1s"), "{e}");
        }
        for i in [1, 3] {
            assert_eq!(results[i].as_ref().unwrap().score, 1.0);
        }
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        assert_eq!(grade(&g, "ok").unwrap(), 1.0);
        assert!(grade(&g, "loop")
            .unwrap_err()
            .contains("timed out after 1s"));
    }

    #[test]
    fn module_level_hang_is_a_config_error() {
        let options = GraderOptions {
            python_timeout: Duration::from_millis(200),
            ..GraderOptions::default()
        };
        let e = Grader::from_config_with(
            &config("while True: pass\ndef grade(s, i): return 1\n"),
            &options,
        )
        .unwrap_err();
        assert!(
            matches!(&e, GraderError::Config { path, .. } if path == "$.source"),
            "{e}"
        );
        assert!(e.to_string().contains("did not finish"), "{e}");
    }

    // A plain test thread, waiting for a connection that must not come.
    #[allow(clippy::disallowed_methods)]
    fn assert_no_connection(listener: &std::net::TcpListener) {
        std::thread::sleep(Duration::from_millis(200));
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the grader reached the test's listener: {other:?}"),
        }
    }

    fn network_denied(options: &GraderOptions) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let sources = [
            format!("import socket\ndef grade(sample, item):\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    return 1\n"),
            format!("import socket\ndef grade(sample, item):\n    s = socket.socket()\n    s.connect(('127.0.0.1', {port}))\n    return 1\n"),
            format!("import urllib.request\ndef grade(sample, item):\n    urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)\n    return 1\n"),
            // Around the hook: another process, or libc's connect() through ctypes.
            format!("def grade(sample, item):\n    import subprocess\n    subprocess.run(['curl', '-s', 'http://127.0.0.1:{port}/'])\n    return 1\n"),
            format!("import os\ndef grade(sample, item):\n    os.system('curl -s http://127.0.0.1:{port}/')\n    return 1\n"),
            "def grade(sample, item):\n    import ctypes\n    ctypes.CDLL(None).connect\n    return 1\n".to_owned(),
        ];
        for source in &sources {
            let g = grader_with(source, options);
            let e = grade(&g, "x").unwrap_err();
            assert!(
                e.contains("PermissionError") || e.contains("Error"),
                "{source}: {e}"
            );
            assert_no_connection(&listener);
        }
        // At module level too.
        let e = Grader::from_config_with(
            &config(&format!("import socket\nsocket.create_connection(('127.0.0.1', {port}))\ndef grade(s, i): return 1\n")),
            options,
        )
        .unwrap_err();
        assert!(e.to_string().contains("PermissionError"), "{e}");
        assert_no_connection(&listener);
    }

    #[test]
    fn network_is_denied_by_the_audit_hook_alone() {
        let options = GraderOptions {
            python_network_namespace: false,
            ..GraderOptions::default()
        };
        let g = grader_with(EXACT, &options);
        assert_eq!(g.python_sandbox(), Some("audit hook only"));
        network_denied(&options);
    }

    #[test]
    fn network_is_denied_with_the_namespace_where_available() {
        let options = GraderOptions::default();
        let g = grader_with(EXACT, &options);
        let layers = g.python_sandbox().unwrap();
        eprintln!("python sandbox on this machine: {layers}");
        let unshare_works = std::process::Command::new("unshare")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success())
            || std::process::Command::new("unshare")
                .args(["-rn", "true"])
                .status()
                .is_ok_and(|s| s.success());
        if unshare_works {
            assert!(layers.contains("namespace"), "{layers}");
        }
        if layers.contains("namespace") {
            // Only the loopback interface, and it is down: even a raw
            // socket would reach nothing.
            let g = grader_with("def grade(sample, item):\n    lines = open('/proc/self/net/dev').read().splitlines()[2:]\n    return len(lines) * 10 + ('lo:' in lines[0])\n", &options);
            assert_eq!(grade(&g, "x").unwrap(), 11.0);
        }
        network_denied(&options);
    }

    #[test]
    fn big_allocation_is_a_memory_error() {
        let g = grader("def grade(sample, item):\n    b = bytearray(2 << 30)\n    return 1\n");
        let e = grade(&g, "x").unwrap_err();
        assert!(e.contains("MemoryError"), "{e}");
        // The worker survives for the next sample.
        let g2 = grader("def grade(sample, item):\n    if sample['output_text'] == 'big':\n        b = bytearray(2 << 30)\n    return 1\n");
        let pairs: Vec<(Sample, Item)> = ["big", "small"]
            .iter()
            .map(|t| (Sample::from_text(*t), item("42")))
            .collect();
        let r = g2.grade_batch(&pairs);
        assert!(r[0]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("MemoryError"));
        assert_eq!(r[1].as_ref().unwrap().score, 1.0);
    }

    #[test]
    fn non_numbers_are_errors_naming_the_type() {
        for (ret, ty) in [
            ("'0.5'", "str"),
            ("None", "NoneType"),
            ("True", "bool"),
            ("[1]", "list"),
        ] {
            let g = grader(&format!("def grade(sample, item):\n    return {ret}\n"));
            let e = g.grade(&Sample::from_text("x"), &item("42")).unwrap_err();
            assert!(matches!(e, GraderError::Grading { .. }), "{e}");
            assert!(
                e.to_string()
                    .contains(&format!("must return a number, got {ty}")),
                "{e}"
            );
        }
        let g = grader("def grade(sample, item):\n    return float('nan')\n");
        assert!(grade(&g, "x").unwrap_err().contains("non-finite"));
        let g = grader("def grade(sample, item):\n    return 3\n");
        assert_eq!(grade(&g, "x").unwrap(), 3.0);
    }

    #[test]
    fn exceptions_report_the_last_traceback_line() {
        let g = grader("def grade(sample, item):\n    return 1 / 0\n");
        let e = grade(&g, "x").unwrap_err();
        assert!(e.ends_with("ZeroDivisionError: division by zero"), "{e}");
        let g = grader("def grade(sample, item):\n    return item['nope']\n");
        assert!(grade(&g, "x").unwrap_err().contains("KeyError: 'nope'"));
        let g = grader("import sys\ndef grade(sample, item):\n    sys.exit(3)\n");
        assert!(grade(&g, "x").unwrap_err().contains("SystemExit: 3"));
    }

    #[test]
    fn prints_do_not_break_the_protocol() {
        let g = grader(
            "import sys, os\nprint('loading')\ndef grade(sample, item):\n    print('{\"score\": 99}')\n    print('noise', file=sys.stderr)\n    os.write(1, b'raw\\n')\n    sys.stdout.flush()\n    return 0.25\n",
        );
        assert_eq!(grade(&g, "x").unwrap(), 0.25);
        assert_eq!(grade(&g, "y").unwrap(), 0.25);
        // Nor can user code read the requests.
        let g = grader("import sys\ndef grade(sample, item):\n    return len(sys.stdin.read())\n");
        assert_eq!(grade(&g, "x").unwrap(), 0.0);
    }

    #[test]
    fn environment_is_not_inherited() {
        // A variable this process has (cargo sets CARGO_MANIFEST_DIR for
        // tests; HOME is there otherwise), rather than one set here:
        // set_var races the other tests' threads.
        let name = ["CARGO_MANIFEST_DIR", "HOME", "USER"]
            .into_iter()
            .find(|n| std::env::var_os(n).is_some())
            .expect("an environment variable to check");
        let g = grader(&format!(
            "import os\ndef grade(sample, item):\n    return 1 if '{name}' in os.environ else 0\n"
        ));
        assert_eq!(grade(&g, "x").unwrap(), 0.0);
    }

    #[test]
    fn bad_sources_are_config_errors() {
        let e =
            Grader::from_config(&config("def grade(sample, item)\n    return 1\n")).unwrap_err();
        assert!(
            matches!(&e, GraderError::Config { path, .. } if path == "$.source"),
            "{e}"
        );
        assert!(e.to_string().contains("SyntaxError"), "{e}");
        let e =
            Grader::from_config(&config("def score(sample, item):\n    return 1\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("must define a function `grade(sample, item)`"),
            "{e}"
        );
        let e = Grader::from_config(&config("raise ValueError('boom')\n")).unwrap_err();
        assert!(e.to_string().contains("ValueError: boom"), "{e}");
        let e =
            Grader::from_config(&json!({"type": "python", "name": "p", "source": "x", "extra": 1}))
                .unwrap_err();
        assert!(e.to_string().contains("$.extra"), "{e}");
        let e = Grader::from_config(&json!({"type": "python", "name": "p"})).unwrap_err();
        assert!(e.to_string().contains("$.source"), "{e}");
        let options = GraderOptions {
            python: "/nonexistent/python3".into(),
            ..GraderOptions::default()
        };
        let e = Grader::from_config_with(&config(EXACT), &options).unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot start `/nonexistent/python3`"),
            "{e}"
        );
    }

    #[test]
    fn python_inside_multi_gets_the_options() {
        let options = GraderOptions {
            python_timeout: Duration::from_millis(500),
            ..GraderOptions::default()
        };
        let c = json!({
            "type": "multi", "name": "m", "calculate_output": "py + exact",
            "graders": {
                "py": {"type": "python", "name": "py", "source": "def grade(s, i):\n    while s['output_text'] == 'loop': pass\n    return 0.5\n"},
                "exact": {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.reference_answer}}", "operation": "eq"}
            }
        });
        let g = Grader::from_config_with(&c, &options).unwrap();
        let pairs: Vec<(Sample, Item)> = ["42", "loop"]
            .iter()
            .map(|t| (Sample::from_text(*t), item("42")))
            .collect();
        let r = g.grade_batch(&pairs);
        assert_eq!(r[0].as_ref().unwrap().score, 1.5);
        let e = r[1].as_ref().unwrap_err().to_string();
        assert!(
            e.contains("sub-grader `py` failed") && e.contains("timed out after 0.5s"),
            "{e}"
        );
    }
}
