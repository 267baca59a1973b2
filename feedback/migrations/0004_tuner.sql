-- The tuner's results: offline evaluations and training steps. Small
-- tables (one row per evaluated configuration, one per training step),
-- never dropped by retention: they are the record of what was promoted and
-- why.

-- One row per (eval run, configuration). The whole report (every metric,
-- its confidence interval, the per-task breakdown) is also kept as JSON in
-- `report_json`, so a reader never needs a migration to see a new metric.
CREATE TABLE IF NOT EXISTS {db}.eval_results (
    run_id String,
    ts_ms UInt64,
    dataset String,
    grader String,
    config String,
    model String,
    requests UInt64,
    request_errors UInt64,
    grader_errors UInt64,
    mean_score Float64,
    mean_score_low Float64,
    mean_score_high Float64,
    pass_rate Float64,
    pass_rate_low Float64,
    pass_rate_high Float64,
    tokens_per_request Float64,
    retries_per_request Float64,
    fallbacks_per_request Float64,
    latency_p50_ms Float64,
    latency_p95_ms Float64,
    cost_per_request_usd Float64,
    quality_per_dollar Float64,
    report_json String
) ENGINE = ReplacingMergeTree()
ORDER BY (run_id, config)
SETTINGS index_granularity = 8192;

-- One row per optimizer step of a training run (`flywheel-tuner train`).
-- heldout_reward is set on the steps where the held-out split was scored.
CREATE TABLE IF NOT EXISTS {db}.training_steps (
    run_id String,
    step UInt32,
    ts_ms UInt64,
    loss Float64,
    reward_mean Float64,
    reward_std Float64,
    pass_rate Float64,
    kl Float64,
    entropy Float64,
    grad_norm Float64,
    learning_rate Float64,
    response_len_mean Float64,
    step_secs Float64,
    tokens_per_sec Float64,
    heldout_reward Nullable(Float64)
) ENGINE = ReplacingMergeTree()
ORDER BY (run_id, step)
SETTINGS index_granularity = 8192;
