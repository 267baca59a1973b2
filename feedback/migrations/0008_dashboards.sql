-- Per-minute and per-hour rollups for the dashboards (`flywheel-dashboards`), with every
-- dimension the pages filter on. Migration 0002's rollups are per route and
-- variant only, so a page filtered by tenant, model or provider would have to
-- read `inferences` itself: with millions of rows that is seconds per chart.
--
-- `shadow` is a dimension, not a filter: the pages count only served
-- traffic (shadow = 0), yet the mirrors stay visible to a later page.
--
-- Each rollup is filled twice, once: a backfill of the rows that exist when
-- the migration runs, then a materialized view for every later INSERT. The
-- backfill only runs while the rollup is empty, so a migration that died
-- after it and runs again does not count the old rows twice; rows shipped
-- in the instant between the backfill and the view's creation are missing
-- from the rollup (never counted twice). The table comes first so the view
-- never writes into a table that does not exist. The backfill groups on
-- disk past 1 GB (`max_bytes_before_external_group_by`): ten million rows
-- of varied traffic are millions of groups, each with three quantile
-- states, more than the server's default 4 GB per query in memory.
--
-- The aggregate state types must match the SELECTs exactly, and an output
-- alias must not equal a source column name (migration 0002's rule).

CREATE TABLE IF NOT EXISTS {db}.inference_rollup_dims_1m (
    minute DateTime,
    tenant String,
    route String,
    variant String,
    model String,
    provider String,
    shadow UInt8,
    requests AggregateFunction(count),
    errors_4xx AggregateFunction(sum, UInt64),
    errors_5xx AggregateFunction(sum, UInt64),
    validation_failures AggregateFunction(sum, UInt64),
    ok_requests AggregateFunction(sum, UInt64),
    retries_total AggregateFunction(sum, UInt64),
    fallbacks AggregateFunction(sum, UInt64),
    failovers_total AggregateFunction(sum, UInt64),
    prompt_tokens_total AggregateFunction(sum, UInt64),
    completion_tokens_total AggregateFunction(sum, UInt64),
    cost_usd_total AggregateFunction(sum, Float64),
    latency_q AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), Float64),
    ttft_q AggregateFunction(quantilesIf(0.5, 0.9, 0.95, 0.99), Float64, UInt8),
    overhead_q AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), Float64)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, tenant, route, variant, model, provider, shadow)
SETTINGS index_granularity = 8192;

INSERT INTO {db}.inference_rollup_dims_1m
SELECT
    toStartOfMinute(toDateTime(intDiv(ts_ms, 1000))) AS minute,
    tenant,
    route,
    variant,
    model,
    provider,
    shadow,
    countState() AS requests,
    sumState(toUInt64(status >= 400 AND status < 500)) AS errors_4xx,
    sumState(toUInt64(status >= 500)) AS errors_5xx,
    sumState(toUInt64(validation = 'failed')) AS validation_failures,
    sumState(toUInt64(status < 400 AND validation != 'failed')) AS ok_requests,
    sumState(toUInt64(retries)) AS retries_total,
    sumState(toUInt64(fallback_depth > 0)) AS fallbacks,
    sumState(toUInt64(failovers)) AS failovers_total,
    sumState(prompt_tokens) AS prompt_tokens_total,
    sumState(completion_tokens) AS completion_tokens_total,
    sumState(cost_usd) AS cost_usd_total,
    quantilesState(0.5, 0.9, 0.95, 0.99)(latency_ms) AS latency_q,
    quantilesIfState(0.5, 0.9, 0.95, 0.99)(assumeNotNull(ttft_ms), isNotNull(ttft_ms)) AS ttft_q,
    quantilesState(0.5, 0.9, 0.95, 0.99)(overhead_ms) AS overhead_q
