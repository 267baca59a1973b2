//! The verifiable task suite: prompts generated procedurally from a seed
//! (no downloads), each task with the grader config that scores it. They
//! mirror what RFT is used for in production: structured extraction,
//! arithmetic, instruction following, support policy and tool calls.
//!
//! Difficulty is set by how much each prompt asks at once (fields to
//! extract, operations to chain, constraints to meet, rules to apply), so
//! that a 135M model gets some reward but far from all of it.

mod generate;

pub use generate::Rng;
use serde_json::{json, Value};

use crate::{
    dataset::{split_of, Split},
    item::{Item, Message},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Extraction,
    Arithmetic,
    Instructions,
    Policy,
    ToolCall,
}

/// The grader of a structured-output task: a quarter of the score for the
/// format (the whole answer is JSON matching the schema, what an app
/// parsing it needs) and three quarters for the content (the weighted
/// fields of the first JSON object in the answer, so that a right answer
/// in a code fence still earns most of the reward: a 135M model rarely
/// gets the format right at first, and a reward that is 0 on format alone
/// gives RFT nothing to climb).
fn structured(name: &str, schema: Value, fields: Value) -> Value {
    json!({
        "type": "multi", "name": name,
        "graders": {
            "format": {"type": "json", "name": "format", "schema": schema, "reference": null},
            "content": {"type": "json", "name": "content", "extract": true, "fields": fields}
        },
        "calculate_output": "0.25 * format + 0.75 * content",
        "pass_threshold": 1.0
    })
}

/// 1 for the exact answer, falling linearly to 0 at 100% relative error,
/// read from the first JSON object of the answer (as `content` is).
const ARITHMETIC_CLOSENESS: &str = r#"
import json

def grade(sample, item):
    text = sample["output_text"]
    want = item["reference_answer"]["answer"]
    for i, ch in enumerate(text):
        if ch != "{":
            continue
        try:
            obj, _ = json.JSONDecoder().raw_decode(text[i:])
        except ValueError:
            continue
        got = obj.get("answer") if isinstance(obj, dict) else None
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return 0.0
        return max(0.0, 1.0 - abs(got - want) / max(abs(want), 1))
    return 0.0
"#;

