"""TRL's GRPOTrainer on the setup of `cargo run -p flywheel-trainer --example step_time`:
the same model directory, prompt, reward and sizes, so that the two step times compare.

1 prompt x 8 completions of <= 32 tokens, LoRA r=16 alpha=32 on the 7 linear projections,
temperature 1, beta 0, DAPO loss, lr 1e-5, 2 CPU threads. Prints one JSON line with the
seconds of every step and their mean (the first step, which warms up, is reported apart).

usage: python trl_step_time.py MODEL_DIR STEPS
"""
import json
import sys
import time

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

model_dir, steps = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(2)

PROMPT = [{"role": "user", "content": "Write a short sentence about the sea."}]


def reward_e(completions, **_):
    # The trainer benchmark's reward: the fraction of 'e' in the answer.
    out = []
    for c in completions:
        text = c[0]["content"] if isinstance(c, list) else c
        out.append(text.count("e") / max(len(text), 1))
    return out


class StepTimes(TrainerCallback):
    def __init__(self):
        self.times, self.t0 = [], None

    def on_step_begin(self, args, state, control, **kw):
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self.t0)


cfg = GRPOConfig(
    output_dir="/tmp/trl-step-time",
    per_device_train_batch_size=8,
    num_generations=8,
    max_completion_length=32,
    learning_rate=1e-5,
    beta=0.0,
    loss_type="dapo",
    temperature=1.0,
    max_steps=steps,
    logging_steps=1,
    save_strategy="no",
    report_to=[],
    use_cpu=True,
    bf16=False,
)
lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
timer = StepTimes()
trainer = GRPOTrainer(model=model_dir, reward_funcs=reward_e, args=cfg,
                      train_dataset=Dataset.from_list([{"prompt": PROMPT}] * (steps * 8)),
                      peft_config=lora, callbacks=[timer])
trainer.train()
rest = timer.times[1:] or timer.times
print(json.dumps({"impl": "trl", "steps": timer.times, "first_s": timer.times[0],
                  "mean_s_after_first": sum(rest) / len(rest)}))
