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
//! # The sandbox
//!
//! Grader sources are code from whoever writes the job's config: they are
//! treated as hostile. [`GraderOptions::python_sandbox`] picks how:
//!
//! - [`PythonSandbox::Bwrap`] (the default): each worker runs in a
//!   bubblewrap (`bwrap`) sandbox, started once per worker (not per
//!   sample):
//!   - no network: an empty network namespace (loopback only, down);
//!   - its own pid, ipc and uts namespaces: the tuner and every other host
//!     process are invisible (no `/proc/<pid>/environ`, no `kill`), and
//!     when the worker goes, everything it started goes with it;
//!   - a read-only filesystem holding only `/usr`, the root-level links to
//!     it (`/bin`, `/lib`...), `/etc/ld.so.cache`, the interpreter's own
//!     installation, a fresh `/proc` and a minimal, read-only `/dev` (no
//!     `/dev/shm` to fill); the only
//!     writable place is a private 64 MiB tmpfs at `/tmp`, gone with the
//!     worker. No host file (configs, keys, the tuner's cwd) is reachable;
//!   - an empty environment but `PATH` (no API keys);
//!   - no root: where the tuner runs as root the sandbox has no user
//!     namespace (the kernel exempts uid 0 from RLIMIT_NPROC, even mapped
//!     in one) and the runner drops to an unused uid of its own per worker
//!     (from [`SANDBOX_UID_BASE`]) before any grader code runs, which clears
//!     every capability (bwrap keeps only CAP_SETUID/CAP_SETGID for that
//!     drop); otherwise a user namespace maps the tuner's own uid, with
//!     nested user namespaces disabled. Either way no_new_privs is set;
//!   - rlimits set before the source is compiled: processes (RLIMIT_NPROC
//!     [`SANDBOX_NPROC`], so a fork bomb stops there), file size
//!     (RLIMIT_FSIZE [`SANDBOX_FSIZE`]), open files (RLIMIT_NOFILE
//!     [`SANDBOX_NOFILE`]), memory and CPU (below);
//!   - after every sample (and after the source is loaded) the runner kills
//!     every other process in the sandbox (`kill(-1)` in its pid
//!     namespace), so a grandchild cannot outlive its sample by forking,
//!     `setsid` or a new process group; when the tuner kills a worker, it
//!     kills bwrap, whose pid namespace dies with it (`--die-with-parent`;
//!     bwrap is spawned from one long-lived thread, since the kernel sends
//!     that signal when the spawning *thread* exits).
//!
//!   What it does not promise: protection from kernel bugs (namespaces,
//!   not a VM; no seccomp filter), from a grader scoring samples however
//!   it likes (that is its job), or fairness between graders (a worker may
//!   burn its CPU and memory limits). Samples of one worker share its
//!   `/tmp` and module-level state. Where bwrap is missing or cannot create
//!   namespaces (a container without them, unprivileged user namespaces
//!   disabled), a python grader fails to load with an error saying so;
//!   `scripts/services.sh` installs bubblewrap.
//! - [`PythonSandbox::None`]: the explicit opt-out, for trusted graders
//!   only (logged as a warning): the worker runs as the tuner's user, with
//!   the tuner's files and processes in reach, limited only by the audit
//!   hook, RLIMIT_AS/CPU and, where the kernel allows it, a network
//!   namespace ([`GraderOptions::python_network_namespace`]).
//!
//! In both modes, per sample unless said otherwise:
//! - wall clock: [`GraderOptions::python_timeout`]. Each sample runs in a
//!   child forked from the worker, SIGKILLed at the deadline ("timed out
//!   after 10s"); the next sample gets a fresh child. The tuner also kills
//!   the whole worker if it stays silent 5 s past that, and starts a new
//!   one for the next sample.
//! - CPU: RLIMIT_CPU of the timeout rounded up + 1 s in each child.
//! - memory: RLIMIT_AS (soft and hard) of
//!   [`GraderOptions::python_memory_bytes`] for the worker and its children,
//!   set before the source is compiled: a big allocation is a `MemoryError`.
//! - an audit hook (`sys.addaudithook`), installed before the source is
//!   compiled, raises `PermissionError` on the network
//!   (`socket.connect/bind/getaddrinfo/...`), on process creation
//!   (`subprocess`, `os.system`, `os.exec*`, `os.posix_spawn`;
//!   `_posixsubprocess` can't be imported), on `ctypes` and on the ways to
//!   tamper with the hook itself (the garbage collector's object walks,
//!   tracing and profiling, writing to `/proc`). It keeps its state in its
//!   closure, not in globals the source could overwrite, but it is defence
//!   in depth only: pure python in the same process can't be a boundary.
//! - the worker runs `python -I` (no `PYTHON*` variables, no user
//!   site-packages), its stdin is /dev/null and its stdout goes to stderr,
//!   so `print()` can't break the protocol; its stderr is kept (the tail)
//!   for error messages, and a reply line over [`MAX_REPLY`] fails the
//!   worker rather than grow the tuner.
//!
//! Samples don't share state (each runs in its own fork); module-level code
//! runs once per worker. A worker serves a whole [`super::Grader::grade_batch`];
//! single `grade` calls reuse idle workers.

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    str::FromStr,
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use serde_json::{json, Value};

