use std::sync::Arc;

use anyhow::Result;
use llguidance::{api::TopLevelGrammar, ParserFactory};
use tokenizers::Tokenizer;

use crate::Constraint;

/// Builds llguidance's parser factory for `tokenizer`.
///
/// `eos_tokens` are the pipeline's end-of-sequence tokens (`calculate_eos_tokens`), the
/// ones that end a sequence (`Sequence::is_done`). They become llguidance's EOS tokens,
/// the only tokens a grammar allows once it is complete: with the EOS that
/// `ByteTokenizer::from_tokenizer` guesses from the token names instead (`<|endoftext|>`
/// for ChatML models, whose turns end with `<|im_end|>`), a finished constrained sequence
/// emitted that token, which does not end it, until `max_tokens`.
pub fn build_llg_factory(tokenizer: Tokenizer, eos_tokens: &[u32]) -> Result<Arc<ParserFactory>> {
    // Collect special token info before from_tokenizer() consumes the tokenizer.
    let added_special: Vec<(u32, String)> = tokenizer
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, at)| at.special)
        .map(|(id, at)| (id, at.content))
        .collect();

    let mut bt = toktrie_hf_tokenizers::ByteTokenizer::from_tokenizer(tokenizer)?;
    // Before `tokrx_info()`, which copies the EOS token. Ids outside the vocabulary (which
    // `set_eos_tokens` rejects with a panic) are left out; without any, the guess stays.
    let vocab_size = bt.tokrx_info().vocab_size;
    let eos_tokens: Vec<u32> = eos_tokens
        .iter()
        .copied()
        .filter(|&t| t < vocab_size)
        .collect();
    if !eos_tokens.is_empty() {
        bt.set_eos_tokens(&eos_tokens);
    }
    let info = bt.tokrx_info();
    let mut token_bytes = bt.token_bytes();

    // Fix up special tokens that from_tokenizer() may have missed.
    // Tekken tokenizers add special tokens to the BPE base vocab first, which can
    // prevent the toktrie builder from applying the SPECIAL_TOKEN_MARKER prefix.
    for (id, content) in &added_special {
        let idx = *id as usize;
        if idx < token_bytes.len()
            && (token_bytes[idx].is_empty()
                || token_bytes[idx][0] != toktrie::TokTrie::SPECIAL_TOKEN_MARKER)
        {
            let mut bytes = content.as_bytes().to_vec();
            bytes.insert(0, toktrie::TokTrie::SPECIAL_TOKEN_MARKER);
            token_bytes[idx] = bytes;
        }
    }

    let mut tok_trie = toktrie::TokTrie::from(&info, &token_bytes);
    // `TokTrie::from` takes only the first EOS token (`info.tok_eos`); add the others, as
    // `ByteTokenizerEnv::new` does.
    let eos_tokens = bt.eos_tokens();
    if eos_tokens.len() > 1 {
        tok_trie = tok_trie.with_eos_tokens(&eos_tokens);
    }
    let env = toktrie_hf_tokenizers::ByteTokenizerEnv {
        tokenizer: bt,
        tok_trie,
    }
    .to_env();
    let factory = ParserFactory::new_simple(&env)?;
    Ok(Arc::new(factory))
}

pub fn llg_grammar_from_constraint(constraint: &Constraint) -> Result<Option<TopLevelGrammar>> {
    let grm = match constraint {
        Constraint::Regex(regex) => TopLevelGrammar::from_regex(regex),
        Constraint::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        Constraint::JsonSchema(value) => TopLevelGrammar::from_json_schema(value.clone()),
        Constraint::Llguidance(value) => value.clone(),
        Constraint::None => return Ok(None),
    };
    Ok(Some(grm))
}

pub fn constraint_from_llg_grammar(
    factory: &ParserFactory,
    grm: TopLevelGrammar,
) -> Result<llguidance::Matcher> {
    let parser = factory.create_parser(grm)?;
    Ok(llguidance::Matcher::new(Ok(parser)))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    /// A byte-level BPE tokenizer with ChatML's special tokens at the ids SmolLM2 gives them
    /// (`<|endoftext|>` 0, `<|im_start|>` 1, `<|im_end|>` 2) and the tokens `a` (3), `b` (4).
    fn chatml_tokenizer() -> Tokenizer {
        let special = |id: u32, content: &str| {
            serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        };
        let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false,
            "trim_offsets": true, "use_regex": true});
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [special(0, "<|endoftext|>"), special(1, "<|im_start|>"), special(2, "<|im_end|>")],
            "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null, "decoder": byte_level,
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "vocab": {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "a": 3, "b": 4},
                "merges": []}
        });
        Tokenizer::from_str(&json.to_string()).unwrap()
    }

    /// The tokens a matcher for the regex `ab` allows once it has consumed `a`, `b`.
    fn allowed_after_ab(eos_tokens: &[u32]) -> Vec<u32> {
        let factory = build_llg_factory(chatml_tokenizer(), eos_tokens).unwrap();
        let grammar = llg_grammar_from_constraint(&Constraint::Regex("ab".to_string()))
            .unwrap()
            .unwrap();
        let mut matcher = constraint_from_llg_grammar(&factory, grammar).unwrap();
        matcher.consume_tokens(&[3, 4]).unwrap();
        let mask = matcher.compute_mask_or_eos().unwrap();
        (0..5).filter(|&t| mask.is_allowed(t)).collect()
    }

    #[test]
    fn a_complete_grammar_allows_the_pipeline_eos_tokens() {
        // The pipeline's EOS (`<|im_end|>`), not `<|endoftext|>`, which does not end a
        // sequence.
        assert_eq!(allowed_after_ab(&[2]), vec![2]);
        // Several EOS tokens: any of them; ids outside the vocabulary are ignored.
        assert_eq!(allowed_after_ab(&[2, 0, 1000]), vec![0, 2]);
        // None given: the tokenizer's guess, as before.
        assert_eq!(allowed_after_ab(&[]), vec![0]);
    }

    #[test]
    fn the_pipeline_eos_ends_a_complete_grammar() {
        let factory = build_llg_factory(chatml_tokenizer(), &[2]).unwrap();
        let grammar = llg_grammar_from_constraint(&Constraint::Regex("ab".to_string()))
            .unwrap()
            .unwrap();
        let mut matcher = constraint_from_llg_grammar(&factory, grammar).unwrap();
        matcher.consume_tokens(&[3, 4, 2]).unwrap();
        assert!(matcher.is_stopped());
    }
}
