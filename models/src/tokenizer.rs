//! Rebuilds a HF `tokenizer.json` (and `tokenizer_config.json`) from GGUF tokenizer metadata.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = gpt2`) is handled, with the pre-tokenizers of
//! the project's models (`tokenizer.ggml.pre` = `smollm` or `qwen2`).

use std::collections::HashSet;

use serde::{
    ser::{SerializeMap, Serializer},
    Serialize,
};
use serde_json::json;

use crate::{gguf::Meta, Result};

/// GGUF token types (llama.cpp `llama_token_type`).
pub const TOKEN_TYPE_CONTROL: i64 = 3;
pub const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The Qwen2 pre-tokenizer split regex, as in Qwen2's own tokenizer.json.
pub const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer part of a GGUF's metadata.
#[derive(Debug, Clone, Default)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model` (only `gpt2` is supported).
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: String,
    /// Tokens in id order.
    pub tokens: Vec<String>,
    /// GGUF token types, same length as `tokens`.
    pub token_types: Vec<i64>,
    /// Merges, `"left right"`.
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub chat_template: Option<String>,
}

impl GgufVocab {
    pub(crate) fn read(meta: &Meta<'_>) -> Result<Self> {
        let id = |key: &str| -> Result<Option<u32>> { Ok(meta.opt_u64(key)?.map(|v| v as u32)) };
        let tokens = meta.string_array("tokenizer.ggml.tokens")?;
        let token_types = match meta.get("tokenizer.ggml.token_type") {
            Some(_) => meta.int_array("tokenizer.ggml.token_type")?,
            None => vec![1; tokens.len()],
        };
        let vocab = GgufVocab {
            model: meta.str("tokenizer.ggml.model")?.to_string(),
            pre: meta
                .opt_str("tokenizer.ggml.pre")?
                .unwrap_or("default")
                .to_string(),
            tokens,
            token_types,
            merges: meta.string_array("tokenizer.ggml.merges")?,
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
            eot: id("tokenizer.ggml.eot_token_id")?,
            eom: id("tokenizer.ggml.eom_token_id")?,
            add_bos: meta
                .opt_bool("tokenizer.ggml.add_bos_token")?
                .unwrap_or(false),
            add_eos: meta
                .opt_bool("tokenizer.ggml.add_eos_token")?
                .unwrap_or(false),
            chat_template: meta.opt_str("tokenizer.chat_template")?.map(str::to_string),
        };
        vocab.validate().map_err(|m| meta.err(m))?;
        Ok(vocab)
    }

    /// Checks what the HF format needs; returns a message on failure.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.model != "gpt2" {
            return Err(format!(
                "tokenizer model `{}` (only byte-level BPE, `gpt2`, is supported)",
                self.model
            ));
        }
        if !matches!(self.pre.as_str(), "smollm" | "qwen2") {
            return Err(format!(
                "tokenizer pre-tokenizer `{}` (supported: smollm, qwen2)",
                self.pre
            ));
        }
        if self.token_types.len() != self.tokens.len() {
            return Err(format!(
                "{} token types for {} tokens",
                self.token_types.len(),
                self.tokens.len()
            ));
        }
        let mut seen = HashSet::with_capacity(self.tokens.len());
        for (i, t) in self.tokens.iter().enumerate() {
            if !seen.insert(t.as_str()) {
                return Err(format!("duplicate token {t:?} (id {i})"));
            }
        }
        for (i, m) in self.merges.iter().enumerate() {
            let ok = m
                .split_once(' ')
                .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains(' '));
            if !ok {
                return Err(format!("merge {i} {m:?} is not `left right`"));
            }
        }
        for (what, id) in [
            ("bos", self.bos),
            ("eos", self.eos),
            ("unk", self.unk),
            ("pad", self.pad),
            ("eot", self.eot),
            ("eom", self.eom),
        ] {
            if let Some(id) = id {
                if id as usize >= self.tokens.len() {
                    return Err(format!("{what} token id {id} is out of range"));
                }
            }
        }
        Ok(())
    }

    pub fn token(&self, id: Option<u32>) -> Option<&str> {
        id.and_then(|id| self.tokens.get(id as usize))
            .map(String::as_str)
    }

    /// Ids of the tokens that become HF added tokens: control (special) and user-defined.
    pub fn added_token_ids(&self) -> impl Iterator<Item = (u32, bool)> + '_ {
        self.token_types
            .iter()
            .enumerate()
            .filter_map(|(i, &t)| match t {
                TOKEN_TYPE_CONTROL => Some((i as u32, true)),
                TOKEN_TYPE_USER_DEFINED => Some((i as u32, false)),
                _ => None,
            })
    }

    /// The token ids generation should stop at: eos, eot, eom (and `<|endoftext|>` for
    /// Qwen-style vocabularies, as Qwen's own generation_config.json does).
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = [self.eos, self.eot, self.eom]
            .into_iter()
            .flatten()
            .collect();
        if self.pre == "qwen2" {
            if let Some(i) = self.tokens.iter().position(|t| t == "<|endoftext|>") {
                ids.push(i as u32);
            }
        }
        let mut seen = HashSet::new();
        ids.retain(|id| seen.insert(*id));
        ids
    }
}

