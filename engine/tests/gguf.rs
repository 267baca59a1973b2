//! The rebuilt tokenizer.json (flywheel-models) against mistral.rs's own GGUF tokenizer, and
//! greedy output of the F32 HF directory against the Q4_1 GGUF it was dequantized from.

mod common;

use common::smollm2_dir;
use either::Either;
use mistralrs::core::TokenSource;
use mistralrs::{
    GgufModelBuilder, Model, ModelDType, RequestBuilder, SamplingParams, TextMessageRole, TextModelBuilder,
};

const CORPUS: &[&str] = &[
    "What is the capital of France?",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces,\ttabs\tand\nnew\n\nlines  ",
    "Numbers: 0 7 42 1234567890 3.14159 -12e-3 1,000,000",
    "fn main() { println!(\"Hello, world!\"); let x: Vec<u32> = vec![1, 2, 3]; }",
    "def f(x):\n    return {'a': [x ** 2 for _ in range(10)]}\n",
    "Café naïve résumé – “quotes” ‘single’ — dash… ellipsis",
    "日本語のテキストと中文文本，한국어 텍스트",
    "Emoji: 😀🚀👍🏽 and flags 🇫🇷🇯🇵",
    "Ünïcödé ÆØÅ ß ẞ İı ﬁ ligatures",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "{\"name\": \"Alice\", \"age\": 31, \"tags\": [\"a\", \"b\"]}",
    "https://example.com/path?query=1&x=y#frag user@example.org",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "   ",
    "\n\n\n",
    "It's they're we'll I'd don't can't WON'T",
    "Mixed CASE wOrDs and CamelCaseIdentifiers snake_case_names",
    "Здравствуй, мир! Γειά σου Κόσμε! مرحبا بالعالم",
    "x",
];

async fn greedy(model: &Model, prompt: &str, n: usize) -> String {
    let mut sampling = SamplingParams::neutral();
    sampling.top_k = Some(1);
    sampling.max_len = Some(n);
    let req = RequestBuilder::new()
        .add_message(TextMessageRole::User, prompt)
        .set_sampling(sampling);
    let resp = model.send_chat_request(req).await.expect("chat");
    resp.choices[0].message.content.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilt_tokenizer_and_greedy_match_gguf() {
    let hf = smollm2_dir();
    let gguf_dir = hf.parent().unwrap().to_path_buf();
    assert!(gguf_dir.join("model.gguf").is_file());

    let gguf = GgufModelBuilder::new(gguf_dir.display().to_string(), vec!["model.gguf"])
        .with_token_source(TokenSource::None)
        .build()
        .await
        .expect("loading the GGUF with mistral.rs");
    let tok = tokenizers::Tokenizer::from_file(hf.join("tokenizer.json")).expect("tokenizer.json");

    let mut mismatches = Vec::new();
    for text in CORPUS {
        let from_gguf = gguf
            .tokenize(Either::Right(text.to_string()), None, false, false, None)
            .await
            .expect("GGUF tokenize");
        let ours = tok.encode(*text, false).expect("encode").get_ids().to_vec();
        if from_gguf != ours {
            mismatches.push(format!("{text:?}\n  gguf: {from_gguf:?}\n  ours: {ours:?}"));
        }
    }
    assert!(mismatches.is_empty(), "tokenizer mismatches:\n{}", mismatches.join("\n"));

    let f32m = TextModelBuilder::new(hf.display().to_string())
        .with_token_source(TokenSource::None)
        .with_dtype(ModelDType::F32)
        .build()
        .await
        .expect("loading the HF directory");
    // mistral.rs's tokenizer for the HF dir is the same file: check once through it too.
    let via_engine = f32m
        .tokenize(Either::Right(CORPUS[4].to_string()), None, false, false, None)
        .await
        .unwrap();
    assert_eq!(via_engine, tok.encode(CORPUS[4], false).unwrap().get_ids().to_vec());

    // Greedy: the F32 weights are the GGUF's Q4_1 weights dequantized, but the GGUF path
    // computes with quantized matmuls (activations quantized to Q8_1), so logits differ
    // slightly and long greedy runs may diverge; the first tokens must agree.
    const FIRST: usize = 3;
    let prompts = [
        "What is the capital of France?",
        "Name three primary colors.",
        "Write the word hello in uppercase.",
    ];
    for p in prompts {
        let a = greedy(&f32m, p, 24).await;
        let b = greedy(&gguf, p, 24).await;
        let ta = tok.encode(a.as_str(), false).unwrap().get_ids().to_vec();
        let tb = tok.encode(b.as_str(), false).unwrap().get_ids().to_vec();
        let common = ta.iter().zip(&tb).take_while(|(x, y)| x == y).count();
        eprintln!("prompt {p:?}\n  f32:  {a:?}\n  gguf: {b:?}\n  common prefix: {common} tokens");
        assert!(common >= FIRST.min(ta.len()).min(tb.len()), "greedy outputs diverge in the first {FIRST} tokens");
    }
}