use super::{config::Cfg, secs, snippet, GraderError, GraderOptions, Scored};

pub(crate) const FIELDS: &[&str] = &["source", "image_tag"];

const RUNNER: &str = include_str!("python_runner.py");
/// How long past the per-sample limit the tuner waits before it kills the
/// worker itself (the runner's own deadline should always fire first).
const GRACE: Duration = Duration::from_secs(5);
const MAX_IDLE_WORKERS: usize = 8;
const STDERR_TAIL: usize = 2000;
/// The longest reply line the tuner reads from a worker (a real one is a
/// few dozen bytes); past it the worker is failed, so that code writing to
/// the protocol's descriptor can't make the tuner buffer without end.
pub const MAX_REPLY: usize = 1 << 20;

/// RLIMIT_NPROC in the sandbox: processes and threads of the worker's uid,
/// the runner and each sample's child included.
pub const SANDBOX_NPROC: u64 = 64;
/// RLIMIT_FSIZE in the sandbox: the largest file a grader can write.
pub const SANDBOX_FSIZE: u64 = 64 << 20;
/// The size of the sandbox's `/tmp` (a tmpfs, so memory).
pub const SANDBOX_TMP_BYTES: u64 = 64 << 20;
/// RLIMIT_NOFILE in the sandbox.
pub const SANDBOX_NOFILE: u64 = 256;
/// Where the tuner runs as root, the first of the uids its sandboxes drop
/// to, one per worker (cycling through [`SANDBOX_UIDS`]): far above the
/// ranges distributions hand out (users, subuid ranges), so that
/// RLIMIT_NPROC, which counts every process of a uid, counts only that
/// worker's.
pub const SANDBOX_UID_BASE: u32 = 1_800_000_000;
pub const SANDBOX_UIDS: u32 = 100_000;

const BWRAP: &str = "bwrap";

/// How python workers are isolated ([`GraderOptions::python_sandbox`];
/// `--python-sandbox`). See the module docs for what each promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PythonSandbox {
    /// Each worker in a bubblewrap sandbox; a python grader fails to load
    /// where bwrap cannot run.
    #[default]
    Bwrap,
    /// No OS sandbox (trusted graders only; logged as a warning).
    None,
}

impl PythonSandbox {
    pub fn as_str(self) -> &'static str {
        match self {
            PythonSandbox::Bwrap => "bwrap",
            PythonSandbox::None => "none",
        }
    }
}

impl FromStr for PythonSandbox {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bwrap" => Ok(PythonSandbox::Bwrap),
            "none" => Ok(PythonSandbox::None),
            other => Err(format!(
                "unknown python sandbox `{other}` (expected `bwrap` or `none`)"
            )),
        }
    }
}

/// How a worker is isolated, as found at load time.
#[derive(Debug, Clone)]
enum Isolation {
    /// In bubblewrap (`PythonSandbox::Bwrap`).
    Bwrap(Arc<BwrapPlan>),
    /// `unshare(CLONE_NEWNET)` (needs CAP_SYS_ADMIN, e.g. root).
    NetNs,
    /// `unshare(CLONE_NEWUSER | CLONE_NEWNET)` (unprivileged user namespaces).
    UserNetNs,
    /// The audit hook alone.
    None,
}

impl Isolation {
    fn describe(&self) -> &'static str {
        match self {
            Isolation::Bwrap(plan) if plan.as_root => {
                "bubblewrap sandbox (empty network namespace, own pid/ipc/uts namespaces, read-only filesystem, private /tmp, unprivileged uid, rlimits) + audit hook"
            }
            Isolation::Bwrap(_) => {
                "bubblewrap sandbox (user namespace, empty network namespace, own pid/ipc/uts namespaces, read-only filesystem, private /tmp, rlimits) + audit hook"
            }
            Isolation::NetNs => "no sandbox: network namespace + audit hook",
            Isolation::UserNetNs => "no sandbox: user+network namespace + audit hook",
            Isolation::None => "no sandbox: audit hook only",
        }
    }
}

