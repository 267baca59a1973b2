//! Hostile `python` graders (`tests/hostile_graders/*.py`), each trying one
//! way out of the grader sandbox, run through the real [`Grader`]. Each is
//! written so that a *successful* escape is observable: it returns 1.0, or
//! leaves a trace on the host (a file, a connection, a process) that the
//! test looks for. Contained means the grade is an error or anything but
//! 1.0, and no trace.
//!
//! These need the sandbox the graders run in by default (bubblewrap:
//! `scripts/services.sh` installs it); where it cannot run, every grader
//! fails to load with an error saying so, and so does each test here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::Write,
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use flywheel_tuner::{
    grader::{Grader, GraderOptions},
    Item, Message, Sample,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(2);

/// What a hostile grader's placeholders are replaced with.
struct Setup {
    /// A host directory outside the sandbox (`__DIR__`).
    dir: tempfile::TempDir,
    /// Short enough to be a process name (`/proc/<pid>/comm`, 15 bytes).
    token: String,
}

impl Setup {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let token = format!(
            "fwh{:08x}{:02x}",
            std::process::id() ^ nanos,
            N.fetch_add(1, Ordering::Relaxed) & 0xff
        );
        Self {
            dir: tempfile::tempdir().unwrap(),
            token,
        }
    }

    fn source(&self, name: &str, port: u16) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/hostile_graders")
            .join(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .replace("__DIR__", &self.dir.path().display().to_string())
            .replace("__TOKEN__", &self.token)
            .replace("__TUNER_PID__", &std::process::id().to_string())
            .replace("__CRATE_DIR__", env!("CARGO_MANIFEST_DIR"))
            .replace("__PORT__", &port.to_string())
    }

    fn grader_on(&self, name: &str, port: u16) -> Result<Grader, String> {
        let config = json!({"type": "python", "name": name, "source": self.source(name, port)});
        let options = GraderOptions {
            python_timeout: TIMEOUT,
            ..GraderOptions::default()
        };
        Grader::from_config_with(&config, &options).map_err(|e| e.to_string())
    }

    fn grader(&self, name: &str) -> Result<Grader, String> {
        self.grader_on(name, 0)
    }

    /// Host processes a grader marked with the token (named after it, or
    /// holding a file named after it open), in any pid namespace.
    fn survivors(&self) -> Vec<u32> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let named = std::fs::read_to_string(entry.path().join("comm"))
                .is_ok_and(|comm| comm.trim() == self.token);
            let holding = std::fs::read_dir(entry.path().join("fd"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|link| link.to_string_lossy().contains(&self.token));
            if named || holding {
                found.push(pid);
            }
        }
        found
    }
}

impl Setup {
    /// Runs `f` while watching the host's /proc: whether a marked process
    /// was ever seen during it (so that "none left afterwards" is not
    /// true merely because the grader never managed to start one).
    fn watching<T>(&self, f: impl FnOnce() -> T) -> (T, bool) {
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let seen = scope.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    if !self.survivors().is_empty() {
                        return true;
                    }
                    sleep(Duration::from_millis(50));
                }
                false
            });
            let out = f();
            done.store(true, Ordering::Relaxed);
            (out, seen.join().unwrap())
        })
    }
}

impl Drop for Setup {
    // Cleans up after an escape, so that a failing run leaves nothing.
    fn drop(&mut self) {
        for pid in self.survivors() {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        let _ = std::fs::remove_file(format!("/tmp/hb-{}", self.token));
        let _ = std::fs::remove_file(format!("/tmp/hold-{}", self.token));
    }
}

fn item() -> Item {
    Item::new(vec![Message::new("user", "q")], Some(json!("x")))
}

fn grade(g: &Grader, text: &str) -> Result<f64, String> {
    g.grade(&Sample::from_text(text), &item())
        .map(|g| g.score)
        .map_err(|e| e.to_string())
}

/// Loads and grades once: contained if either fails or the score is not 1.
#[track_caller]
fn assert_contained(setup: &Setup, name: &str) {
    let result = setup.grader(name).and_then(|g| grade(&g, "x"));
    eprintln!("{name}: {result:?}");
    if let Ok(score) = result {
        assert!(score != 1.0, "{name} escaped the sandbox");
    }
}

// A plain test thread.
#[allow(clippy::disallowed_methods)]
fn sleep(d: Duration) {
    std::thread::sleep(d);
}

/// Named so that `cargo test -p flywheel-tuner grader` runs them.
mod python_grader_sandbox {
    use super::*;

