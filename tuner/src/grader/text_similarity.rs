//! OpenAI's `text_similarity`: a similarity metric between the rendered
//! input and reference, in [0, 1].
//!
//! - `fuzzy_match`: 1 - levenshtein(input, reference) / max(len), on chars,
//!   case-sensitive (two empty strings score 1).
//! - `bleu`: sentence BLEU-4 of input against the single reference, with
//!   the brevity penalty. Unigram precision is unsmoothed (no shared word
//!   means 0); precisions for n = 2..4 use add-one smoothing
//!   ((matches + 1) / (candidate n-grams + 1)) so that a short but correct
//!   answer is not zeroed by a missing 4-gram.
//! - `rouge_1` .. `rouge_5`: F1 of clipped n-gram overlap.
//! - `rouge_l`: F1 from the longest common token subsequence.
//!
//! Token metrics lowercase and split on whitespace. OpenAI's `cosine`
//! (needs embeddings), `meteor` and `gleu` are rejected at config time.

use std::collections::HashMap;

use serde_json::Value;

use super::{config::Cfg, template::Template, GraderError};

pub(crate) const FIELDS: &[&str] = &["input", "reference", "evaluation_metric"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    Fuzzy,
    Bleu,
    Rouge(usize),
    RougeL,
}

pub(crate) struct TextSimilarity {
    input: Template,
    reference: Template,
    metric: Metric,
    metric_name: String,
}

impl TextSimilarity {
    pub fn from_cfg(cfg: &Cfg) -> Result<Self, GraderError> {
        let name = cfg.req_str("evaluation_metric")?;
        let metric = match name {
            "fuzzy_match" => Metric::Fuzzy,
            "bleu" => Metric::Bleu,
            "rouge_1" => Metric::Rouge(1),
            "rouge_2" => Metric::Rouge(2),
            "rouge_3" => Metric::Rouge(3),
            "rouge_4" => Metric::Rouge(4),
            "rouge_5" => Metric::Rouge(5),
            "rouge_l" => Metric::RougeL,
            "cosine" | "meteor" | "gleu" => {
                return Err(cfg.err("evaluation_metric", format!("metric `{name}` is not supported (supported: fuzzy_match, bleu, rouge_1..rouge_5, rouge_l)")));
            }
            other => return Err(cfg.err("evaluation_metric", format!("unknown metric `{other}` (supported: fuzzy_match, bleu, rouge_1..rouge_5, rouge_l)"))),
        };
        Ok(Self {
            input: cfg.req_template("input")?,
            reference: cfg.req_template("reference")?,
            metric,
            metric_name: name.to_owned(),
        })
    }

    pub fn score(&self, ctx: &Value) -> Result<(f64, String), String> {
        let input = self.input.render(ctx).map_err(|e| format!("input: {e}"))?;
        let reference = self
            .reference
            .render(ctx)
            .map_err(|e| format!("reference: {e}"))?;
        let score = similarity(self.metric, &input, &reference);
        Ok((score, format!("{} = {score:.4}", self.metric_name)))
    }
}

fn similarity(metric: Metric, input: &str, reference: &str) -> f64 {
    match metric {
        Metric::Fuzzy => fuzzy_match(input, reference),
        Metric::Bleu => bleu(&tokens(input), &tokens(reference)),
        Metric::Rouge(n) => rouge_n(&tokens(input), &tokens(reference), n),
        Metric::RougeL => rouge_l(&tokens(input), &tokens(reference)),
    }
}

fn tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn fuzzy_match(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let max = a.len().max(b.len());
    if max == 0 {
        return 1.0;
    }
    1.0 - levenshtein(&a, &b) as f64 / max as f64
}

fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