/// What a bubblewrap sandbox for one interpreter is made of, found once per
/// interpreter (and process) by [`bwrap_plan`].
#[derive(Debug, PartialEq)]
struct BwrapPlan {
    bwrap: PathBuf,
    /// The interpreter itself (a pyenv shim or a venv's link resolved:
    /// they need files the sandbox does not have).
    python: PathBuf,
    /// Read-only binds besides `/usr`: the interpreter's installation.
    binds: Vec<PathBuf>,
    /// Root-level entries as on the host: links (`/lib -> usr/lib`) and
    /// directories (bound read-only).
    links: Vec<(PathBuf, PathBuf)>,
    dirs: Vec<PathBuf>,
    /// The tuner runs as root: no user namespace, the runner drops to a
    /// uid of its own instead (see the module docs).
    as_root: bool,
}

/// Asks the interpreter (outside the sandbox: it is ours, not the grader's
/// code) where it really lives.
const WHERE_AM_I: &str = "import json, os, sys\nprint(json.dumps([os.path.realpath(sys.executable), sys.base_prefix, sys.base_exec_prefix]))\n";

impl BwrapPlan {
    fn find(bwrap: &Path, python: &Path) -> Result<Self, SpawnError> {
        let mut probe = Command::new(python);
        probe.args(["-I", "-c", WHERE_AM_I]).env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            probe.env("PATH", path);
        }
        let out = probe
            .stdin(Stdio::null())
            .output()
            .map_err(SpawnError::Start)?;
        let paths: Option<Vec<PathBuf>> = serde_json::from_slice::<Vec<String>>(&out.stdout)
            .ok()
            .filter(|p| p.len() == 3 && out.status.success())
            .map(|p| p.into_iter().map(PathBuf::from).collect());
        let Some([exe, prefix, exec_prefix]) = paths.and_then(|p| <[PathBuf; 3]>::try_from(p).ok())
        else {
            return Err(SpawnError::Worker(format!(
                "`{}` did not say where it is installed ({}): {}",
                python.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        };
        let mut binds: Vec<PathBuf> = Vec::new();
        for dir in [
            prefix,
            exec_prefix,
            exe.parent().map(Path::to_path_buf).unwrap_or_default(),
        ] {
            if !dir.is_absolute() || dir == Path::new("/") {
                // Binding `/` would put the whole host in the sandbox.
                return Err(SpawnError::Sandbox(format!(
                    "`{}` is installed at `{}`, which cannot be bound into the sandbox alone",
                    python.display(),
                    dir.display()
                )));
            }
            if dir.starts_with("/usr") || binds.iter().any(|b| dir.starts_with(b)) {
                continue;
            }
            binds.retain(|b| !b.starts_with(&dir));
            binds.push(dir);
        }
        let mut links = Vec::new();
        let mut dirs = Vec::new();
        for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let path = Path::new("/").join(name);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(&path) {
                        links.push((target, path));
                    }
                }
                Ok(m) if m.is_dir() => dirs.push(path),
                _ => {}
            }
        }
        let plan = BwrapPlan {
            bwrap: bwrap.to_path_buf(),
            python: exe,
            binds,
            links,
            dirs,
            as_root: is_root(),
        };
        plan.try_start()?;
        Ok(plan)
    }

    /// Starts `python -c pass` in the sandbox, so that a machine where it
    /// can't run fails at load with bwrap's own words.
    fn try_start(&self) -> Result<(), SpawnError> {
        let mut cmd = self.command("pass");
        cmd.stdin(Stdio::null());
        let out = cmd.output().map_err(|e| {
            SpawnError::Sandbox(if e.kind() == std::io::ErrorKind::NotFound {
                format!("bubblewrap (`{}`) is not installed", self.bwrap.display())
            } else {
                format!("cannot start bubblewrap (`{}`): {e}", self.bwrap.display())
            })
        })?;
        if out.status.success() {
            return Ok(());
        }
        Err(SpawnError::Sandbox(format!(
            "bubblewrap cannot start a sandbox here ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }

    /// `bwrap ... -- python -I -c <code>`.
    fn command(&self, code: &str) -> Command {
        let mut cmd = Command::new(&self.bwrap);
        cmd.args([
            "--unshare-net",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
        ]);
        if self.as_root {
            // Root in a user namespace is still uid 0 to RLIMIT_NPROC; the
            // runner drops to its own uid instead, which needs these two
            // capabilities (and clears them).
            cmd.args([
                "--cap-drop",
                "ALL",
                "--cap-add",
                "CAP_SETUID",
                "--cap-add",
                "CAP_SETGID",
            ]);
        } else {
            cmd.args(["--unshare-user", "--disable-userns"]);
        }
        cmd.args([
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/bin:/bin",
            "--hostname",
            "grader",
            "--ro-bind",
            "/usr",
            "/usr",
        ]);
        for (target, link) in &self.links {
            cmd.arg("--symlink").arg(target).arg(link);
        }
        for dir in &self.dirs {
            cmd.arg("--ro-bind").arg(dir).arg(dir);
        }
        cmd.args(["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]);
        for dir in &self.binds {
            // bwrap would give the directories it makes on the way the
            // host's modes: /root's 0700 would lock the dropped uid out of
            // a pyenv interpreter under it.
            let mut parents: Vec<&Path> = dir
                .ancestors()
                .skip(1)
                .take_while(|p| *p != Path::new("/"))
                .collect();
            parents.reverse();
            for parent in parents {
                cmd.args(["--perms", "0755", "--dir"]).arg(parent);
            }
            cmd.arg("--ro-bind").arg(dir).arg(dir);
        }
        // /dev read-only: in a user namespace its tmpfs (and /dev/shm in
        // it) would be the grader's own, writable without a size limit.
        cmd.args([
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--remount-ro",
            "/dev",
            "--perms",
            "1777",
            "--size",
        ])
        .arg(SANDBOX_TMP_BYTES.to_string())
        .args([
            "--tmpfs",
            "/tmp",
            "--remount-ro",
            "/",
            "--chdir",
            "/tmp",
            "--",
        ])
        .arg(&self.python)
        .args(["-I", "-c", code]);
        cmd.env_clear();
        cmd
    }
}

#[cfg(unix)]
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(not(unix))]
fn is_root() -> bool {
    false
}

/// The plan for `python`, found once per process: each grader load would
/// otherwise pay for the probe and a sandbox start. Failures are not kept
/// (the machine may be fixed while the tuner runs).
fn bwrap_plan(python: &Path) -> Result<Arc<BwrapPlan>, SpawnError> {
    static PLANS: Mutex<Vec<(PathBuf, Arc<BwrapPlan>)>> = Mutex::new(Vec::new());
    let cached = PLANS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(p, _)| p == python)
        .map(|(_, plan)| plan.clone());
    if let Some(plan) = cached {
        return Ok(plan);
    }
    let plan = Arc::new(BwrapPlan::find(Path::new(BWRAP), python)?);
    PLANS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((python.to_path_buf(), plan.clone()));
    Ok(plan)
}

/// Spawns a command from one thread that lives as long as the process.
/// bwrap's `--die-with-parent` is PR_SET_PDEATHSIG, which fires when the
/// spawning *thread* exits: spawned from a `spawn_blocking` thread, a
/// pooled worker would die when that thread is retired.
fn spawn_from_keeper(cmd: Command) -> std::io::Result<Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<Option<mpsc::Sender<Job>>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("python-grader-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            });
        Mutex::new(started.ok().map(|_| tx))
    });
    let (reply, answer) = mpsc::channel();
    let sent = keeper
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|tx| tx.send((cmd, reply)).is_ok());
    match sent {
        true => answer
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawner thread is gone"))),
        false => Err(std::io::Error::other(
            "cannot start the thread that spawns sandboxes",
        )),
    }
}