    #[test]
    fn overwriting_the_runner_globals_does_not_disarm_the_audit_hook() {
        let setup = Setup::new();
        assert_contained(&setup, "hook_globals_subprocess.py");
        assert_contained(&setup, "hook_globals_ctypes.py");
        assert_contained(&setup, "hook_gc_closure.py");
        assert_contained(&setup, "proc_self_mem.py");
    }

    #[test]
    fn no_network_even_with_the_hook_attacked() {
        let setup = Setup::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let result = setup
            .grader_on("hook_globals_socket.py", port)
            .and_then(|g| grade(&g, "x"));
        eprintln!("hook_globals_socket.py: {result:?}");
        sleep(Duration::from_millis(200));
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the grader reached the test's listener: {other:?}"),
        }
        assert!(result.as_ref().map_or(true, |s| *s != 1.0), "{result:?}");
    }

    /// The grader must not find this process's environment: run in a child
    /// test process (the tuner here) that has a secret in its environment.
    #[test]
    fn the_tuner_environment_is_invisible() {
        let setup = Setup::new();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "python_grader_sandbox::parent_environ_inner",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FLYWHEEL_HOSTILE_SECRET", &setup.token)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
    }

    /// Half of [`the_tuner_environment_is_invisible`]; does nothing when run
    /// without the secret.
    #[test]
    fn parent_environ_inner() {
        let Ok(secret) = std::env::var("FLYWHEEL_HOSTILE_SECRET") else {
            return;
        };
        let mut setup = Setup::new();
        setup.token = secret;
        assert_contained(&setup, "parent_environ.py");
    }

    #[test]
    fn the_host_filesystem_is_invisible_and_read_only() {
        let setup = Setup::new();
        let mut f = std::fs::File::create(setup.dir.path().join("secret.toml")).unwrap();
        writeln!(f, "api_key = \"{}\"", setup.token).unwrap();
        assert_contained(&setup, "read_tuner_files.py");
        assert_contained(&setup, "write_outside_tmp.py");
        assert!(!setup.dir.path().join("escaped").exists());
    }

    #[test]
    fn no_root_no_capabilities_and_limits_set() {
        let setup = Setup::new();
        assert_contained(&setup, "runs_as_root.py");
        assert_contained(&setup, "rlimits.py");
    }

    #[test]
    fn the_tuner_cannot_be_signalled() {
        let setup = Setup::new();
        assert_contained(&setup, "signal_the_tuner.py");
    }

    #[test]
    fn grandchildren_die_with_their_sample() {
        let setup = Setup::new();
        let g = setup.grader("grandchild.py").unwrap();
        let pairs: Vec<(Sample, Item)> = ["hang", "check", "return", "check"]
            .iter()
            .map(|t| (Sample::from_text(*t), item()))
            .collect();
        let (r, seen) = setup.watching(|| {
            g.grade_batch(&pairs)
                .into_iter()
                .map(|r| r.map(|g| g.score).map_err(|e| e.to_string()))
                .collect::<Vec<Result<f64, String>>>()
        });
        eprintln!("grandchild.py: {r:?}");
        assert!(seen, "the grader never started a grandchild");
        assert!(r[0].as_ref().unwrap_err().contains("timed out"), "{r:?}");
        assert_eq!(r[1], Ok(0.0), "a grandchild outlived its timed-out sample");
        assert_eq!(r[2], Ok(0.0), "{r:?}");
        assert_eq!(r[3], Ok(0.0), "a grandchild outlived its sample");
        sleep(Duration::from_millis(500));
        assert_eq!(
            setup.survivors(),
            Vec::<u32>::new(),
            "grandchildren survive"
        );
    }

