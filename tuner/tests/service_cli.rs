//! The tuner service from the command line, as an operator uses it:
//! `flywheel-tuner jobs` checks the configuration before the service
//! starts, `flywheel-tuner runs` lists the runs and tells a run's story.
#![allow(clippy::unwrap_used)]

use std::process::Command;

/// Runs `flywheel-tuner ARGS --config <dir>/tuner.toml` after writing the
/// config and `files` into a fresh directory (with a `model/` directory).
fn tuner_in(
    dir: &std::path::Path,
    args: &[&str],
    config: &str,
    files: &[(&str, &str)],
) -> (Option<i32>, String) {
    let _ = std::fs::create_dir(dir.join("model"));
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let path = dir.join("tuner.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flywheel-tuner"))
        .args(args)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

fn jobs(config: &str, files: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    tuner_in(dir.path(), &["jobs"], config, files)
}

/// The minimal config, run by new rows only.
fn config() -> String {
    format!(
        "{}\n[tuner.jobs.trigger]\nnew_rows = 200\nevery_secs = 0\n",
        include_str!("fixtures/tuner-minimal.toml")
    )
}

#[test]
fn a_good_config_prints_each_jobs_plan() {
    let (code, out) = jobs(&config(), &[("grader.json", "{}")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("job extract (route extract)"), "{out}");
    assert!(
        out.contains("runs after 200 new graded or feedback rows"),
        "{out}"
    );
    assert!(out.contains("quality from grader_extract"), "{out}");
}

#[test]
fn a_missing_file_is_named_and_fails_the_check() {
    let (code, out) = jobs(&config(), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("error: grader") && out.contains("grader.json does not exist"),
        "{out}"
    );
}

#[test]
fn a_bad_key_is_named_with_its_path() {
    let (code, out) = jobs(
        &config().replace("new_rows = 200", "new_row = 200"),
        &[("grader.json", "{}")],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("new_row"), "{out}");
}

#[test]
fn runs_lists_the_runs_newest_first_and_tells_one_runs_story_newest_event_first() {
    use flywheel_tuner::service::{
        journal::Journal,
        run::{Event, Outcome, Stage},
    };
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("state")).unwrap();
    let t0 = 1_765_000_000_000; // 2025-12-06 05:46:40 UTC
    let old = journal.new_run("extract", t0).unwrap();
    for (dt, e) in [
        (
            1_000,
            Event::Started {
                stage: Stage::Dataset,
            },
        ),
        (
            2_000,
            Event::Concluded {
                stage: Stage::Dataset,
                outcome: Outcome::Skipped,
                reason: "12 rows kept, 50 needed".into(),
            },
        ),
        (
            3_000,
            Event::Ended {
                outcome: Outcome::Skipped,
            },
        ),
    ] {
        journal.append(&old, t0 + dt, e).unwrap();
    }
    let new = journal.new_run("extract", t0 + 3_600_000).unwrap();
    journal
        .append(
            &new,
            t0 + 3_601_000,
            Event::Started {
                stage: Stage::Dataset,
            },
        )
        .unwrap();

    let (code, out) = tuner_in(dir.path(), &["runs"], &config(), &[("grader.json", "{}")]);
    assert_eq!(code, Some(0), "{out}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("extract-")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows[0].starts_with(&new) && rows[0].ends_with("in dataset"),
        "{out}"
    );
    assert!(
        rows[1].starts_with(&old) && rows[1].ends_with("skipped"),
        "{out}"
    );
    assert!(rows[1].contains("2025-12-06 05:46:40"), "{out}");

    let (code, out) = tuner_in(dir.path(), &["runs", &old], &config(), &[]);
    assert_eq!(code, Some(0), "{out}");
    let story: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(
        story,
        vec![
            "2025-12-06 05:46:43  ended: skipped",
            "2025-12-06 05:46:42  dataset concluded skipped: 12 rows kept, 50 needed",
            "2025-12-06 05:46:41  dataset started",
        ],
        "{out}"
    );

    let (code, out) = tuner_in(dir.path(), &["runs", "extract-1"], &config(), &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no run \"extract-1\""), "{out}");
}
