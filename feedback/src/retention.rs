//! Retention: drop old months of the base tables, keeping what training
//! needs.
//!
//! 18.16 has no TTL, so retention drops whole month partitions
//! (`ALTER TABLE … DROP PARTITION YYYYMM`). A month is dropped once its
//! last day is more than `older_than_days` days ago (never a month that can
//! still receive current events). Before the drop, rows that must survive
//! are copied into the `*_retained` twins (same schema):
//! * inferences with feedback (on the inference, or on its episode:
//!   feedback that names no inference; in `feedback` or
//!   `feedback_retained`) or listed in `training_usage`;
//!   - only feedback of the inference's own tenant counts (episode ids are
//!     the client's: another tenant's feedback on the same episode id must
//!     not keep this tenant's bodies);
//!   - implicit signals (`implicit:*`, which the gateway infers, e.g.
//!     "valid on the first try" on every structured answer) do not count:
//!     they would keep nearly all structured traffic forever;
//! * the attempts of those inferences;
//! * all feedback (small, and it is the labels).
//!
//! Copies skip rows already retained, so a run that died between copy and
//! drop can simply run again. The rollups and `training_usage` are not
//! touched (the rollups are tiny and keep the history of the dashboards).

use serde::Serialize;

use crate::store::{rows::date_of, timed, Result, Store};

/// What retention did (or would do, with `dry_run`) to one month.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartitionPlan {
    /// `YYYYMM`.
    pub partition: u32,
    pub inferences: u64,
    pub inferences_kept: u64,
    pub attempts: u64,
    pub attempts_kept: u64,
    pub feedback: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    /// Months whose last day is before this day (days since epoch) go.
    pub cutoff_day: u16,
    pub partitions: Vec<PartitionPlan>,
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Day number of the last day of month `yyyymm`.
fn month_last_day(yyyymm: u32) -> i64 {
    let (y, m) = ((yyyymm / 100) as i64, yyyymm % 100);
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(ny, nm, 1) - 1
}

/// Runs retention relative to now.
pub async fn run_retention(
    store: &Store,
    older_than_days: u32,
    dry_run: bool,
) -> Result<RetentionReport> {
    run_retention_at(store, crate::now_ms(), older_than_days, dry_run).await
}

/// Runs retention as if it were `now_ms` (tests, backfills).
pub async fn run_retention_at(
    store: &Store,
    now_ms: u64,
    older_than_days: u32,
    dry_run: bool,
) -> Result<RetentionReport> {
    let db = store.database();
    let cutoff_day = date_of(now_ms).saturating_sub(older_than_days.min(u16::MAX as u32) as u16);
    let partitions: Vec<String> = timed(
        "list partitions",
        store
            .client()
            .query(
                "SELECT DISTINCT partition FROM system.parts \
                 WHERE database = ? AND table IN ('inferences', 'attempts', 'feedback') AND active \
                 ORDER BY partition",
            )
            .bind(db)
            .fetch_all::<String>(),
    )
    .await?;
    let mut report = RetentionReport {
        dry_run,
        cutoff_day,
        partitions: Vec::new(),
    };
    for p in partitions {
        let Ok(month) = p.trim_matches('\'').parse::<u32>() else {
            tracing::warn!(partition = p, "unexpected partition id; skipped");
            continue;
        };
        if month_last_day(month) >= cutoff_day as i64 {
            continue;
        }
        report
            .partitions
            .push(retain_month(store, month, dry_run).await?);
    }
    Ok(report)
}

async fn retain_month(store: &Store, month: u32, dry_run: bool) -> Result<PartitionPlan> {
    let db = store.database();
    // Episode-level feedback is feedback that names no inference: an
    // online grader's score names its inference and that inference's
    // episode, and keeps the inference, not the whole episode.
    let explicit = "source NOT LIKE 'implicit:%'";
    let keep = format!(
        "((tenant, id) IN (SELECT tenant, assumeNotNull(inference_id) FROM {db}.feedback \
              WHERE isNotNull(inference_id) AND {explicit}) \
          OR (tenant, id) IN (SELECT tenant, assumeNotNull(inference_id) FROM {db}.feedback_retained \
              WHERE isNotNull(inference_id) AND {explicit}) \
          OR id IN (SELECT inference_id FROM {db}.training_usage) \
          OR (isNotNull(episode_id) AND (tenant, assumeNotNull(episode_id)) IN \
              (SELECT tenant, assumeNotNull(episode_id) FROM {db}.feedback \
               WHERE isNotNull(episode_id) AND isNull(inference_id) AND {explicit})) \
          OR (isNotNull(episode_id) AND (tenant, assumeNotNull(episode_id)) IN \
              (SELECT tenant, assumeNotNull(episode_id) FROM {db}.feedback_retained \
               WHERE isNotNull(episode_id) AND isNull(inference_id) AND {explicit})))"
    );
    let in_month = format!("toYYYYMM(date) = {month}");
    let count = |sql: String| async move {
        timed(
            "retention count",
            store.client().query(&sql).fetch_one::<(u64, u64)>(),
        )
        .await
    };
    let (inferences, inferences_kept) = count(format!(
        "SELECT count(), countIf({keep}) FROM {db}.inferences FINAL WHERE {in_month}"
    ))
    .await?;
    let (attempts, attempts_kept) = count(format!(
        "SELECT count(), countIf(inference_id IN (SELECT id FROM {db}.inferences WHERE {in_month} AND {keep})) \
         FROM {db}.attempts FINAL WHERE {in_month}"
    ))
    .await?;
    let (feedback, _) = count(format!(
        "SELECT count(), toUInt64(0) FROM {db}.feedback FINAL WHERE {in_month}"
    ))
    .await?;
    let plan = PartitionPlan {
        partition: month,
        inferences,
        inferences_kept,
        attempts,
        attempts_kept,
        feedback,
    };
    if dry_run {
        return Ok(plan);
    }

    let copies = [
        format!(
            "INSERT INTO {db}.inferences_retained SELECT * FROM {db}.inferences FINAL \
             WHERE {in_month} AND {keep} AND id NOT IN (SELECT id FROM {db}.inferences_retained)"
        ),
        format!(
            "INSERT INTO {db}.attempts_retained SELECT * FROM {db}.attempts FINAL \
             WHERE {in_month} AND inference_id IN (SELECT id FROM {db}.inferences_retained) \
             AND (inference_id, seq) NOT IN (SELECT inference_id, seq FROM {db}.attempts_retained)"
        ),
        format!(
            "INSERT INTO {db}.feedback_retained SELECT * FROM {db}.feedback FINAL \
             WHERE {in_month} AND id NOT IN (SELECT id FROM {db}.feedback_retained)"
        ),
    ];
    for sql in copies {
        timed("retention copy", store.client().query(&sql).execute()).await?;
    }
    // Only after every copy succeeded.
    for table in ["inferences", "attempts", "feedback"] {
        let sql = format!("ALTER TABLE {db}.{table} DROP PARTITION {month}");
        timed("drop partition", store.client().query(&sql).execute()).await?;
    }
    tracing::info!(database = db, month, ?plan, "retention dropped a month");
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2023, 11, 14), 19675);
        assert_eq!(month_last_day(202311), days_from_civil(2023, 11, 30));
        assert_eq!(month_last_day(202312), days_from_civil(2023, 12, 31));
        assert_eq!(month_last_day(202402), days_from_civil(2024, 2, 29));
    }
}
