//! Rollouts: ChatML prompts, tokenizer, and batched sampling of G completions.
//!
//! One prompt is prefilled once (batch 1), its KV cache is copied to G rows and
//! the G completions are decoded together; rows that hit a stop token are dropped
//! from the batch so finished samples cost nothing. Sampling draws from the
//! crate's seeded [`Rng`], so a run is reproducible and resumable.

use std::path::Path;

use anyhow::{anyhow, Context as _};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::{
    config::ModelConfig,
    lora::ForwardCtx,
    model::{CausalLm, KvCache},
    rng::Rng,
};

/// One chat message (`role` is system / user / assistant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn user(content: &str) -> Self {
        Self::new("user", content)
    }
    pub fn system(content: &str) -> Self {
        Self::new("system", content)
    }
}

/// Tokenizer plus the ChatML conventions of the model.
pub struct ChatTokenizer {
    pub tokenizer: tokenizers::Tokenizer,
    pub im_start_id: u32,
    pub im_end_id: u32,
    /// Generation stops at any of these (`<|im_end|>` and the config's eos ids).
    pub stop_ids: Vec<u32>,
    /// Id used for padding (never attended to, never scored).
    pub pad_id: u32,
    /// System prompt the model's chat template inserts when none is given
    /// (SmolLM2 and Qwen2.5 both have one); `None` renders no system turn.
    pub default_system: Option<String>,
}

/// Extracts the default system prompt from a ChatML jinja template: the literal text
/// between `<|im_start|>system\n` and `<|im_end|>` that is not built from variables.
pub fn default_system_from_template(template: &str) -> Option<String> {
    for marker in ["<|im_start|>system\n", "<|im_start|>system\\n"] {
        let mut rest = template;
        while let Some(i) = rest.find(marker) {
            let after = &rest[i + marker.len()..];
            if let Some(j) = after.find("<|im_end|>") {
                let body = &after[..j];
                if !body.is_empty()
                    && !body.contains('\'')
                    && !body.contains('"')
                    && !body.contains("{{")
                {
                    return Some(body.replace("\\n", "\n"));
                }
            }
            rest = after;
        }
    }
    None
}

impl ChatTokenizer {
    /// Loads `tokenizer.json` (and the chat template's default system prompt from
    /// `tokenizer_config.json`, when present) from an HF model directory.
    pub fn from_model_dir(dir: impl AsRef<Path>, cfg: &ModelConfig) -> anyhow::Result<Self> {
        let dir = dir.as_ref();
        let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| anyhow!("loading {}: {e}", dir.join("tokenizer.json").display()))?;
        let id = |s: &str| {
            tokenizer
                .token_to_id(s)
                .with_context(|| format!("tokenizer has no {s} token"))
        };
        let im_start_id = id("<|im_start|>")?;
        let im_end_id = id("<|im_end|>")?;
        let mut stop_ids = vec![im_end_id];
        for e in &cfg.eos_token_ids {
            if !stop_ids.contains(e) {
                stop_ids.push(*e);
            }
        }
        let default_system = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v.get("chat_template")
                    .and_then(|t| t.as_str())
                    .map(str::to_string)
            })
            .and_then(|t| default_system_from_template(&t));
        let pad_id = cfg.eos_token_ids.first().copied().unwrap_or(im_end_id);
        Ok(Self {
            tokenizer,
            im_start_id,
            im_end_id,
            stop_ids,
            pad_id,
            default_system,
        })
    }

    /// ChatML text with the generation prompt (`<|im_start|>assistant\n`) appended.
    pub fn render(&self, messages: &[ChatMessage]) -> String {
        let mut s = String::new();
        if messages.first().is_none_or(|m| m.role != "system") {
            if let Some(sys) = &self.default_system {
                s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
            }
        }
        for m in messages {
            s.push_str(&format!(
                "<|im_start|>{}\n{}<|im_end|>\n",
                m.role, m.content
            ));
        }
        s.push_str("<|im_start|>assistant\n");
        s
    }

    /// Token ids of `text` (special tokens in the text are recognised; none are added).
    pub fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow!("tokenize: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of the rendered prompt.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> anyhow::Result<Vec<u32>> {
        self.encode(&self.render(messages))
    }

    /// Text of `ids` without special tokens.
    pub fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| anyhow!("detokenize: {e}"))
    }
}

