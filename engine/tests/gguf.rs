//! The rebuilt tokenizer.json (flywheel-models) against mistral.rs's own GGUF tokenizer, and
//! greedy output of the F32 HF directory against the Q4_1 GGUF it was dequantized from.

mod common;

use common::smollm2_dir;
use either::Either;
use mistralrs::{
    core::TokenSource, GgufModelBuilder, Model, ModelDType, RequestBuilder, SamplingParams,
    TextMessageRole, TextMessages, TextModelBuilder,
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

    // mistral.rs 0.8.1 converts every gpt2-type GGUF tokenizer with a Llama-3-style split
    // regex (`\s*[\r\n]+` keeps a run of newlines/indentation together), ignoring the GGUF's
    // `tokenizer.ggml.pre = smollm`. HF's SmolLM2 tokenizer (GPT-2 regex, which our
    // tokenizer.json reproduces) splits such runs: "\n\n" is [198, 198], not [1116]. So
    // strings with a newline next to other whitespace may legitimately differ; everything
    // else must match id for id, and both must decode back to the text.
    let newline_run = |t: &str| {
        let b = t.as_bytes();
        b.windows(2).any(|w| {
            (w[0] == b'\n' || w[0] == b'\r') && (w[1] as char).is_whitespace()
                || (w[1] == b'\n' || w[1] == b'\r') && (w[0] as char).is_whitespace()
        })
    };
    let mut mismatches = Vec::new();
    let mut known = Vec::new();
    for text in CORPUS {
        let from_gguf = gguf
            .tokenize(Either::Right(text.to_string()), None, false, false, None)
            .await
            .expect("GGUF tokenize");
        let ours = tok.encode(*text, false).expect("encode").get_ids().to_vec();
        assert_eq!(
            tok.decode(&ours, false).unwrap(),
            *text,
            "our ids do not decode back"
        );
        assert_eq!(
            tok.decode(&from_gguf, false).unwrap(),
            *text,
            "GGUF ids do not decode back"
        );
        if from_gguf != ours {
            let line = format!("{text:?}\n  gguf: {from_gguf:?}\n  ours: {ours:?}");
            if newline_run(text) {
                known.push(line);
            } else {
                mismatches.push(line);
            }
        }
    }
    eprintln!(
        "tokenizer: {}/{} strings identical; known newline-run differences:\n{}",
        CORPUS.len() - known.len() - mismatches.len(),
        CORPUS.len(),
        known.join("\n")
    );
    assert!(
        mismatches.is_empty(),
        "tokenizer mismatches:\n{}",
        mismatches.join("\n")
    );
    // HF SmolLM2 reference behaviour for a newline run.
    assert_eq!(
        tok.encode("a\n\nb", false).unwrap().get_ids(),
        &[81, 198, 198, 82]
    );

    let f32m = TextModelBuilder::new(hf.display().to_string())
        .with_token_source(TokenSource::None)
        .with_dtype(ModelDType::F32)
        .build()
        .await
        .expect("loading the HF directory");
    // mistral.rs's tokenizer for the HF dir is the same file: check once through it too.
    let via_engine = f32m
        .tokenize(
            Either::Right(CORPUS[4].to_string()),
            None,
            false,
            false,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        via_engine,
        tok.encode(CORPUS[4], false).unwrap().get_ids().to_vec()
    );

    // Greedy. Found here: the Q4_1 GGUF, run with quantized kernels (activations quantized
    // too), does not reproduce the F32 dequantized weights' greedy text: on "What is the
    // capital of France?" F32 says "The capital of France is Paris." and the GGUF rambles
    // in French from the first token ("L'Étoile, la ..."), exactly as llama.cpp 0.3.36 does
    // on the same GGUF at temperature 0. SmolLM2-135M sits close to decision boundaries, so
    // quantization noise flips tokens. What must hold: the same prompt ids, first-step
    // logits that agree closely (cosine), and each argmax within the other's top 5.
    let prompts = [
        "What is the capital of France?",
        "Name three primary colors.",
        "Write the word hello in uppercase.",
    ];
    for p in prompts {
        let msgs = TextMessages::new().add_message(TextMessageRole::User, p);
        let ids_a = f32m
            .tokenize(Either::Left(msgs.clone()), None, true, true, None)
            .await
            .unwrap();
        let ids_b = gguf
            .tokenize(Either::Left(msgs), None, true, true, None)
            .await
            .unwrap();
        assert_eq!(ids_a, ids_b, "rendered prompt ids differ for {p:?}");

        let la = first_logits(&f32m, p).await;
        let lb = first_logits(&gguf, p).await;
        let cos = cosine(&la, &lb);
        let (ta, tb) = (top(&la, 5), top(&lb, 5));
        let a = greedy(&f32m, p, 24).await;
        let b = greedy(&gguf, p, 24).await;
        let xa = tok.encode(a.as_str(), false).unwrap().get_ids().to_vec();
        let xb = tok.encode(b.as_str(), false).unwrap().get_ids().to_vec();
        let common = xa.iter().zip(&xb).take_while(|(x, y)| x == y).count();
        eprintln!(
            "prompt {p:?}\n  f32:  {a:?}\n  gguf: {b:?}\n  common greedy prefix: {common} tokens; \
             first-step logits cosine {cos:.4}; top5 f32 {ta:?} gguf {tb:?}"
        );
        assert!(cos > 0.95, "first-step logits disagree (cosine {cos})");
        assert!(
            tb.contains(&ta[0]) && ta.contains(&tb[0]),
            "argmax not in the other's top 5"
        );
    }
}

async fn first_logits(model: &Model, prompt: &str) -> Vec<f32> {
    let mut sampling = SamplingParams::neutral();
    sampling.top_k = Some(1);
    sampling.max_len = Some(1);
    let req = RequestBuilder::new()
        .add_message(TextMessageRole::User, prompt)
        .set_sampling(sampling);
    let (chunks, _) = model.send_raw_chat_request(req).await.expect("raw logits");
    let last = chunks.last().expect("logits");
    let v: Vec<f32> = last
        .to_dtype(mistralrs::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    const VOCAB: usize = 49152;
    v[v.len() - VOCAB..].to_vec()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        ab += (*x as f64) * (*y as f64);
        aa += (*x as f64) * (*x as f64);
        bb += (*y as f64) * (*y as f64);
    }
    ab / (aa.sqrt() * bb.sqrt())
}

fn top(v: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..v.len() as u32).collect();
    idx.sort_by(|&i, &j| v[j as usize].total_cmp(&v[i as usize]));
    idx.truncate(k);
    idx
}
