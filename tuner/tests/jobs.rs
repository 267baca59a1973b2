//! `flywheel-tuner jobs`: the tuner service's configuration checked from
//! the command line, as an operator runs it before starting the service.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn jobs(config: &str, files: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("model")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let path = dir.path().join("tuner.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flywheel-tuner"))
        .arg("jobs")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
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
