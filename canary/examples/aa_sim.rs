//! False promotions under A/A and time to decision against effect size,
//! for the always-valid tests and a fixed-horizon z test that peeks at
//! every look (for the large samples here, the same as Welch's t test).
//! Prints Markdown tables for BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p flywheel-canary --example aa_sim [-- --runs 1000]
//! ```
//!
//! Each run is one 50/50 canary step of the real `decide` with default
//! settings (α = 0.05 one-sided, N* = 2000, min 100 graded per arm, no
//! minimum duration), a look after every 50 requests per arm, 60 looks
//! (3000 requests per arm, half of them graded). The traffic model is in
//! `flywheel_canary::sim`. Every method sees the same seeded data.

use std::time::Instant;

use flywheel_canary::{
    decision::{Action, Settings},
    sequential::Method,
    sim::{run, ArmModel, RunResult},
};
use rand::{rngs::StdRng, SeedableRng};

const LOOKS: usize = 60;
const BATCH: usize = 50;

struct Scenario {
    label: &'static str,
    candidate: ArmModel,
    quality_margin: f64,
}

/// Promotions and the mean look of promotion, for the three rules.
#[derive(Default)]
struct Tally {
    promoted: [usize; 3],
    look_sum: [usize; 3],
}

impl Tally {
    fn add(&mut self, i: usize, promoted_at: Option<usize>) {
        if let Some(look) = promoted_at {
            self.promoted[i] += 1;
            self.look_sum[i] += look;
        }
    }

    fn cell(&self, i: usize, runs: usize) -> String {
        let rate = self.promoted[i] as f64 / runs as f64;
        if self.promoted[i] == 0 {
            format!("{:.1} % | –", 100.0 * rate)
        } else {
            let looks = self.look_sum[i] as f64 / self.promoted[i] as f64;
            format!("{:.1} % | {looks:.1}", 100.0 * rate)
        }
    }
}

fn promoted_at(r: &RunResult) -> Option<usize> {
    match r.decision {
        Some((look, Action::Promote)) => Some(look),
        _ => None,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000usize);
    let base = ArmModel::default();
    let lift = |d: f64| ArmModel {
        pass_rate: base.pass_rate + d,
        ..base
    };
    let scenarios = [
        Scenario {
            label: "A/A",
            candidate: base,
            quality_margin: 0.0,
        },
        Scenario {
            label: "quality +0.03",
            candidate: lift(0.03),
            quality_margin: 0.0,
        },
        Scenario {
            label: "quality +0.05",
            candidate: lift(0.05),
            quality_margin: 0.0,
        },
        Scenario {
            label: "quality +0.10",
            candidate: lift(0.10),
            quality_margin: 0.0,
        },
        Scenario {
            label: "cost −20 %, same quality, margin 0.05",
            candidate: ArmModel {
                cost_usd: base.cost_usd * 0.8,
                ..base
            },
            quality_margin: 0.05,
        },
    ];
    let started = Instant::now();
    println!(
        "{runs} runs per row; a look every {BATCH} requests per arm, {LOOKS} looks; \
         incumbent pass rate {}, half the requests graded.\n",
        base.pass_rate
    );
    println!(
        "| candidate | quality/$ advantage | mSPRT (default): promoted | mean looks \
         | CS: promoted | mean looks | peeking z: promoted | mean looks |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (k, s) in scenarios.iter().enumerate() {
        let mut tally = Tally::default();
        for (i, method) in [Method::Msprt, Method::ConfidenceSequence]
            .into_iter()
            .enumerate()
        {
            let settings = Settings {
                method,
                quality_margin: s.quality_margin,
                min_step_secs: 0,
                max_step_secs: LOOKS as u64 * 600,
                ..Settings::default()
            };
            // The same seed per row: every method sees the same traffic.
            let mut rng = StdRng::seed_from_u64(1000 + k as u64);
            for _ in 0..runs {
                let r = run(&mut rng, &settings, &base, &s.candidate, BATCH, LOOKS);
                tally.add(i, promoted_at(&r));
                if i == 0 {
                    tally.add(2, r.peeking_promotion);
                }
            }
        }
        let advantage =
            (s.candidate.pass_rate / s.candidate.cost_usd) / (base.pass_rate / base.cost_usd) - 1.0;
        println!(
            "| {} | {:+.0} % | {} | {} | {} |",
            s.label,
            100.0 * advantage,
            tally.cell(0, runs),
            tally.cell(1, runs),
            tally.cell(2, runs)
        );
    }
    println!(
        "\n\"promoted\" under A/A is the false-promotion rate (α = 5 %); mean looks counts \
         promoted runs only. {:.1} s.",
        started.elapsed().as_secs_f64()
    );
}
