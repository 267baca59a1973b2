//! `flywheel-tuner train`: the RFT loop around [`flywheel_trainer::Trainer`].
//! Prompts come from a training JSONL (cycled in a seeded order), rewards
//! from the task's grader, and every `eval_every` steps the held-out split
//! is answered greedily and graded: the best held-out reward so far is
//! what gets exported, and training stops early when it has not improved
//! for `patience` evaluations.
//!
//! A grader error stops training: a reward that cannot be computed must not
//! be trained on as if it were a 0.
//!
//! What the model wrote is kept next to the numbers, because a reward curve
//! alone does not say whether the policy learned the task or collapsed onto
//! one answer: `samples.jsonl` holds every training completion with its
//! reward and advantage, `heldout.jsonl` every greedy held-out answer with
//! its score.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{bail, Context, Result};
use flywheel_trainer::{ChatMessage, PromptItem, StepMetrics, Trainer};
use serde::Serialize;

use crate::{
    grader::Grader,
    item::{Item, Sample},
};

/// How the loop runs (the trainer's own knobs are in [`flywheel_trainer::TrainerConfig`]).
#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub steps: usize,
    pub prompts_per_step: usize,
    /// Evaluate the held-out split every N steps (0: only at the start and end).
    pub eval_every: usize,
    /// Held-out items scored per evaluation (the first N).
    pub eval_items: usize,
    pub eval_max_tokens: usize,
    /// Evaluations without improvement before stopping (0: never stop early).
    pub patience: usize,
    pub seed: u64,
    pub out: PathBuf,
}

/// One line of `metrics.jsonl` and one `training_steps` row.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub step: usize,
    #[serde(flatten)]
    pub metrics: StepSummary,
    pub heldout_reward: Option<f64>,
}

impl StepRecord {
    /// The step's `training_steps` row.
    pub fn row(&self, run_id: &str, ts_ms: u64) -> flywheel_feedback::store::rows::TrainingStepRow {
        let m = &self.metrics;
        flywheel_feedback::store::rows::TrainingStepRow {
            run_id: run_id.to_owned(),
            step: self.step as u32,
            ts_ms,
            loss: m.loss,
            reward_mean: m.reward_mean,
            reward_std: m.reward_std,
            pass_rate: m.pass_rate,
            kl: m.kl,
            entropy: m.entropy,
            grad_norm: m.grad_norm,
            learning_rate: m.lr,
            response_len_mean: m.response_len_mean,
            step_secs: m.step_secs,
            tokens_per_sec: m.tokens_per_sec,
            heldout_reward: self.heldout_reward,
        }
    }
}

/// [`StepMetrics`] without the per-completion samples.
#[derive(Debug, Clone, Serialize)]
pub struct StepSummary {
    pub loss: f64,
    pub reward_mean: f64,
    pub reward_std: f64,
    pub pass_rate: f64,
    pub kl: f64,
    pub entropy: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub response_len_mean: f64,
    pub step_secs: f64,
    pub tokens_per_sec: f64,
    /// Groups trained on their prompt's guide (`--guide`; 0 without it).
    pub guided: usize,
}

impl From<&StepMetrics> for StepSummary {
    fn from(m: &StepMetrics) -> Self {
        Self {
            loss: m.loss,
            reward_mean: m.reward_mean,
            reward_std: m.reward_std,
            pass_rate: m.pass_rate,
            kl: m.kl,
            entropy: m.entropy,
            grad_norm: m.grad_norm,
            lr: m.lr,
            response_len_mean: m.response_len_mean,
            step_secs: m.step_secs,
            tokens_per_sec: m.tokens_per_sec,
            guided: m.guided,
        }
    }
}

/// What a run did, written to `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub steps: usize,
    pub stopped_early: bool,
    pub heldout_before: f64,
    pub heldout_best: f64,
    pub best_step: usize,
    pub wall_secs: f64,
    pub mean_step_secs: f64,
    pub mean_tokens_per_sec: f64,
}

/// The trainer's prompt for an item; its reference answer, as text (a JSON
/// reference compactly serialised), is the guide `--guide` trains on.
pub fn prompt_of(item: &Item, index: usize) -> PromptItem {
    PromptItem {
        id: format!("{index}"),
        messages: item
            .prompt()
            .iter()
            .map(|m| ChatMessage::new(&m.role, &m.text()))
            .collect(),
        meta: serde_json::Value::Null,
        guide: item.reference_answer.as_ref().map(crate::item::answer_text),
    }
}

/// One greedy held-out answer, a line of `heldout.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct HeldoutAnswer {
    pub step: usize,
    pub item: String,
    pub score: f64,
    pub text: String,
}

