//! `flywheel-tuner train`: GRPO with LoRA on a local model directory, the
//! rewards from a grader ([`flywheel_tuner::rft`] on [`flywheel_trainer`]).

use std::{io::Write, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use flywheel_trainer::{
    loss::{LossConfig, LossType, ScaleRewards},
    optim::{AdamWConfig, LrSchedule, ScheduleKind},
    LoraConfig, SamplingConfig, Trainer, TrainerConfig,
};
use flywheel_tuner::rft::{LoopConfig, StepRecord};

use super::{
    files::{load_grader, read_dataset},
    options::{ClickHouseArgs, GraderArgs, KeyArgs},
    runtime,
};

/// `flywheel-tuner train` flags (the GRPO LoRA trainer's knobs).
#[derive(clap::Args)]
pub struct Args {
    /// HF-style model directory to train (e.g. the engine's SmolLM2 dir).
    #[arg(long)]
    model: PathBuf,
    /// Training prompts (JSONL).
    #[arg(long)]
    train: PathBuf,
    /// Held-out prompts (JSONL), scored greedily every --eval-every steps.
    #[arg(long)]
    heldout: Option<PathBuf>,
    /// The reward: a grader config (JSON).
    #[arg(long)]
    grader: PathBuf,
    /// Run directory: checkpoint/, best/adapter (PEFT), best/merged (HF dir
    /// the engine deploys), metrics.jsonl, summary.json.
    #[arg(long)]
    out: PathBuf,
    /// Continue from `<out>/checkpoint` (same data and flags).
    #[arg(long)]
    resume: bool,
    /// Optimizer steps in all.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    #[arg(long, default_value_t = 1)]
    prompts_per_step: usize,
    /// Completions per prompt (G).
    #[arg(long, default_value_t = 8)]
    generations: usize,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// constant, linear or cosine (HF semantics), after --warmup-steps.
    #[arg(long, value_enum, default_value_t = Schedule::Constant, hide_possible_values = true)]
    schedule: Schedule,
    #[arg(long, default_value_t = 0)]
    warmup_steps: usize,
    #[arg(long, default_value_t = 16)]
    rank: usize,
    #[arg(long, default_value_t = 32.0)]
    alpha: f64,
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// grpo, dr_grpo or dapo (how the token losses are normalised).
    #[arg(long, value_enum, default_value_t = Loss::Dapo, hide_possible_values = true)]
    loss: Loss,
    /// group, batch or none (advantage std scaling; none = Dr. GRPO).
    #[arg(long, value_enum, default_value_t = Scale::Group, hide_possible_values = true)]
    scale_rewards: Scale,
    #[arg(long, default_value_t = 0.2)]
    epsilon: f64,
    /// Upper clip (DAPO: 0.28).
    #[arg(long, default_value_t = 0.2)]
    epsilon_high: f64,
    /// KL coefficient against the base (LoRA off); 0 skips the reference pass.
    #[arg(long, default_value_t = 0.0)]
    beta: f64,
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// When no completion of a group passes, train on the item's reference
    /// answer in place of one completion (mixed-policy GRPO): for answers
    /// the model never samples on its own. Needs reference answers.
    #[arg(long)]
    guide: bool,
    /// Sequences per forward/backward pass (gradients accumulate over them).
    #[arg(long, default_value_t = 8)]
    micro_batch: usize,
    #[arg(long, default_value_t = 10)]
    eval_every: usize,
    #[arg(long, default_value_t = 20)]
    eval_items: usize,
    #[arg(long, default_value_t = 96)]
    eval_max_tokens: usize,
    /// Held-out evaluations without improvement before stopping (0: never).
    #[arg(long, default_value_t = 0)]
    patience: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write every step to ClickHouse (`training_steps`).
    #[arg(long)]
    store: bool,
    /// Run id in `training_steps` (default: the --out directory name).
    #[arg(long)]
    run_id: Option<String>,
    /// Exit as soon as the process that started this one is gone. The tuner
    /// service starts its trainings with it: a service killed with SIGKILL
    /// cannot stop its child, and an orphan would go on writing the
    /// checkpoint that the restarted service's own trainer resumes from.
    #[arg(long)]
    exit_with_parent: bool,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    options: GraderArgs,
}

/// Watches the parent from a thread and exits (status 3) when this process
/// is re-parented, which is how Linux reports that the parent died. Polling
/// once a second needs no `unsafe` (`prctl(PR_SET_PDEATHSIG)` would); a
/// restarted service takes longer than that to reach its training stage
/// again.
// A plain thread may sleep; and exit is the point: the orphaned trainer has
// nothing to flush that the restarted service's trainer would want.
#[allow(clippy::disallowed_methods)]
fn exit_with_parent() {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        if std::os::unix::process::parent_id() != parent {
            // Not `eprintln!`: stderr is most likely a pipe to the dead
            // parent, and a failed print panics this thread instead of
            // exiting.
            let _ = writeln!(
                std::io::stderr(),
                "train: the process that started this training is gone; exiting"
            );
            std::process::exit(3);
        }
    });
}

