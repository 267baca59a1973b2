//! The trainer against the engine on the real SmolLM2: its forward ranks
//! next tokens as the engine does, and a checkpoint it trains and merges
//! deploys to a running engine and answers.

use candle_core::{Device, Tensor};
use flywheel_tests::*;
use flywheel_trainer::{
    model::KvCache, CausalLm, ChatMessage, ChatTokenizer, ForwardCtx, PromptItem, Rng, Trainer,
    TrainerConfig,
};
use serde_json::{json, Value};

fn question() -> Vec<ChatMessage> {
    vec![ChatMessage::user("What is the capital of France?")]
}

/// The trainer's forward against the engine's on the same weights: for
/// each prompt the engine answers greedily and reports the id of every
/// chosen token; the trainer, teacher-forced on the same tokens, must rank
/// the same token first at every position (up to 24 positions x 3 prompts).
///
/// Why ranks and not values: mistral.rs 0.8.1 reports log-probabilities
/// that are not those of the model's softmax (at temperature 0 the chosen
/// token of "What is the capital of France?" gets -0.82 where the full
/// softmax gives -1.88, and its `top_logprobs` do not sum to at most 1), so
/// the engine offers no value to compare against. The differentiable ops
/// are compared value by value with candle's fused ones in the trainer's
/// unit tests (1e-5).
///
/// The engine keeps the F32 weights here (`--isq none`, the default, named
/// so that a change of default cannot quantize them under this test).
#[tokio::test]
async fn trainer_greedy_tokens_match_the_engine() {
    const N: usize = 24;
    let engine = start_engine_with(&["--isq", "none"]);
    let dir = model_dir();
    let model = CausalLm::load(&dir, None, &mut Rng::new(0), &Device::Cpu).unwrap();
    let tokenizer = ChatTokenizer::from_model_dir(&dir, &model.cfg).unwrap();
    for question in [
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "List three prime numbers.",
    ] {
        let r = client()
            .post(engine.url("/v1/chat/completions"))
            .json(
                &json!({"model": "base", "messages": [{"role": "user", "content": question}],
                          "max_tokens": N, "temperature": 0, "logprobs": true, "top_logprobs": 1}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let content = body["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .clone();
        assert!(content.len() >= 4, "{body}");
        let chosen: Vec<u32> = content
            .iter()
            .map(|c| {
                // The engine's extension field: OpenAI's `token` is the token's text.
                c["top_logprobs"][0]["token_id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{c}")) as u32
            })
            .collect();

        let mut cache = KvCache::default();
        let prompt = tokenizer
            .encode_chat(&[ChatMessage::user(question)])
            .unwrap();
        let mut input = Tensor::new(prompt.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        for (i, &id) in chosen.iter().enumerate() {
            let logits = model
                .forward_cached(&input, &mut cache, &ForwardCtx::eval())
                .unwrap();
            let logits: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
            let argmax = logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0 as u32;
            assert_eq!(
                argmax,
                id,
                "{question:?} position {i}: trainer ranks {:?} first, engine chose {:?}",
                tokenizer.decode(&[argmax]).unwrap(),
                tokenizer.decode(&[id]).unwrap()
            );
            input = Tensor::new(&[[id]], &Device::Cpu).unwrap();
        }
    }
}

#[tokio::test]
async fn trained_and_merged_checkpoint_deploys_and_answers() {
    let engine = start_engine();
    let mut cfg = TrainerConfig {
        num_generations: 2,
        ..TrainerConfig::default()
    };
    cfg.sampling.max_new_tokens = 8;
    cfg.optim.lr = 1e-2;
    let mut trainer = Trainer::new(model_dir(), cfg).unwrap();
    // Rewards that differ within the group, so the step has a gradient and
    // the merged weights differ from the base.
    let metrics = trainer
        .step(
            &[PromptItem {
                id: "p".into(),
                messages: question(),
                meta: Value::Null,
                guide: None,
            }],
            |_, text| Ok(text.len() as f64),
        )
        .unwrap();
    assert!(metrics.grad_norm > 0.0, "{metrics:?}");
    let out = scratch_dir("merged");
    trainer.export_merged(out.join("merged")).unwrap();
    trainer.export_adapter(out.join("adapter")).unwrap();
    assert!(
        out.join("adapter/adapter_model.safetensors").is_file()
            && out.join("adapter/adapter_config.json").is_file()
    );

    let r = client()
        .post(engine.url("/admin/models"))
        .bearer_auth(ENGINE_ADMIN)
        .json(&json!({"name": "rft-1", "path": out.join("merged")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = client()
        .post(engine.url("/v1/chat/completions"))
        .json(&json!({"model": "rft-1", "max_tokens": 8, "temperature": 0,
                      "messages": [{"role": "user", "content": "What is the capital of France?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["model"], "rft-1", "{body}");
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{body}"
    );
}
