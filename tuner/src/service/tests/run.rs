use super::*;

fn started(stage: Stage) -> Event {
    Event::Started { stage }
}

fn finished(stage: Stage) -> Event {
    Event::Finished {
        stage,
        detail: serde_json::Value::Null,
    }
}

/// A journal in which every stage up to `last` started and finished.
fn through(last: Stage) -> Vec<Event> {
    let mut j = Vec::new();
    for s in Stage::ALL {
        j.push(started(s));
        j.push(finished(s));
        if s == last {
            break;
        }
    }
    j
}

#[test]
fn a_run_goes_through_every_stage_in_order() {
    assert_eq!(next(&[]), Next::Start(Stage::Dataset));
    for (s, after) in Stage::ALL.iter().zip(Stage::ALL.iter().skip(1)) {
        assert_eq!(next(&through(*s)), Next::Start(*after), "after {s:?}");
    }
    let mut j = through(Stage::Canary);
    j.push(Event::Concluded {
        stage: Stage::Canary,
        outcome: Outcome::Promoted,
        reason: "quality per dollar beat the chain".into(),
    });
    assert_eq!(next(&j), Next::End(Outcome::Promoted));
    j.push(Event::Ended {
        outcome: Outcome::Promoted,
    });
    assert_eq!(next(&j), Next::Done(Outcome::Promoted));
}

#[test]
fn a_stage_interrupted_by_a_restart_is_resumed_not_skipped_or_repeated_from_scratch() {
    for (i, s) in Stage::ALL.into_iter().enumerate() {
        let mut j = if i == 0 {
            vec![]
        } else {
            through(Stage::ALL[i - 1])
        };
        j.push(started(s));
        assert_eq!(next(&j), Next::Resume(s), "{s:?}");
    }
    // A canary followed to its end and then interrupted before the verdict
    // was journaled is followed again.
    assert_eq!(next(&through(Stage::Canary)), Next::Resume(Stage::Canary));
}

#[test]
fn a_failure_after_the_deploy_started_unloads_the_version_first() {
    let mut j = through(Stage::Train);
    j.push(started(Stage::Deploy));
    j.push(Event::Failed {
        stage: Stage::Deploy,
        reason: "engine refused the model: 400 invalid model dir".into(),
    });
    assert_eq!(
        next(&j),
        Next::CleanUp {
            then: Outcome::Failed
        }
    );
    j.push(Event::CleanedUp);
    assert_eq!(next(&j), Next::End(Outcome::Failed));
}

#[test]
fn a_failure_before_the_deploy_has_nothing_to_clean_up() {
    let mut j = through(Stage::Dataset);
    j.push(started(Stage::Train));
    j.push(Event::Failed {
        stage: Stage::Train,
        reason: "trainer exited with status 101".into(),
    });
    assert_eq!(next(&j), Next::End(Outcome::Failed));
}

#[test]
fn a_rejected_run_unloads_its_version_and_a_skipped_one_never_deployed() {
    let mut j = through(Stage::Deploy);
    j.push(started(Stage::Gate));
    j.push(Event::Concluded {
        stage: Stage::Gate,
        outcome: Outcome::Rejected,
        reason: "quality per dollar +2 % over the chain, 5 % needed".into(),
    });
    assert_eq!(
        next(&j),
        Next::CleanUp {
            then: Outcome::Rejected
        }
    );
    j.push(Event::CleanedUp);
    assert_eq!(next(&j), Next::End(Outcome::Rejected));

    let j = vec![
        started(Stage::Dataset),
        Event::Concluded {
            stage: Stage::Dataset,
            outcome: Outcome::Skipped,
            reason: "12 rows kept, 50 needed".into(),
        },
    ];
    assert_eq!(next(&j), Next::End(Outcome::Skipped));
}

#[test]
fn a_rolled_back_canary_is_left_to_the_controller_to_unload() {
    let mut j = through(Stage::Gate);
    j.push(started(Stage::Canary));
    j.push(Event::Concluded {
        stage: Stage::Canary,
        outcome: Outcome::RolledBack,
        reason: "quality worse than the incumbent".into(),
    });
    assert_eq!(next(&j), Next::End(Outcome::RolledBack));
}

#[test]
fn the_journal_is_json_lines_that_name_the_event() {
    let e = Event::Failed {
        stage: Stage::Train,
        reason: "x".into(),
    };
    let line = serde_json::to_string(&e).unwrap();
    assert_eq!(line, r#"{"event":"failed","stage":"train","reason":"x"}"#);
    assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), e);
}