#[derive(Serialize)]
struct AddedTokenJson<'a> {
    id: u32,
    content: &'a str,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum NormalizerJson {
    #[serde(rename = "NFC")]
    Nfc,
}

#[derive(Serialize)]
enum SplitPatternJson {
    Regex(&'static str),
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum PreTokenizerJson {
    Sequence {
        pretokenizers: Vec<PreTokenizerJson>,
    },
    Digits {
        individual_digits: bool,
    },
    Split {
        pattern: SplitPatternJson,
        behavior: &'static str,
        invert: bool,
    },
    ByteLevel {
        add_prefix_space: bool,
        trim_offsets: bool,
        use_regex: bool,
    },
}

#[derive(Serialize)]
struct ByteLevelJson {
    #[serde(rename = "type")]
    kind: &'static str,
    add_prefix_space: bool,
    trim_offsets: bool,
    use_regex: bool,
}

fn byte_level(add_prefix_space: bool, trim_offsets: bool, use_regex: bool) -> ByteLevelJson {
    ByteLevelJson {
        kind: "ByteLevel",
        add_prefix_space,
        trim_offsets,
        use_regex,
    }
}

/// The vocab as a JSON object in id order.
struct OrderedVocab<'a>(&'a [String]);

impl Serialize for OrderedVocab<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (id, token) in self.0.iter().enumerate() {
            map.serialize_entry(token, &id)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct BpeJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    dropout: Option<f32>,
    unk_token: Option<&'a str>,
    continuing_subword_prefix: Option<&'a str>,
    end_of_word_suffix: Option<&'a str>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    vocab: OrderedVocab<'a>,
    merges: &'a [String],
}

#[derive(Serialize)]
struct TokenizerJson<'a> {
    version: &'static str,
    truncation: Option<()>,
    padding: Option<()>,
    added_tokens: Vec<AddedTokenJson<'a>>,
    normalizer: Option<NormalizerJson>,
    pre_tokenizer: PreTokenizerJson,
    post_processor: ByteLevelJson,
    decoder: ByteLevelJson,
    model: BpeJson<'a>,
}

/// Builds the HF `tokenizer.json` text for a byte-level BPE GGUF vocabulary.
pub fn build_tokenizer_json(vocab: &GgufVocab) -> std::result::Result<String, String> {
    vocab.validate()?;
    let added_tokens = vocab
        .added_token_ids()
        .map(|(id, special)| AddedTokenJson {
            id,
            content: &vocab.tokens[id as usize],
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: false,
            special,
        })
        .collect();
    let (normalizer, pre_tokenizer, post_processor, decoder) = match vocab.pre.as_str() {
        // As SmolLM2's own tokenizer.json: digits split one by one, then GPT-2 byte level.
        "smollm" => (
            None,
            PreTokenizerJson::Sequence {
                pretokenizers: vec![
                    PreTokenizerJson::Digits {
                        individual_digits: true,
                    },
                    PreTokenizerJson::ByteLevel {
                        add_prefix_space: false,
                        trim_offsets: true,
                        use_regex: true,
                    },
                ],
            },
            byte_level(true, false, true),
            byte_level(true, true, true),
        ),
        // As Qwen2's own tokenizer.json.
        "qwen2" => (
            Some(NormalizerJson::Nfc),
            PreTokenizerJson::Sequence {
                pretokenizers: vec![
                    PreTokenizerJson::Split {
                        pattern: SplitPatternJson::Regex(QWEN2_REGEX),
                        behavior: "Isolated",
                        invert: false,
                    },
                    PreTokenizerJson::ByteLevel {
                        add_prefix_space: false,
                        trim_offsets: false,
                        use_regex: false,
                    },
                ],
            },
            byte_level(false, false, false),
            byte_level(false, false, false),
        ),
        other => return Err(format!("unsupported pre-tokenizer `{other}`")),
    };
    let json = TokenizerJson {
        version: "1.0",
        truncation: None,
        padding: None,
        added_tokens,
        normalizer,
        pre_tokenizer,
        post_processor,
        decoder,
        model: BpeJson {
            kind: "BPE",
            dropout: None,
            unk_token: None,
            continuing_subword_prefix: None,
            end_of_word_suffix: None,
            fuse_unk: false,
            byte_fallback: false,
            ignore_merges: false,
            vocab: OrderedVocab(&vocab.tokens),
            merges: &vocab.merges,
        },
    };
    serde_json::to_string_pretty(&json).map_err(|e| e.to_string())
}

