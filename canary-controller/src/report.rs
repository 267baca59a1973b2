//! What `flywheel-canary list` and `status` print: plain-text tables for a
//! terminal.

use std::{collections::BTreeMap, fmt::Write};

use flywheel_canary::{
    decision::{GuardrailKind, GuardrailResult, Verdict},
    Evidence,
};
use flywheel_feedback::store::rows::CanaryEvaluationRow;

use crate::{
    experiment::{json_name, Action, Experiment, Status},
    unload::{self, Grace, Role, UnloadRecord},
};

/// `2024-05-01 12:03:04` (UTC) of a Unix time in ms.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `1h02m`, `3m05s`, `12s`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.filter(|v| v.is_finite())
        .map_or_else(|| "no data".into(), f)
}

fn pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

/// One line per experiment.
pub fn list(experiments: &[Experiment], incumbents: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36}  {:<12}  {:<24}  {:<14}  {:<8}  {:<19}",
        "ID", "ROUTE", "INCUMBENT → CANDIDATE", "STATUS", "STEP", "UPDATED (UTC)"
    );
    for e in experiments {
        let _ = writeln!(
            out,
            "{:<36}  {:<12}  {:<24}  {:<14}  {:<8}  {:<19}",
            e.id,
            e.route,
            format!("{} → {}", e.incumbent, e.candidate),
            e.status.name(),
            e.step_name(),
            utc(e.updated_ms)
        );
    }
    if !incumbents.is_empty() {
        let _ = writeln!(out, "\nincumbents after completed experiments (Redis):");
        for (route, v) in incumbents {
            let _ = writeln!(out, "  {route}: {v}");
        }
    }
    out
}