pub(crate) struct PythonGrader {
    source: String,
    options: GraderOptions,
    isolation: Isolation,
    idle: Mutex<Vec<Worker>>,
}

enum SpawnError {
    /// The interpreter could not be started (or the namespace not created).
    Start(std::io::Error),
    /// The source failed to load: syntax error, exception, no `grade`.
    Source(String),
    /// The worker died or hung while loading.
    Worker(String),
    /// bubblewrap cannot run here.
    Sandbox(String),
}

impl SpawnError {
    fn message(&self, python: &str) -> String {
        match self {
            SpawnError::Start(e) => format!("cannot start `{python}`: {e}"),
            SpawnError::Source(m) => format!("the source failed to load: {m}"),
            SpawnError::Worker(m) => m.clone(),
            SpawnError::Sandbox(m) => format!(
                "the python grader sandbox cannot run: {m}. Install bubblewrap \
                 (scripts/services.sh installs it) on a kernel that allows \
                 namespaces, or run with --python-sandbox none to go without \
                 the sandbox (trusted graders only)"
            ),
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
            isolation: Isolation::None,
            idle: Mutex::new(Vec::new()),
        };
        let python = options.python.display().to_string();
        // Load the source once now, so that a syntax error or a missing
        // `grade` is a config error, and find the isolation: bwrap or
        // nothing; without it, the strongest the kernel grants (only a
        // failed start falls through to the next).
        let modes: Vec<Isolation> = match options.python_sandbox {
            PythonSandbox::Bwrap => match bwrap_plan(&options.python) {
                Ok(plan) => vec![Isolation::Bwrap(plan)],
                Err(e) => return Err(cfg.err("source", e.message(&python))),
            },
            PythonSandbox::None => {
                warn_unsandboxed();
                if options.python_network_namespace && cfg!(target_os = "linux") {
                    vec![Isolation::NetNs, Isolation::UserNetNs, Isolation::None]
                } else {
                    vec![Isolation::None]
                }
            }
        };
        let mut last = None;
        for mode in modes {
            let fallible = matches!(mode, Isolation::NetNs | Isolation::UserNetNs);
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
                    if fallible && e.kind() != std::io::ErrorKind::NotFound =>
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
        let (child, sandbox) = match &self.isolation {
            Isolation::Bwrap(plan) => {
                let mut cmd = plan.command(RUNNER);
                cmd.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                own_process_group(&mut cmd);
                let uid = plan.as_root.then(next_sandbox_uid);
                let sandbox = json!({
                    "uid": uid,
                    "nproc": SANDBOX_NPROC,
                    "fsize": SANDBOX_FSIZE,
                    "nofile": SANDBOX_NOFILE,
                });
                let child = spawn_from_keeper(cmd).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        SpawnError::Sandbox(format!(
                            "bubblewrap (`{}`) is not installed",
                            plan.bwrap.display()
                        ))
                    } else {
                        SpawnError::Start(e)
                    }
                })?;
                (child, sandbox)
            }
            isolation => {
                let mut cmd = Command::new(&self.options.python);
                cmd.arg("-I").arg("-c").arg(RUNNER);
                cmd.env_clear();
                if let Some(path) = std::env::var_os("PATH") {
                    cmd.env("PATH", path);
                }
                cmd.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                own_process_group(&mut cmd);
                unshare(&mut cmd, isolation);
                (cmd.spawn().map_err(SpawnError::Start)?, Value::Null)
            }
        };
        let mut child = child;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // Cannot happen (all three are piped above); an error, not a panic.
            let _ = child.kill();
            let _ = child.wait();
            return Err(SpawnError::Worker("the worker's stdio is not piped".into()));
        };
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || read_replies(stdout, &tx));
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
            "sandbox": sandbox,
        });
        if worker.send(&setup).is_err() {
            return Err(SpawnError::Worker(worker.died("while starting")));
        }
        match worker
            .lines
            .recv_timeout(self.options.python_timeout + GRACE)
        {
            Ok(Ok(line)) => match serde_json::from_str::<Value>(&line) {
                Ok(v) if v.get("ready") == Some(&Value::Bool(true)) => Ok(worker),
                Ok(v) => match v.get("error").and_then(Value::as_str) {
                    Some(e) => Err(SpawnError::Source(e.to_owned())),
                    None => Err(SpawnError::Worker(unexpected(&line))),
                },
                Err(_) => Err(SpawnError::Worker(unexpected(&line))),
            },
            Ok(Err(e)) => Err(SpawnError::Worker(e)),
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

fn unexpected(line: &str) -> String {
    format!(
        "unexpected reply from the python worker: {}",
        snippet(line, 200)
    )
}

/// Forwards the worker's reply lines; a line over [`MAX_REPLY`] is sent as
/// an `Err` and ends the reading (the worker is then killed).
fn read_replies(stdout: impl Read, tx: &mpsc::Sender<Result<String, String>>) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_REPLY as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > MAX_REPLY {
            let _ = tx.send(Err(format!(
                "the python worker sent a reply line over {MAX_REPLY} bytes"
            )));
            return;
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        if tx.send(Ok(text)).is_err() {
            return;
        }
    }
}