/// The HF `tokenizer_config.json` (chat template, special tokens) for `vocab`.
pub(crate) fn tokenizer_config_json(
    vocab: &GgufVocab,
    model_max_length: usize,
) -> serde_json::Value {
    let mut decoder = serde_json::Map::new();
    let mut additional = Vec::new();
    let named: HashSet<Option<u32>> = [vocab.bos, vocab.eos, vocab.unk, vocab.pad].into();
    for (id, special) in vocab.added_token_ids() {
        let content = &vocab.tokens[id as usize];
        decoder.insert(
            id.to_string(),
            json!({
                "content": content,
                "lstrip": false,
                "normalized": false,
                "rstrip": false,
                "single_word": false,
                "special": special,
            }),
        );
        if special && !named.contains(&Some(id)) {
            additional.push(content.clone());
        }
    }
    let tok = |id: Option<u32>| vocab.token(id).map(str::to_string);
    json!({
        "add_bos_token": vocab.add_bos,
        "add_eos_token": vocab.add_eos,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": additional,
        "bos_token": tok(vocab.bos),
        "chat_template": vocab.chat_template,
        "clean_up_tokenization_spaces": false,
        "eos_token": tok(vocab.eos),
        "model_max_length": model_max_length,
        "pad_token": tok(vocab.pad.or(vocab.eos)),
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": tok(vocab.unk),
    })
}

#[cfg(test)]
mod tests {
    use tokenizers::Tokenizer;

    use super::*;

    /// GPT-2's byte -> unicode map (what byte-level BPE vocabularies are written in).
    fn byte_chars() -> Vec<char> {
        let mut bytes: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
            .chain(0xA1..=0xAC)
            .chain(0xAE..=0xFF)
            .collect();
        let mut chars = bytes.clone();
        let mut n = 0;
        for b in 0..256 {
            if !bytes.contains(&b) {
                bytes.push(b);
                chars.push(256 + n);
                n += 1;
            }
        }
        let mut out = vec!['\0'; 256];
        for (b, c) in bytes.iter().zip(chars) {
            out[*b as usize] = char::from_u32(c).unwrap();
        }
        out
    }