/// The status view of one experiment: state, weights, both arms, the
/// primary metric with its always-valid bound, quality, SRM, guardrails,
/// and the last decisions.
pub fn status(
    exp: &Experiment,
    live_weights: Option<&BTreeMap<String, u32>>,
    evaluations: &[CanaryEvaluationRow],
    now_ms: u64,
) -> String {
    let mut out = String::new();
    let s = &exp.spec.settings;
    let _ = writeln!(out, "experiment  {}", exp.id);
    let _ = writeln!(
        out,
        "route       {}   incumbent {} → candidate {}",
        exp.route, exp.incumbent, exp.candidate
    );
    let _ = writeln!(
        out,
        "status      {} ({})   origin {}   created {} UTC",
        exp.status.name(),
        exp.status_reason,
        exp.origin,
        utc(exp.created_ms)
    );
    let steps: Vec<String> = exp
        .spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, st)| {
            if i == exp.step {
                format!("[{}]", st.name)
            } else {
                st.name.clone()
            }
        })
        .collect();
    let _ = writeln!(out, "ramp        {}", steps.join(" → "));
    if exp.status.is_active() {
        let _ = writeln!(
            out,
            "step        {} for {} (min {}, max {}; min {} graded per arm)",
            exp.step_name(),
            duration(now_ms.saturating_sub(exp.step_started_ms) / 1000),
            duration(s.min_step_secs),
            duration(s.max_step_secs),
            s.min_samples_per_arm
        );
    }
    let (wi, wc) = exp.weights();
    let live = |v: &str| {
        live_weights
            .and_then(|w| w.get(v))
            .map_or_else(|| "?".into(), |w| w.to_string())
    };
    let _ = writeln!(
        out,
        "weights     {} {} / {} {} (this state) · in Redis: {} / {}{}",
        exp.incumbent,
        wi,
        exp.candidate,
        wc,
        live(&exp.incumbent),
        live(&exp.candidate),
        if live_weights.is_none() {
            " (Redis unavailable)"
        } else {
            ""
        }
    );
    let metrics: Vec<String> = exp
        .spec
        .quality
        .iter()
        .map(|q| {
            format!(
                "{}{}{}",
                q.metric,
                if q.weight == 1.0 {
                    String::new()
                } else {
                    format!("×{}", q.weight)
                },
                if q.invert { " (inverted)" } else { "" }
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "quality     {}   test: {} α={} N*={} margins: quality per $ > {}, quality > −{}",
        metrics.join(" + "),
        json_name(&s.method),
        s.alpha,
        s.n_star,
        pct(s.primary_margin),
        s.quality_margin
    );

    // The latest look with evidence.
    let look = evaluations.iter().find(|r| !r.evidence_json.is_empty());
    let evidence = look.and_then(|r| serde_json::from_str::<Evidence>(&r.evidence_json).ok());
    match (look, &evidence) {
        (Some(r), Some(e)) => {
            let _ = writeln!(
                out,
                "\nlast look   {} UTC ({} ago), step {}, {} into it",
                utc(r.ts_ms),
                duration(now_ms.saturating_sub(r.ts_ms) / 1000),
                e.step,
                duration(e.elapsed_secs)
            );
            arms_table(&mut out, exp, e);
            verdicts(&mut out, exp, e);
        }
        _ => {
            let _ = writeln!(out, "\nno look recorded yet");
        }
    }

    let _ = writeln!(out, "\nlast decisions (newest first):");
    let _ = writeln!(
        out,
        "  {:<19}  {:<8}  {:<15}  {:<24}  {:<13}  {:<16}  BY",
        "TIME (UTC)", "STEP", "ACTION", "REASON", "N (I/C)", "QPD LOWER"
    );
    for r in evaluations {
        let action = Action::from_code(r.action).map_or("?", Action::name);
        let after = Status::from_code(r.status_after).map_or("?", Status::name);
        let action = if r.action == Action::Promote.code() && after == "completed" {
            "promote→100%".to_owned()
        } else {
            action.to_owned()
        };
        let _ = writeln!(
            out,
            "  {:<19}  {:<8}  {:<15}  {:<24}  {:<13}  {:<16}  {}",
            utc(r.ts_ms),
            r.step_name,
            action,
            r.reason_kind,
            format!("{}/{}", r.incumbent_requests, r.candidate_requests),
            opt(r.qpd_lower, pct),
            if r.manual {
                format!("{} (manual)", r.actor)
            } else {
                r.actor.clone()
            }
        );
    }
    out
}

fn arms_table(out: &mut String, exp: &Experiment, e: &Evidence) {
    let (i, c) = (&e.incumbent, &e.candidate);
    let _ = writeln!(
        out,
        "  {:<24}  {:>18}  {:>18}",
        "",
        format!("incumbent {}", exp.incumbent),
        format!("candidate {}", exp.candidate)
    );
    let rate = |k: u64, n: u64| {
        if n == 0 {
            "no data".to_owned()
        } else {
            format!("{:.2}% ({k})", 100.0 * k as f64 / n as f64)
        }
    };
    let rows: [(&str, String, String); 8] = [
        ("requests", i.requests.to_string(), c.requests.to_string()),
        (
            "graded (no data)",
            format!("{} ({})", i.graded, i.ungraded),
            format!("{} ({})", c.graded, c.ungraded),
        ),
        (
            "errors",
            rate(i.errors, i.requests),
            rate(c.errors, c.requests),
        ),
        (
            "fallbacks",
            rate(i.fallbacks, i.requests),
            rate(c.fallbacks, c.requests),
        ),
        (
            "mean quality",
            opt(i.mean_quality, |v| format!("{v:.4}")),
            opt(c.mean_quality, |v| format!("{v:.4}")),
        ),
        (
            "cost / request",
            opt(i.cost_per_request, |v| format!("${v:.6}")),
            opt(c.cost_per_request, |v| format!("${v:.6}")),
        ),
        (
            "quality per $",
            opt(i.quality_per_dollar, |v| format!("{v:.1}")),
            opt(c.quality_per_dollar, |v| format!("{v:.1}")),
        ),
        (
            "latency / ttft samples",
            format!("{} / {}", i.latency_samples, i.ttft_samples),
            format!("{} / {}", c.latency_samples, c.ttft_samples),
        ),
    ];
    for (name, a, b) in rows {
        let _ = writeln!(out, "  {name:<24}  {a:>18}  {b:>18}");
    }
}

fn verdicts(out: &mut String, exp: &Experiment, e: &Evidence) {
    let s = &exp.spec.settings;
    let conf = format!("{:.0}%", (1.0 - e.alpha) * 100.0);
    match e.quality_per_dollar {
        Some(b) => {
            let _ = writeln!(
                out,
                "\nquality per $   candidate {} vs incumbent; always-valid {conf} bounds [{}, {}], \
                 margin {}, p = {:.4} → {}",
                pct(b.estimate),
                pct(b.lower),
                pct(b.upper),
                pct(s.primary_margin),
                b.p_value,
                if b.lower > s.primary_margin {
                    "better"
                } else if b.upper < s.primary_margin {
                    "not better"
                } else {
                    "inconclusive"
                }
            );
        }
        None => {
            let _ = writeln!(
                out,
                "\nquality per $   no data (fewer than two graded requests or no cost on an arm)"
            );
        }
    }
    match e.quality {
        Some(b) => {
            let _ = writeln!(
                out,
                "quality         {:+.4} (candidate − incumbent); always-valid {conf} bounds [{:+.4}, {:+.4}], \
                 non-inferiority margin −{} → {}",
                b.estimate,
                b.lower,
                b.upper,
                s.quality_margin,
                if b.upper < -s.quality_margin {
                    "worse (rollback)"
                } else if b.lower > -s.quality_margin {
                    "not worse"
                } else {
                    "inconclusive"
                }
            );
        }
        None => {
            let _ = writeln!(out, "quality         no data");
        }
    }
    match &e.srm {
        Some(srm) => {
            let _ = writeln!(
                out,
                "sample ratio    observed {:?} expected [{}] p = {:.2e} → {}",
                srm.observed,
                srm.expected
                    .iter()
                    .map(|x| format!("{x:.1}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                srm.p_value,
                if srm.mismatch {
                    "MISMATCH (hold)"
                } else {
                    "ok"
                }
            );
        }
        None => {
            let _ = writeln!(out, "sample ratio    too few requests to test");
        }
    }
    let _ = writeln!(out, "guardrails:");
    for g in &e.guardrails {
        let _ = writeln!(out, "  {}", guardrail_line(g));
    }
}

fn guardrail_line(g: &GuardrailResult) -> String {
    let relative = matches!(
        g.kind,
        GuardrailKind::P95Latency | GuardrailKind::Ttft | GuardrailKind::CostPerRequest
    );
    let fmt_delta = |x: f64| {
        if relative {
            pct(x)
        } else {
            format!("{:+.2} pt", x * 100.0)
        }
    };
    let value = |x: Option<f64>| match g.kind {
        GuardrailKind::ErrorRate | GuardrailKind::FallbackRate => {
            opt(x, |v| format!("{:.2}%", v * 100.0))
        }
        GuardrailKind::CostPerRequest => opt(x, |v| format!("${v:.6}")),
        GuardrailKind::P95Latency | GuardrailKind::Ttft => opt(x, |v| format!("{v:.0} ms")),
    };
    let verdict = match g.verdict {
        Verdict::Pass => "pass",
        Verdict::Breach => "BREACH",
        Verdict::Critical => "CRITICAL",
        Verdict::NoData => "no data",
        Verdict::NotMeasured => "not measured",
    };
    format!(
        "{:<18} {:<12} incumbent {:>12}  candidate {:>12}  change {:>10}  (allowed {}, critical {})",
        json_name(&g.kind),
        verdict,
        value(g.incumbent),
        value(g.candidate),
        opt(g.estimate, fmt_delta),
        fmt_delta(g.allowed),
        fmt_delta(g.critical)
    )
}

/// The engine-pool part of the status view: which versions are named, the
/// grace period after a promotion, and each unload's state per engine.
pub fn engines(exp: &Experiment, unloads: &[UnloadRecord], now_ms: u64) -> String {
    let mut out = String::new();
    let plan = &exp.spec.engine;
    let grace = unload::grace(exp, unloads, now_ms);
    if plan.engines.is_empty() && matches!(grace, Grace::NotCompleted) {
        return out;
    }
    let _ = writeln!(out, "\nengine pool");
    if !plan.engines.is_empty() {
        let _ = writeln!(
            out,
            "  versions  candidate {} · incumbent {} · on {}",
            plan.candidate_model.as_deref().unwrap_or("(not named)"),
            plan.incumbent_model.as_deref().unwrap_or("(not named)"),
            plan.engines.join(", ")
        );
    }
    match grace {
        Grace::NotCompleted => {}
        Grace::Open { deadline_ms } => {
            let _ = writeln!(
                out,
                "  grace     until {} UTC ({} left): `rollback` restores {} at once",
                utc(deadline_ms),
                duration(deadline_ms.saturating_sub(now_ms) / 1000),
                exp.incumbent
            );
        }
        Grace::Over {
            deadline_ms,
            unloaded,
        } => {
            let _ = writeln!(
                out,
                "  grace     over (ended {} UTC){}: rollback refused",
                utc(deadline_ms),
                unloaded
                    .map(|m| format!(", old version {m} unloaded"))
                    .unwrap_or_default()
            );
        }
    }
    if let Some(t) = unload::target(exp) {
        let done = unload::done_engines(unloads, &t.model, t.role);
        let pending: Vec<&str> = plan
            .engines
            .iter()
            .map(String::as_str)
            .filter(|e| !done.contains(e))
            .collect();
        let state = if pending.is_empty() {
            format!("unloaded from {}", plan.engines.len())
        } else if t.role == Role::Incumbent && now_ms < t.not_before_ms {
            format!("kept loaded until {} UTC", utc(t.not_before_ms))
        } else {
            let last_error = unloads
                .iter()
                .rev()
                .filter(|r| r.model == t.model && r.role == t.role)
                .flat_map(|r| r.results.iter())
                .find_map(|o| o.error.clone());
            format!(
                "pending on {} of {}{}",
                pending.len(),
                plan.engines.len(),
                last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            )
        };
        let _ = writeln!(
            out,
            "  unload    {} version {}: {state}",
            t.role.name(),
            t.model
        );
    }
    for r in unloads {
        for o in &r.results {
            let _ = writeln!(
                out,
                "  {} UTC  unload {} ({}) on {}: {}",
                utc(r.ts_ms),
                r.model,
                r.role.name(),
                o.engine,
                if o.ok {
                    match (o.status, o.drained) {
                        (Some(404), _) => "not loaded (done)".to_owned(),
                        (_, Some(n)) => format!("unloaded, {n} in flight drained"),
                        _ => "unloaded".to_owned(),
                    }
                } else {
                    format!("failed: {}", o.error.as_deref().unwrap_or("?"))
                }
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3_725), "1h02m");
        assert_eq!(duration(90_000), "1d01h");
    }

    #[test]
    fn shows_the_grace_period_and_each_unload() {
        use crate::{
            spec::{EnginePlan, QualityMetric, Spec},
            unload::EngineOutcome,
        };
        let spec = Spec {
            quality: vec![QualityMetric::parse("thumbs_up").unwrap()],
            steps: Spec::parse_steps("50,100").unwrap(),
            engine: EnginePlan {
                candidate_model: Some("v2".into()),
                incumbent_model: Some("v1".into()),
                engines: vec!["http://a:1".into(), "http://b:1".into()],
                grace_secs: 60,
            },
            ..Spec::default()
        };
        let running = Experiment::new("chat", "base", "tuned", spec, "t", 1_000).unwrap();
        assert!(engines(&running, &[], 2_000).contains("candidate v2 · incumbent v1"));
        let done = running.after(Action::Promote, "promote", 10_000).unwrap();
        let open = engines(&done, &[], 40_000);
        assert!(
            open.contains("grace     until") && open.contains("30s left"),
            "{open}"
        );
        assert!(open.contains("kept loaded until"), "{open}");
        let mut tried = UnloadRecord::new(
            "v1",
            Role::Incumbent,
            vec![
                EngineOutcome {
                    engine: "http://a:1".into(),
                    ok: true,
                    status: Some(200),
                    error: None,
                    drained: Some(2),
                },
                EngineOutcome {
                    engine: "http://b:1".into(),
                    ok: false,
                    status: None,
                    error: Some("unreachable: refused".into()),
                    drained: None,
                },
            ],
        );
        tried.ts_ms = 71_000;
        let over = engines(&done, &[tried], 72_000);
        assert!(
            over.contains("rollback refused") && over.contains("old version v1 unloaded"),
            "{over}"
        );
        assert!(
            over.contains("pending on 1 of 2 (last error: unreachable: refused)"),
            "{over}"
        );
        assert!(over.contains("2 in flight drained"), "{over}");
        // Nothing named and never completed: nothing to show.
        let plain = Experiment::new(
            "chat",
            "base",
            "tuned",
            Spec {
                quality: vec![QualityMetric::parse("thumbs_up").unwrap()],
                ..Spec::default()
            },
            "t",
            1,
        )
        .unwrap();
        assert_eq!(engines(&plain, &[], 2), "");
    }
}