// The trainer's enums, as flag values. The trainer does not depend on
// clap; these mirror them with the same snake_case names as their serde
// form (the `flag_values_are_the_trainers_names` test keeps them in step).
// The flags' docs name the values, so clap's own list is hidden.

/// `--schedule`: [`ScheduleKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
enum Schedule {
    Constant,
    Linear,
    Cosine,
}

impl From<Schedule> for ScheduleKind {
    fn from(s: Schedule) -> Self {
        match s {
            Schedule::Constant => ScheduleKind::Constant,
            Schedule::Linear => ScheduleKind::Linear,
            Schedule::Cosine => ScheduleKind::Cosine,
        }
    }
}

/// `--loss`: [`LossType`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
enum Loss {
    Grpo,
    DrGrpo,
    Dapo,
}

impl From<Loss> for LossType {
    fn from(l: Loss) -> Self {
        match l {
            Loss::Grpo => LossType::Grpo,
            Loss::DrGrpo => LossType::DrGrpo,
            Loss::Dapo => LossType::Dapo,
        }
    }
}

/// `--scale-rewards`: [`ScaleRewards`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
enum Scale {
    Group,
    Batch,
    None,
}

impl From<Scale> for ScaleRewards {
    fn from(s: Scale) -> Self {
        match s {
            Scale::Group => ScaleRewards::Group,
            Scale::Batch => ScaleRewards::Batch,
            Scale::None => ScaleRewards::None,
        }
    }
}

