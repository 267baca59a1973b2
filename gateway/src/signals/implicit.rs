//! Implicit feedback: what clients tell us without calling the feedback API.
//!
//! - **regeneration**: the same conversation (identical messages) is sent
//!   again by the same user or episode within the window: the previous
//!   answer was not good enough (`implicit_regenerate = true` on it);
//! - **re-ask**: a different conversation whose last user message is
//!   near-identical to the previous one (word-set Jaccard similarity at least
//!   `reask_similarity`) within the window (`implicit_reask = true`);
//! - **validation**: a request that asked for structured output records
//!   whether its first attempt's answer was valid
//!   (`implicit_validation_first_try`).
//!
//! State is per process and bounded in bytes: at most `max_tracked` turns,
//! each holding hashes of at most [`MAX_WORDS`] words of its question
//! (a question longer than that is compared on its first words), and ids
//! bounded where they come in. A conversation pinned to a replica by episode
//! hashing sees all its turns.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{Hash, Hasher},
    time::{Duration, Instant},
};

use flywheel_feedback::event::{feedback_source, FeedbackEvent, FeedbackTarget, FeedbackValue};
use parking_lot::Mutex;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::ImplicitConfig;

pub const REGENERATE: &str = "implicit_regenerate";
pub const REASK: &str = "implicit_reask";
pub const VALIDATION: &str = "implicit_validation_first_try";

/// Distinct words of a question kept (as hashes) to recognise a re-ask.
const MAX_WORDS: usize = 256;

struct Turn {
    at: Instant,
    inference_id: String,
    route: String,
    variant: String,
    messages_hash: [u8; 32],
    /// Hashes of the question's first [`MAX_WORDS`] distinct words.
    words: HashSet<u64>,
}

/// What the signals need to know about a finished request.
pub struct Observed<'a> {
    pub inference_id: &'a str,
    pub ts_ms: u64,
    pub tenant: &'a str,
    pub route: &'a str,
    pub variant: &'a str,
    /// Episode id, else `user`: whose turns are compared.
    pub who: Option<&'a str>,
    pub messages: Option<&'a Value>,
    /// `Some(first attempt passed)` when structured output was requested.
    pub validated_first_try: Option<bool>,
}

pub struct Signals {
    cfg: ImplicitConfig,
    last: Mutex<HashMap<String, Turn>>,
}

/// Hashes of the first [`MAX_WORDS`] distinct lower-cased words of `text`.
fn normalized_words(text: &str) -> HashSet<u64> {
    let mut words = HashSet::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if words.len() >= MAX_WORDS {
            break;
        }
        // Fixed keys: hashes compare across requests within the process.
        let mut hasher = std::hash::DefaultHasher::new();
        word.to_lowercase().hash(&mut hasher);
        words.insert(hasher.finish());
    }
    words
}

