-- Rows that survive retention: inferences with feedback or training usage,
-- their attempts, and all feedback. Same schema and engine as the base
-- tables (`AS`), so `INSERT INTO x_retained SELECT * FROM x` lines up.
-- A later migration that adds a column to a base table must add it to its
-- `_retained` twin as well.

CREATE TABLE IF NOT EXISTS {db}.inferences_retained AS {db}.inferences;
CREATE TABLE IF NOT EXISTS {db}.attempts_retained AS {db}.attempts;
CREATE TABLE IF NOT EXISTS {db}.feedback_retained AS {db}.feedback;