pub fn run(a: Args) -> Result<ExitCode> {
    if a.exit_with_parent {
        exit_with_parent();
    }
    let keys = a.keys.keyring()?;
    let train_items = read_dataset(&a.train, keys.as_ref())?;
    let heldout = a
        .heldout
        .as_deref()
        .map(|h| read_dataset(h, keys.as_ref()))
        .transpose()?
        .unwrap_or_default();
    if a.guide && train_items.iter().all(|i| i.reference_answer.is_none()) {
        bail!(
            "--guide: no item of {} has a reference_answer to guide with",
            a.train.display()
        );
    }
    let grader = Arc::new(load_grader(&a.grader, &a.options.options()?)?);
    let ckpt = a.out.join("checkpoint");
    let mut trainer = if a.resume {
        Trainer::resume(&ckpt).with_context(|| format!("resuming from {}", ckpt.display()))?
    } else {
        if !a.model.join("config.json").is_file() {
            bail!(
                "--model {}: not a model directory (no config.json)",
                a.model.display()
            );
        }
        let defaults = TrainerConfig::default();
        let cfg = TrainerConfig {
            lora: LoraConfig {
                rank: a.rank,
                alpha: a.alpha,
                dropout: a.dropout,
                ..LoraConfig::default()
            },
            loss: LossConfig {
                loss_type: a.loss.into(),
                scale_rewards: a.scale_rewards.into(),
                epsilon_low: a.epsilon,
                epsilon_high: a.epsilon_high,
                beta: a.beta,
            },
            sampling: SamplingConfig {
                temperature: a.temperature,
                top_p: a.top_p,
                top_k: 0,
                max_new_tokens: a.max_new_tokens,
            },
            num_generations: a.generations,
            optim: AdamWConfig {
                lr: a.lr,
                weight_decay: a.weight_decay,
                ..defaults.optim
            },
            schedule: LrSchedule {
                kind: a.schedule.into(),
                warmup_steps: a.warmup_steps,
                total_steps: a.steps,
                ..defaults.schedule
            },
            max_grad_norm: a.max_grad_norm,
            guide_failed_groups: a.guide,
            micro_batch_size: a.micro_batch,
            pass_threshold: grader.pass_threshold(),
            seed: a.seed,
            ..defaults
        };
        Trainer::new(&a.model, cfg)?
    };
    std::fs::create_dir_all(&a.out)?;
    let run_id = a.run_id.clone().unwrap_or_else(|| {
        a.out
            .file_name()
            .map_or("run".into(), |n| n.to_string_lossy().into_owned())
    });
    let store = a.store.then(|| a.clickhouse.store()).transpose()?;
    let runtime = runtime()?;
    if let Some(store) = &store {
        runtime
            .block_on(store.migrate())
            .context("migrating ClickHouse")?;
    }
    let loop_cfg = LoopConfig {
        steps: a.steps,
        prompts_per_step: a.prompts_per_step,
        eval_every: a.eval_every,
        eval_items: a.eval_items,
        eval_max_tokens: a.eval_max_tokens,
        patience: a.patience,
        seed: a.seed,
        out: a.out.clone(),
    };
    let mut metrics_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(a.out.join("metrics.jsonl"))?;
    let mut store_error = None;
    let mut on_step = |r: &StepRecord| {
        eprintln!("{}", progress_line(r, a.steps));
        let _ = writeln!(
            metrics_file,
            "{}",
            serde_json::to_string(r).unwrap_or_default()
        );
        if let Some(store) = &store {
            let row = r.row(&run_id, flywheel_feedback::now_ms());
            if let Err(e) = runtime.block_on(store.insert_rows("training_steps", &[row])) {
                // Training goes on; the metrics are in metrics.jsonl too.
                store_error.get_or_insert_with(|| e.to_string());
            }
        }
    };
    let summary = flywheel_tuner::rft::run(
        &mut trainer,
        grader,
        &train_items,
        &heldout,
        &loop_cfg,
        &mut on_step,
    )?;
    std::fs::write(
        a.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if let Some(e) = store_error {
        eprintln!(
            "warning: some steps were not stored in ClickHouse ({e}); metrics.jsonl has them all"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The console line of a step: a progress bar and the step's metrics.
fn progress_line(r: &StepRecord, steps: usize) -> String {
    let m = &r.metrics;
    let bar_len = 24;
    let filled = (r.step * bar_len / steps.max(1)).min(bar_len);
    format!(
        "[{}{}] step {:>4}/{}  reward {:.3}±{:.3}  pass {:.2}  kl {:.4}  entropy {:.2}  |g| {:.3}  len {:.1}  {:.1}s  {:.1} tok/s{}{}",
        "#".repeat(filled),
        ".".repeat(bar_len - filled),
        r.step,
        steps,
        m.reward_mean,
        m.reward_std,
        m.pass_rate,
        m.kl,
        m.entropy,
        m.grad_norm,
        m.response_len_mean,
        m.step_secs,
        m.tokens_per_sec,
        if m.guided > 0 { format!("  guided {}", m.guided) } else { String::new() },
        r.heldout_reward.map_or(String::new(), |h| format!("  held-out {h:.3}")),
    )
}

#[cfg(test)]
mod tests {
    use clap::{Parser, ValueEnum};
    use serde_json::Value;

    use super::*;
    use crate::cli::{Cli, Command};

    fn train(extra: &[&str]) -> Result<Box<Args>, clap::Error> {
        let base = [
            "flywheel-tuner",
            "train",
            "--model",
            "m",
            "--train",
            "t.jsonl",
            "--grader",
            "g.json",
            "--out",
            "o",
        ];
        let cli = Cli::try_parse_from(base.iter().chain(extra))?;
        let Command::Train(args) = cli.command else {
            panic!("not train")
        };
        Ok(args)
    }

    #[test]
    fn enum_defaults_and_values() {
        let a = train(&[]).unwrap();
        assert_eq!(
            (a.schedule, a.loss, a.scale_rewards),
            (Schedule::Constant, Loss::Dapo, Scale::Group)
        );
        let a = train(&[
            "--schedule",
            "cosine",
            "--loss",
            "dr_grpo",
            "--scale-rewards",
            "none",
        ])
        .unwrap();
        assert_eq!(ScheduleKind::from(a.schedule), ScheduleKind::Cosine);
        assert_eq!(LossType::from(a.loss), LossType::DrGrpo);
        assert_eq!(ScaleRewards::from(a.scale_rewards), ScaleRewards::None);
        assert!(train(&["--loss", "ppo"]).is_err());
        assert!(train(&["--schedule", "Cosine"]).is_err());
    }

    /// Each flag value is the serde name of the trainer variant it maps to
    /// (the names the trainer's config files and checkpoints use).
    #[test]
    fn flag_values_are_the_trainers_names() {
        fn check<T: ValueEnum, U: From<T> + serde::Serialize>() {
            for v in T::value_variants() {
                let name = v.to_possible_value().map(|p| p.get_name().to_owned());
                let serde_name = serde_json::to_value(U::from(v.clone())).unwrap();
                assert_eq!(name.map(Value::String), Some(serde_name));
            }
        }
        check::<Schedule, ScheduleKind>();
        check::<Loss, LossType>();
        check::<Scale, ScaleRewards>();
    }
}
