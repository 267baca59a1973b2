use std::io::Write;

use super::*;

fn journal() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path()).unwrap();
    (dir, j)
}

fn started(stage: Stage) -> Event {
    Event::Started { stage }
}

#[test]
fn events_are_read_back_in_order_with_their_times() {
    let (_d, j) = journal();
    let run = j.new_run("extract", 1_000).unwrap();
    assert_eq!(run, "extract-1000");
    j.append(&run, 1_001, started(Stage::Dataset)).unwrap();
    let finished = Event::Finished {
        stage: Stage::Dataset,
        detail: serde_json::json!({"kept": 120, "dropped_pii": 3}),
    };
    j.append(&run, 1_002, finished.clone()).unwrap();
    let records = j.read(&run).unwrap();
    assert_eq!(
        records,
        vec![
            Record {
                at_ms: 1_001,
                event: started(Stage::Dataset)
            },
            Record {
                at_ms: 1_002,
                event: finished
            },
        ]
    );
}

#[test]
fn a_torn_last_line_is_ignored_then_cut_before_the_next_append() {
    let (_d, j) = journal();
    let run = j.new_run("extract", 5).unwrap();
    j.append(&run, 6, started(Stage::Dataset)).unwrap();
    // A crash in the middle of the next append.
    let path = j.run_dir(&run).join("journal.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(br#"{"at_ms":7,"event":"fini"#).unwrap();
    drop(f);
    assert_eq!(j.read(&run).unwrap().len(), 1);
    j.append(&run, 8, started(Stage::Train)).unwrap();
    let events: Vec<Event> = j.read(&run).unwrap().into_iter().map(|r| r.event).collect();
    assert_eq!(events, vec![started(Stage::Dataset), started(Stage::Train)]);
}

#[test]
fn a_bad_line_in_the_middle_is_an_error_naming_it() {
    let (_d, j) = journal();
    let run = j.new_run("extract", 5).unwrap();
    let path = j.run_dir(&run).join("journal.jsonl");
    std::fs::write(
        &path,
        "{\"at_ms\":6,\"event\":\"started\",\"stage\":\"dataset\"}\nnot json\n{\"at_ms\":7,\"event\":\"cleaned_up\"}\n",
    )
    .unwrap();
    let e = j.read(&run).unwrap_err().to_string();
    assert!(e.contains("journal.jsonl:2: not a journal record"), "{e}");
}

#[test]
fn runs_are_listed_newest_first_with_where_they_stand() {
    let (_d, j) = journal();
    let old = j.new_run("extract", 100).unwrap();
    j.append(&old, 101, started(Stage::Dataset)).unwrap();
    j.append(
        &old,
        102,
        Event::Concluded {
            stage: Stage::Dataset,
            outcome: Outcome::Skipped,
            reason: "12 rows kept, 50 needed".into(),
        },
    )
    .unwrap();
    j.append(
        &old,
        103,
        Event::Ended {
            outcome: Outcome::Skipped,
        },
    )
    .unwrap();
    let new = j.new_run("support-bot", 200).unwrap();
    j.append(&new, 201, started(Stage::Dataset)).unwrap();
    let runs = j.runs().unwrap();
    let listed: Vec<(&str, &str, String)> = runs
        .iter()
        .map(|r| (r.id.as_str(), r.job.as_str(), state(&r.next)))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("support-bot-200", "support-bot", "in dataset".to_string()),
            ("extract-100", "extract", "skipped".to_string()),
        ]
    );
    assert_eq!(runs[1].last_ms, 103);

    // An ended run is read once: its summary is kept, while a run in
    // progress is read again at every listing.
    std::fs::write(j.run_dir(&old).join("journal.jsonl"), "not json\n").unwrap();
    j.append(&new, 202, started(Stage::Train)).unwrap();
    let runs = j.runs().unwrap();
    assert_eq!(state(&runs[1].next), "skipped");
    assert_eq!(runs[0].last_ms, 202);
}

#[test]
fn run_ids_are_unique_and_unknown_runs_are_named() {
    let (_d, j) = journal();
    assert_eq!(j.new_run("a", 9).unwrap(), "a-9");
    assert_eq!(j.new_run("a", 9).unwrap(), "a-10");
    let e = j
        .append("a-11", 12, Event::CleanedUp)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "no run \"a-11\" in the journal");
    assert!(j.read("a-11").is_err());
}