fn ngrams(toks: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if n > 0 && toks.len() >= n {
        for w in toks.windows(n) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts
}

/// Clipped overlap: each candidate n-gram counts at most as often as it
/// appears in the reference. Returns (overlap, candidate total, reference total).
fn overlap(cand: &[String], reference: &[String], n: usize) -> (usize, usize, usize) {
    let c = ngrams(cand, n);
    let r = ngrams(reference, n);
    let matched = c
        .iter()
        .map(|(g, k)| (*k).min(r.get(g).copied().unwrap_or(0)))
        .sum();
    (matched, c.values().sum(), r.values().sum())
}

fn bleu(cand: &[String], reference: &[String]) -> f64 {
    if cand.is_empty() || reference.is_empty() {
        return if cand == reference { 1.0 } else { 0.0 };
    }
    let mut log_sum = 0.0;
    for n in 1..=4 {
        let (m, total, _) = overlap(cand, reference, n);
        let p = if n == 1 {
            m as f64 / total as f64
        } else {
            (m as f64 + 1.0) / (total as f64 + 1.0)
        };
        if p == 0.0 {
            return 0.0;
        }
        log_sum += p.ln() / 4.0;
    }
    let (c, r) = (cand.len() as f64, reference.len() as f64);
    let brevity = if c > r { 1.0 } else { (1.0 - r / c).exp() };
    brevity * log_sum.exp()
}

fn f1(matched: usize, cand_total: usize, ref_total: usize) -> f64 {
    if matched == 0 {
        return 0.0;
    }
    let p = matched as f64 / cand_total as f64;
    let r = matched as f64 / ref_total as f64;
    2.0 * p * r / (p + r)
}

fn rouge_n(cand: &[String], reference: &[String], n: usize) -> f64 {
    let (m, c, r) = overlap(cand, reference, n);
    if c == 0 && r == 0 {
        // Both too short to have any n-gram: only identical texts agree.
        return if cand == reference { 1.0 } else { 0.0 };
    }
    f1(m, c, r)
}

fn rouge_l(cand: &[String], reference: &[String]) -> f64 {
    if cand.is_empty() && reference.is_empty() {
        return 1.0;
    }
    let mut prev = vec![0usize; reference.len() + 1];
    let mut cur = vec![0usize; reference.len() + 1];
    for a in cand {
        for (j, b) in reference.iter().enumerate() {
            cur[j + 1] = if a == b {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    f1(prev[reference.len()], cand.len(), reference.len())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        grader::Grader,
        item::{Item, Message, Sample},
    };

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn t(s: &str) -> Vec<String> {
        tokens(s)
    }

    #[test]
    fn fuzzy_match_hand_computed() {
        assert!(close(fuzzy_match("kitten", "sitting"), 1.0 - 3.0 / 7.0));
        assert!(close(fuzzy_match("same", "same"), 1.0));
        assert!(close(fuzzy_match("abc", "xyz"), 0.0));
        assert!(close(fuzzy_match("", ""), 1.0));
        assert!(close(fuzzy_match("héllo", "hello"), 0.8));
    }

    #[test]
    fn bleu_identical_is_one_and_disjoint_is_zero() {
        let s = t("the quick brown fox jumps over the lazy dog");
        assert!(close(bleu(&s, &s), 1.0));
        assert!(bleu(&s, &t("a completely different sentence with other words")) < 1e-9);
        let short = bleu(&t("the quick brown fox"), &s);
        assert!(
            short > 0.0 && short < 0.5,
            "brevity penalty should bite: {short}"
        );
    }

    #[test]
    fn rouge_n_f1() {
        assert!(close(rouge_n(&t("a b c"), &t("a b c"), 1), 1.0));
        // unigrams: cand {the,cat}, ref {the,dog}: overlap 1, P=R=1/2.
        assert!(close(rouge_n(&t("the cat"), &t("the dog"), 1), 0.5));
        assert!(close(rouge_n(&t("the cat"), &t("the dog"), 2), 0.0));
        assert!(close(rouge_n(&t("a"), &t("a"), 3), 1.0));
        assert!(close(rouge_n(&t("a"), &t("b"), 3), 0.0));
    }

    #[test]
    fn rouge_l_hand_computed() {
        // LCS("the cat on the mat", "the cat sat on the mat") = 5 tokens:
        // P = 5/5, R = 5/6, F1 = 2PR/(P+R) = 10/11.
        assert!(close(
            rouge_l(&t("the cat on the mat"), &t("The cat sat on the mat")),
            10.0 / 11.0
        ));
        assert!(close(rouge_l(&t("x y"), &t("a b")), 0.0));
    }

    fn grade(metric: &str, threshold: f64, output: &str, reference: &str) -> crate::grader::Grade {
        let g = Grader::from_config(&json!({
            "type": "text_similarity", "name": "sim", "evaluation_metric": metric, "pass_threshold": threshold,
            "input": "{{sample.output_text}}", "reference": "{{item.reference_answer}}"
        }))
        .unwrap();
        let item = Item::new(vec![Message::new("user", "q")], Some(json!(reference)));
        g.grade(&Sample::from_text(output), &item).unwrap()
    }

    #[test]
    fn grader_applies_threshold() {
        let g = grade("fuzzy_match", 0.5, "kitten", "sitting");
        assert!(g.passed && close(g.score, 4.0 / 7.0));
        assert!(!grade("fuzzy_match", 0.9, "kitten", "sitting").passed);
        assert!(
            grade(
                "rouge_l",
                0.9,
                "the cat on the mat",
                "the cat sat on the mat"
            )
            .passed
        );
        assert!(!grade("bleu", 0.5, "nothing alike", "the cat sat").passed);
    }

    #[test]
    fn unsupported_metrics_are_config_errors() {
        for m in ["cosine", "meteor", "gleu", "rouge_9", "jaccard"] {
            let e = Grader::from_config(&json!({"type": "text_similarity", "name": "s", "evaluation_metric": m, "input": "a", "reference": "b"})).unwrap_err();
            assert!(e.to_string().contains("$.evaluation_metric"), "{e}");
        }
        let e = Grader::from_config(&json!({"type": "text_similarity", "name": "s", "evaluation_metric": "cosine", "input": "a", "reference": "b"})).unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
    }
}
