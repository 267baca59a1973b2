-- Base event tables: one row per event, deduplicated by id.
--
-- ClickHouse 18.16 rules (see crate docs): no DateTime64/Map/JSON/Bool/TTL/
-- LowCardinality; times are `ts_ms UInt64` plus a `date Date` written by the
-- shipper (days since epoch of ts_ms), which partitions by month so that
-- retention can DROP PARTITION. Enum8 values are fixed forever: add new
-- values at the end, never renumber (the Rust side writes the numbers).
--
-- ReplacingMergeTree ORDER BY id: a replayed row has the same sorting key as
-- the original and the same partition (date comes from ts_ms), so merges and
-- `FINAL` collapse it. Ids are UUIDv7, so ORDER BY id also clusters by time
-- and the shipper's `id IN (...)` existence check reads few granules.
-- `{db}` is replaced by the database name by the migration runner.

CREATE TABLE IF NOT EXISTS {db}.inferences (
    id String,
    ts_ms UInt64,
    date Date,
    tenant String,
    endpoint String,
    route String,
    variant String,
    provider String,
    model String,
    episode_id Nullable(String),
    user Nullable(String),
    stream UInt8,
    status UInt16,
    prompt_tokens UInt64,
    completion_tokens UInt64,
    tokens_estimated UInt8,
    ttft_ms Nullable(Float64),
    latency_ms Float64,
    overhead_ms Float64,
    retries UInt32,
    fallback_depth UInt32,
    failovers UInt32,
    failover_diverged UInt8,
    validation Enum8('not_requested' = 1, 'passed' = 2, 'failed' = 3),
    cost_usd Float64,
    attempt_count UInt32,
    request_body String,
    response_body String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY id
SETTINGS index_granularity = 8192;

-- One row per upstream attempt. `seq` is the attempt's position in the
-- event's list, unique within an inference. No materialized view reads this
-- table, so a replay that re-inserts attempts only adds duplicates that
-- FINAL / LIMIT 1 BY collapse.
CREATE TABLE IF NOT EXISTS {db}.attempts (
    inference_id String,
    seq UInt32,
    ts_ms UInt64,
    date Date,
    tenant String,
    route String,
    variant String,
    provider String,
    model String,
    target_index UInt32,
    try_index UInt32,
    outcome Enum8('ok' = 1, 'error_status' = 2, 'connect_error' = 3, 'timeout' = 4,
                  'validation_failed' = 5, 'mid_stream_failover' = 6, 'circuit_open' = 7,
                  'bad_response' = 8, 'client_closed' = 9),
    status Nullable(UInt16),
    reason Nullable(String),
    started_ms UInt64,
    latency_ms Float64,
    ttft_ms Nullable(Float64),
    prompt_tokens UInt64,
    completion_tokens UInt64,
    tokens_estimated UInt8,
    cost_usd Float64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (inference_id, seq)
SETTINGS index_granularity = 8192;

-- One row per feedback event. The value is split by kind: booleans (0/1)
-- and floats in value_float, comments and demonstrations (JSON text) in
-- value_text. Tags as two parallel arrays (no Map on 18.16).
CREATE TABLE IF NOT EXISTS {db}.feedback (
    id String,
    ts_ms UInt64,
    date Date,
    tenant String,
    inference_id Nullable(String),
    episode_id Nullable(String),
    route String,
    variant String,
    metric String,
    value_kind Enum8('boolean' = 1, 'float' = 2, 'comment' = 3, 'demonstration' = 4),
    value_float Float64,
    value_text String,
    tag_keys Array(String),
    tag_values Array(String),
    idempotency_key Nullable(String),
    source String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY id
SETTINGS index_granularity = 8192;

-- Inferences used in a training dataset. Never dropped by retention; rows
-- of `inferences` listed here are copied to `inferences_retained` before
-- their month is dropped.
CREATE TABLE IF NOT EXISTS {db}.training_usage (
    inference_id String,
    dataset String,
    ts_ms UInt64
) ENGINE = ReplacingMergeTree()
ORDER BY (inference_id, dataset)
SETTINGS index_granularity = 8192;
