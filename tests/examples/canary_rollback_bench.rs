//! Decision latency of a rollback after a critical regression starts, in
//! seconds: the real gateway (capture into a private ClickHouse, weights
//! from a private Redis) in front of two mock providers, the incumbent's
//! and the candidate's; `flywheel-canary run` decides.
//!
//! Each run: create an experiment with the candidate on a live step
//! (`--steps P,100`), start the controller, send load at a fixed rate, let
//! the step run healthy for at least `--warmup-secs`, then at T0 (placed at
//! a set phase between two looks, spread over the reps) kill the
//! candidate's mock and restart it on the same port answering every
//! request with a 500 (the regression); measure T0 → the candidate's
//! weight is 0 in Redis (polled every 50 ms). The looks after T0
//! (evaluation rows) say what dominated: one look means the interval (the
//! first look after T0 had enough evidence), several mean the evidence
//! (the error-rate test needed more candidate requests).
//!
//! `scripts/canary-bench.sh` builds and runs it; flags: `--intervals
//! 1,5,10` (s), `--steps 1,5,25` (%), `--reps 2`, `--rate 100` (req/s),
//! `--warmup-secs 10`, `--settle-ms 2000`, `--timeout-secs 120`.

// A benchmark harness, like the tests: a failed setup step should stop it
// loudly, and it may sleep.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::{
    io::Write,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use flywheel_tests::*;

struct Opts {
    intervals: Vec<u64>,
    steps: Vec<f64>,
    reps: usize,
    rate: u64,
    warmup_secs: u64,
    settle_ms: u64,
    timeout_secs: u64,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        intervals: vec![1, 5, 10],
        steps: vec![1.0, 5.0, 25.0],
        reps: 2,
        rate: 100,
        warmup_secs: 10,
        settle_ms: 2000,
        timeout_secs: 120,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let list = || value.split(',').map(|s| s.trim().to_owned());
        match flag.as_str() {
            "--intervals" => o.intervals = list().map(|s| s.parse().unwrap()).collect(),
            "--steps" => o.steps = list().map(|s| s.parse().unwrap()).collect(),
            "--reps" => o.reps = value.parse().unwrap(),
            "--rate" => o.rate = value.parse().unwrap(),
            "--warmup-secs" => o.warmup_secs = value.parse().unwrap(),
            "--settle-ms" => o.settle_ms = value.parse().unwrap(),
            "--timeout-secs" => o.timeout_secs = value.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    o
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The candidate's mock on a fixed port, healthy or failing.
fn start_candidate_mock(port: u16, failing: bool) -> Proc {
    let mut cmd = Command::new(bin("flywheel-mock"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}")]);
    if failing {
        cmd.args(["--error-rate", "1.0", "--error-status", "500"]);
    }
    spawn_listening(cmd, scratch_dir("bench-mock"))
}

/// Open-loop load at a fixed rate; counts sent and skipped (too many in
/// flight: the machine is saturated).
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    skipped: Arc<AtomicU64>,
}

impl Load {
    fn start(url: String, rate: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let skipped = Arc::new(AtomicU64::new(0));
        let (s, k) = (stop.clone(), skipped.clone());
        let task = tokio::spawn(async move {
            let client = client();
            let slots = Arc::new(tokio::sync::Semaphore::new(64));
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    k.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                n += 1;
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Ok(r) = client
                        .post(url)
                        .bearer_auth(KEY)
                        .header("x-flywheel-episode-id", format!("e{n}"))
                        .json(&chat("chat", "hello"))
                        .send()
                        .await
                    {
                        let _ = r.bytes().await;
                    }
                });
            }
        });
        Self {
            stop,
            task,
            skipped,
        }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.skipped.load(Ordering::Relaxed)
    }
}

struct Ctl(Child);