/// Sampling parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingConfig {
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 disables.
    pub top_p: f32,
    /// 0 disables.
    pub top_k: usize,
    pub max_new_tokens: usize,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 256,
        }
    }
}

/// One sampled completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Completion tokens, including the stop token when one was generated.
    pub completion_ids: Vec<u32>,
    /// Decoded completion without special tokens.
    pub text: String,
    /// Per-token log-prob of each completion token under the sampling policy's
    /// temperature-scaled distribution (before top-p/top-k truncation, like TRL).
    pub logprobs: Vec<f32>,
    /// True when generation ended on a stop token (false: hit max_new_tokens).
    pub stopped: bool,
}

/// Picks a token from one row of logits; returns (token, log-prob under softmax(logits / T)).
pub fn sample_token(logits: &[f32], cfg: &SamplingConfig, rng: &mut Rng) -> (u32, f32) {
    let t = if cfg.temperature > 0.0 {
        cfg.temperature
    } else {
        1.0
    };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<f32> = logits.iter().map(|&l| ((l - max) / t).exp()).collect();
    let sum: f32 = probs.iter().sum();
    let log_sum = sum.ln();
    let logp = |i: usize| (logits[i] - max) / t - log_sum;
    if cfg.temperature <= 0.0 {
        let i = logits
            .iter()
            .enumerate()
            .fold(0, |best, (i, &l)| if l > logits[best] { i } else { best });
        return (i as u32, logp(i));
    }
    for p in probs.iter_mut() {
        *p /= sum;
    }
    let v = probs.len();
    let limit_k = if cfg.top_k > 0 { cfg.top_k.min(v) } else { v };
    if cfg.top_p >= 1.0 && limit_k == v {
        let mut u = rng.next_f32();
        for (i, &p) in probs.iter().enumerate() {
            if u < p {
                return (i as u32, logp(i));
            }
            u -= p;
        }
        let i = probs.iter().rposition(|&p| p > 0.0).unwrap_or(v - 1);
        return (i as u32, logp(i));
    }
    // Candidates: the top k0 by probability, widening until they hold top_p mass
    // (avoids sorting the whole vocabulary for every token).
    let mut idx: Vec<u32> = (0..v as u32).collect();
    let mut k0 = limit_k.min(64);
    let cand = loop {
        let mut part = idx.clone();
        if k0 < v {
            part.select_nth_unstable_by(k0 - 1, |&a, &b| {
                probs[b as usize].total_cmp(&probs[a as usize])
            });
            part.truncate(k0);
        }
        part.sort_by(|&a, &b| {
            probs[b as usize]
                .total_cmp(&probs[a as usize])
                .then(a.cmp(&b))
        });
        let mass: f32 = part.iter().map(|&i| probs[i as usize]).sum();
        if mass >= cfg.top_p || k0 >= limit_k {
            break part;
        }
        k0 = (k0 * 4).min(limit_k);
    };
    idx.clear();
    let mut cum = 0.0;
    for &i in &cand {
        idx.push(i);
        cum += probs[i as usize];
        if cum >= cfg.top_p {
            break;
        }
    }
    let mut u = rng.next_f32() * cum;
    for &i in &idx {
        let p = probs[i as usize];
        if u < p {
            return (i, logp(i as usize));
        }
        u -= p;
    }
    // Rounding left u above zero: the last candidate takes the rest.
    let i = idx.last().copied().unwrap_or(0);
    (i, logp(i as usize))
}

