//! PII detectors for dataset building: emails, phone numbers, payment card
//! numbers (Luhn-checked, so order ids do not trip it), secret keys, and
//! user-configured patterns. A row with a hit is dropped or masked, as
//! configured; what was found is counted per detector for the report.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use crate::item::Item;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PiiAction {
    /// Drop every row with a hit.
    Drop,
    /// Replace each hit with `[NAME]` and keep the row.
    Mask,
}

pub struct Detector {
    pub name: String,
    regex: Regex,
    /// Extra check on a match (the Luhn sum for cards).
    check: Option<fn(&str) -> bool>,
}

pub struct PiiFilter {
    detectors: Vec<Detector>,
}

/// What scanning found: hits per detector name.
pub type Hits = BTreeMap<String, usize>;

impl PiiFilter {
    /// The built-in detectors plus `extra` (name → regex), which are
    /// validated here so that a bad pattern fails before any data is read.
    pub fn new(extra: &[(String, String)]) -> Result<Self, regex::Error> {
        let mut detectors = vec![
            builtin(
                "EMAIL",
                r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
                None,
            )?,
            // Keys before phones and cards: a key's digits must not be masked
            // piecewise as a phone number first.
            builtin(
                "SECRET_KEY",
                r"\b(?:sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})\b",
                None,
            )?,
            builtin("CARD_NUMBER", r"\b(?:\d[ -]?){12,18}\d\b", Some(luhn_ok))?,
            // International or North-American style numbers with separators;
            // bare digit runs are too often ids to count.
            builtin(
                r"PHONE",
                r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\b\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}\b",
                None,
            )?,
        ];
        for (name, pattern) in extra {
            detectors.push(Detector {
                name: name.to_uppercase(),
                regex: Regex::new(pattern)?,
                check: None,
            });
        }
        Ok(Self { detectors })
    }

    /// Hits in one text, and the text with every hit masked.
    pub fn scan(&self, text: &str, hits: &mut Hits) -> String {
        let mut out = text.to_owned();
        for d in &self.detectors {
            let mut found = 0;
            let replaced = d.regex.replace_all(&out, |c: &regex::Captures<'_>| {
                let m = &c[0];
                if d.check.is_none_or(|check| check(m)) {
                    found += 1;
                    format!("[{}]", d.name)
                } else {
                    m.to_owned()
                }
            });
            if found > 0 {
                out = replaced.into_owned();
                *hits.entry(d.name.clone()).or_default() += found;
            }
        }
        out
    }

    /// Scans every message and the reference answer of `item`. With
    /// [`PiiAction::Mask`] the item is masked in place; the hits are
    /// returned either way (empty: the row is clean).
    pub fn apply(&self, item: &mut Item, action: PiiAction) -> Hits {
        let mut hits = Hits::new();
        for m in &mut item.messages {
            let masked = self.scan_value(&m.content, &mut hits);
            if action == PiiAction::Mask {
                m.content = masked;
            }
        }
        if let Some(reference) = &item.reference_answer {
            let masked = self.scan_value(reference, &mut hits);
            if action == PiiAction::Mask {
                item.reference_answer = Some(masked);
            }
        }
        hits
    }

    fn scan_value(&self, v: &Value, hits: &mut Hits) -> Value {
        match v {
            Value::String(s) => Value::String(self.scan(s, hits)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.scan_value(x, hits)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), self.scan_value(x, hits)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

fn builtin(
    name: &str,
    pattern: &str,
    check: Option<fn(&str) -> bool>,
) -> Result<Detector, regex::Error> {
    Ok(Detector {
        name: name.to_owned(),
        regex: Regex::new(pattern)?,
        check,
    })
}

fn luhn_ok(candidate: &str) -> bool {
    let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::Message;

    fn masked(text: &str) -> (String, Hits) {
        let f = PiiFilter::new(&[("employee_id".into(), r"\bEMP-\d{6}\b".into())]).unwrap();
        let mut hits = Hits::new();
        (f.scan(text, &mut hits), hits)
    }

    #[test]
    fn detects_and_masks_each_kind() {
        let (out, hits) = masked(
            "mail jane.doe+x@example.co.uk, call +1 415-555-0132 or (020) 7946 0958, \
             card 4111 1111 1111 1111, key sk-abcdefghijklmnopqrstuv, id EMP-123456",
        );
        assert_eq!(
            out,
            "mail [EMAIL], call [PHONE] or [PHONE], card [CARD_NUMBER], key [SECRET_KEY], id [EMPLOYEE_ID]"
        );
        assert_eq!(hits.values().sum::<usize>(), 6, "{hits:?}");
        assert_eq!(hits["PHONE"], 2);
    }

    #[test]
    fn leaves_clean_text_and_non_luhn_numbers_alone() {
        let text = "order 4111111111111112 shipped in 2024; the answer is 42.";
        let (out, hits) = masked(text);
        assert!(hits.is_empty(), "{hits:?}");
        assert_eq!(out, text);
    }

    #[test]
    fn apply_drops_or_masks_whole_items() {
        let f = PiiFilter::new(&[]).unwrap();
        let mut item = Item::new(
            vec![Message::new("user", "reach me at a@b.io")],
            Some(serde_json::json!({"email": "a@b.io", "n": 1})),
        );
        let hits = f.apply(&mut item.clone(), PiiAction::Drop);
        assert_eq!(hits["EMAIL"], 2);
        f.apply(&mut item, PiiAction::Mask);
        assert_eq!(item.messages[0].text(), "reach me at [EMAIL]");
        assert_eq!(
            item.reference_answer,
            Some(serde_json::json!({"email": "[EMAIL]", "n": 1}))
        );
    }

    #[test]
    fn a_bad_configured_pattern_is_an_error() {
        assert!(PiiFilter::new(&[("x".into(), "(".into())]).is_err());
    }
}