impl Drop for Ctl {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn canary(services: &Services) -> Command {
    let mut cmd = Command::new(bin("flywheel-canary"));
    cmd.env("FLYWHEEL_CLICKHOUSE_URL", services.clickhouse_url())
        .env("FLYWHEEL_CLICKHOUSE_DATABASE", "flywheel")
        .env("FLYWHEEL_REDIS_URL", services.redis_url())
        .env("FLYWHEEL_REDIS_PREFIX", "flywheel:")
        .env("RUST_LOG", "warn");
    cmd
}

/// One run's outcome.
struct Run {
    interval: u64,
    step: f64,
    /// T0 → candidate weight 0 in Redis, s (None: no rollback in time).
    latency: Option<f64>,
    /// T0 → the rollback row's time, s.
    decided: Option<f64>,
    /// Looks (evaluation rows) after T0, the rollback included.
    looks: u64,
    /// Candidate requests in the window of the rollback look.
    candidate_n: u64,
    reason: String,
}

async fn query(services: &Services, sql: &str) -> String {
    services.try_query(sql).await.unwrap_or_default()
}

fn progress(line: &str) {
    let mut e = std::io::stderr();
    let _ = write!(e, "\r\x1b[2K{line}");
    let _ = e.flush();
}

/// Where T0 falls within the controller's interval, as a fraction of it:
/// rep `r` of `n` at `(r − ½)/n`, so the reps spread evenly over the
/// phase (a regression starts at any moment between two looks) and their
/// mean estimates the expected latency.
fn phase(rep: usize, reps: usize) -> f64 {
    (rep as f64 - 0.5) / reps.max(1) as f64
}

#[allow(clippy::too_many_arguments)]
async fn one_run(
    services: &Services,
    gateway: &Proc,
    cand_port: u16,
    cand_mock: &mut Proc,
    o: &Opts,
    interval: u64,
    step: f64,
    phase: f64,
    label: &str,
) -> Run {
    // A healthy candidate mock (the port freed first) and a fresh
    // experiment on a live step.
    let _ = cand_mock.child.kill();
    let _ = cand_mock.child.wait();
    *cand_mock = start_candidate_mock(cand_port, false);
    // The gateway's circuit breaker on the candidate's provider opened in
    // the previous run's regression: let its open time (5 s by default)
    // pass, or the new step would start with fast 503s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let out = canary(services)
        .args([
            "create",
            "--route",
            "chat",
            "--incumbent",
            "base",
            "--candidate",
            "tuned",
            "--metric",
            "thumbs_up",
            "--steps",
            &format!("{step},100"),
            "--guardrail",
            "p95_latency=off",
            "--guardrail",
            "ttft=off",
            "--origin",
            "bench",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let _ctl = Ctl(canary(services)
        .args([
            "run",
            "--interval-ms",
            &(interval * 1000).to_string(),
            "--settle-ms",
            &o.settle_ms.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    // The controller looks at once, then every interval, from its start:
    // T0 lands at `phase` of an interval after a look.
    let started = Instant::now();
    let load = Load::start(gateway.url("/v1/chat/completions"), o.rate);
    let looks_before = (o.warmup_secs as f64 / interval as f64).ceil();
    let warmup = Duration::from_secs_f64((looks_before + phase) * interval as f64);
    while started.elapsed() < warmup {
        progress(&format!(
            "{label}: healthy warm-up {:.0}/{:.0} s",
            started.elapsed().as_secs_f64(),
            warmup.as_secs_f64()
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if services.redis_cli(&["HGET", "flywheel:weights:chat", "tuned"]) == "0" {
        let _ = load.stop().await;
        return Run {
            interval,
            step,
            latency: None,
            decided: None,
            looks: 0,
            candidate_n: 0,
            reason: "invalid: rolled back during the healthy warm-up".into(),
        };
    }
    // T0: the candidate's provider starts failing.
    let t0_ms = now_ms();
    let t0 = Instant::now();
    let _ = cand_mock.child.kill();
    let _ = cand_mock.child.wait();
    *cand_mock = start_candidate_mock(cand_port, true);
    let deadline = t0 + Duration::from_secs(o.timeout_secs);
    let mut latency = None;
    let mut last_print = Instant::now();
    while Instant::now() < deadline {
        if services.redis_cli(&["HGET", "flywheel:weights:chat", "tuned"]) == "0" {
            latency = Some(t0.elapsed().as_secs_f64());
            break;
        }
        if last_print.elapsed() > Duration::from_millis(500) {
            progress(&format!(
                "{label}: regression on, waiting for weight 0: {:.1} s",
                t0.elapsed().as_secs_f64()
            ));
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let skipped = load.stop().await;
    if skipped > 0 {
        progress(&format!(
            "{label}: {skipped} requests skipped (saturated)\n"
        ));
    }
    let row = query(
        services,
        &format!(
            "SELECT ts_ms, candidate_requests, reason_kind, arrayStringConcat(guardrails_failing, ' ') \
             FROM flywheel.canary_evaluations WHERE experiment_id = '{id}' AND action = 'rollback' FORMAT TSV"
        ),
    )
    .await;
    let cols: Vec<&str> = row.split('\t').collect();
    let decided = cols
        .first()
        .and_then(|t| t.parse::<u64>().ok())
        .map(|t| t.saturating_sub(t0_ms) as f64 / 1000.0);
    // Looks that began after T0 (a row's ts_ms is when its look began).
    let looks = query(
        services,
        &format!(
            "SELECT count() FROM flywheel.canary_evaluations WHERE experiment_id = '{id}' \
             AND ts_ms >= {t0_ms} AND action IN ('hold', 'rollback')"
        ),
    )
    .await
    .parse()
    .unwrap_or(0);
    if latency.is_none() {
        // Leave the route to the incumbent for the next run.
        let _ = canary(services).args(["rollback", &id]).output();
    }
    Run {
        interval,
        step,
        latency,
        decided,
        looks,
        candidate_n: cols.get(1).and_then(|n| n.parse().ok()).unwrap_or(0),
        reason: format!(
            "{} {}",
            cols.get(2).unwrap_or(&""),
            cols.get(3).unwrap_or(&"")
        )
        .trim()
        .to_owned(),
    }
}

fn fmt_s(x: Option<f64>) -> String {
    x.map_or_else(|| "—".into(), |v| format!("{v:.1}"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = parse_args();
    let services = Services::new();
    services.start_clickhouse();
    services.start_redis();
    let incumbent_mock = start_mock(&[]);
    let cand_port = free_port();
    let mut cand_mock = start_candidate_mock(cand_port, false);
    let wal = scratch_dir("bench-wal");
    let config = format!(
        "[redis]\nurl = \"{}\"\nweights_poll_ms = 100\ncommand_timeout_ms = 200\n\n{}\n\
         [providers.pricey]\nbase_url = \"http://{}/v1\"\nprice_input_per_1m = 3.0\nprice_output_per_1m = 6.0\n\n\
         [providers.cheap]\nbase_url = \"http://127.0.0.1:{cand_port}/v1\"\nprice_input_per_1m = 1.0\nprice_output_per_1m = 2.0\n\n\
         [[routes]]\nname = \"chat\"\n\
         [[routes.variants]]\nname = \"base\"\nweight = 100\ntargets = [{{ provider = \"pricey\", model = \"m\" }}]\n\
         [[routes.variants]]\nname = \"tuned\"\nweight = 0\ntargets = [{{ provider = \"cheap\", model = \"m\" }}]\n",
        services.redis_url(),
        capture_config(&services, &wal),
        incumbent_mock.addr
    );
    // The gateway logs each failing request at ERROR: quiet, so the
    // progress line stays readable.
    let dir = scratch_dir("bench-gateway");
    let path = dir.join("flywheel.toml");
    std::fs::write(
        &path,
        format!("{}\n{config}", base_config(&dir.join("events.jsonl"))),
    )
    .unwrap();
    let mut cmd = Command::new(bin("flywheel-gateway"));
    cmd.arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "off");
    let gateway = spawn_listening(cmd, dir);
    // The capture has migrated once an event is stored.
    let r = client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&chat("chat", "hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ready = eventually(Duration::from_secs(60), || async {
        query(&services, "SELECT count() FROM flywheel.inferences")
            .await
            .parse::<u64>()
            .unwrap_or(0)
            >= 1
    })
    .await;
    assert!(ready, "capture did not reach ClickHouse");

    let total = o.intervals.len() * o.steps.len() * o.reps;
    let mut runs = vec![];
    let mut k = 0;
    for &interval in &o.intervals {
        for &step in &o.steps {
            for rep in 1..=o.reps {
                k += 1;
                let ph = phase(rep, o.reps);
                let label = format!(
                    "[{k}/{total}] interval {interval} s, step {step} %, T0 at {:.0} % of an interval",
                    ph * 100.0
                );
                let run = one_run(
                    &services,
                    &gateway,
                    cand_port,
                    &mut cand_mock,
                    &o,
                    interval,
                    step,
                    ph,
                    &label,
                )
                .await;
                progress(&format!(
                    "{label}: weight 0 after {} s (decided {} s, {} looks after T0, {} candidate requests; {})\n",
                    fmt_s(run.latency),
                    fmt_s(run.decided),
                    run.looks,
                    run.candidate_n,
                    run.reason
                ));
                runs.push(run);
            }
        }
    }

    println!(
        "\nrollback decision latency (T0 = candidate provider starts failing → candidate weight 0 in Redis)"
    );
    println!(
        "rate {} req/s, at least {} s healthy on the step before T0, settle {} ms, {} reps per cell \
         with T0 at {} of an interval after a look\n",
        o.rate,
        o.warmup_secs,
        o.settle_ms,
        o.reps,
        (1..=o.reps)
            .map(|r| format!("{:.0} %", phase(r, o.reps) * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("| interval | step | T0 → weight 0, s (each run) | mean, s | T0 → rollback row, s | looks after T0 | candidate requests at the decision |");
    println!("|---|---|---|---|---|---|---|");
    for &interval in &o.intervals {
        for &step in &o.steps {
            let cell: Vec<&Run> = runs
                .iter()
                .filter(|r| r.interval == interval && r.step == step)
                .collect();
            let mut lat: Vec<f64> = cell.iter().filter_map(|r| r.latency).collect();
            lat.sort_by(f64::total_cmp);
            let mean = (lat.len() == cell.len() && !lat.is_empty())
                .then(|| lat.iter().sum::<f64>() / lat.len() as f64);
            let each: Vec<String> = cell.iter().map(|r| fmt_s(r.latency)).collect();
            let decided: Vec<String> = cell.iter().map(|r| fmt_s(r.decided)).collect();
            let looks: Vec<String> = cell.iter().map(|r| r.looks.to_string()).collect();
            let n: Vec<String> = cell.iter().map(|r| r.candidate_n.to_string()).collect();
            println!(
                "| {interval} s | {step} % | {} | {} | {} | {} | {} |",
                each.join(", "),
                fmt_s(mean),
                decided.join(", "),
                looks.join(", "),
                n.join(", ")
            );
        }
    }
}
