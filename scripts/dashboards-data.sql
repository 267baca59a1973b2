-- Synthetic traffic for the dashboards' benchmark (scripts/dashboards-bench.sh):
-- {rows} inferences over the last {days} days, spread over 5 tenants, 4 routes,
-- 3 variants, 4 models and 3 providers; about 10 % with a retry (an extra
-- failed attempt), 3 % fallbacks, 2 % 5xx, 1 % 429, and a grader score on a
-- fifth of them. `{db}`, `{rows}`, `{days}` and `{now_ms}` are substituted
-- by the script. The rows go through the same materialized views as live
-- traffic, so the rollups are filled as the gateway's inserts would fill them.

INSERT INTO {db}.inferences
  (id, ts_ms, date, tenant, endpoint, route, variant, provider, model, episode_id, user,
   stream, status, prompt_tokens, completion_tokens, tokens_estimated, ttft_ms, latency_ms,
   overhead_ms, retries, fallback_depth, failovers, failover_diverged, validation, cost_usd,
   attempt_count, request_body, response_body)
SELECT
  concat('bench-', toString(number)) AS id,
  {now_ms} - intHash64(number) % ({days} * 86400000) AS ts,
  toDate(intDiv(ts, 1000)) AS date,
  concat('tenant-', toString(number % 5)) AS tenant,
  'chat' AS endpoint,
  concat('route-', toString(intHash32(number) % 4)) AS route,
  arrayElement(['chain', 'tuned-a', 'tuned-b'], 1 + intHash32(number + 1) % 3) AS variant,
  arrayElement(['engine', 'openai', 'anthropic'], 1 + intHash32(number + 2) % 3) AS provider,
  arrayElement(['smollm2', 'qwen-0.5b', 'gpt-4o-mini', 'route-v3'], 1 + intHash32(number + 3) % 4) AS model,
  NULL, NULL,
  toUInt8(number % 2) AS stream,
  multiIf(number % 50 = 7, 500, number % 100 = 13, 429, 200) AS status,
  100 + number % 400 AS prompt_tokens,
  20 + number % 200 AS completion_tokens,
  0,
  if(number % 2 = 1, 50. + (intHash32(number + 4) % 400), NULL) AS ttft_ms,
  200. + (intHash32(number + 5) % 3000) AS latency_ms,
  0.2 + (intHash32(number + 6) % 100) / 100. AS overhead_ms,
  toUInt32(number % 10 = 3) AS retries,
  toUInt32(number % 33 = 5) AS fallback_depth,
  toUInt32(number % 200 = 9) AS failovers,
  0,
  if(number % 40 = 11, 'failed', if(number % 3 = 0, 'passed', 'not_requested')) AS validation,
  (prompt_tokens * 0.15 + completion_tokens * 0.6) / 1e6 AS cost_usd,
  1 + retries + fallback_depth AS attempt_count,
  '', ''
FROM numbers({rows});

INSERT INTO {db}.attempts
  (inference_id, seq, ts_ms, date, tenant, route, variant, provider, model, target_index,
   try_index, outcome, status, reason, started_ms, latency_ms, ttft_ms, prompt_tokens,
   completion_tokens, tokens_estimated, cost_usd)
SELECT
  concat('bench-', toString(number)),
  0,
  {now_ms} - intHash64(number) % ({days} * 86400000) AS ts,
  toDate(intDiv(ts, 1000)),
  concat('tenant-', toString(number % 5)),
  concat('route-', toString(intHash32(number) % 4)),
  arrayElement(['chain', 'tuned-a', 'tuned-b'], 1 + intHash32(number + 1) % 3),
  arrayElement(['engine', 'openai', 'anthropic'], 1 + intHash32(number + 2) % 3),
  arrayElement(['smollm2', 'qwen-0.5b', 'gpt-4o-mini', 'route-v3'], 1 + intHash32(number + 3) % 4),
  0, 0,
  if(number % 20 = 3, 'timeout', 'error_status'),
  if(number % 20 = 3, NULL, 503),
  if(number % 20 = 3, 'attempt timed out', 'upstream 503'),
  ts, 1000., NULL, 0, 0, 0, 0.
FROM numbers({rows})
WHERE number % 10 = 3;

INSERT INTO {db}.feedback
  (id, ts_ms, date, tenant, inference_id, episode_id, route, variant, metric, value_kind,
   value_float, value_text, tag_keys, tag_values, idempotency_key, source)
SELECT
  concat('fb-', toString(number)),
  {now_ms} - intHash64(number) % ({days} * 86400000) + 5000 AS ts,
  toDate(intDiv(ts, 1000)),
  concat('tenant-', toString(number % 5)),
  concat('bench-', toString(number)),
  NULL,
  concat('route-', toString(intHash32(number) % 4)),
  arrayElement(['chain', 'tuned-a', 'tuned-b'], 1 + intHash32(number + 1) % 3),
  if(number % 10 = 0, 'thumbs', 'grader_bench'),
  if(number % 10 = 0, 'boolean', 'float'),
  (intHash32(number + 7) % 101) / 100.,
  '', [], [], NULL,
  if(number % 10 = 0, 'api', 'grader')
FROM numbers({rows})
WHERE number % 5 = 0;
