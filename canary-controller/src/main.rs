use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use flywheel_canary::{
    decision::{Guardrails, Threshold},
    sequential::Method,
};
use flywheel_canary_controller::{
    config::{controller_settings, ConnectionFlags, Connections, FileConfig},
    engines::{EngineAdmin, DEFAULT_UNLOAD_TIMEOUT},
    ops::{self, WeightsApplied},
    report,
    spec::EnginePlan,
    Action, CanaryStore, Controller, QualityMetric, Spec, Weights,
};
use flywheel_feedback::{now_ms, Store, StoreConfig};
use tracing_subscriber::EnvFilter;

/// Flywheel's canary controller and its CLI.
///
/// `run` is the controller: every interval it looks at each running
/// experiment (both arms of the current ramp step, from ClickHouse), decides
/// with an always-valid test on quality per dollar plus quality
/// non-inferiority and guardrails, records the evaluation in ClickHouse
/// (`canary_evaluations`) and moves the route's weights in Redis (the hash
/// the gateways poll). The other commands create, inspect and steer
/// experiments; manual actions are recorded as manual.
///
/// Access: the CLI talks to ClickHouse and Redis directly with the
/// operator's connection settings; there is no API in front of it. Only
/// someone holding those credentials (the ClickHouse user that can write the
/// Flywheel database, and the Redis that the gateways poll) can create or
/// steer experiments. Keep them as private as the gateway's admin token.
///
/// Logs: RUST_LOG (default `info`), to stderr.
#[derive(Parser)]
#[command(name = "flywheel-canary", version)]
struct Cli {
    /// TOML file with [clickhouse], [redis], [controller] and [engines]
    /// tables (keys as the flags without their prefix: url, database, user,
    /// password; url, key_prefix; interval_ms, settle_ms, latency_samples;
    /// admin_token, unload_timeout_ms). Flags and environment variables
    /// override it.
    #[arg(
        long,
        env = "FLYWHEEL_CANARY_CONFIG",
        global = true,
        help_heading = "Connections (flags > environment > --config file > default)"
    )]
    config: Option<PathBuf>,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
