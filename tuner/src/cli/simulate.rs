//! `flywheel-tuner simulate`: simulated users on a gateway route (open-loop
//! traffic, thumbs from a grader's verdict with noise, delays and re-asks;
//! [`flywheel_tuner::simulate`]).

use std::{
    io::IsTerminal,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use flywheel_tuner::{
    eval::client::{Gateway, RequestParams},
    simulate::{self, Counts, Progress, Settings, Summary},
};
use parking_lot::Mutex;

use super::{
    files::{load_grader, read_dataset},
    options::{GraderArgs, KeyArgs},
    runtime,
};

#[derive(clap::Args)]
pub struct Args {
    /// The route to talk to (the requests' `model`).
    #[arg(long)]
    route: String,
    /// Prompts, drawn at random (JSONL: the task suite's files or any RFT
    /// dataset; each item's `response_format` and tools are sent too).
    #[arg(long)]
    dataset: PathBuf,
    /// How users judge answers: a grader config (JSON), e.g. the task's
    /// `<task>.grader.json`.
    #[arg(long)]
    grader: PathBuf,
    /// The gateway's OpenAI base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080/v1")]
    gateway: String,
    /// Gateway API key (the tenant the users belong to).
    #[arg(long, env = "FLYWHEEL_GATEWAY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Conversations started per second (Poisson arrivals, open loop).
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Seconds during which conversations start (then the last answers and
    /// thumbs are awaited).
    #[arg(long, default_value_t = 60.0)]
    duration_secs: f64,
    /// Stop after this many conversations (whichever comes first).
    #[arg(long)]
    conversations: Option<u64>,
    /// Distinct users (the OpenAI `user` field).
    #[arg(long, default_value_t = 20)]
    users: u64,
    /// Share of answers that get a thumbs.
    #[arg(long, default_value_t = 0.7)]
    feedback_rate: f64,
    /// Share of thumbs that contradict the grader.
    #[arg(long, default_value_t = 0.05)]
    noise: f64,
    /// Mean seconds between an answer and its thumbs (exponential).
    #[arg(long, default_value_t = 2.0)]
    feedback_delay_secs: f64,
    /// Share of failed answers whose user asks again (once, reworded, in
    /// the same episode).
    #[arg(long, default_value_t = 0.3)]
    reask_rate: f64,
    /// The thumbs' feedback metric.
    #[arg(long, default_value = "thumbs_up")]
    metric: String,
    /// Seed of every random choice (prompts, users, thumbs, delays).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Conversations in progress at most; arrivals beyond are dropped and
    /// counted.
    #[arg(long, default_value_t = 32)]
    max_in_flight: usize,
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Do not send the items' `response_format`.
    #[arg(long)]
    no_response_format: bool,
    /// Seconds before a request is abandoned (an error).
    #[arg(long, default_value_t = 120.0)]
    request_timeout_secs: f64,
    /// Also write the summary as JSON here.
    #[arg(long)]
    summary: Option<PathBuf>,
    #[command(flatten)]
    options: GraderArgs,
    #[command(flatten)]
    keys: KeyArgs,
}

fn secs(name: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .with_context(|| format!("{name} must be a number of seconds ≥ 0"))
}

pub fn run(args: Args) -> Result<ExitCode> {
    let items = read_dataset(&args.dataset, args.keys.keyring()?.as_ref())?;
    if items.is_empty() {
        bail!("{}: no items", args.dataset.display());
    }
    let grader = Arc::new(load_grader(&args.grader, &args.options.options()?)?);
    let settings = Settings {
        route: args.route,
        rate: args.rate,
        duration: secs("--duration-secs", args.duration_secs)?,
        max_conversations: args.conversations,
        users: args.users,
        feedback_rate: args.feedback_rate,
        noise: args.noise,
        feedback_delay: secs("--feedback-delay-secs", args.feedback_delay_secs)?,
        reask_rate: args.reask_rate,
        metric: args.metric,
        seed: args.seed,
        max_in_flight: args.max_in_flight,
        params: RequestParams {
            temperature: args.temperature,
            max_tokens: args.max_tokens,
            response_format: !args.no_response_format,
            timeout: secs("--request-timeout-secs", args.request_timeout_secs)?,
        },
    };
    settings.check()?;
    let gateway = Gateway::new(&args.gateway, args.api_key);
    eprintln!(
        "simulating {} users on route {} at {}/s for {:.0}s ({} prompts from {})",
        settings.users,
        settings.route,
        settings.rate,
        settings.duration.as_secs_f64(),
        items.len(),
        args.dataset.display()
    );
    let printer = ProgressPrinter::new();
    let summary = runtime()?.block_on(simulate::run(
        gateway,
        grader,
        Arc::new(items),
        settings,
        &|p: &Progress| printer.print(p),
    ));
    printer.finish();
    print!("{}", table(&summary));
    if let Some(path) = &args.summary {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    // Every request failing is not a simulation, it is an outage or a bad route.
    Ok(
        if summary.total.requests > 0 && summary.total.answered == 0 {
            eprintln!("no request was answered: {:?}", summary.first_errors);
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// One line per second on a terminal (rewritten in place), one every ten
/// seconds in a log.
struct ProgressPrinter {
    tty: bool,
    last: Mutex<Option<Instant>>,
}

impl ProgressPrinter {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last: Mutex::new(None),
        }
    }

    fn print(&self, p: &Progress) {
        let line = progress_line(p);
        if self.tty {
            eprint!("\r{line}\x1b[K");
            return;
        }
        let mut last = self.last.lock();
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            eprintln!("{line}");
            *last = Some(Instant::now());
        }
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

fn progress_line(p: &Progress) -> String {
    let planned = p.planned.as_secs_f64().max(1e-9);
    let done = (p.elapsed.as_secs_f64() / planned).min(1.0);
    let bar_len = 20;
    let filled = (done * bar_len as f64) as usize;
    let phase = if p.draining {
        format!("draining, {} in flight", p.in_flight)
    } else {
        format!(
            "{:.0}s/{:.0}s, about {:.0}s left",
            p.elapsed.as_secs_f64(),
            planned,
            (planned - p.elapsed.as_secs_f64()).max(0.0)
        )
    };
    let t = &p.total;
    format!(
        "[{}{}] {phase}  conversations {}  answered {}/{}  errors {}  pass {}  thumbs {}  re-asks {}  dropped {}",
        "#".repeat(filled),
        ".".repeat(bar_len - filled),
        p.conversations,
        t.answered,
        t.requests,
        t.errors,
        percent(t.pass_rate()),
        t.feedback_sent,
        t.reasks,
        p.dropped,
    )
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".into(), |r| format!("{:.0}%", r * 100.0))
}

/// The summary as a table a person reads: one row per variant, then all.
fn table(s: &Summary) -> String {
    let mut out = format!(
        "\n{} conversations in {:.0}s ({} dropped)\n\n| variant | requests | answered | errors | pass | thumbs | re-asks | cost per answer |\n|---|---|---|---|---|---|---|---|\n",
        s.conversations, s.elapsed_secs, s.dropped
    );
    let row = |name: &str, c: &Counts| {
        format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |\n",
            c.requests,
            c.answered,
            c.errors,
            percent(c.pass_rate()),
            c.feedback_sent,
            c.reasks,
            if c.answered > 0 {
                format!("${:.6}", c.cost_usd / c.answered as f64)
            } else {
                "–".into()
            }
        )
    };
    for (name, c) in &s.variants {
        out.push_str(&row(name, c));
    }
    out.push_str(&row("all", &s.total));
    if !s.first_errors.is_empty() {
        out.push_str("\nfirst errors:\n");
        for e in &s.first_errors {
            out.push_str(&format!("- {e}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_table_has_a_row_per_variant_and_a_total() {
        let c = Counts {
            requests: 4,
            answered: 4,
            passed: 3,
            cost_usd: 0.004,
            ..Counts::default()
        };
        let s = Summary {
            conversations: 4,
            dropped: 1,
            elapsed_secs: 10.0,
            total: c.clone(),
            variants: BTreeMap::from([("base".to_owned(), c)]),
            first_errors: vec!["HTTP 502".into()],
        };
        let t = table(&s);
        assert!(
            t.contains("| base | 4 | 4 | 0 | 75% | 0 | 0 | $0.001000 |"),
            "{t}"
        );
        assert!(t.contains("| all | 4 |"), "{t}");
        assert!(t.contains("(1 dropped)") && t.contains("- HTTP 502"), "{t}");
    }

    #[test]
    fn the_progress_line_says_how_long_is_left() {
        let p = Progress {
            elapsed: Duration::from_secs(15),
            planned: Duration::from_secs(60),
            conversations: 30,
            in_flight: 2,
            dropped: 0,
            total: Counts::default(),
            draining: false,
        };
        let line = progress_line(&p);
        assert!(line.starts_with("[#####..............."), "{line}");
        assert!(line.contains("15s/60s, about 45s left"), "{line}");
        let draining = progress_line(&Progress {
            draining: true,
            ..p
        });
        assert!(draining.contains("draining, 2 in flight"), "{draining}");
    }
}
