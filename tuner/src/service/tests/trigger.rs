use super::*;

const MIN: u64 = 60_000;

fn trigger(every_min: u64, new_rows: u64, min_interval_min: u64) -> Trigger {
    Trigger {
        every_secs: every_min * 60,
        new_rows,
        min_interval_secs: min_interval_min * 60,
    }
}

fn history(last_start_min: Option<u64>, new_rows: u64) -> JobHistory {
    JobHistory {
        first_seen_ms: 0,
        last_start_ms: last_start_min.map(|m| m * MIN),
        new_rows,
    }
}

#[test]
fn enough_new_rows_start_a_run_before_the_schedule() {
    let t = trigger(24 * 60, 500, 60);
    assert_eq!(
        decide(&t, &history(Some(0), 500), 90 * MIN, None),
        Decision::Run(Due::NewRows(500))
    );
    assert_eq!(
        decide(&t, &history(Some(0), 499), 90 * MIN, None),
        Decision::NotDue {
            recheck_at_ms: Some(24 * 60 * MIN)
        }
    );
}

#[test]
fn the_schedule_counts_from_the_last_start_or_from_when_the_job_was_first_seen() {
    let t = trigger(60, 0, 10);
    // Never ran: an hour after the service first saw the job.
    assert_eq!(
        decide(&t, &history(None, 0), 59 * MIN, None),
        Decision::NotDue {
            recheck_at_ms: Some(60 * MIN)
        }
    );
    assert_eq!(
        decide(&t, &history(None, 0), 60 * MIN, None),
        Decision::Run(Due::Schedule)
    );
    // Ran at minute 100: next at 160.
    assert_eq!(
        decide(&t, &history(Some(100), 0), 159 * MIN, None),
        Decision::NotDue {
            recheck_at_ms: Some(160 * MIN)
        }
    );
    assert_eq!(
        decide(&t, &history(Some(100), 0), 160 * MIN, None),
        Decision::Run(Due::Schedule)
    );
}

#[test]
fn a_due_run_waits_out_the_minimum_interval() {
    let t = trigger(0, 10, 30);
    assert_eq!(
        decide(&t, &history(Some(100), 50), 120 * MIN, None),
        Decision::MinInterval {
            due: Due::NewRows(50),
            recheck_at_ms: 130 * MIN
        }
    );
    assert_eq!(
        decide(&t, &history(Some(100), 50), 130 * MIN, None),
        Decision::Run(Due::NewRows(50))
    );
    // The first run has no interval to wait out.
    assert_eq!(
        decide(&t, &history(None, 10), 1, None),
        Decision::Run(Due::NewRows(10))
    );
}

#[test]
fn a_due_run_waits_while_another_job_trains() {
    let t = trigger(60, 0, 0);
    assert_eq!(
        decide(&t, &history(None, 0), 61 * MIN, Some("support")),
        Decision::Busy {
            due: Due::Schedule,
            training: "support".into()
        }
    );
}

#[test]
fn without_a_schedule_only_rows_start_a_run() {
    let t = trigger(0, 100, 0);
    assert_eq!(
        decide(&t, &history(Some(0), 99), 365 * 24 * 60 * MIN, None),
        Decision::NotDue {
            recheck_at_ms: None
        }
    );
}