fn next_sandbox_uid() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    SANDBOX_UID_BASE + NEXT.fetch_add(1, Ordering::Relaxed) % SANDBOX_UIDS
}

fn warn_unsandboxed() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        eprintln!(
            "warning: python graders run WITHOUT the sandbox (--python-sandbox none): \
             their code runs as this user, with this machine's files and processes \
             in reach; use it for trusted graders only"
        );
    });
}

#[cfg(unix)]
fn own_process_group(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // Its own process group, so that killing the worker kills the
    // per-sample children it forked too (without the sandbox; in it, the
    // pid namespace does).
    cmd.process_group(0);
}

#[cfg(not(unix))]
fn own_process_group(_cmd: &mut Command) {}

#[cfg(target_os = "linux")]
fn unshare(cmd: &mut Command, isolation: &Isolation) {
    use std::os::unix::process::CommandExt;
    let flags = match isolation {
        Isolation::NetNs => libc::CLONE_NEWNET,
        Isolation::UserNetNs => libc::CLONE_NEWUSER | libc::CLONE_NEWNET,
        Isolation::None | Isolation::Bwrap(_) => return,
    };
    // No PR_SET_PDEATHSIG: it fires when the spawning *thread* exits (a
    // spawn_blocking thread, say), which would kill pooled workers. A
    // worker exits on its own when the tuner goes (EOF on its stdin).
    // SAFETY: between fork and exec only an async-signal-safe call
    // (unshare) is made and nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(flags) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn unshare(_cmd: &mut Command, _isolation: &Isolation) {}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Result<String, String>>,
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
            Ok(Err(e)) => {
                self.kill();
                (Err(e), false)
            }
            Ok(Ok(line)) => match serde_json::from_str::<Value>(&line) {
                Ok(v) => match (
                    v.get("score").and_then(Value::as_f64),
                    v.get("error").and_then(Value::as_str),
                ) {
                    (Some(score), _) => (Ok((score, format!("grade() returned {score}"))), true),
                    (None, Some(e)) => (Err(e.to_owned()), true),
                    _ => (Err(unexpected(&line)), false),
                },
                Err(_) => (Err(unexpected(&line)), false),
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
            // The worker (bwrap, or python without the sandbox) leads its
            // own process group (see `own_process_group`).
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
        grader::{Grader, GraderError, GraderOptions, PythonSandbox},
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
            python_sandbox: PythonSandbox::None,
            ..GraderOptions::default()
        };
        let g = grader_with(EXACT, &options);
        assert_eq!(g.python_sandbox(), Some("no sandbox: audit hook only"));
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
    fn without_bwrap_a_python_grader_fails_to_load_saying_why() {
        let e = match super::BwrapPlan::find(
            std::path::Path::new("/nonexistent/bwrap"),
            std::path::Path::new("python3"),
        ) {
            Err(e) => e.message("python3"),
            Ok(plan) => panic!("{plan:?}"),
        };
        for part in [
            "bubblewrap (`/nonexistent/bwrap`) is not installed",
            "scripts/services.sh",
            "--python-sandbox none",
        ] {
            assert!(e.contains(part), "{e}");
        }
    }

    #[test]
    fn the_sandbox_is_the_default_and_the_opt_out_is_explicit() {
        assert_eq!("bwrap".parse(), Ok(PythonSandbox::Bwrap));
        assert_eq!("none".parse(), Ok(PythonSandbox::None));
        assert!("docker".parse::<PythonSandbox>().is_err());
        assert_eq!(
            GraderOptions::default().python_sandbox,
            PythonSandbox::Bwrap
        );
        let layers = grader(EXACT).python_sandbox().unwrap().to_owned();
        assert!(layers.starts_with("bubblewrap sandbox"), "{layers}");
        let options = GraderOptions {
            python_sandbox: PythonSandbox::None,
            ..GraderOptions::default()
        };
        let layers = grader_with(EXACT, &options)
            .python_sandbox()
            .unwrap()
            .to_owned();
        assert!(layers.starts_with("no sandbox"), "{layers}");
    }

    #[test]
    fn processes_left_by_module_level_code_are_gone_before_the_first_sample() {
        // In the sandbox's pid namespace: bwrap's init, the runner and the
        // sample's child, nothing else (not even a zombie).
        let g = grader(
            "import os, time
if os.fork() == 0:
    time.sleep(60)
    os._exit(0)
def grade(sample, item):
    return len([p for p in os.listdir('/proc') if p.isdigit()])
",
        );
        assert_eq!(grade(&g, "x").unwrap(), 3.0);
        assert_eq!(grade(&g, "y").unwrap(), 3.0);
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
