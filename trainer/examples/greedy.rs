//! Greedy answer of a model directory to a chat prompt, for comparing the
//! trainer's decoding with the engine's by hand.
//!
//! `echo '[{"role":"user","content":"Hi"}]' | cargo run --release -p flywheel-trainer --example greedy -- MODEL_DIR [MAX_TOKENS]`

use std::io::Read;

use flywheel_trainer::{CausalLm, ChatMessage, ChatTokenizer, ForwardCtx, Rng};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: greedy MODEL_DIR [MAX_TOKENS]"))?,
    );
    let max: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let messages: Vec<ChatMessage> = serde_json::from_str(&input)?;
    let model = CausalLm::load(&dir, None, &mut Rng::new(0), &candle_core::Device::Cpu)?;
    let tokenizer = ChatTokenizer::from_model_dir(&dir, &model.cfg)?;
    let prompt = tokenizer.encode_chat(&messages)?;
    let ids = model.greedy(&prompt, max, &tokenizer.stop_ids, &ForwardCtx::eval())?;
    println!("{}", serde_json::to_string(&tokenizer.decode(&ids)?)?);
    Ok(())
}