/// Raw sampled completion (see [`Rollout`] for the fields).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sampled {
    pub ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub stopped: bool,
}

/// Samples `g` completions of one prompt as a batch with a shared-prefix KV cache.
pub fn sample_group(
    model: &CausalLm,
    prompt_ids: &[u32],
    g: usize,
    stop_ids: &[u32],
    cfg: &SamplingConfig,
    rng: &mut Rng,
) -> anyhow::Result<Vec<Sampled>> {
    anyhow::ensure!(!prompt_ids.is_empty(), "empty prompt");
    anyhow::ensure!(
        prompt_ids.len() + cfg.max_new_tokens <= model.rope.cos.dim(0)?,
        "prompt ({}) + max_new_tokens ({}) exceeds the model's context",
        prompt_ids.len(),
        cfg.max_new_tokens
    );
    let ctx = ForwardCtx::eval();
    let dev = &model.device;
    let mut out: Vec<Sampled> = vec![Sampled::default(); g];
    if cfg.max_new_tokens == 0 || g == 0 {
        return Ok(out);
    }
    let mut cache1 = KvCache::default();
    let first = model.forward_cached(
        &Tensor::new(prompt_ids, dev)?.unsqueeze(0)?,
        &mut cache1,
        &ctx,
    )?;
    let first = first.squeeze(0)?.to_vec1::<f32>()?;
    let mut cache = cache1.expand(g)?;
    drop(cache1);
    let mut active: Vec<usize> = (0..g).collect();
    let mut rows: Vec<Vec<f32>> = vec![first];
    for step in 0..cfg.max_new_tokens {
        let mut next = Vec::with_capacity(active.len());
        let mut keep = Vec::with_capacity(active.len());
        for (j, &r) in active.iter().enumerate() {
            let logits = if rows.len() == 1 { &rows[0] } else { &rows[j] };
            let (tok, lp) = sample_token(logits, cfg, rng);
            out[r].ids.push(tok);
            out[r].logprobs.push(lp);
            if stop_ids.contains(&tok) {
                out[r].stopped = true;
            } else {
                keep.push(j as u32);
                next.push(tok);
            }
        }
        if next.is_empty() || step + 1 == cfg.max_new_tokens {
            break;
        }
        if keep.len() != active.len() {
            cache.select_rows(&keep)?;
            active = keep.iter().map(|&j| active[j as usize]).collect();
        }
        let n = next.len();
        let ids = Tensor::from_vec(next, (n, 1), dev)?;
        rows = model
            .forward_cached(&ids, &mut cache, &ctx)?
            .to_vec2::<f32>()?;
    }
    Ok(out)
}