#[command(next_help_heading = "Connections (flags > environment > --config file > default)")]
struct ConnArgs {
    /// ClickHouse HTTP endpoint [default: http://127.0.0.1:8123].
    #[arg(long, env = "FLYWHEEL_CLICKHOUSE_URL", global = true)]
    clickhouse_url: Option<String>,
    /// Flywheel database (the gateway's capture.database) [default: flywheel].
    #[arg(long, env = "FLYWHEEL_CLICKHOUSE_DATABASE", global = true)]
    database: Option<String>,
    /// ClickHouse user.
    #[arg(long, env = "FLYWHEEL_CLICKHOUSE_USER", global = true)]
    clickhouse_user: Option<String>,
    /// ClickHouse password (prefer the environment variable).
    #[arg(
        long,
        env = "FLYWHEEL_CLICKHOUSE_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    clickhouse_password: Option<String>,
    /// Redis the gateways poll for weights (their redis.url) [default: redis://127.0.0.1:6379/0].
    #[arg(long, env = "FLYWHEEL_REDIS_URL", global = true)]
    redis_url: Option<String>,
    /// Prefix of every Redis key (the gateways' redis.key_prefix) [default: flywheel:].
    #[arg(long, env = "FLYWHEEL_REDIS_PREFIX", global = true)]
    redis_prefix: Option<String>,
    /// Recorded as the actor of manual actions [default: cli:$USER].
    #[arg(long, global = true)]
    actor: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the controller until SIGINT/SIGTERM.
    ///
    /// Each interval, per running experiment: finish a transition a crash
    /// cut short, make the route's weights match the recorded state, read
    /// both arms since the step began (minus --settle-ms), decide, record
    /// the evaluation, apply a promotion (next step; at the last step the
    /// candidate becomes the route's incumbent), rollback or keep-incumbent
    /// (candidate weight 0). ClickHouse down: nothing is decided. Redis
    /// down: looks are recorded as holds (redis_unavailable).
    Run {
        /// Time between looks, ms [default: 10000].
        #[arg(long)]
        interval_ms: Option<u64>,
        /// Requests in the first ms of a step are left out (gateways apply
        /// new weights within their weights_poll_ms) [default: 5000].
        #[arg(long)]
        settle_ms: Option<u64>,
        /// Latency/TTFT samples per arm for the rank tests; 0 turns the
        /// latency guardrails' data off [default: 2000].
        #[arg(long)]
        latency_samples: Option<u64>,
        /// One look at every experiment, then exit (waiting for the unloads
        /// it started).
        #[arg(long)]
        once: bool,
        /// Admin token of the engines (their --admin-token), used to unload
        /// the model versions experiments name; never stored in ClickHouse.
        /// Without it, unloads are recorded as failing.
        #[arg(long, env = "FLYWHEEL_ENGINE_ADMIN_TOKEN", hide_env_values = true)]
        engine_admin_token: Option<String>,
        /// Limit of one unload call, drain of in-flight requests included,
        /// ms; a call cut off is retried at the next look [default: 300000].
        #[arg(long)]
        unload_timeout_ms: Option<u64>,
    },
    /// Creates an experiment on a route and starts its first step.
    ///
    /// Both variants must exist in the gateways' route config (the
    /// candidate typically with weight 0: its first target the new model
    /// version, the incumbent's chain behind it). Other variants of the
    /// route keep their weights, so they should be 0.
    Create(Box<CreateArgs>),
    /// Lists experiments (active ones, or all with --all).
    List {
        /// Ended experiments too (completed, rolled back, incumbent kept).
        #[arg(long)]
        all: bool,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One experiment: step, weights, both arms, quality per dollar with its
    /// always-valid bound, quality, SRM, guardrails, last decisions.
    Status {
        /// Experiment id (or a unique prefix).
        id: String,
        /// Decisions to show.
        #[arg(long, default_value_t = 10)]
        last: u64,
        /// The experiment and its last evaluation rows as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stops decisions (weights stay at the current step).
    Pause(ManualArgs),
    /// Resumes decisions at the same step.
    Resume(ManualArgs),
    /// Moves to the next step now (from the step before the last: the
    /// candidate becomes the route's incumbent).
    Promote(ManualArgs),
    /// Sends all traffic back to the incumbent now (candidate weight 0).
    /// Also on a completed experiment within its grace period (create
    /// --grace-secs): the old incumbent's weights are restored at once and
    /// the candidate's version is unloaded; refused after it, saying why.
    Rollback(ManualArgs),
    /// Ends the experiment keeping the incumbent (candidate weight 0).
    KeepIncumbent(ManualArgs),
    /// Applies the ClickHouse migrations (run and create do it too).
    Migrate,
}

#[derive(Args)]
struct ManualArgs {
    /// Experiment id (or a unique prefix).
    id: String,
    /// Why, for the record.
    #[arg(long, default_value = "")]
    reason: String,
}

#[derive(Args)]
struct CreateArgs {
    /// The route (public model name).
    #[arg(long)]
    route: String,
    /// The variant serving today [default: the route's incumbent after its
    /// last completed experiment, from Redis].
    #[arg(long)]
    incumbent: Option<String>,
    /// The new variant.
    #[arg(long)]
    candidate: String,
    /// A feedback metric that counts as quality, `NAME[:WEIGHT][:invert]`
    /// (repeat to mix: explicit feedback, online grader scores, implicit
    /// signals; `invert` for metrics where 1 is bad). Quality per request is
    /// the weighted mean of the metrics it has; none is no data.
    #[arg(long = "metric", required_unless_present = "spec")]
    metrics: Vec<String>,
    /// Ramp steps, `shadow` or percentages, ending at 100.
    #[arg(long, default_value = "shadow,1,5,25,50,100")]
    steps: String,
    /// One-sided error rate of every always-valid test.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// Always-valid test: msprt (one-sided mixture SPRT) or
    /// confidence-sequence (Waudby-Smith's asymptotic CS at 2α).
    #[arg(long, default_value = "msprt")]
    method: String,
    /// Total graded requests (both arms) at which the bounds are tightest.
    #[arg(long, default_value_t = 2000.0)]
    n_star: f64,
    /// The lower bound of the candidate's quality-per-dollar advantage
    /// (R_C/R_I − 1) must exceed this to promote (0.05 = 5 %).
    #[arg(long, default_value_t = 0.0)]
    primary_margin: f64,
    /// Non-inferiority margin on mean quality (absolute): the candidate's
    /// quality may be at most this much lower. With 0, promotion needs
    /// quality proven better; a positive margin (e.g. 0.02) lets an
    /// equally good but cheaper candidate through.
    #[arg(long, default_value_t = 0.0)]
    quality_margin: f64,
    /// Graded requests per arm before anything but a rollback.
    #[arg(long, default_value_t = 100)]
    min_samples: u64,
    /// Graded requests (quality) or requests (cost) per arm before a proven
    /// quality or cost regression rolls back (smaller samples have
    /// unreliable variances; error rates need no minimum).
    #[arg(long, default_value_t = 10)]
    min_rollback_samples: u64,
    /// Minimum time on a step before a promotion, s.
    #[arg(long, default_value_t = 3600)]
    min_step_secs: u64,
    /// At this time on a step, an inconclusive step keeps the incumbent, s.
    #[arg(long, default_value_t = 72 * 3600)]
    max_step_secs: u64,
    /// Sample-ratio mismatch below this p-value holds.
    #[arg(long, default_value_t = 0.001)]
    srm_threshold: f64,
    /// Two-sided confidence of the Hodges-Lehmann latency intervals.
    #[arg(long, default_value_t = 0.98)]
    latency_confidence: f64,
    /// A guardrail's thresholds, `NAME=ALLOWED:CRITICAL` or `NAME=off`;
    /// names error_rate, fallback_rate (absolute increases, 0.01 = 1 point),
    /// p95_latency, ttft, cost_per_request (relative, 0.2 = +20 %).
    /// Defaults: error_rate=0.01:0.05 fallback_rate=0.02:0.10
    /// p95_latency=0.2:1.0 ttft=0.2:1.0 cost_per_request=0.1:0.5.
    #[arg(long = "guardrail")]
    guardrails: Vec<String>,
    /// Sum of the two arms' weights in Redis (10000: 0.01 % steps).
    #[arg(long, default_value_t = 10_000)]
    weight_scale: u32,
    /// Share of requests mirrored to the candidate during shadow steps.
    #[arg(long, default_value_t = 1.0)]
    shadow_fraction: f64,
    /// The whole spec as JSON (settings, steps, quality, weight_scale,
    /// shadow_fraction; missing keys take their defaults); replaces the
    /// flags above.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Who or what asked for it (e.g. tuner:RUN_ID) [default: the actor].
    #[arg(long)]
    origin: Option<String>,
    /// The candidate's model version on the engine pool (the model name
    /// its first target asks the engines for): unloaded from every --engine
    /// once the experiment ends without promoting it (rollback, automatic
    /// or manual; incumbent kept), after its weight is 0 and --settle-ms.
    #[arg(long, help_heading = "Engine pool")]
    candidate_model: Option<String>,
    /// The incumbent's model version on the engine pool: kept loaded for
    /// --grace-secs after the candidate is promoted to 100 % (an instant
    /// manual rollback), then unloaded.
    #[arg(long, help_heading = "Engine pool")]
    incumbent_model: Option<String>,
    /// An engine replica's base URL, http://HOST:PORT (repeat for each
    /// replica). The admin token is the controller's
    /// (FLYWHEEL_ENGINE_ADMIN_TOKEN), never stored with the experiment.
    #[arg(long = "engine", help_heading = "Engine pool")]
    engines: Vec<String>,
    /// After a promotion, how long `rollback` may still restore the
    /// incumbent at once; the old version (--incumbent-model) is unloaded
    /// when it ends, s [default: 3600].
    #[arg(long, help_heading = "Engine pool")]
    grace_secs: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let file = match &cli.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let conn = Connections::resolve(
        ConnectionFlags {
            clickhouse_url: cli.conn.clickhouse_url,
            database: cli.conn.database,
            user: cli.conn.clickhouse_user,
            password: cli.conn.clickhouse_password,
            redis_url: cli.conn.redis_url,
            redis_prefix: cli.conn.redis_prefix,
        },
        &file,
    );
    let actor = cli.conn.actor.unwrap_or_else(|| {
        format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        )
    });
    let raw = Store::try_new(&StoreConfig {
        url: conn.clickhouse_url.clone(),
        database: conn.database.clone(),
        user: conn.user.clone(),
        password: conn.password.clone(),
    })?;
    let store = CanaryStore::new(raw.clone());
    let weights = Weights::connect(&conn.redis_url, &conn.redis_prefix)?;

    match cli.command {
        Command::Run {
            interval_ms,
            settle_ms,
            latency_samples,
            once,
            engine_admin_token,
            unload_timeout_ms,
        } => {
            let cfg = controller_settings(interval_ms, settle_ms, latency_samples, &file);
            let engines = EngineAdmin::new(
                engine_admin_token.or(file.engines.admin_token.clone()),
                unload_timeout_ms
                    .or(file.engines.unload_timeout_ms)
                    .map_or(DEFAULT_UNLOAD_TIMEOUT, std::time::Duration::from_millis),
            )?;
            // Wait for ClickHouse to migrate: the controller needs its tables.
            loop {
                match raw.migrate().await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "ClickHouse unavailable; retrying the migrations");
                        tokio::time::sleep(cfg.interval).await;
                    }
                }
            }
            let controller = Controller::new(store, weights, cfg.clone()).with_engines(engines);
            if once {
                let report = controller.tick().await;
                controller.wait_unloads().await;
                println!("{report:?}");
                return Ok(());
            }
            tracing::info!(
                interval_ms = cfg.interval.as_millis() as u64,
                settle_ms = cfg.settle.as_millis() as u64,
                "canary controller running"
            );
            println!("canary controller running");
            controller.run(shutdown_signal()).await;
            Ok(())
        }
        Command::Migrate => {
            let applied = raw.migrate().await?;
            println!("applied migrations: {applied:?}");
            Ok(())
        }
        Command::Create(args) => {
            raw.migrate().await.context("migrations")?;
            let args = *args;
            let spec = spec_of(&args)?;
            let incumbent = match args.incumbent {
                Some(i) => i,
                None => weights
                    .incumbent(&args.route)
                    .await
                    .ok()
                    .flatten()
                    .context("--incumbent is required (no completed experiment names one)")?,
            };
            let origin = args.origin.unwrap_or_else(|| actor.clone());
            let (exp, applied) = ops::create(
                &store,
                &weights,
                ops::NewExperiment {
                    route: &args.route,
                    incumbent: &incumbent,
                    candidate: &args.candidate,
                    spec,
                    origin: &origin,
                    actor: &actor,
                },
            )
            .await?;
            println!("{}", exp.id);
            warn_weights(&applied);
            Ok(())
        }
        Command::List { all, json } => {
            let experiments: Vec<_> = store
                .experiments()
                .await?
                .into_iter()
                .filter(|e| all || e.status.is_active())
                .collect();
            if json {
                for e in &experiments {
                    println!("{}", serde_json::to_string(&e.to_row())?);
                }
                return Ok(());
            }
            let mut incumbents = BTreeMap::new();
            let mut routes: Vec<&str> = experiments.iter().map(|e| e.route.as_str()).collect();
            routes.dedup();
            for r in routes {
                if let Ok(Some(v)) = weights.incumbent(r).await {
                    incumbents.insert(r.to_owned(), v);
                }
            }
            print!("{}", report::list(&experiments, &incumbents));
            Ok(())
        }
        Command::Status { id, last, json } => {
            let exp = store.experiment(&id).await?;
            let evaluations = store.evaluations(&exp.id, last.max(1)).await?;
            if json {
                let v = serde_json::json!({
                    "experiment": exp.to_row(),
                    "evaluations": evaluations,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let live = weights.get(&exp.route).await.ok();
            let unloads = store.unload_records(&exp.id).await?;
            print!(
                "{}",
                report::status(&exp, live.as_ref(), &evaluations, now_ms())
            );
            print!("{}", report::engines(&exp, &unloads, now_ms()));
            Ok(())
        }
        Command::Pause(m) => manual(&store, &weights, m, Action::Pause, &actor).await,
        Command::Resume(m) => manual(&store, &weights, m, Action::Resume, &actor).await,
        Command::Promote(m) => manual(&store, &weights, m, Action::Promote, &actor).await,
        Command::Rollback(m) => manual(&store, &weights, m, Action::Rollback, &actor).await,
        Command::KeepIncumbent(m) => {
            manual(&store, &weights, m, Action::KeepIncumbent, &actor).await
        }
    }
}

async fn manual(
    store: &CanaryStore,
    weights: &Weights,
    m: ManualArgs,
    action: Action,
    actor: &str,
) -> anyhow::Result<()> {
    let (exp, applied) = ops::manual(store, weights, &m.id, action, actor, &m.reason).await?;
    let (wi, wc) = exp.weights();
    println!(
        "{}: {} at step {}; weights {} {} / {} {}",
        exp.id,
        exp.status.name(),
        exp.step_name(),
        exp.incumbent,
        wi,
        exp.candidate,
        wc
    );
    warn_weights(&applied);
    Ok(())
}

fn warn_weights(applied: &WeightsApplied) {
    if let WeightsApplied::Later(e) = applied {
        eprintln!(
            "warning: recorded, but the weights were not written ({e}); the controller writes them once Redis answers"
        );
    }
}

/// The engine flags over the spec's engine plan (a --spec file's, or the
/// default).
fn engine_plan(args: &CreateArgs, mut plan: EnginePlan) -> EnginePlan {
    if args.candidate_model.is_some() {
        plan.candidate_model = args.candidate_model.clone();
    }
    if args.incumbent_model.is_some() {
        plan.incumbent_model = args.incumbent_model.clone();
    }
    if !args.engines.is_empty() {
        plan.engines = args.engines.clone();
    }
    if let Some(g) = args.grace_secs {
        plan.grace_secs = g;
    }
    plan
}

fn spec_of(args: &CreateArgs) -> anyhow::Result<Spec> {
    if let Some(path) = &args.spec {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut spec: Spec = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a spec", path.display()))?;
        spec.engine = engine_plan(args, spec.engine);
        spec.validate()?;
        return Ok(spec);
    }
    let method = match args.method.as_str() {
        "msprt" => Method::Msprt,
        "confidence-sequence" | "confidence_sequence" | "cs" => Method::ConfidenceSequence,
        other => bail!("--method {other:?}: use msprt or confidence-sequence"),
    };
    let mut guardrails = Guardrails::default();
    for g in &args.guardrails {
        let (name, value) = g
            .split_once('=')
            .with_context(|| format!("--guardrail {g:?}: use NAME=ALLOWED:CRITICAL or NAME=off"))?;
        let threshold = if value == "off" {
            None
        } else {
            let (a, c) = value
                .split_once(':')
                .with_context(|| format!("--guardrail {g:?}: use NAME=ALLOWED:CRITICAL"))?;
            Some(Threshold {
                allowed: a.parse().with_context(|| format!("--guardrail {g:?}"))?,
                critical: c.parse().with_context(|| format!("--guardrail {g:?}"))?,
            })
        };
        let slot = match name {
            "error_rate" => &mut guardrails.error_rate,
            "fallback_rate" => &mut guardrails.fallback_rate,
            "p95_latency" => &mut guardrails.p95_latency,
            "ttft" => &mut guardrails.ttft,
            "cost_per_request" => &mut guardrails.cost_per_request,
            other => bail!("--guardrail: unknown guardrail {other:?}"),
        };
        *slot = threshold;
    }
    let spec = Spec {
        settings: flywheel_canary::Settings {
            alpha: args.alpha,
            method,
            n_star: args.n_star,
            primary_margin: args.primary_margin,
            quality_margin: args.quality_margin,
            min_samples_per_arm: args.min_samples,
            min_rollback_samples: args.min_rollback_samples,
            min_step_secs: args.min_step_secs,
            max_step_secs: args.max_step_secs,
            srm_threshold: args.srm_threshold,
            latency_confidence: args.latency_confidence,
            guardrails,
        },
        steps: Spec::parse_steps(&args.steps)?,
        quality: args
            .metrics
            .iter()
            .map(|m| QualityMetric::parse(m))
            .collect::<Result<_, _>>()?,
        weight_scale: args.weight_scale,
        shadow_fraction: args.shadow_fraction,
        engine: engine_plan(args, EnginePlan::default()),
    };
    spec.validate()?;
    Ok(spec)
}

async fn shutdown_signal() {
    flywheel_listener::shutdown_signal().await;
    tracing::info!("canary controller stopping");
}