FROM {db}.inferences FINAL
WHERE (SELECT count() FROM {db}.inference_rollup_dims_1m) = 0
GROUP BY minute, tenant, route, variant, model, provider, shadow
SETTINGS max_bytes_before_external_group_by = 1000000000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.inference_rollup_dims_1m_mv
TO {db}.inference_rollup_dims_1m
AS SELECT
    toStartOfMinute(toDateTime(intDiv(ts_ms, 1000))) AS minute,
    tenant,
    route,
    variant,
    model,
    provider,
    shadow,
    countState() AS requests,
    sumState(toUInt64(status >= 400 AND status < 500)) AS errors_4xx,
    sumState(toUInt64(status >= 500)) AS errors_5xx,
    sumState(toUInt64(validation = 'failed')) AS validation_failures,
    sumState(toUInt64(status < 400 AND validation != 'failed')) AS ok_requests,
    sumState(toUInt64(retries)) AS retries_total,
    sumState(toUInt64(fallback_depth > 0)) AS fallbacks,
    sumState(toUInt64(failovers)) AS failovers_total,
    sumState(prompt_tokens) AS prompt_tokens_total,
    sumState(completion_tokens) AS completion_tokens_total,
    sumState(cost_usd) AS cost_usd_total,
    quantilesState(0.5, 0.9, 0.95, 0.99)(latency_ms) AS latency_q,
    quantilesIfState(0.5, 0.9, 0.95, 0.99)(assumeNotNull(ttft_ms), isNotNull(ttft_ms)) AS ttft_q,
    quantilesState(0.5, 0.9, 0.95, 0.99)(overhead_ms) AS overhead_q
FROM {db}.inferences
GROUP BY minute, tenant, route, variant, model, provider, shadow;

-- The same rollup per hour. Merging a quantile state costs about a
-- microsecond and summing a row a little less, so a month of per-minute rows
-- (43 200 minutes times every dimension tuple seen) takes seconds to read;
-- a page whose buckets are whole hours reads this table instead, up to 60
-- times fewer rows.
CREATE TABLE IF NOT EXISTS {db}.inference_rollup_dims_1h (
    hour DateTime,
    tenant String,
    route String,
    variant String,
    model String,
    provider String,
    shadow UInt8,
    requests AggregateFunction(count),
    errors_4xx AggregateFunction(sum, UInt64),
    errors_5xx AggregateFunction(sum, UInt64),
    validation_failures AggregateFunction(sum, UInt64),
    ok_requests AggregateFunction(sum, UInt64),
    retries_total AggregateFunction(sum, UInt64),
    fallbacks AggregateFunction(sum, UInt64),
    failovers_total AggregateFunction(sum, UInt64),
    prompt_tokens_total AggregateFunction(sum, UInt64),
    completion_tokens_total AggregateFunction(sum, UInt64),
    cost_usd_total AggregateFunction(sum, Float64),
    latency_q AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), Float64),
    ttft_q AggregateFunction(quantilesIf(0.5, 0.9, 0.95, 0.99), Float64, UInt8),
    overhead_q AggregateFunction(quantiles(0.5, 0.9, 0.95, 0.99), Float64)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, tenant, route, variant, model, provider, shadow)
SETTINGS index_granularity = 8192;

INSERT INTO {db}.inference_rollup_dims_1h
SELECT
    toStartOfHour(toDateTime(intDiv(ts_ms, 1000))) AS hour,
    tenant,
    route,
    variant,
    model,
    provider,
    shadow,
    countState() AS requests,
    sumState(toUInt64(status >= 400 AND status < 500)) AS errors_4xx,
    sumState(toUInt64(status >= 500)) AS errors_5xx,
    sumState(toUInt64(validation = 'failed')) AS validation_failures,
    sumState(toUInt64(status < 400 AND validation != 'failed')) AS ok_requests,
    sumState(toUInt64(retries)) AS retries_total,
    sumState(toUInt64(fallback_depth > 0)) AS fallbacks,
    sumState(toUInt64(failovers)) AS failovers_total,
    sumState(prompt_tokens) AS prompt_tokens_total,
    sumState(completion_tokens) AS completion_tokens_total,
    sumState(cost_usd) AS cost_usd_total,
    quantilesState(0.5, 0.9, 0.95, 0.99)(latency_ms) AS latency_q,
    quantilesIfState(0.5, 0.9, 0.95, 0.99)(assumeNotNull(ttft_ms), isNotNull(ttft_ms)) AS ttft_q,
    quantilesState(0.5, 0.9, 0.95, 0.99)(overhead_ms) AS overhead_q
