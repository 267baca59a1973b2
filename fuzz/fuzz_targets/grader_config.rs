//! Grader configs are untrusted (hand-written, imported from an OpenAI RFT
//! config, posted to `serve-reward`): the first line of the input is read
//! as a config, strictly, to a grader or an error naming the field, never
//! a panic; a grader that loads then grades the rest of the input as the
//! model's output, through templates, regexes, schemas, fields and the
//! `multi` expression.
//!
//! Graders that reach outside the process (`python`, `score_model`,
//! `endpoint`, at any depth of a `multi`) are skipped: they would spawn
//! interpreters or call the network on every run. Their configs' parsing
//! has its own tests; the sandbox has `tuner/tests/hostile_graders.rs`.
#![no_main]

use flywheel_tuner::{
    grader::Grader,
    item::{Item, Message, Sample},
};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

/// Whether any object in `v` has a `type` that leaves the process.
fn reaches_out(v: &Value) -> bool {
    match v {
        Value::Object(map) => {
            matches!(
                map.get("type").and_then(Value::as_str),
                Some("python" | "score_model" | "endpoint")
            ) || map.values().any(reaches_out)
        }
        Value::Array(items) => items.iter().any(reaches_out),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (config, output) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(config) = serde_json::from_str::<Value>(config) else {
        return;
    };
    if reaches_out(&config) {
        return;
    }
    let Ok(grader) = Grader::from_config(&config) else {
        return;
    };
    let mut item = Item::new(
        vec![Message::new("user", "Name three fruits, in lowercase bullets.")],
        Some(json!({"name": "Ada", "age": 36, "tags": ["x", "y"]})),
    );
    item.extra.insert("keyword".into(), json!("apple"));
    let _ = grader.grade(&Sample::from_text(output), &item);
});