/// Mean grader score of greedy answers to `items` (grader errors abort),
/// and the answers.
pub fn heldout_reward(
    trainer: &mut Trainer,
    grader: &Grader,
    items: &[Item],
    max_tokens: usize,
) -> Result<(f64, Vec<HeldoutAnswer>)> {
    let mut answers = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let text = trainer.complete(&prompt_of(item, i).messages, max_tokens)?;
        let grade = grader
            .grade(&Sample::from_text(text.clone()), item)
            .with_context(|| format!("grading held-out item {}", item.id()))?;
        answers.push(HeldoutAnswer {
            step: trainer.step_count(),
            item: item.id(),
            score: grade.score,
            text,
        });
    }
    let mean = answers.iter().map(|a| a.score).sum::<f64>() / items.len().max(1) as f64;
    Ok((mean, answers))
}

/// Appends `rows` as JSON lines to `path`.
fn append_jsonl<T: Serialize>(path: &Path, rows: impl IntoIterator<Item = T>) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?,
    );
    for row in rows {
        serde_json::to_writer(&mut out, &row)?;
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}

/// Runs the loop; `on_step` sees every record (console, ClickHouse).
pub fn run(
    trainer: &mut Trainer,
    grader: Arc<Grader>,
    train: &[Item],
    heldout: &[Item],
    cfg: &LoopConfig,
    on_step: &mut dyn FnMut(&StepRecord),
) -> Result<Summary> {
    if train.is_empty() {
        bail!("no training items");
    }
    let started = std::time::Instant::now();
    let heldout = &heldout[..heldout.len().min(cfg.eval_items)];
    // A seeded order, cycled: every prompt is seen once before any twice.
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut rng = crate::tasks::Rng::new(cfg.seed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.next_u64() as usize % (i + 1));
    }
    let mut cursor = trainer.step_count() * cfg.prompts_per_step;
    let best_dir = cfg.out.join("best");
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    let (samples_log, heldout_log) = (cfg.out.join("samples.jsonl"), cfg.out.join("heldout.jsonl"));
    let evaluate = |trainer: &mut Trainer| -> Result<f64> {
        let (mean, answers) = heldout_reward(trainer, &grader, heldout, cfg.eval_max_tokens)?;
        append_jsonl(&heldout_log, answers)?;
        Ok(mean)
    };
    let before = if heldout.is_empty() {
        f64::NAN
    } else {
        evaluate(trainer)?
    };
    let (mut best, mut best_step, mut since_best) = (before, trainer.step_count(), 0);
    export(trainer, &best_dir)?;
    let (mut step_secs, mut tps, mut done) = (0.0, 0.0, 0);
    let mut stopped_early = false;
    while trainer.step_count() < cfg.steps {
        let batch: Vec<usize> = (0..cfg.prompts_per_step)
            .map(|k| order[(cursor + k) % order.len()])
            .collect();
        cursor += cfg.prompts_per_step;
        let prompts: Vec<PromptItem> = batch.iter().map(|&i| prompt_of(&train[i], i)).collect();
        let g = grader.clone();
        let metrics = trainer.step(&prompts, move |p, text| {
            // `prompt_of` made the id from the item's index in `train`.
            let item =
                p.id.parse::<usize>()
                    .ok()
                    .and_then(|i| train.get(i))
                    .with_context(|| format!("prompt id {:?} is no train item", p.id))?;
            Ok(g.grade(&Sample::from_text(text), item)
                .with_context(|| format!("grading train item {}", item.id()))?
                .score)
        })?;
        append_jsonl(
            &samples_log,
            metrics
                .samples
                .iter()
                .map(|s| serde_json::json!({"step": metrics.step, "sample": s})),
        )?;
        done += 1;
        step_secs += metrics.step_secs;
        tps += metrics.tokens_per_sec;
        let step = trainer.step_count();
        let last = step >= cfg.steps;
        let due = !heldout.is_empty()
            && (last || (cfg.eval_every > 0 && step.is_multiple_of(cfg.eval_every)));
        let heldout_reward = if due { Some(evaluate(trainer)?) } else { None };
        trainer.save_checkpoint(cfg.out.join("checkpoint"))?;
        on_step(&StepRecord {
            step,
            metrics: StepSummary::from(&metrics),
            heldout_reward,
        });
        if let Some(r) = heldout_reward {
            if r > best {
                (best, best_step, since_best) = (r, step, 0);
                export(trainer, &best_dir)?;
            } else {
                since_best += 1;
                if cfg.patience > 0 && since_best >= cfg.patience {
                    stopped_early = true;
                    break;
                }
            }
        }
    }
    Ok(Summary {
        steps: trainer.step_count(),
        stopped_early,
        heldout_before: before,
        heldout_best: best,
        best_step,
        wall_secs: started.elapsed().as_secs_f64(),
        mean_step_secs: step_secs / done.max(1) as f64,
        mean_tokens_per_sec: tps / done.max(1) as f64,
    })
}

