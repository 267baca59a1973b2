//! Memory stays bounded while serving. mistral.rs 0.8.1 kept the KV cache of
//! every finished request in its prefix cache when running on the CPU: its
//! eviction counted only caches on an accelerator, so `--prefix-cache N` was
//! never enforced and the engine grew by tens of MB per request until the
//! kernel killed it (an engine serving SmolLM2 passed 10 GB within an hour
//! of the demo). `vendor/PATCHES.md` §8 has the fix.

mod common;

use common::*;
use serde_json::json;

/// Asks `ids` distinct questions, eight at a time.
async fn ask(http: &Http, ids: std::ops::Range<usize>) {
    let ids: Vec<usize> = ids.collect();
    for chunk in ids.chunks(8) {
        let answers = futures_util::future::join_all(chunk.iter().map(|i| {
            let http = http.clone();
            let body = json!({
                "model": "base",
                "max_tokens": 48,
                "messages": [{"role": "user", "content": format!(
                    "Question {i}: write a short note about the number {i} and why it \
                     matters, in one long sentence with many words"
                )}],
            });
            async move { http.post("/v1/chat/completions", &body).await }
        }))
        .await;
        for (status, v) in answers {
            assert_eq!(status, 200, "{v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prefix_cache_keeps_no_more_kv_caches_than_it_is_allowed() {
    let engine = Engine::smollm2(&["--max-seqs", "8", "--prefix-cache", "4"]);
    let http = engine.client();
    // Warm up: the allocator's pools and the four cached prefixes fill.
    ask(&http, 0..16).await;
    let before = engine.rss_mib();
    ask(&http, 16..80).await;
    let after = engine.rss_mib();
    // Each kept cache is ~50 MB here: the leak grew by ~3 GB over these 64
    // requests; a bounded cache by at most a few hundred MB of allocator
    // slack.
    assert!(
        after - before < 600.0,
        "resident memory grew from {before:.0} to {after:.0} MiB over 64 requests"
    );
}
