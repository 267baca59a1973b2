//! The mock's deliberately simple tokenizer.
//!
//! Real tokenizers are irrelevant for a mock; what matters is that the split is
//! deterministic, cheap and lossless, so that tests can predict token counts
//! and that streamed deltas concatenate back to the exact configured text.

/// Splits `text` into tokens: each token is a maximal run of non-whitespace
/// characters followed by the whitespace after it. Leading whitespace, if any,
/// forms a token of its own. Concatenating the tokens yields `text` exactly.
pub fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::with_capacity(text.len() / 4 + 1);
    let mut start = 0;
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        // A token ends where a non-space char follows a space run.
        if !space && in_space && i > start {
            out.push(&text[start..i]);
            start = i;
        }
        in_space = space;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Number of tokens [`tokens`] would return, without allocating.
pub fn count(text: &str) -> u64 {
    let mut n = 0;
    let mut prev_space = true;
    for c in text.chars() {
        let space = c.is_whitespace();
        if !space && prev_space {
            n += 1;
        }
        prev_space = space;
    }
    // Leading whitespace forms its own token.
    if text.chars().next().is_some_and(char::is_whitespace) {
        n += 1;
    }
    n
}

/// Keeps the first `max` tokens of `text`. Returns the kept prefix and
/// whether anything was cut off.
pub fn truncate(text: &str, max: u64) -> (&str, bool) {
    let mut seen = 0u64;
    let mut prev_space = true;
    let leading_space = text.chars().next().is_some_and(char::is_whitespace);
    if leading_space {
        if max == 0 {
            return ("", !text.is_empty());
        }
        seen = 1;
    }
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if !space && prev_space {
            if seen == max {
                return (&text[..i], true);
            }
            seen += 1;
        }
        prev_space = space;
    }
    (text, false)
}

/// Prompt token estimate: characters / 4 rounded up, at least 1, as the spec
/// of the mock promises to tests.
pub fn prompt_tokens(chars: usize) -> u64 {
    (chars.div_ceil(4)).max(1) as u64
}

/// The text a continuation request should receive: when the conversation ends
/// with a partial assistant answer that is a prefix of the full text, only the
/// rest is produced. This is what lets the gateway resume a cut stream on
/// another attempt and end up with the full text.
pub fn continuation<'a>(full: &'a str, assistant_prefix: Option<&str>) -> &'a str {
    match assistant_prefix {
        Some(prefix) if !prefix.is_empty() => full.strip_prefix(prefix).unwrap_or(full),
        _ => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_counts() {
        for text in [
            "Hello! This is the mock provider answering your request.",
            "",
            "one",
            "  leading and trailing  ",
            "multi\nline\ttext  with   gaps",
            "ünïcödé wörds ok",
        ] {
            let toks = tokens(text);
            assert_eq!(toks.concat(), text, "round trip for {text:?}");
            assert_eq!(toks.len() as u64, count(text), "count for {text:?}");
            assert!(toks.iter().all(|t| !t.is_empty()));
        }
        assert_eq!(tokens("Hello! This is"), vec!["Hello! ", "This ", "is"]);
        assert_eq!(tokens("  a b "), vec!["  ", "a ", "b "]);
    }

    #[test]
    fn truncation_matches_tokens() {
        let text = " Hello! This is the mock";
        let toks = tokens(text);
        for max in 0..=toks.len() as u64 + 1 {
            let (kept, cut) = truncate(text, max);
            let want = toks[..(max as usize).min(toks.len())].concat();
            assert_eq!(kept, want, "max {max}");
            assert_eq!(cut, (max as usize) < toks.len(), "max {max}");
        }
    }

    #[test]
    fn continuation_prefix_removal() {
        let full = "Hello! This is the mock provider.";
        assert_eq!(
            continuation(full, Some("Hello! This ")),
            "is the mock provider."
        );
        assert_eq!(continuation(full, Some(full)), "");
        assert_eq!(continuation(full, Some("Goodbye")), full);
        assert_eq!(continuation(full, Some("")), full);
        assert_eq!(continuation(full, None), full);
    }

    #[test]
    fn prompt_token_estimate() {
        assert_eq!(prompt_tokens(0), 1);
        assert_eq!(prompt_tokens(4), 1);
        assert_eq!(prompt_tokens(5), 2);
    }
}