/// The PEFT adapter and the merged model directory of the current weights.
fn export(trainer: &Trainer, dir: &Path) -> Result<()> {
    trainer.export_adapter(dir.join("adapter"))?;
    trainer.export_merged(dir.join("merged"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use flywheel_trainer::{
        testing::{real_model_dir, tiny_config, write_tiny_model},
        Arch, TrainerConfig,
    };
    use serde_json::json;

    use super::*;
    use crate::item::Message;

    fn items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| {
                Item::new(
                    vec![Message::new("user", format!("say something {i}"))],
                    None,
                )
            })
            .collect()
    }

    fn tiny_trainer(dir: &Path) -> Trainer {
        // SmolLM2's tokenizer on a tiny random model of the same vocabulary.
        write_tiny_model(
            &dir.join("model"),
            &tiny_config(Arch::Llama, 49152),
            3,
            1.0,
            Some(&real_model_dir()),
        )
        .unwrap();
        let mut cfg = TrainerConfig {
            num_generations: 4,
            ..TrainerConfig::default()
        };
        cfg.sampling.max_new_tokens = 6;
        cfg.optim.lr = 1e-2;
        Trainer::new(dir.join("model"), cfg).unwrap()
    }

    fn loop_cfg(out: &Path, steps: usize) -> LoopConfig {
        LoopConfig {
            steps,
            prompts_per_step: 2,
            eval_every: 1,
            eval_items: 2,
            eval_max_tokens: 6,
            patience: 0,
            seed: 1,
            out: out.to_owned(),
        }
    }

    /// Two steps write two records with held-out rewards, export the best
    /// adapter and merged model, and a resumed trainer goes on from step 2.
    #[test]
    fn loop_records_exports_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let grader = Arc::new(Grader::from_config(&json!({"type": "regex", "name": "e", "input": "{{sample.output_text}}", "pattern": "e"})).unwrap());
        let mut trainer = tiny_trainer(dir.path());
        let mut records = Vec::new();
        let summary = run(
            &mut trainer,
            grader.clone(),
            &items(5),
            &items(3),
            &loop_cfg(&out, 2),
            &mut |r| records.push(r.clone()),
        )
        .unwrap();
        assert_eq!(
            records.iter().map(|r| r.step).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(records
            .iter()
            .all(|r| r.heldout_reward.is_some_and(|h| (0.0..=1.0).contains(&h))));
        assert_eq!(summary.steps, 2);
        assert!(summary.heldout_best >= summary.heldout_before);
        assert!(out.join("best/adapter/adapter_config.json").is_file());
        assert!(out.join("best/merged/model.safetensors").is_file());
        // Every completion (2 steps x 2 prompts x 4) and every greedy
        // held-out answer (before, after step 1, after step 2; 2 items each).
        let lines = |name: &str| -> Vec<serde_json::Value> {
            std::fs::read_to_string(out.join(name))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let samples = lines("samples.jsonl");
        assert_eq!(samples.len(), 16);
        assert!(
            samples
                .iter()
                .all(|s| s["sample"]["text"].is_string() && s["sample"]["reward"].is_number()),
            "{samples:?}"
        );
        let answers = lines("heldout.jsonl");
        assert_eq!(
            answers
                .iter()
                .map(|a| a["step"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            vec![0, 0, 1, 1, 2, 2]
        );
        let mean = |step: u64| {
            answers
                .iter()
                .filter(|a| a["step"] == step)
                .map(|a| a["score"].as_f64().unwrap())
                .sum::<f64>()
                / 2.0
        };
        assert_eq!(Some(mean(2)), records[1].heldout_reward);
        // A metrics.jsonl line says how many groups trained on a guide (none here: no --guide).
        assert_eq!(serde_json::to_value(&records[0]).unwrap()["guided"], 0);
        let row = records[1].row("run-x", 7);
        assert_eq!(
            (row.step, row.ts_ms, row.heldout_reward),
            (2, 7, records[1].heldout_reward)
        );

        let mut resumed = Trainer::resume(out.join("checkpoint")).unwrap();
        assert_eq!(resumed.step_count(), 2);
        let mut more = Vec::new();
        run(
            &mut resumed,
            grader,
            &items(5),
            &items(3),
            &loop_cfg(&out, 3),
            &mut |r| more.push(r.step),
        )
        .unwrap();
        assert_eq!(more, vec![3]);
    }

    /// A reward that cannot be computed stops training instead of being
    /// trained on as a 0.
    #[test]
    fn grader_errors_stop_training() {
        let dir = tempfile::tempdir().unwrap();
        let grader = Arc::new(
            Grader::from_config(
                &json!({"type": "string_check", "name": "s", "input": "{{sample.output_text}}",
                                        "reference": "{{item.missing}}", "operation": "eq"}),
            )
            .unwrap(),
        );
        let mut trainer = tiny_trainer(dir.path());
        let e = run(
            &mut trainer,
            grader,
            &items(2),
            &[],
            &loop_cfg(&dir.path().join("run"), 1),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("missing"), "{e:#}");
        assert_eq!(trainer.step_count(), 0);
    }
}
