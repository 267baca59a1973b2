//! When a job runs: a pure decision over the job's trigger settings, what
//! the service knows of the job's history, the clock and the machine.
//!
//! A run is due on a schedule (`every_secs` after the last run started, or
//! after the service first saw the job) or once `new_rows` graded or
//! feedback rows arrived on the route since the last run cut its dataset,
//! whichever comes first. A due run still waits while the job's last run
//! started less than `min_interval_secs` ago, and while another job trains
//! (one training at a time on a machine). The service asks again at the
//! time the decision names, or when new rows arrive.

use super::config::Trigger;

/// What the service knows of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobHistory {
    /// When the service first saw the job (ms since the epoch): the
    /// schedule's anchor before the first run.
    pub first_seen_ms: u64,
    /// When the job's last run started, if it ever ran.
    pub last_start_ms: Option<u64>,
    /// Graded or feedback rows on the job's route since the last run's
    /// dataset was cut (since `first_seen_ms` before the first run).
    pub new_rows: u64,
}

/// Why a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Schedule,
    NewRows(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Run(Due),
    /// Nothing is due; ask again at `recheck_at_ms` (the next scheduled
    /// time, if there is a schedule) or when rows arrive.
    NotDue {
        recheck_at_ms: Option<u64>,
    },
    /// Due, but the last run started too recently.
    MinInterval {
        due: Due,
        recheck_at_ms: u64,
    },
    /// Due, but another job is training on this machine.
    Busy {
        due: Due,
        training: String,
    },
}

/// The decision for one job at `now_ms`; `training` names the job whose
/// run is in its training stage on this machine, if any.
pub fn decide(t: &Trigger, h: &JobHistory, now_ms: u64, training: Option<&str>) -> Decision {
    let anchor = h.last_start_ms.unwrap_or(h.first_seen_ms);
    let next_scheduled = (t.every_secs > 0).then(|| anchor.saturating_add(t.every_secs * 1000));
    let due = if t.new_rows > 0 && h.new_rows >= t.new_rows {
        Due::NewRows(h.new_rows)
    } else if next_scheduled.is_some_and(|at| now_ms >= at) {
        Due::Schedule
    } else {
        return Decision::NotDue {
            recheck_at_ms: next_scheduled,
        };
    };
    if let Some(last) = h.last_start_ms {
        let earliest = last.saturating_add(t.min_interval_secs * 1000);
        if now_ms < earliest {
            return Decision::MinInterval {
                due,
                recheck_at_ms: earliest,
            };
        }
    }
    match training {
        Some(job) => Decision::Busy {
            due,
            training: job.to_string(),
        },
        None => Decision::Run(due),
    }
}

#[cfg(test)]
#[path = "tests/trigger.rs"]
mod tests;
