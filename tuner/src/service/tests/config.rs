use super::*;

fn load(toml_text: &str) -> Result<ServiceConfig, ConfigError> {
    let file: File = toml::from_str(toml_text).map_err(|source| ConfigError::Parse {
        path: "test.toml".into(),
        source,
    })?;
    file.load(Path::new("/etc/flywheel"))
}

fn error(toml_text: &str) -> String {
    match load(toml_text) {
        Ok(c) => panic!("loaded: {c:?}"),
        Err(e) => e.to_string(),
    }
}

const MINIMAL: &str = include_str!("../../../tests/fixtures/tuner-minimal.toml");

#[test]
fn the_example_config_loads_with_its_documented_values() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tuner.example.toml");
    let c = ServiceConfig::from_file(&path).unwrap();
    assert_eq!(c.jobs.len(), 1);
    let j = &c.jobs[0];
    // The example shows the defaults: the minimal config gives the same job.
    let m = load(MINIMAL).unwrap();
    let d = &m.jobs[0];
    assert_eq!(j.trigger, d.trigger);
    assert_eq!(j.dataset, d.dataset);
    assert_eq!(j.hyperparameters, d.hyperparameters);
    assert_eq!(j.gate, d.gate);
    assert_eq!(j.canary, d.canary);
    assert_eq!(j.slots, d.slots);
    assert_eq!(j.chain_variant, d.chain_variant);
    assert_eq!(j.online_grading, d.online_grading);
    assert_eq!(c.gateway_url, m.gateway_url);
    assert_eq!(c.poll_secs, m.poll_secs);
}

#[test]
fn two_slot_variants_take_turns_and_must_be_distinct_from_each_other_and_the_chain() {
    let c = load(MINIMAL).unwrap();
    let names: Vec<(&str, &str)> = c.jobs[0]
        .slots
        .iter()
        .map(|s| (s.variant.as_str(), s.model.as_str()))
        .collect();
    assert_eq!(names, [("tuned-a", "extract-a"), ("tuned-b", "extract-b")]);
    let with = |slots: &str| error(&format!("{MINIMAL}{slots}"));
    assert!(
        with("[[tuner.jobs.slots]]\nvariant = \"t\"\nmodel = \"m\"\n")
            .starts_with("tuner.jobs[0].slots: at least two"),
    );
    let e = with("[[tuner.jobs.slots]]\nvariant = \"chain\"\nmodel = \"m\"\n[[tuner.jobs.slots]]\nvariant = \"t\"\nmodel = \"n\"\n");
    assert!(e.starts_with("tuner.jobs[0].slots[0].variant"), "{e}");
    let e = with("[[tuner.jobs.slots]]\nvariant = \"a\"\nmodel = \"m\"\n[[tuner.jobs.slots]]\nvariant = \"b\"\nmodel = \"m\"\n");
    assert!(e.starts_with("tuner.jobs[0].slots[1]:"), "{e}");
    let e = with("[[tuner.jobs.slots]]\nvariant = \"a\"\nmodel = \"m/x\"\n[[tuner.jobs.slots]]\nvariant = \"b\"\nmodel = \"n\"\n");
    assert!(e.starts_with("tuner.jobs[0].slots[0].model"), "{e}");
}

#[test]
fn defaults_fill_what_a_job_leaves_out() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.state_dir, Path::new("/etc/flywheel/state"));
    assert_eq!(c.gateway_url, "http://127.0.0.1:8080");
    let j = &c.jobs[0];
    assert_eq!(j.grader, Path::new("/etc/flywheel/grader.json"));
    assert_eq!(j.base_model, Path::new("/etc/flywheel/model"));
    assert_eq!(j.trigger, Trigger::default());
    assert_eq!(j.hyperparameters.length, Length::Epochs(1));
    // Quality in the canary is the job's online grader score.
    assert_eq!(j.canary.quality.len(), 1);
    assert_eq!(j.canary.quality[0].metric, "grader_extract");
}

#[test]
fn the_tuner_table_may_sit_in_the_gateways_file() {
    let text =
        format!("[server]\nlisten = \"127.0.0.1:8080\"\n[[routes]]\nname = \"x\"\n{MINIMAL}");
    assert_eq!(load(&text).unwrap().jobs[0].name, "extract");
}