/// Samples `g` completions and decodes them.
pub fn rollouts(
    model: &CausalLm,
    tok: &ChatTokenizer,
    prompt_ids: &[u32],
    g: usize,
    cfg: &SamplingConfig,
    rng: &mut Rng,
) -> anyhow::Result<Vec<Rollout>> {
    sample_group(model, prompt_ids, g, &tok.stop_ids, cfg, rng)?
        .into_iter()
        .map(|s| {
            Ok(Rollout {
                text: tok.decode(&s.ids)?,
                completion_ids: s.ids,
                logprobs: s.logprobs,
                stopped: s.stopped,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Arch, lora::LoraConfig, model::tests::tiny};

    #[test]
    fn default_system_prompts_are_found() {
        let smol = "{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}";
        assert_eq!(
            default_system_from_template(smol).as_deref(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
        let qwen = r"{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }} {%- else %} {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}";
        assert_eq!(
            default_system_from_template(qwen).as_deref(),
            Some("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        );
    }

    #[test]
    fn top_p_and_top_k_restrict_support() {
        let logits = vec![5.0, 4.0, 0.0, -1.0, -2.0, 3.0];
        let mut rng = Rng::new(1);
        let cfg = SamplingConfig {
            temperature: 1.0,
            top_p: 0.5,
            top_k: 0,
            max_new_tokens: 1,
        };
        for _ in 0..200 {
            assert_eq!(
                sample_token(&logits, &cfg, &mut rng).0,
                0,
                "p(token0)=0.66 > top_p"
            );
        }
        let cfg = SamplingConfig {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 2,
            max_new_tokens: 1,
        };
        let mut seen = [0; 6];
        for _ in 0..2000 {
            seen[sample_token(&logits, &cfg, &mut rng).0 as usize] += 1;
        }
        assert!(
            seen[0] > 0 && seen[1] > 0 && seen[2..].iter().all(|&c| c == 0),
            "{seen:?}"
        );
        // Log-prob is of the untruncated distribution.
        let (t, lp) = sample_token(
            &logits,
            &SamplingConfig {
                temperature: 0.0,
                ..cfg.clone()
            },
            &mut rng,
        );
        let lse = logits
            .iter()
            .map(|l: &f32| (l - 5.0).exp())
            .sum::<f32>()
            .ln()
            + 5.0;
        assert_eq!(t, 0);
        assert!((lp - (5.0 - lse)).abs() < 1e-5);
    }

    #[test]
    fn group_sampling_is_seeded_and_logprobs_match_forward() {
        let m = tiny(
            Arch::Llama,
            Some(&LoraConfig {
                rank: 4,
                ..Default::default()
            }),
            21,
        );
        let cfg = SamplingConfig {
            temperature: 0.9,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 12,
        };
        let prompt = [3u32, 8, 13, 21];
        let stop = [2u32, 5, 7];
        let a = sample_group(&m, &prompt, 6, &stop, &cfg, &mut Rng::new(4)).unwrap();
        let b = sample_group(&m, &prompt, 6, &stop, &cfg, &mut Rng::new(4)).unwrap();
        assert_eq!(a, b);
        let c = sample_group(&m, &prompt, 6, &stop, &cfg, &mut Rng::new(5)).unwrap();
        assert_ne!(a, c);
        // Recompute each completion's log-probs with a full forward (logits / T).
        for Sampled {
            ids,
            logprobs: lps,
            stopped,
        } in &a
        {
            assert_eq!(ids.len(), lps.len());
            assert!(*stopped == stop.contains(ids.last().unwrap()));
            let seq: Vec<u32> = prompt.iter().chain(ids.iter()).copied().collect();
            let batch = crate::model::PaddedBatch::from_rows(
                &[seq.iter().map(|&t| Some(t)).collect()],
                0,
                &m.device,
            )
            .unwrap();
            let logits = (m.forward_batch(&batch, &ForwardCtx::eval()).unwrap() / 0.9).unwrap();
            let lsm = crate::ops::log_softmax_last_dim(&logits)
                .unwrap()
                .squeeze(0)
                .unwrap();
            for (i, (&t, &lp)) in ids.iter().zip(lps).enumerate() {
                let want = lsm
                    .get(prompt.len() - 1 + i)
                    .unwrap()
                    .get(t as usize)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!((want - lp).abs() < 1e-4, "token {i}: {want} vs {lp}");
            }
        }
    }

    /// Real model: greedy answer to a ChatML question mentions Paris.
    #[test]
    fn real_model_knows_paris() {
        let dir = crate::testing::real_model_dir();
        let m = CausalLm::load(&dir, None, &mut Rng::new(0), &candle_core::Device::Cpu).unwrap();
        let tok = ChatTokenizer::from_model_dir(&dir, &m.cfg).unwrap();
        let ids = tok
            .encode_chat(&[ChatMessage::user("What is the capital of France?")])
            .unwrap();
        assert_eq!(ids[0], tok.im_start_id);
        let out = m
            .greedy(&ids, 24, &tok.stop_ids, &ForwardCtx::eval())
            .unwrap();
        let text = tok.decode(&out).unwrap();
        assert!(text.contains("Paris"), "greedy continuation: {text:?}");
    }
}