impl Task {
    pub const ALL: [Task; 5] = [
        Task::Extraction,
        Task::Arithmetic,
        Task::Instructions,
        Task::Policy,
        Task::ToolCall,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Task::Extraction => "extraction",
            Task::Arithmetic => "arithmetic",
            Task::Instructions => "instructions",
            Task::Policy => "policy",
            Task::ToolCall => "tool_call",
        }
    }

    pub fn parse(name: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The grader config (OpenAI grader JSON shape) that scores this task.
    pub fn grader(self) -> Value {
        match self {
            Task::Extraction => structured(
                "extraction",
                generate::EXTRACTION_SCHEMA.clone(),
                json!({"/name": 1, "/city": 1, "/age": 1, "/occupation": 1}),
            ),
            Task::Arithmetic => {
                // Exact answers alone are too sparse for a 135M model: every
                // completion of a group scores the same and the step has no
                // gradient. Half the content reward is for being close.
                let mut g = structured(
                    "arithmetic",
                    generate::ARITHMETIC_SCHEMA.clone(),
                    json!({"/answer": 1}),
                );
                g["graders"]["close"] =
                    json!({"type": "python", "name": "close", "source": ARITHMETIC_CLOSENESS});
                g["calculate_output"] = json!("0.25 * format + 0.375 * content + 0.375 * close");
                g
            }
            Task::Instructions => json!({
                "type": "multi", "name": "instructions",
                "graders": {
                    "bullets": {"type": "regex", "name": "three bullet lines",
                                "input": "{{sample.output_text}}", "pattern": r"^\s*- [^\n]+\n- [^\n]+\n- [^\n]+\s*$"},
                    "lower": {"type": "regex", "name": "all lowercase",
                              "input": "{{sample.output_text}}", "pattern": "^[^A-Z]+$"},
                    "keyword": {"type": "string_check", "name": "mentions the keyword",
                                "input": "{{sample.output_text}}", "reference": "{{item.keyword}}", "operation": "ilike"}
                },
                "calculate_output": "(bullets + lower + keyword) / 3",
                "pass_threshold": 1.0
            }),
            Task::Policy => structured(
                "policy",
                generate::POLICY_SCHEMA.clone(),
                json!({"/decision": 1}),
            ),
            Task::ToolCall => structured(
                "tool_call",
                generate::TOOL_CALL_SCHEMA.clone(),
                json!({"/name": 1, "/arguments/city": 1, "/arguments/days": 1, "/arguments/unit": 1, "/arguments/hourly": 1}),
            ),
        }
    }

    /// `n` items from `seed`; the same arguments give the same items.
    pub fn generate(self, seed: u64, n: usize) -> Vec<Item> {
        // Each task draws from its own stream, so adding a task never
        // changes another's items.
        let mut rng = Rng::new(seed ^ (self as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // One worked example, the same for every item of the task, shown as
        // a prior turn: it pins the answer format without giving away any
        // item's answer, and it is what lifts a 135M model off a zero score.
        let example = self.draw(&mut Rng::new(0x005E_ED0F_EAA9));
        let example_answer = crate::item::answer_text(&example.reference);
        (0..n)
            .map(|i| {
                let g = self.draw(&mut rng);
                let mut messages = vec![Message::new("system", g.system)];
                // Not for instructions: there the example is a template of
                // the answer (the base model scored 0.97 with it).
                if self != Task::Instructions {
                    messages.push(Message::new("user", example.user.clone()));
                    messages.push(Message::new("assistant", example_answer.clone()));
                }
                messages.push(Message::new("user", g.user));
                let mut item = Item::new(messages, Some(g.reference));
                item.extra.insert("id".into(), Value::String(format!("{}-{seed}-{i}", self.name())));
                item.extra.insert("task".into(), Value::String(self.name().into()));
                if let Some(schema) = g.schema {
                    item.extra.insert(
                        "response_format".into(),
                        json!({"type": "json_schema", "json_schema": {"name": self.name(), "schema": schema}}),
                    );
                }
                item.extra.extend(g.extra);
                item
            })
            .collect()
    }

    fn draw(self, rng: &mut Rng) -> generate::Generated {
        match self {
            Task::Extraction => generate::extraction(rng),
            Task::Arithmetic => generate::arithmetic(rng),
            Task::Instructions => generate::instructions(rng),
            Task::Policy => generate::policy(rng),
            Task::ToolCall => generate::tool_call(rng),
        }
    }

    /// Generated items split into train and held-out (20 %, by prompt hash).
    pub fn generate_split(self, seed: u64, n: usize) -> (Vec<Item>, Vec<Item>) {
        self.generate(seed, n)
            .into_iter()
            .partition(|item| split_of(item, seed, 0.2) == Split::Train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{grader::Grader, item::Sample};

    #[test]
    fn generation_is_deterministic_per_seed() {
        for task in Task::ALL {
            assert_eq!(
                task.generate(3, 20),
                task.generate(3, 20),
                "{}",
                task.name()
            );
            assert_ne!(
                task.generate(3, 20),
                task.generate(4, 20),
                "{}",
                task.name()
            );
            let items = task.generate(3, 50);
            let distinct: std::collections::HashSet<String> = items
                .iter()
                .map(crate::dataset::normalized_prompt)
                .collect();
            assert!(
                distinct.len() >= 45,
                "{}: only {} distinct prompts of 50",
                task.name(),
                distinct.len()
            );
        }
    }

    /// The reference answer of every item gets full marks from the task's
    /// own grader, and an empty answer gets none: the grader and the
    /// generator agree.
    #[test]
    fn each_task_grader_accepts_its_reference_and_rejects_nonsense() {
        for task in Task::ALL {
            let grader = Grader::from_config(&task.grader())
                .unwrap_or_else(|e| panic!("{}: {e}", task.name()));
            for item in task.generate(11, 30) {
                let reference = item.reference_answer.clone().unwrap();
                let text = crate::item::answer_text(&reference);
                let good = grader
                    .grade(&Sample::from_text(text.clone()), &item)
                    .unwrap();
                assert_eq!(good.score, 1.0, "{}: {text} → {}", task.name(), good.reason);
                assert!(good.passed);
                let bad = grader
                    .grade(&Sample::from_text("I cannot help with that."), &item)
                    .unwrap();
                assert!(
                    bad.score < 0.5 && !bad.passed,
                    "{}: {}",
                    task.name(),
                    bad.reason
                );
            }
        }
    }

    /// A near miss earns part of the content reward, a far miss none: the
    /// gradient RFT needs on a task the base model rarely gets exactly.
    #[test]
    fn arithmetic_rewards_closeness() {
        let grader = Grader::from_config(&Task::Arithmetic.grader()).unwrap();
        let item = Task::Arithmetic.generate(3, 1).remove(0);
        let want = item.reference_answer.as_ref().unwrap()["answer"]
            .as_i64()
            .unwrap();
        let score = |text: String| grader.grade(&Sample::from_text(text), &item).unwrap().score;
        assert_eq!(score(format!("{{\"answer\": {want}}}")), 1.0);
        let near = want + (want.abs() / 10).max(1);
        let rel = (near - want).abs() as f64 / want.abs().max(1) as f64;
        let expected = 0.25 + 0.375 * (1.0 - rel);
        assert!((score(format!("{{\"answer\": {near}}}")) - expected).abs() < 1e-9);
        assert_eq!(
            score(format!("{{\"answer\": {}}}", want * 3 + 100)),
            0.25,
            "format only"
        );
        assert_eq!(
            score(format!("The answer is {{\"answer\": {want}}}")),
            0.75,
            "content but not format"
        );
    }

    #[test]
    fn split_holds_out_about_a_fifth_and_is_disjoint() {
        let (train, heldout) = Task::Arithmetic.generate_split(5, 500);
        assert_eq!(train.len() + heldout.len(), 500);
        assert!((60..140).contains(&heldout.len()), "{}", heldout.len());
        let train_ids: std::collections::HashSet<String> = train.iter().map(Item::id).collect();
        assert!(heldout.iter().all(|i| !train_ids.contains(&i.id())));
    }
}
