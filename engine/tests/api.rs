//! The OpenAI-compatible API on the real SmolLM2 (F32 HF directory), through the real binary.

mod common;

use std::sync::OnceLock;

use common::*;
use serde_json::{json, Value};

/// One engine (no admin token) shared by the tests of this file.
fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| Engine::smollm2(&[]))
}

fn france(extra: Value) -> Value {
    let mut body = json!({
        "model": "base",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "temperature": 0,
        "max_tokens": 24,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_greedy_answers_paris() {
    let http = engine().client();
    let (status, v) = http.post("/v1/chat/completions", &france(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    let text = content(&v);
    assert!(text.contains("Paris"), "answer: {text:?}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "base");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 5);
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    // Greedy is deterministic.
    let (_, v2) = http.post("/v1/chat/completions", &france(json!({}))).await;
    assert_eq!(content(&v2), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_ends_with_usage_then_done() {
    let http = engine().client();
    let body = france(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let (status, reader) = http.post_stream("/v1/chat/completions", &body).await;
    assert_eq!(status, 200);
    let events = reader.collect().await;
    assert!(events.len() >= 3, "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]), "{usage}");
    assert!(
        usage["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );
    assert!(
        usage["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "{usage}"
    );
    let text = chat_stream_text(&events);
    assert!(text.contains("Paris"), "streamed: {text:?}");
    // The streamed text equals the non-streamed greedy answer.
    let (_, v) = http.post("/v1/chat/completions", &france(json!({}))).await;
    assert_eq!(text, content(&v));
}

/// Concurrent requests get the answers they get alone, decoded together in one
/// batch. mistral.rs 0.8.1's CPU decode kernel gave every sequence of a batch
/// the attention output of the batch's last sequence (a haiku's answer
/// contained another request's JSON); `vendor/PATCHES.md` has the fix. Short
/// prompts of equal and of different lengths and two long ones (several
/// hundred tokens, so many KV tiles), greedy, sent together several rounds in
/// a different order each time so that each request takes other places in
/// the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_get_their_own_answers() {
    batched_answers_equal_the_ones_given_alone(&[]).await
}

/// The same with Q8_0 weights: quantized layers multiply a prompt's rows with a tiled
/// kernel that gives each row exactly what the decode kernel gives it alone
/// (`vendor/PATCHES.md` §6), so a prompt resumed from the prefix cache with one position
/// left gets the same logits as one computed afresh (with the dense prompt path before
/// it, 1 in 40 of these answers differed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_get_their_own_answers_with_q8_0_weights() {
    batched_answers_equal_the_ones_given_alone(&["--isq", "q8_0"]).await
}

async fn batched_answers_equal_the_ones_given_alone(weights: &[&str]) {
    const ROUNDS: usize = 5;
    // Its own engine, batched explicitly whatever the default.
    let mut args = vec!["--max-seqs", "32"];
    args.extend_from_slice(weights);
    let engine = Engine::smollm2(&args);
    let http = engine.client();
    let ask = |content: &str, format: Value| {
        let mut body = json!({
            "model": "base",
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
            "max_tokens": 32,
        });
        if !format.is_null() {
            body["response_format"] = format;
        }
        body
    };
    let long = |subject: &str| {
        let facts: String = (1..=40)
            .map(|i| format!("Fact {i}: {subject} number {i} lives in zone {}.\n", i % 13))
            .collect();
        format!("{facts}In which zone does {subject} number 17 live?")
    };
    let json_object = json!({"type": "json_object"});
    let bodies = [
        ask("What is the capital of France?", Value::Null),
        ask("What is the capital of Spain?", Value::Null),
        ask("What is the capital of Italy?", Value::Null),
        ask("Write a haiku about the sea.", Value::Null),
        ask(
            "Extract the name and age as JSON: 'Alice is 31 years old.'",
            json_object.clone(),
        ),
        ask("Give me a JSON object describing a cat.", json_object),
        ask(&long("cat"), Value::Null),
        ask(&long("dog"), Value::Null),
    ];
    let n = bodies.len();
    let mut alone = Vec::new();
    for b in &bodies {
        let (status, v) = http.post("/v1/chat/completions", b).await;
        assert_eq!(status, 200, "{v}");
        alone.push(content(&v));
        if b["messages"][0]["content"].as_str().unwrap().len() > 1000 {
            let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
            assert!(prompt_tokens > 400, "long prompt of {prompt_tokens} tokens");
        }
    }
    let mut differ = Vec::new();
    for round in 0..ROUNDS {
        let mut order: Vec<usize> = (0..n).map(|i| (i + 3 * round) % n).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        let together = futures_util::future::join_all(order.iter().map(|&i| {
            let http = http.clone();
            let body = &bodies[i];
            async move { (i, http.post("/v1/chat/completions", body).await) }
        }))
        .await;
        for (i, (status, v)) in together {
            assert_eq!(status, 200, "{v}");
            let text = content(&v);
            if text != alone[i] {
                differ.push(format!(
                    "round {round}, request {i}: {text:?} (alone: {:?})",
                    alone[i]
                ));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} concurrent answers differ from the ones given alone:\n{}",
        differ.len(),
        ROUNDS * n,
        differ.join("\n")
    );
}

/// mistral.rs decodes one sequence length at a time: the others wait, mid-answer, until
/// the running ones finish or catch up. mistral.rs 0.8.1 then ran the waiting ones as
/// prompts: their whole text (prompt and answer so far) was fed again on top of the KV
/// cache that already held it, whenever the prompt had started from the prefix cache
/// (which every request after the first does, through the chat template), and the answer
/// went on garbled ("1. Red, a colour-L, you are a helpful AI"). Long and short prompts
/// streamed together, the short answers of several lengths, several rounds, each answer
/// compared with the same prompt alone (7 of 24 differed with the engine built without
/// the fix in `vendor/PATCHES.md` §9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_set_aside_mid_decode_continue_where_they_were() {
    const ROUNDS: usize = 3;
    let engine = Engine::smollm2(&["--max-seqs", "32"]);
    let http = engine.client();
    let ask = |content: String, max_tokens: u32| {
        json!({
            "model": "base",
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
            "max_tokens": max_tokens,
            "stream": true,
        })
    };
    let passage = "The printing press spread through Europe within fifty years of Gutenberg's \
                   first Bible. Books became cheaper, literacy grew, and pamphlets carried \
                   the Reformation to ordinary people. "
        .repeat(8);
    let long = |n: usize| {
        ask(
            format!("Request {n}.\n{passage}\nSummarize the passage above in three sentences."),
            48,
        )
    };
    let shorts = [
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "Name three colours.",
        "What is 2+2?",
    ];
    // The first request fills the prefix cache with the template and the passage.
    let mut first = long(1);
    first["stream"] = json!(false);
    let (status, first) = http.post("/v1/chat/completions", &first).await;
    assert_eq!(status, 200, "{first}");
    let mut bodies = Vec::new();
    for round in 0..ROUNDS {
        bodies.extend((0..4).map(|i| long(10 + 4 * round + i)));
        bodies.extend(
            shorts
                .iter()
                .enumerate()
                .map(|(i, q)| ask(q.to_string(), 6 + 4 * i as u32 + 20 * (round as u32 % 2))),
        );
    }
    let mut answers = Vec::new();
    for round in bodies.chunks(8) {
        let together = futures_util::future::join_all(round.iter().map(|body| async {
            let (status, events) = http.post_stream("/v1/chat/completions", body).await;
            assert_eq!(status, 200);
            chat_stream_text(&events.collect().await)
        }))
        .await;
        answers.extend(together);
    }
    let mut differ = Vec::new();
    for (body, together) in bodies.iter().zip(&answers) {
        let mut body = body.clone();
        body["stream"] = json!(false);
        let (status, v) = http.post("/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{v}");
        let alone = content(&v);
        if *together != alone {
            differ.push(format!("{together:?} (alone: {alone:?})"));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} answers given together differ from the ones given alone:\n{}",
        differ.len(),
        answers.len(),
        differ.join("\n")
    );
}

/// Two conversations restored from the prefix cache, batched: mistral.rs 0.8.1 built a
/// batch's KV cache at the first sequence's capacity and panicked when another's was larger
/// (`shape mismatch on dim 2, 512 <> 1024`), after which the engine answered every request
/// with 500. A cache grows by 512 positions and one restored from the prefix cache keeps the
/// capacity of the longer conversation it was saved from, so with the default prefix cache
/// this happened whenever a user re-asked while a request of the same length was running
/// (found by simulated users on the extraction task). `vendor/PATCHES.md` §4 has the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_conversations_restored_from_prefix_caches_of_different_sizes_are_answered() {
    let engine = Engine::smollm2(&["--max-seqs", "32", "--prefix-cache", "16"]);
    let http = engine.client();
    let facts = |subject: &str| -> String {
        // About 420 tokens: below 512, and above once 160 are generated.
        (1..=28)
            .map(|i| format!("Fact {i}: {subject} number {i} lives in zone {}.\n", i % 13))
            .collect()
    };
    let ask = |subject: &str, question: &str, max_tokens: u32| {
        json!({
            "model": "base",
            "messages": [{"role": "user", "content": format!("{}{question}", facts(subject))}],
            "temperature": 0,
            "max_tokens": max_tokens,
        })
    };
    // Saved in the prefix cache, in this order on a fresh engine: the dog's conversation
    // below 512 positions (its cache is 512 long), then the cat's past 512 (grown to 1024).
    // Every request shares the chat template's first tokens with whatever came before, so
    // only the engine's first conversation starts from a cache of its own size.
    let (status, dog) = http
        .post(
            "/v1/chat/completions",
            &ask("dog", "Repeat facts 1 to 10, one per line.", 1),
        )
        .await;
    assert_eq!(status, 200, "{dog}");
    let (status, cat) = http
        .post(
            "/v1/chat/completions",
            &ask("cat", "Repeat facts 1 to 10, one per line.", 160),
        )
        .await;
    assert_eq!(status, 200, "{cat}");
    let tokens = |v: &Value, what: &str| v["usage"][what].as_u64().unwrap();
    assert_eq!(
        tokens(&cat, "prompt_tokens"),
        tokens(&dog, "prompt_tokens"),
        "the two prompts must have the same length to be batched"
    );
    assert!(
        tokens(&cat, "prompt_tokens") < 512
            && tokens(&cat, "prompt_tokens") + tokens(&cat, "completion_tokens") > 512,
        "the cat's conversation must cross 512 positions: {cat}"
    );
    // Follow-ups of equal length, each restored from its own saved prefix, sent together:
    // the first is prefilled alone while the others arrive; those are batched.
    let followups: Vec<Value> = (11..=14)
        .flat_map(|n| {
            ["cat", "dog"].map(|who| {
                ask(
                    who,
                    &format!("In which zone does {who} number {n} live?"),
                    24,
                )
            })
        })
        .collect();
    let together = futures_util::future::join_all(
        followups
            .iter()
            .map(|b| async { http.post("/v1/chat/completions", b).await }),
    )
    .await;
    for (status, v) in &together {
        assert_eq!(*status, 200, "{v}");
    }
    // Each answer is the one it gets alone, and the engine still serves.
    for (body, (_, v)) in followups.iter().zip(&together) {
        let (status, alone) = http.post("/v1/chat/completions", body).await;
        assert_eq!(status, 200, "{alone}");
        assert_eq!(content(v), content(&alone));
    }
}

/// Whitespace outside JSON strings in `text` (the engine's constrained output is one-line
/// JSON with `", "` and `": "` separators): the longest run of it.
fn longest_ws_run_outside_strings(text: &str) -> usize {
    let (mut in_str, mut escaped, mut run, mut longest) = (false, false, 0, 0);
    for c in text.chars() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        if c.is_whitespace() {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
            in_str = c == '"';
        }
    }
    longest
}

/// A constrained JSON answer stops right after its object closes (`finish_reason: "stop"`,
/// not `"length"` with the rest of `max_tokens` spent on invisible end-of-text tokens), and
/// it is one-line JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_output_validates_and_stops() {
    let http = engine().client();
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let max_tokens = 48;
    let body = json!({
        "model": "base",
        "messages": [{"role": "user", "content": "Extract the name and age as JSON with keys name and age: 'Alice is 31 years old.'"}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": true}}
    });
    let (status, v) = http.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert_shape("CreateChatCompletionResponse", &v);
    let text = content(&v);
    let parsed: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&parsed), "{parsed} does not validate");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(
        !text.contains('\n') && longest_ws_run_outside_strings(&text) <= 1,
        "not one-line JSON: {text:?}"
    );
    // Counted: the object's tokens and the end-of-turn token, far fewer than max_tokens.
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((5..max_tokens).contains(&completion), "{v}");

    // Sampled at the default temperature (where runs of dozens of spaces used to appear),
    // with a schema whose every answer fits in max_tokens: it stops, one-line, each time.
    let bounded = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"],
        "additionalProperties": false
    });
    for _ in 0..3 {
        let body = json!({
            "model": "base",
            "messages": [{"role": "user", "content": "Alice is 31 years old. Give her name and age as JSON."}],
            "max_tokens": 64,
            "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": bounded}}
        });
        let (status, v) = http.post("/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{v}");
        let text = content(&v);
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
        let parsed: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
        assert!(jsonschema::is_valid(&bounded, &parsed), "{text:?}");
        assert!(longest_ws_run_outside_strings(&text) <= 1, "{text:?}");
    }

    // json_object: any JSON object, one-line as well.
    let body = json!({
        "model": "base",
        "messages": [{"role": "user", "content": "Give me a JSON object describing a cat."}],
        "temperature": 0,
        "max_tokens": 48,
        "response_format": {"type": "json_object"}
    });
    let (status, v) = http.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let text = content(&v);
    assert!(text.starts_with('{'), "{text:?}");
    assert!(longest_ws_run_outside_strings(&text) <= 1, "{text:?}");
    if v["choices"][0]["finish_reason"] == "stop" {
        let parsed: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
        assert!(parsed.is_object());
    } else {
        // A long object may run into max_tokens; it is then a cut, not a stop.
        assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
        assert_eq!(v["usage"]["completion_tokens"], 48, "{v}");
    }
}

#[test]
fn whitespace_runs_are_measured_outside_strings() {
    assert_eq!(
        longest_ws_run_outside_strings(r#"{"a": "x    y", "b": 1}"#),
        1
    );
    assert_eq!(longest_ws_run_outside_strings("{\"a\":    1}"), 4);
    assert_eq!(longest_ws_run_outside_strings(r#"{"a\"  ": 2}"#), 1);
    assert_eq!(longest_ws_run_outside_strings("{\n  \"a\": 1}"), 3);
}

/// Every answer shape validates against OpenAI's published schema
/// (`tests/fixtures/openai-response-shapes.json`): chat, chat stream chunks (with and
/// without usage, logprobs, tools, response_format), continuations and text completions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_have_openai_shapes() {
    let http = engine().client();
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let chats = [
        france(json!({"max_tokens": 4})),
        france(
            json!({"max_tokens": 3, "logprobs": true, "top_logprobs": 2, "n": 2, "temperature": 0.8}),
        ),
        france(json!({"max_tokens": 24, "tools": tools})),
        france(json!({"max_tokens": 24, "response_format": {"type": "json_object"}})),
        // An assistant prefix: answered from a token prompt.
        json!({"model": "base", "max_tokens": 4, "temperature": 0, "logprobs": true,
               "messages": [{"role": "user", "content": "What is the capital of France?"},
                            {"role": "assistant", "content": "The capital"}]}),
    ];
    for body in &chats {
        let (status, v) = http.post("/v1/chat/completions", body).await;
        assert_eq!(status, 200, "{v}");
        assert_shape("CreateChatCompletionResponse", &v);
        for c in v["choices"].as_array().unwrap() {
            // Present (null) although the schema allows null: it is required.
            assert_eq!(c["message"].get("refusal"), Some(&Value::Null), "{v}");
            // Absent, not null, without calls.
            assert_ne!(c["message"].get("tool_calls"), Some(&Value::Null), "{v}");
            if body["logprobs"] == true {
                let lp = &c["logprobs"]["content"][0];
                assert!(lp["token"].is_string() && lp["bytes"].is_array(), "{v}");
            } else {
                assert_eq!(c["logprobs"], Value::Null, "{v}");
            }
        }
        if body["n"] == 2 {
            let top = &v["choices"][0]["logprobs"]["content"][0]["top_logprobs"];
            assert!(top[0]["token"].is_string(), "{v}");
            // The token id, as an extension field.
            assert!(top[0]["token_id"].is_u64(), "{v}");
        }

        for include_usage in [false, true] {
            let mut sbody = body.clone();
            sbody["stream"] = json!(true);
            sbody.as_object_mut().unwrap().remove("n");
            if include_usage {
                sbody["stream_options"] = json!({"include_usage": true});
            }
            let (status, reader) = http.post_stream("/v1/chat/completions", &sbody).await;
            assert_eq!(status, 200);
            let events = reader.collect().await;
            assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
            let chunks: Vec<Value> = events[..events.len() - 1]
                .iter()
                .map(|e| serde_json::from_str(e).unwrap())
                .collect();
            assert!(chunks.len() >= 2, "{events:?}");
            for (i, chunk) in chunks.iter().enumerate() {
                assert_shape("CreateChatCompletionStreamResponse", chunk);
                let last = i + 1 == chunks.len();
                for c in chunk["choices"].as_array().unwrap() {
                    assert_ne!(c["delta"].get("tool_calls"), Some(&Value::Null), "{chunk}");
                }
                match (include_usage, last) {
                    // No usage asked for: no usage field at all.
                    (false, _) => assert!(chunk.get("usage").is_none(), "{chunk}"),
                    // Asked for: null until the last chunk, which has it and no choices.
                    (true, false) => assert_eq!(chunk.get("usage"), Some(&Value::Null)),
                    (true, true) => {
                        assert_eq!(chunk["choices"], json!([]), "{chunk}");
                        assert!(chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0);
                    }
                }
            }
        }
    }

    let prompt = json!({"model": "base", "prompt": "The capital of France is", "temperature": 0, "max_tokens": 4});
    let (status, v) = http.post("/v1/completions", &prompt).await;
    assert_eq!(status, 200, "{v}");
    assert_shape("CreateCompletionResponse", &v);
    for include_usage in [false, true] {
        let mut sbody = prompt.clone();
        sbody["stream"] = json!(true);
        if include_usage {
            sbody["stream_options"] = json!({"include_usage": true});
        }
        let (status, reader) = http.post_stream("/v1/completions", &sbody).await;
        assert_eq!(status, 200);
        let events = reader.collect().await;
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        for e in &events[..events.len() - 1] {
            let chunk: Value = serde_json::from_str(e).unwrap();
            assert_shape("CreateCompletionStreamResponse", &chunk);
            if !include_usage {
                assert!(chunk.get("usage").is_none(), "{chunk}");
            }
        }
    }
}

/// The fixture rejects what OpenAI does not send (so the shape tests above can fail):
/// each mutation of a valid answer is one departure the engine used to make.
#[test]
fn openai_shapes_reject_departures() {
    let chat = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "base",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": null,
                     "message": {"role": "assistant", "content": "Paris", "refusal": null}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    });
    assert_shape("CreateChatCompletionResponse", &chat);
    let chat_shape = shape("CreateChatCompletionResponse");
    // (object, field, value): sets `field` of the object at the JSON pointer `object`.
    let departures: [(&str, &str, Value); 7] = [
        ("/choices/0/message", "tool_calls", Value::Null),
        ("/choices/0", "finish_reason", json!("model_length")),
        ("", "object", json!("chat.completion.chunk")),
        ("/choices/0", "logprobs", json!({"content": []})),
        (
            "/choices/0",
            "logprobs",
            json!({"content": [{"token": "P", "logprob": -0.1, "bytes": [80],
                   "top_logprobs": [{"token": 47, "logprob": -0.1, "bytes": "P"}]}], "refusal": null}),
        ),
        ("", "usage", json!({"prompt_tokens": 1})),
        ("", "created", json!("now")),
    ];
    for (object, field, value) in departures {
        let mut bad = chat.clone();
        bad.pointer_mut(object).unwrap()[field] = value.clone();
        assert!(
            !chat_shape.is_valid(&bad),
            "accepted {object}/{field} = {value}"
        );
    }
    let mut no_refusal = chat.clone();
    no_refusal["choices"][0]["message"]
        .as_object_mut()
        .unwrap()
        .remove("refusal");
    assert!(!chat_shape.is_valid(&no_refusal));

    let chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "base",
        "choices": [{"index": 0, "finish_reason": null, "logprobs": null,
                     "delta": {"role": "assistant", "content": "Pa"}}]
    });
    assert_shape("CreateChatCompletionStreamResponse", &chunk);
    let chunk_shape = shape("CreateChatCompletionStreamResponse");
    let mut null_calls = chunk.clone();
    null_calls["choices"][0]["delta"]["tool_calls"] = Value::Null;
    assert!(!chunk_shape.is_valid(&null_calls));
    let mut bare_logprob = chunk.clone();
    bare_logprob["choices"][0]["logprobs"] =
        json!({"token": "Pa", "logprob": -0.1, "bytes": [80, 97], "top_logprobs": []});
    assert!(!chunk_shape.is_valid(&bare_logprob));
    let mut call_without_index = chunk.clone();
    call_without_index["choices"][0]["delta"]["tool_calls"] =
        json!([{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]);
    assert!(!chunk_shape.is_valid(&call_without_index));

    let completion = json!({
        "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "base",
        "choices": [{"index": 0, "text": " Paris", "finish_reason": null, "logprobs": null}]
    });
    assert_shape("CreateCompletionStreamResponse", &completion);
    // Non-streamed, a completion has its finish_reason.
    assert!(!shape("CreateCompletionResponse").is_valid(&completion));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assistant_prefix_continues() {
    let http = engine().client();
    // The full greedy answer, then resume from a cut of it: the continuation must complete
    // the same text (greedy, same tokens as context).
    let (_, v) = http.post("/v1/chat/completions", &france(json!({}))).await;
    let full = content(&v);
    let cut = "The capital of France";
    assert!(full.starts_with(cut), "unexpected greedy answer {full:?}");
    let body = json!({
        "model": "base",
        "messages": [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": cut}
        ],
        "temperature": 0,
        "max_tokens": 24,
    });
    let (status, v) = http.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let rest = content(&v);
    assert!(
        !rest.starts_with(cut),
        "continuation repeated the prefix: {rest:?}"
    );
    let joined = format!("{cut}{rest}");
    assert!(joined.contains("Paris"), "continued: {joined:?}");
    assert!(
        full.starts_with(joined.trim_end()) || joined.starts_with(full.trim_end()),
        "full {full:?} vs resumed {joined:?}"
    );

    // Streaming continuation also works and ends with usage + [DONE].
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let (status, reader) = http.post_stream("/v1/chat/completions", &sbody).await;
    assert_eq!(status, 200);
    let events = reader.collect().await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert_eq!(chat_stream_text(&events), rest);
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(
        usage["usage"]["prompt_tokens"].as_u64().unwrap() > 5,
        "{usage}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_completions_and_models() {
    let http = engine().client();
    let (status, v) = http
        .post("/v1/completions", &json!({"model": "base", "prompt": "The capital of France is", "temperature": 0, "max_tokens": 8}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(!v["choices"][0]["text"].as_str().unwrap().is_empty(), "{v}");

    let (status, v) = http.get("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(v["data"][0]["id"], "base", "{v}");
    let (status, v) = http.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(v["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_are_openai_style() {
    let http = engine().client();
    // Unknown model → 404.
    let (status, v) = http
        .post("/v1/chat/completions", &france(json!({"model": "nope"})))
        .await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"]["code"], "model_not_found");
    // Malformed body → 400.
    let (status, v) = http
        .post("/v1/chat/completions", &json!({"model": "base"}))
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("messages"),
        "{v}"
    );
    // n > 1 with streaming → 400.
    let (status, v) = http
        .post(
            "/v1/chat/completions",
            &france(json!({"n": 2, "stream": true})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "n");
    // Bad temperature → 400.
    let (status, _) = http
        .post("/v1/chat/completions", &france(json!({"temperature": 7})))
        .await;
    assert_eq!(status, 400);
    // No admin token configured → the admin routes do not exist.
    let (status, v) = http.get("/admin/models").await;
    assert_eq!(status, 404, "{v}");
    let (status, _) = http
        .send(
            hyper::Method::POST,
            "/admin/models",
            Some(&json!({"name": "x", "path": "/tmp"})),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_options_are_accepted() {
    let http = engine().client();
    let body = france(
        json!({"temperature": 0.7, "top_p": 0.9, "seed": 7, "stop": ["\n"], "max_completion_tokens": 12}),
    );
    let (status, v) = http.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    assert!(!content(&v).contains('\n'), "{v}");
    // n = 2 (non-streaming).
    let (status, v) = http
        .post(
            "/v1/chat/completions",
            &france(json!({"n": 2, "temperature": 0.8, "max_tokens": 8})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"].as_array().unwrap().len(), 2, "{v}");
    // Tools are accepted.
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let body = json!({"model": "base", "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
        "tools": tools, "temperature": 0, "max_tokens": 32});
    let (status, v) = http.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{v}");
}

#[test]
fn serve_with_missing_model_dir_fails_clearly() {
    let out = std::process::Command::new(engine_bin())
        .args(["serve", "--model", "/nope/does-not-exist"])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nope/does-not-exist") && stderr.contains("does not exist"),
        "stderr: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
