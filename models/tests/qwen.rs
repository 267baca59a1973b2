//! Opt-in check of the Qwen2.5-Coder-0.5B conversion (downloads ~455 MB once, ~20 s of CPU):
//! `cargo test --release -p flywheel-models --test qwen -- --ignored --nocapture`

mod common;

use std::time::Instant;

use common::RefModel;
use flywheel_models::{check_model_dir, default_cache, fetch, ModelId};
use tokenizers::Tokenizer;

#[test]
#[ignore = "downloads ~455 MB; run with --ignored"]
fn qwen_greedy_decoding_answers_paris() {
    let dir = fetch(ModelId::Qwen25Coder05B, &default_cache()).expect("fetching qwen");
    check_model_dir(&dir).unwrap();
    let t = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    assert_eq!(t.token_to_id("<|im_start|>"), Some(151644));
    assert_eq!(t.token_to_id("<|im_end|>"), Some(151645));
    assert_eq!(
        t.encode("Hello world", false).unwrap().get_ids(),
        [9707, 1879]
    );
    let model = RefModel::load(&dir);
    // The template's default system prompt.
    let prompt = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let ids = t.encode(prompt, false).unwrap().get_ids().to_vec();
    let start = Instant::now();
    let out = model.greedy(&ids, 8, &[151645, 151643]);
    let text = t.decode(&out, false).unwrap();
    eprintln!(
        "qwen greedy ({:.1} s): {text:?}",
        start.elapsed().as_secs_f64()
    );
    assert!(
        text.starts_with("The capital of France is Paris"),
        "{text:?}"
    );
}