#[test]
fn unknown_keys_are_named_wherever_they_are() {
    let e = error(&MINIMAL.replace("[tuner]", "[tuner]\nstate_dri = \"x\""));
    assert!(e.contains("state_dri"), "{e}");
    let e = error(&format!(
        "{MINIMAL}[tuner.jobs.hyperparameters]\nepochs = 3\n"
    ));
    assert!(e.contains("epochs"), "{e}");
    // The canary table is the controller's spec, which itself ignores
    // unknown keys: the service names them.
    let e = error(&format!(
        "{MINIMAL}[tuner.jobs.canary]\nshadow_fractoin = 0.5\n"
    ));
    assert_eq!(e, "tuner.jobs[0].canary.shadow_fractoin: unknown key");
    let e = error(&format!(
        "{MINIMAL}[tuner.jobs.canary]\nquality = [{{ metric = \"thumbs_up\", wieght = 2.0 }}]\n"
    ));
    assert_eq!(e, "tuner.jobs[0].canary.quality[0].wieght: unknown key");
}

#[test]
fn bad_values_are_named_with_their_path() {
    let cases = [
        (MINIMAL.replace("state_dir = \"state\"\n", ""), "tuner.state_dir: required"),
        (MINIMAL.replace("engines = [\"http://127.0.0.1:18101\"]", "engines = []"), "tuner.engines:"),
        (MINIMAL.replace("http://127.0.0.1:18101", "127.0.0.1:18101"), "tuner.engines[0]:"),
        (MINIMAL.replace("name = \"extract\"", "name = \"Extract Job\""), "tuner.jobs[0].name:"),
        (MINIMAL.replace("route = \"extract\"\n", ""), "tuner.jobs[0].route: required"),
        (
            MINIMAL.replace("[tuner]\n", "[tuner]\nencryption_key_files = [\"/nonexistent/data.key\"]\n"),
            "tuner.encryption_key_files: cannot read key file /nonexistent/data.key",
        ),
        (
            format!("{MINIMAL}[tuner.jobs.trigger]\nevery_secs = 0\nnew_rows = 0\n"),
            "would never run",
        ),
        (
            format!("{MINIMAL}[tuner.jobs.dataset]\nheldout_fraction = 1.0\n"),
            "tuner.jobs[0].dataset.heldout_fraction:",
        ),
        (
            format!("{MINIMAL}[tuner.jobs.hyperparameters]\nn_epochs = 2\nsteps = 10\n"),
            "n_epochs and steps both set",
        ),
        (
            format!("{MINIMAL}[tuner.jobs.hyperparameters]\ngroup_size = 1\n"),
            "tuner.jobs[0].hyperparameters.group_size:",
        ),
        (
            format!("{MINIMAL}[tuner.jobs.hyperparameters]\nlearning_rate = -1.0\n"),
            "tuner.jobs[0].hyperparameters.learning_rate:",
        ),
        (
            format!("{MINIMAL}[tuner.jobs.gate]\nconfidence = 1.5\n"),
            "tuner.jobs[0].gate.confidence:",
        ),
        (
            // −100 % per dollar would admit anything.
            format!("{MINIMAL}[tuner.jobs.gate]\nmin_gain = -1.0\n"),
            "tuner.jobs[0].gate.min_gain:",
        ),
        (
            format!("{MINIMAL}[tuner.jobs.canary]\nshadow_fraction = 2.0\n"),
            "tuner.jobs[0].canary:",
        ),
        (
            format!("{MINIMAL}[tuner.jobs.canary.engine]\ngrace_secs = 10\n"),
            "tuner.jobs[0].canary.engine: set by the service",
        ),
        (
            format!("{MINIMAL}\n[[tuner.jobs]]\nname = \"extract\"\nroute = \"b\"\nbase_model = \"m\"\ngrader = \"g\"\n"),
            "tuner.jobs[1].name: \"extract\" is used by another job",
        ),
    ];
    for (text, want) in cases {
        let e = error(&text);
        assert!(e.contains(want), "want {want:?}, got {e:?}");
    }
}

#[test]
fn epochs_become_steps_by_the_dataset_size() {
    assert_eq!(Length::Epochs(2).steps(10, 4), 5);
    assert_eq!(Length::Epochs(1).steps(0, 4), 1);
    assert_eq!(Length::Steps(7).steps(1000, 4), 7);
}