    #[test]
    fn a_stopped_runner_is_killed_with_everything_it_started() {
        let setup = Setup::new();
        let g = setup.grader("stop_the_runner.py").unwrap();
        let start = Instant::now();
        let (r, seen) = setup.watching(|| grade(&g, "x"));
        let e = r.unwrap_err();
        eprintln!("stop_the_runner.py: {e} after {:?}", start.elapsed());
        assert!(seen, "the grader never started a grandchild");
        drop(g);
        sleep(Duration::from_millis(500));
        assert_eq!(
            setup.survivors(),
            Vec::<u32>::new(),
            "grandchildren survive"
        );
    }

    #[test]
    fn killing_the_runner_fails_only_that_sample() {
        let setup = Setup::new();
        let g = setup.grader("kill_the_runner.py").unwrap();
        let pairs: Vec<(Sample, Item)> = ["kill", "ok"]
            .iter()
            .map(|t| (Sample::from_text(*t), item()))
            .collect();
        let r = g.grade_batch(&pairs);
        assert!(r[0].is_err(), "{:?}", r[0]);
        assert_eq!(r[1].as_ref().unwrap().score, 0.5);
        assert_eq!(grade(&g, "ok"), Ok(0.5));
    }

    #[test]
    fn a_fork_bomb_is_bounded_and_the_machine_is_fine() {
        let setup = Setup::new();
        assert_contained(&setup, "fork_bomb.py");
        // The machine can still start processes.
        assert!(std::process::Command::new("true")
            .status()
            .unwrap()
            .success());
    }

    #[test]
    fn the_disk_cannot_be_filled() {
        let setup = Setup::new();
        assert_contained(&setup, "disk_fill.py");
        for d in ["/tmp", "/dev/shm"] {
            let left: Vec<_> = std::fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("fill-{}", setup.token))
                })
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }

    #[test]
    fn a_flood_on_the_protocol_is_cut_short() {
        let setup = Setup::new();
        let result = setup
            .grader("flood_the_protocol.py")
            .and_then(|g| grade(&g, "x"));
        let shown = match &result {
            Ok(s) => s.to_string(),
            Err(e) => e.chars().take(300).collect(),
        };
        eprintln!(
            "flood_the_protocol.py: {shown} ({} bytes)",
            result
                .as_ref()
                .map_or(0, |_| 0)
                .max(result.as_ref().err().map_or(0, |e| e.len()))
        );
        let e = result.unwrap_err();
        assert!(
            e.len() < 64 << 10,
            "the tuner kept a {} byte reply",
            e.len()
        );
    }
}

/// What the sandbox costs: `cargo test -p flywheel-tuner --test
/// hostile_graders -- --ignored --nocapture sandbox_overhead`.
#[test]
#[ignore = "a measurement, not a check"]
fn sandbox_overhead() {
    use flywheel_tuner::grader::PythonSandbox;
    let config = json!({"type": "python", "name": "t", "source": "def grade(sample, item):\n    return 1\n"});
    let pairs: Vec<(Sample, Item)> = (0..1000)
        .map(|_| (Sample::from_text("x"), item()))
        .collect();
    // The interpreter itself, not a shim (pyenv's costs 100 ms a start):
    // the sandbox always runs the interpreter itself.
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .unwrap();
    let python = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    for mode in [
        PythonSandbox::None,
        PythonSandbox::Bwrap,
        PythonSandbox::None,
        PythonSandbox::Bwrap,
    ] {
        let options = GraderOptions {
            python_sandbox: mode,
            python: python.clone(),
            ..GraderOptions::default()
        };
        let start = Instant::now();
        let loads = 10;
        for _ in 0..loads {
            Grader::from_config_with(&config, &options).unwrap();
        }
        let load = start.elapsed() / loads;
        let g = Grader::from_config_with(&config, &options).unwrap();
        g.grade_batch(&pairs[..5]);
        let start = Instant::now();
        for r in g.grade_batch(&pairs) {
            r.unwrap();
        }
        let per_sample = start.elapsed() / pairs.len() as u32;
        eprintln!("{mode:?}: load (worker start) {load:?}, per sample {per_sample:?}");
    }
}
