//! GRPO LoRA trainer on candle (CPU first).
//!
//! Modules, in dependency order:
//! - [`config`]: `config.json` -> [`config::ModelConfig`] (Llama, Qwen2).
//! - [`ops`]: differentiable softmax / RMS norm / RoPE / masks, and a frozen-weight matmul.
//! - [`rng`]: the seeded, checkpointable RNG.
//! - [`lora`]: LoRA adapters with PEFT names, on/off switch, dropout.
//! - [`model`]: the causal LM forward (batched + KV cache).
//! - [`sample`]: tokenizer, ChatML rendering, batched sampling of G completions.
//! - [`loss`]: GRPO / Dr. GRPO / DAPO objective, advantages, KL, entropy.
//! - [`optim`]: AdamW with exportable state, LR schedules, gradient clipping.
//! - [`train`]: the [`train::Trainer`] step loop and checkpoints.
//! - [`export`]: PEFT adapter directory and merged HF model directory.
//! - [`testing`]: tiny random models for tests and the real-model location.

pub mod config;
pub mod export;
pub mod lora;
pub mod loss;
pub mod model;
pub mod ops;
pub mod optim;
pub mod rng;
pub mod sample;
pub mod testing;
pub mod train;

pub use config::{Arch, ModelConfig};
pub use lora::{ForwardCtx, LoraConfig};
pub use model::CausalLm;
pub use rng::Rng;
pub use sample::{ChatMessage, ChatTokenizer, SamplingConfig};
pub use train::{PromptItem, StepMetrics, Trainer, TrainerConfig};
