-- Episodes by tenant: who may attach episode-level feedback to an episode.
--
-- Episode ids are chosen by the client, so two tenants may use the same one:
-- an episode is (tenant, episode_id), never episode_id alone. The feedback
-- endpoint looks one up for the caller's tenant only; `inferences` is sorted
-- by `id`, so a lookup by episode id there reads the whole table (a tenant
-- looping random episode ids would scan it once per request). ClickHouse
-- 18.16 has no data-skipping index, hence this small table sorted by
-- (tenant, episode_id), one row per inference with an episode, collapsed to
-- the latest (`ReplacingMergeTree(ts_ms)`); readers take the latest row
-- themselves (`ORDER BY ts_ms DESC LIMIT 1`) rather than rely on merges.
--
-- Filled like migration 0008's rollups: a backfill of the rows that exist
-- when the migration runs (only while the table is empty, so a migration that
-- died after it and runs again does not copy them twice; a copy would be
-- harmless anyway), then a materialized view for every later INSERT. The
-- table comes first so that the view never writes into a missing table.
--
-- `ifNull(episode_id, '') != ''` rather than `isNotNull(episode_id)`: the
-- output alias `episode_id` is substituted into WHERE on 18.16, and
-- `isNotNull(ifNull(episode_id, ''))` would keep the inferences without one.

CREATE TABLE IF NOT EXISTS {db}.episodes (
    tenant String,
    episode_id String,
    ts_ms UInt64,
    route String,
    variant String
) ENGINE = ReplacingMergeTree(ts_ms)
ORDER BY (tenant, episode_id)
SETTINGS index_granularity = 8192;

INSERT INTO {db}.episodes
SELECT tenant, ifNull(episode_id, '') AS episode_id, ts_ms, route, variant
FROM {db}.inferences FINAL
WHERE ifNull(episode_id, '') != '' AND (SELECT count() FROM {db}.episodes) = 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.episodes_mv
TO {db}.episodes
AS SELECT tenant, ifNull(episode_id, '') AS episode_id, ts_ms, route, variant
FROM {db}.inferences
WHERE ifNull(episode_id, '') != '';