    /// 4 added tokens, the 256 byte tokens (ids 4..260), then merged tokens from 260.
    fn tiny_vocab(pre: &str) -> GgufVocab {
        let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"]
            .map(String::from)
            .to_vec();
        let mut token_types = vec![3, 3, 3, 4];
        for c in byte_chars() {
            tokens.push(c.to_string());
            token_types.push(1);
        }
        let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "1 2"];
        for m in merges {
            tokens.push(m.replace(' ', ""));
            token_types.push(1);
        }
        GgufVocab {
            model: "gpt2".into(),
            pre: pre.into(),
            tokens,
            token_types,
            merges: merges.map(String::from).to_vec(),
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            pad: None,
            chat_template: Some("{{ messages }}".into()),
            ..Default::default()
        }
    }

    fn load(v: &GgufVocab) -> Tokenizer {
        let json = build_tokenizer_json(v).unwrap();
        Tokenizer::from_bytes(json.as_bytes()).unwrap()
    }

    fn byte_id(b: u8) -> u32 {
        4 + b as u32
    }

    #[test]
    fn smollm_tokenizer_encodes_with_merges_specials_and_single_digits() {
        let v = tiny_vocab("smollm");
        let t = load(&v);
        let ids = |s: &str| t.encode(s, false).unwrap().get_ids().to_vec();
        // hello -> one merged token (263); " world" -> "Ġwo" (265) + r l d.
        assert_eq!(
            ids("hello world"),
            vec![263, 265, byte_id(b'r'), byte_id(b'l'), byte_id(b'd')]
        );
        // Digits are split one by one before BPE, so the "1 2" merge never applies.
        assert_eq!(ids("12"), vec![byte_id(b'1'), byte_id(b'2')]);
        // Added tokens are matched in raw text.
        assert_eq!(ids("<|im_start|>hello<|im_end|><tool>"), vec![1, 263, 2, 3]);
        assert_eq!(t.token_to_id("<|im_end|>"), Some(2));
        for s in [
            "hello world",
            "Grüße, 世界! 🎉\n\tx = 12;",
            "<|im_start|>user\nhi<|im_end|>\n",
        ] {
            let enc = t.encode(s, false).unwrap();
            assert_eq!(t.decode(enc.get_ids(), false).unwrap(), s);
        }
        // Control tokens are special (skipped), user-defined ones are not.
        assert_eq!(t.decode(&[1, 263, 3, 2], true).unwrap(), "hello<tool>");
    }

    #[test]
    fn qwen2_tokenizer_normalizes_nfc_and_splits_digits() {
        let v = tiny_vocab("qwen2");
        let t = load(&v);
        let ids = |s: &str| t.encode(s, false).unwrap().get_ids().to_vec();
        assert_eq!(
            ids("hello world"),
            vec![263, 265, byte_id(b'r'), byte_id(b'l'), byte_id(b'd')]
        );
        assert_eq!(ids("12"), vec![byte_id(b'1'), byte_id(b'2')]);
        // "e" + combining acute is normalized to U+00E9 (bytes C3 A9).
        assert_eq!(ids("e\u{301}"), vec![byte_id(0xC3), byte_id(0xA9)]);
        let s = "def f(x):\n    return x  # ok\n";
        assert_eq!(
            t.decode(t.encode(s, false).unwrap().get_ids(), false)
                .unwrap(),
            s
        );
    }

    #[test]
    fn tokenizer_json_keeps_vocab_in_id_order_and_string_merges() {
        let v = tiny_vocab("smollm");
        let json = build_tokenizer_json(&v).unwrap();
        let a = json.find("\"<|endoftext|>\": 0").unwrap();
        let b = json.find("\"<|im_start|>\": 1").unwrap();
        let c = json.find("\"hello\": 263").unwrap();
        assert!(a < b && b < c);
        assert!(json.contains("\"hell o\""));
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["added_tokens"].as_array().unwrap().len(), 4);
        assert_eq!(value["added_tokens"][3]["special"], false);
        assert_eq!(value["model"]["ignore_merges"], false);
        assert_eq!(value["normalizer"], serde_json::Value::Null);
    }

    #[test]
    fn tokenizer_config_carries_template_and_specials() {
        let v = tiny_vocab("smollm");
        let cfg = tokenizer_config_json(&v, 8192);
        assert_eq!(cfg["chat_template"], "{{ messages }}");
        assert_eq!(cfg["bos_token"], "<|im_start|>");
        assert_eq!(cfg["eos_token"], "<|im_end|>");
        assert_eq!(cfg["pad_token"], "<|im_end|>");
        assert_eq!(cfg["unk_token"], "<|endoftext|>");
        assert_eq!(cfg["add_bos_token"], false);
        assert_eq!(cfg["tokenizer_class"], "PreTrainedTokenizerFast");
        assert_eq!(cfg["added_tokens_decoder"]["3"]["special"], false);
    }

    #[test]
    fn rejects_what_it_cannot_represent() {
        let mut v = tiny_vocab("smollm");
        v.pre = "llama-bpe".into();
        assert!(build_tokenizer_json(&v).unwrap_err().contains("llama-bpe"));
        let mut v = tiny_vocab("smollm");
        v.tokens[5] = v.tokens[6].clone();
        assert!(build_tokenizer_json(&v).unwrap_err().contains("duplicate"));
        let mut v = tiny_vocab("smollm");
        v.model = "llama".into();
        assert!(build_tokenizer_json(&v).is_err());
        let mut v = tiny_vocab("smollm");
        v.merges.push("nospace".into());
        assert!(build_tokenizer_json(&v).is_err());
    }
}