FROM {db}.inferences FINAL
WHERE (SELECT count() FROM {db}.inference_rollup_dims_1h) = 0
GROUP BY hour, tenant, route, variant, model, provider, shadow
SETTINGS max_bytes_before_external_group_by = 1000000000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.inference_rollup_dims_1h_mv
TO {db}.inference_rollup_dims_1h
AS SELECT
    toStartOfHour(toDateTime(intDiv(ts_ms, 1000))) AS hour,
    tenant,
    route,
    variant,
    model,
    provider,
    shadow,
    countState() AS requests,
    sumState(toUInt64(status >= 400 AND status < 500)) AS errors_4xx,
    sumState(toUInt64(status >= 500)) AS errors_5xx,
    sumState(toUInt64(validation = 'failed')) AS validation_failures,
    sumState(toUInt64(status < 400 AND validation != 'failed')) AS ok_requests,
    sumState(toUInt64(retries)) AS retries_total,
    sumState(toUInt64(fallback_depth > 0)) AS fallbacks,
    sumState(toUInt64(failovers)) AS failovers_total,
    sumState(prompt_tokens) AS prompt_tokens_total,
    sumState(completion_tokens) AS completion_tokens_total,
    sumState(cost_usd) AS cost_usd_total,
    quantilesState(0.5, 0.9, 0.95, 0.99)(latency_ms) AS latency_q,
    quantilesIfState(0.5, 0.9, 0.95, 0.99)(assumeNotNull(ttft_ms), isNotNull(ttft_ms)) AS ttft_q,
    quantilesState(0.5, 0.9, 0.95, 0.99)(overhead_ms) AS overhead_q
FROM {db}.inferences
GROUP BY hour, tenant, route, variant, model, provider, shadow;


-- Feedback per minute, tenant, route, variant, metric and source. Booleans
-- and floats are numeric (`numeric_n` of them, summing to `value_sum`, their
-- squares to `value_sq_sum`): mean and variance, hence a 95 % interval, come
-- from these three sums.
CREATE TABLE IF NOT EXISTS {db}.feedback_rollup_dims_1m (
    minute DateTime,
    tenant String,
    route String,
    variant String,
    metric String,
    source String,
    n AggregateFunction(count),
    numeric_n AggregateFunction(sum, UInt64),
    value_sum AggregateFunction(sum, Float64),
    value_sq_sum AggregateFunction(sum, Float64)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, tenant, route, variant, metric, source)
SETTINGS index_granularity = 8192;

INSERT INTO {db}.feedback_rollup_dims_1m
SELECT
    toStartOfMinute(toDateTime(intDiv(ts_ms, 1000))) AS minute,
    tenant,
    route,
    variant,
    metric,
    source,
    countState() AS n,
    sumState(toUInt64(value_kind IN ('boolean', 'float'))) AS numeric_n,
    sumState(if(value_kind IN ('boolean', 'float'), value_float, 0.)) AS value_sum,
    sumState(if(value_kind IN ('boolean', 'float'), value_float * value_float, 0.)) AS value_sq_sum
FROM {db}.feedback FINAL
WHERE (SELECT count() FROM {db}.feedback_rollup_dims_1m) = 0
GROUP BY minute, tenant, route, variant, metric, source
SETTINGS max_bytes_before_external_group_by = 1000000000;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.feedback_rollup_dims_1m_mv
TO {db}.feedback_rollup_dims_1m
AS SELECT
    toStartOfMinute(toDateTime(intDiv(ts_ms, 1000))) AS minute,
    tenant,
    route,
    variant,
    metric,
    source,
    countState() AS n,
    sumState(toUInt64(value_kind IN ('boolean', 'float'))) AS numeric_n,
    sumState(if(value_kind IN ('boolean', 'float'), value_float, 0.)) AS value_sum,
    sumState(if(value_kind IN ('boolean', 'float'), value_float * value_float, 0.)) AS value_sq_sum
FROM {db}.feedback
GROUP BY minute, tenant, route, variant, metric, source;
