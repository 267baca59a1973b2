-- Shadow traffic of the canary: the gateway mirrors a sampled share of a
-- route's requests to the candidate variant and records the mirror's
-- answer as an inference with `shadow = 1` (never returned, never billed
-- to the tenant), and both the served request and its mirror carry the
-- same `pair_id`. Plain requests: shadow 0, pair_id ''.
-- `_retained` twins get the same columns (migration 0003's rule), in the
-- same order, so `INSERT INTO x_retained SELECT * FROM x` still lines up.

ALTER TABLE {db}.inferences ADD COLUMN shadow UInt8 DEFAULT 0;
ALTER TABLE {db}.inferences ADD COLUMN pair_id String DEFAULT '';
ALTER TABLE {db}.inferences_retained ADD COLUMN shadow UInt8 DEFAULT 0;
ALTER TABLE {db}.inferences_retained ADD COLUMN pair_id String DEFAULT '';
