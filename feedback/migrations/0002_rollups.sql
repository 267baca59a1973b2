-- Per-minute rollups per route and variant, fed by materialized views.
--
-- A materialized view fires on every INSERT into its source table and never
-- sees ReplacingMergeTree's deduplication, so a replayed row would be counted
-- twice here. The shipper therefore never inserts an inference or feedback
-- id that already exists (see the crate docs, "Exactly once").
--
-- The aggregate state types must match the view's SELECT exactly.

CREATE TABLE IF NOT EXISTS {db}.inference_rollup_1m (
    minute DateTime,
    route String,
    variant String,
    requests AggregateFunction(count),
    server_errors AggregateFunction(sum, UInt64),
    client_errors AggregateFunction(sum, UInt64),
    validation_failures AggregateFunction(sum, UInt64),
    retried AggregateFunction(sum, UInt64),
    retries_total AggregateFunction(sum, UInt64),
    fallbacks AggregateFunction(sum, UInt64),
    prompt_tokens_total AggregateFunction(sum, UInt64),
    completion_tokens_total AggregateFunction(sum, UInt64),
    cost_usd_total AggregateFunction(sum, Float64),
    latency_q AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64),
    ttft_q AggregateFunction(quantilesIf(0.5, 0.95, 0.99), Float64, UInt8),
    ttft_avg AggregateFunction(avgIf, Float64, UInt8)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (route, variant, minute)
SETTINGS index_granularity = 8192;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.inference_rollup_1m_mv
TO {db}.inference_rollup_1m
AS SELECT
    toStartOfMinute(toDateTime(intDiv(ts_ms, 1000))) AS minute,
    route,
    variant,
    countState() AS requests,
    sumState(toUInt64(status >= 500)) AS server_errors,
    sumState(toUInt64(status >= 400 AND status < 500)) AS client_errors,
    sumState(toUInt64(validation = 'failed')) AS validation_failures,
    sumState(toUInt64(retries > 0)) AS retried,
    sumState(toUInt64(retries)) AS retries_total,
    sumState(toUInt64(fallback_depth > 0)) AS fallbacks,
    sumState(prompt_tokens) AS prompt_tokens_total,
    sumState(completion_tokens) AS completion_tokens_total,
    sumState(cost_usd) AS cost_usd_total,
    quantilesState(0.5, 0.95, 0.99)(latency_ms) AS latency_q,
    quantilesIfState(0.5, 0.95, 0.99)(assumeNotNull(ttft_ms), isNotNull(ttft_ms)) AS ttft_q,
    avgIfState(assumeNotNull(ttft_ms), isNotNull(ttft_ms)) AS ttft_avg
FROM {db}.inferences
GROUP BY minute, route, variant;

-- Feedback per minute, route, variant and metric. `numeric_n` counts
-- the boolean and float values whose sum is `value_sum` (mean = value_sum /
-- numeric_n). Output aliases must not equal a source column name: an alias
-- shadows the column inside the same SELECT on ClickHouse.
CREATE TABLE IF NOT EXISTS {db}.feedback_rollup_1m (
    minute DateTime,
    route String,
    variant String,
    metric String,
    n AggregateFunction(count),
    numeric_n AggregateFunction(sum, UInt64),
    value_sum AggregateFunction(sum, Float64)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (route, variant, metric, minute)
SETTINGS index_granularity = 8192;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.feedback_rollup_1m_mv
TO {db}.feedback_rollup_1m
AS SELECT
    toStartOfMinute(toDateTime(intDiv(ts_ms, 1000))) AS minute,
    route,
    variant,
    metric,
    countState() AS n,
    sumState(toUInt64(value_kind IN ('boolean', 'float'))) AS numeric_n,
    sumState(if(value_kind IN ('boolean', 'float'), value_float, 0.)) AS value_sum
FROM {db}.feedback
GROUP BY minute, route, variant, metric;
