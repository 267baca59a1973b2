//! `flywheel-tuner jobs`: checks the tuner service's configuration and
//! prints what each job would do.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use flywheel_tuner::service::config::{Job, Length, ServiceConfig};

#[derive(clap::Args)]
pub struct Args {
    /// TOML file with a `[tuner]` table (the gateway's file or the tuner's
    /// own; `config/tuner.example.toml` documents every key).
    #[arg(long, env = "FLYWHEEL_TUNER_CONFIG")]
    config: PathBuf,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let config = ServiceConfig::from_file(&args.config)?;
    println!(
        "state in {}; gateway {}; engines {}",
        config.state_dir.display(),
        config.gateway_url,
        config.engines.join(", ")
    );
    let mut missing = 0;
    for job in &config.jobs {
        print_job(job);
        // The values are valid; the files they name must exist too.
        for (what, path, dir) in [
            ("base_model", &job.base_model, true),
            ("grader", &job.grader, false),
        ] {
            let ok = if dir { path.is_dir() } else { path.is_file() };
            if !ok {
                missing += 1;
                println!("  error: {what} {} does not exist", path.display());
            }
        }
    }
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_job(j: &Job) {
    println!("job {} (route {})", j.name, j.route);
    println!(
        "  trains {} with {}",
        j.base_model.display(),
        j.grader.display()
    );
    let t = &j.trigger;
    let mut when = Vec::new();
    if t.every_secs > 0 {
        when.push(format!("every {} s", t.every_secs));
    }
    if t.new_rows > 0 {
        when.push(format!("after {} new graded or feedback rows", t.new_rows));
    }
    println!(
        "  runs {}, at most once per {} s",
        when.join(" or "),
        t.min_interval_secs
    );
    let d = &j.dataset;
    println!(
        "  dataset: the last {} s of {}, at least {} rows, {:.0} % held out{}",
        d.window_secs,
        d.variant
            .as_deref()
            .map_or("all variants".to_string(), |v| format!("variant {v}")),
        d.min_rows,
        d.heldout_fraction * 100.0,
        if d.include_shadow {
            ", shadow mirrors included"
        } else {
            ""
        }
    );
    let h = &j.hyperparameters;
    let length = match h.length {
        Length::Epochs(e) => format!("{e} epoch(s)"),
        Length::Steps(s) => format!("{s} steps"),
    };
    println!(
        "  training: {length}, batch {}, group {}, learning rate {:e}, LoRA rank {}, eval every {} steps{}{}",
        h.batch_size,
        h.group_size,
        h.learning_rate,
        h.lora_rank,
        h.eval_interval,
        if h.early_stopping_patience > 0 {
            format!(", early stop after {}", h.early_stopping_patience)
        } else {
            String::new()
        },
        if h.guide {
            ", guided (all-failed groups learn from the reference)"
        } else {
            ""
        }
    );
    let g = &j.gate;
    println!(
        "  gate: {} held-out items; quality per dollar {:.0} % above the incumbent's and the chain's, quality at most {} below the incumbent's ({:.0} % intervals)",
        g.heldout_items,
        g.min_gain * 100.0,
        g.non_inferiority,
        g.confidence * 100.0
    );
    let quality: Vec<&str> = j.canary.quality.iter().map(|q| q.metric.as_str()).collect();
    println!(
        "  canary: {} ramp steps, quality from {}",
        j.canary.steps.len(),
        quality.join(", ")
    );
}
