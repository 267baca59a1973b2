-- The canary controller's state and its record (`flywheel-canary`). Small
-- tables, never dropped by retention: they are the history of what was
-- promoted or rolled back, and why.

-- One row per version of an experiment: every change of state (created,
-- promoted to the next step, paused, resumed, rolled back, completed) is a
-- new row with a higher `revision`, and ReplacingMergeTree(revision) keeps
-- the latest; readers use FINAL. `spec_json` holds the whole definition
-- (statistical settings, quality metrics, ramp steps, weight scale) as
-- JSON, so a new knob needs no migration. `status` Enum8 values are fixed
-- forever (the Rust side writes the numbers).
CREATE TABLE IF NOT EXISTS {db}.experiments (
    id String,
    revision UInt64,
    route String,
    incumbent String,
    candidate String,
    spec_json String,
    step UInt32,
    step_name String,
    candidate_percent Float64,
    step_started_ms UInt64,
    status Enum8('running' = 1, 'paused' = 2, 'completed' = 3, 'rolled_back' = 4,
                 'kept_incumbent' = 5),
    status_reason String,
    origin String,
    created_ms UInt64,
    updated_ms UInt64
) ENGINE = ReplacingMergeTree(revision)
ORDER BY id
SETTINGS index_granularity = 8192;

-- One row per evaluation (a look of the controller, or a manual action):
-- the action, its reason, the whole `Evidence` as JSON, and the figures a
-- dashboard plots as columns. `revision` is the experiment revision the
-- row produced (for a transition) or looked at (for a hold); `step_after`
-- and `status_after` are the state after it, so the controller can finish
-- a transition whose state write a crash cut off. Nullable columns are
-- "no data" (e.g. no graded request yet), never zeros.
CREATE TABLE IF NOT EXISTS {db}.canary_evaluations (
    id String,
    experiment_id String,
    ts_ms UInt64,
    date Date,
    revision UInt64,
    route String,
    step UInt32,
    step_name String,
    candidate_percent Float64,
    elapsed_secs UInt64,
    action Enum8('promote' = 1, 'hold' = 2, 'rollback' = 3, 'keep_incumbent' = 4,
                 'pause' = 5, 'resume' = 6, 'create' = 7),
    manual UInt8,
    actor String,
    reason_kind String,
    reason_json String,
    evidence_json String,
    step_after UInt32,
    status_after Enum8('running' = 1, 'paused' = 2, 'completed' = 3, 'rolled_back' = 4,
                       'kept_incumbent' = 5),
    incumbent_weight UInt32,
    candidate_weight UInt32,
    incumbent_requests UInt64,
    candidate_requests UInt64,
    incumbent_graded UInt64,
    candidate_graded UInt64,
    incumbent_quality Nullable(Float64),
    candidate_quality Nullable(Float64),
    incumbent_cost_per_request Nullable(Float64),
    candidate_cost_per_request Nullable(Float64),
    incumbent_quality_per_dollar Nullable(Float64),
    candidate_quality_per_dollar Nullable(Float64),
    qpd_advantage Nullable(Float64),
    qpd_lower Nullable(Float64),
    qpd_upper Nullable(Float64),
    qpd_p_value Nullable(Float64),
    quality_difference Nullable(Float64),
    quality_lower Nullable(Float64),
    quality_upper Nullable(Float64),
    srm_p_value Nullable(Float64),
    guardrails_failing Array(String)
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (experiment_id, ts_ms, id)
SETTINGS index_granularity = 8192;