fn jaccard(a: &HashSet<u64>, b: &HashSet<u64>) -> f64 {
    let inter = a.intersection(b).count();
    let union = a.len() + b.len() - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

fn last_user_text(messages: &Value) -> String {
    let Some(list) = messages.as_array() else {
        return String::new();
    };
    list.iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default()
}

impl Signals {
    pub fn new(cfg: ImplicitConfig) -> Self {
        Self {
            cfg,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Feedback events implied by a finished, successful request.
    pub fn observe(&self, o: &Observed<'_>) -> Vec<FeedbackEvent> {
        let mut out = Vec::new();
        if !self.cfg.enabled {
            return out;
        }
        let event =
            |target: &str, route: &str, variant: &str, metric: &str, value: FeedbackValue| {
                FeedbackEvent {
                    id: FeedbackEvent::new_id(),
                    ts_ms: o.ts_ms,
                    tenant: o.tenant.to_owned(),
                    target: FeedbackTarget::inference(target),
                    route: route.to_owned(),
                    variant: variant.to_owned(),
                    metric: metric.to_owned(),
                    value,
                    tags: BTreeMap::new(),
                    idempotency_key: None,
                    source: match metric {
                        REGENERATE => feedback_source::IMPLICIT_REGENERATE,
                        REASK => feedback_source::IMPLICIT_REASK,
                        _ => feedback_source::IMPLICIT_VALIDATION,
                    }
                    .to_owned(),
                }
            };
        if let Some(first) = o.validated_first_try {
            out.push(event(
                o.inference_id,
                o.route,
                o.variant,
                VALIDATION,
                FeedbackValue::Boolean(first),
            ));
        }
        let (Some(who), Some(messages)) = (o.who, o.messages) else {
            return out;
        };
        let key = format!("{}\u{0}{}\u{0}{}", o.tenant, o.route, who);
        let messages_hash: [u8; 32] = Sha256::digest(messages.to_string().as_bytes()).into();
        let words = normalized_words(&last_user_text(messages));
        let window = Duration::from_secs(self.cfg.window_s);
        let now = Instant::now();
        let mut last = self.last.lock();
        if let Some(prev) = last
            .get(&key)
            .filter(|p| now.duration_since(p.at) <= window)
        {
            if prev.messages_hash == messages_hash {
                out.push(event(
                    &prev.inference_id,
                    &prev.route,
                    &prev.variant,
                    REGENERATE,
                    FeedbackValue::Boolean(true),
                ));
            } else if !words.is_empty() && jaccard(&prev.words, &words) >= self.cfg.reask_similarity
            {
                out.push(event(
                    &prev.inference_id,
                    &prev.route,
                    &prev.variant,
                    REASK,
                    FeedbackValue::Boolean(true),
                ));
            }
        }
        if last.len() >= self.cfg.max_tracked && !last.contains_key(&key) {
            // Bounded memory: drop what fell out of the window; if that is
            // not enough, forget everything (signals are best-effort).
            last.retain(|_, t| now.duration_since(t.at) <= window);
            if last.len() >= self.cfg.max_tracked {
                last.clear();
            }
        }
        last.insert(
            key,
            Turn {
                at: now,
                inference_id: o.inference_id.to_owned(),
                route: o.route.to_owned(),
                variant: o.variant.to_owned(),
                messages_hash,
                words,
            },
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cfg() -> ImplicitConfig {
        ImplicitConfig {
            enabled: true,
            window_s: 300,
            reask_similarity: 0.8,
            max_tracked: 10,
        }
    }

    fn observe<'a>(s: &Signals, id: &'a str, messages: &'a Value) -> Vec<FeedbackEvent> {
        s.observe(&Observed {
            inference_id: id,
            ts_ms: 0,
            tenant: "t",
            route: "r",
            variant: "v",
            who: Some("user-1"),
            messages: Some(messages),
            validated_first_try: None,
        })
    }

    #[test]
    fn regeneration_and_reask() {
        let s = Signals::new(cfg());
        let q = json!([{"role": "user", "content": "What is the capital of France?"}]);
        assert!(observe(&s, "a", &q).is_empty());
        let regen = observe(&s, "b", &q);
        assert_eq!(regen.len(), 1);
        assert_eq!(
            (
                regen[0].metric.as_str(),
                regen[0].target.inference_id.as_deref()
            ),
            (REGENERATE, Some("a"))
        );
        let reask = json!([
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Lyon"},
            {"role": "user", "content": "what is the capital of france"}
        ]);
        let r = observe(&s, "c", &reask);
        assert_eq!(
            (r[0].metric.as_str(), r[0].target.inference_id.as_deref()),
            (REASK, Some("b"))
        );
        let other = json!([{"role": "user", "content": "Tell me a joke about cats"}]);
        assert!(observe(&s, "d", &other).is_empty());
    }

    #[test]
    fn the_state_of_a_turn_is_bounded_whatever_its_message() {
        let s = Signals::new(cfg());
        let words: Vec<String> = (0..100_000).map(|i| format!("w{i}")).collect();
        let q = json!([{"role": "user", "content": words.join(" ")}]);
        observe(&s, "a", &q);
        let last = s.last.lock();
        let turn = last.values().next().unwrap();
        assert!(
            turn.words.len() <= MAX_WORDS,
            "{} words kept",
            turn.words.len()
        );
        drop(last);
        // A re-ask of a long question is still recognised.
        assert_eq!(observe(&s, "b", &q)[0].metric, REGENERATE);
        let mut again = words.clone();
        again.push("please".into());
        let reask = json!([{"role": "user", "content": again.join(" ")}]);
        assert_eq!(observe(&s, "c", &reask)[0].metric, REASK);
    }

    #[test]
    fn similarity_is_jaccard() {
        let a = normalized_words("a b c d");
        let b = normalized_words("A, b; c!");
        assert!((jaccard(&a, &b) - 0.75).abs() < 1e-12);
    }
}
