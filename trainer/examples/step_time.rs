//! GRPO step-time benchmark on the real model, matching the TRL reference setup:
//! 1 prompt x G=8 completions of <= 32 tokens, LoRA r=16 alpha=32 on all 7 linear
//! projections, temperature 1, beta 0. TRL GRPOTrainer on 2 CPU threads: 12.2-13.1 s/step.
//!
//! `cargo run --release -p flywheel-trainer --example step_time -- [steps] [model_dir]`
//! (model dir defaults to $FLYWHEEL_MODEL_DIR or /var/tmp/flywheel/models/smollm2/hf).

use flywheel_trainer::{
    lora::LoraConfig, optim::AdamWConfig, sample::SamplingConfig, testing::real_model_dir,
    PromptItem, Trainer, TrainerConfig,
};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let dir = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => real_model_dir(),
    };
    let cfg = TrainerConfig {
        lora: LoraConfig {
            rank: 16,
            alpha: 32.0,
            dropout: 0.0,
            ..Default::default()
        },
        sampling: SamplingConfig {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 32,
        },
        num_generations: 8,
        optim: AdamWConfig {
            lr: 1e-5,
            ..Default::default()
        },
        micro_batch_size: 8,
        seed: 0,
        ..Default::default()
    };
    let t_load = std::time::Instant::now();
    let mut trainer = Trainer::new(&dir, cfg)?;
    println!(
        "loaded {} in {:.2}s; threads: {}",
        dir.display(),
        t_load.elapsed().as_secs_f64(),
        candle_core::utils::get_num_threads()
    );
    let prompts = [PromptItem::user(
        "bench",
        "Write a short sentence about the sea.",
    )];
    // A continuous reward so every group has variance and the full backward always runs.
    let reward = |_: &PromptItem, text: &str| -> anyhow::Result<f64> {
        let n = text.chars().count().max(1);
        Ok(text.chars().filter(|c| *c == 'e').count() as f64 / n as f64)
    };
    let mut total = 0.0;
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let m = trainer.step(&prompts, reward)?;
        total += m.step_secs;
        times.push(m.step_secs);
        println!(
            "step {}: {:.2} s (generate {:.2} s, train {:.2} s), {:.1} completion tokens/s, len {:.1}, trained {}, reward {:.3}, loss {:.4}, grad_norm {:.4}, entropy {:.3}",
            m.step, m.step_secs, m.generate_secs, m.train_secs, m.tokens_per_sec, m.response_len_mean, m.trained_sequences, m.reward_mean, m.loss, m.grad_norm, m.entropy
        );
    }
    println!(
        "mean: {:.2} s/step over {steps} steps (TRL reference: 12.2-13.1 s/step)",
        total / steps as f64
    );
    // The same JSON line as trainer/bench/trl_step_time.py, for scripts/trainer-vs-trl.sh.
    let rest = if times.len() > 1 {
        &times[1..]
    } else {
        &times[..]
    };
    println!(
        "{}",
        serde_json::json!({"impl": "flywheel", "steps": times, "first_s": times.first(),
                           "mean_s_after_first": rest.iter().sum::<f64>() / rest.len().max(1) as f64})
    );
    Ok(())
}
