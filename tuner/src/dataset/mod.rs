//! Datasets for RFT: JSONL import/export ([`jsonl`]), PII filters
//! ([`pii`]), dedupe by normalized prompt and a deterministic train /
//! held-out split.

pub mod captured;
pub mod jsonl;
pub mod pii;

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use crate::item::Item;

/// The prompt as dedupe compares it: roles and texts, lowercased, with
/// runs of whitespace collapsed, so that trivially different copies of the
/// same request count once.
pub fn normalized_prompt(item: &Item) -> String {
    let mut out = String::new();
    for m in item.prompt() {
        out.push_str(&m.role);
        out.push('\u{1f}');
        let text = m.text().to_lowercase();
        out.push_str(&text.split_whitespace().collect::<Vec<_>>().join(" "));
        out.push('\u{1e}');
    }
    out
}

/// Keeps the first item of each normalized prompt; returns how many were dropped.
pub fn dedupe(items: &mut Vec<Item>) -> usize {
    let before = items.len();
    let mut seen = HashSet::new();
    items.retain(|item| seen.insert(normalized_prompt(item)));
    before - items.len()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Heldout,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Heldout => "heldout",
        }
    }
}

/// The split of a prompt: a hash of the normalized prompt and `seed`, so
/// an item stays on its side whatever else is in the dataset and however
/// often it is rebuilt (a held-out prompt never leaks into training).
pub fn split_of(item: &Item, seed: u64, heldout_fraction: f64) -> Split {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(normalized_prompt(item).as_bytes());
    let d: [u8; 32] = h.finalize().into();
    let [d0, d1, d2, d3, d4, d5, d6, d7, ..] = d;
    let x = u64::from_le_bytes([d0, d1, d2, d3, d4, d5, d6, d7]) as f64 / u64::MAX as f64;
    if x < heldout_fraction {
        Split::Heldout
    } else {
        Split::Train
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::Message;

    fn item(text: &str) -> Item {
        Item::new(vec![Message::new("user", text)], None)
    }

    #[test]
    fn dedupe_ignores_case_and_whitespace_only() {
        let mut items = vec![
            item("What is  2+2?"),
            item("what is 2+2?\n"),
            item("What is 2+3?"),
        ];
        assert_eq!(dedupe(&mut items), 1);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].messages[0].text(), "What is  2+2?");
    }

    #[test]
    fn split_is_deterministic_and_near_the_fraction() {
        let items: Vec<Item> = (0..2000).map(|i| item(&format!("prompt {i}"))).collect();
        let first: Vec<Split> = items.iter().map(|i| split_of(i, 7, 0.2)).collect();
        let again: Vec<Split> = items.iter().map(|i| split_of(i, 7, 0.2)).collect();
        assert_eq!(first, again);
        let heldout = first.iter().filter(|s| **s == Split::Heldout).count();
        assert!(
            (300..500).contains(&heldout),
            "{heldout} of 2000 held out at 0.2"
        );
        let other_seed = items
            .iter()
            .filter(|i| split_of(i, 8, 0.2) != split_of(i, 7, 0.2))
            .count();
        assert!(other_seed > 0, "the seed changes the split");
    }
}
