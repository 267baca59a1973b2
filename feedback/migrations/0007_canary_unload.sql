-- The canary controller records each unload of a model version from the
-- engine pool (a rolled-back candidate, or the old incumbent once the
-- grace period after a promotion ends) as an evaluation row with action
-- 'unload'; the row's reason_json carries the model, its role and each
-- engine's outcome, so a restarted controller finishes a pending unload
-- and never repeats a done one. Adding a value to an Enum8 only changes
-- metadata (existing parts are not rewritten), and restating the full
-- type is idempotent.
ALTER TABLE {db}.canary_evaluations MODIFY COLUMN action Enum8('promote' = 1, 'hold' = 2, 'rollback' = 3, 'keep_incumbent' = 4, 'pause' = 5, 'resume' = 6, 'create' = 7, 'unload' = 8);
