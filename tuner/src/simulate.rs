//! Simulated users: realistic traffic for demos, tests and benchmarks
//! against any gateway route (`flywheel-tuner simulate`).
//!
//! **Open loop.** Conversations start at exponentially distributed
//! intervals (a Poisson process of `rate` per second) whatever the
//! gateway's speed, as real users arrive; a closed loop would slow down
//! with the gateway and hide its queueing. `max_in_flight` bounds the
//! outstanding conversations, and an arrival beyond it is counted as
//! *dropped*, so an overloaded gateway shows as drops rather than as a
//! quietly lower rate.
//!
//! **A conversation.** One of `users` users (sent as OpenAI's `user`
//! field), a new episode id (`x-flywheel-episode-id`), a prompt drawn from
//! the dataset. The user judges the answer the way the dataset's grader
//! does. With probability `feedback_rate` they send a thumbs (`metric`,
//! `true` when the grader passed it) after an exponentially distributed
//! delay of mean `feedback_delay`, flipped with probability `noise` (users
//! misclick and disagree). A user whose answer failed re-asks, with
//! probability `reask_rate`: the same question slightly reworded, in the
//! same episode, once (the gateway's implicit re-ask signal sees it); the
//! second answer is judged and thumbed the same way.
//!
//! Every random choice comes from one seeded generator, drawn when the
//! conversation starts, so a seed gives the same prompts, users and
//! feedback decisions whatever the answers' timing.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinSet;

use crate::{
    eval::client::{Gateway, Reply, RequestParams},
    grader::Grader,
    tasks::Rng,
    Item,
};

/// What the users do; [`Settings::check`] names a bad value.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The route (the request's `model`).
    pub route: String,
    /// Conversations started per second (mean of the Poisson process).
    pub rate: f64,
    /// How long conversations keep starting.
    pub duration: Duration,
    /// Stop starting conversations after this many (whichever comes first).
    pub max_conversations: Option<u64>,
    /// Distinct users.
    pub users: u64,
    /// Share of answers that get a thumbs.
    pub feedback_rate: f64,
    /// Share of thumbs that say the opposite of the grader.
    pub noise: f64,
    /// Mean delay between an answer and its thumbs.
    pub feedback_delay: Duration,
    /// Share of failed answers whose user asks again.
    pub reask_rate: f64,
    /// The feedback metric (boolean).
    pub metric: String,
    pub seed: u64,
    /// Conversations in progress at most; arrivals beyond are dropped.
    pub max_in_flight: usize,
    /// Sampling parameters and timeout of every request.
    pub params: RequestParams,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    #[error("{0} must be a probability in [0, 1], got {1}")]
    Probability(&'static str, f64),
    #[error("the rate must be a positive number of conversations per second, got {0}")]
    Rate(f64),
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("the metric name is empty")]
    Metric,
}

impl Settings {
    pub fn check(&self) -> Result<(), SettingsError> {
        for (name, p) in [
            ("feedback_rate", self.feedback_rate),
            ("noise", self.noise),
            ("reask_rate", self.reask_rate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(SettingsError::Probability(name, p));
            }
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(SettingsError::Rate(self.rate));
        }
        if self.users == 0 {
            return Err(SettingsError::Zero("users"));
        }
        if self.max_in_flight == 0 {
            return Err(SettingsError::Zero("max_in_flight"));
        }
        if self.metric.trim().is_empty() {
            return Err(SettingsError::Metric);
        }
        Ok(())
    }
}

/// How the users fared, per variant and in all.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counts {
    /// Requests sent (first asks and re-asks).
    pub requests: u64,
    /// Requests answered with a 2xx.
    pub answered: u64,
    /// Requests that failed (transport or HTTP error).
    pub errors: u64,
    /// Answers the grader judged passing.
    pub passed: u64,
    /// Answers the grader could not judge (no thumbs is sent for them).
    pub grader_errors: u64,
    pub feedback_sent: u64,
    pub feedback_failed: u64,
    /// Re-asks, counted on the variant whose answer was re-asked.
    pub reasks: u64,
    /// What the gateway billed for the answered requests.
    pub cost_usd: f64,
}

impl Counts {
    /// Passed over judged answers.
    pub fn pass_rate(&self) -> Option<f64> {
        let judged = self.answered.saturating_sub(self.grader_errors);
        (judged > 0).then(|| self.passed as f64 / judged as f64)
    }
}

/// The final account of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub conversations: u64,
    pub dropped: u64,
    pub elapsed_secs: f64,
    pub total: Counts,
    /// Keyed by `x-flywheel-variant` (`?` when the gateway did not say).
    pub variants: BTreeMap<String, Counts>,
    /// The first few errors (requests, thumbs, grader), as they came.
    pub first_errors: Vec<String>,
}

/// A snapshot for the progress line.
#[derive(Debug, Clone)]
pub struct Progress {
    pub elapsed: Duration,
    pub planned: Duration,
    pub conversations: u64,
    pub in_flight: usize,
    pub dropped: u64,
    pub total: Counts,
    /// Still waiting for the last answers and thumbs.
    pub draining: bool,
}

#[derive(Default)]
struct Shared {
    total: Mutex<Counts>,
    variants: Mutex<BTreeMap<String, Counts>>,
    errors: Mutex<Vec<String>>,
}

/// Error messages kept for the summary (the first ones: enough to see
/// what went wrong without flooding the report).
const KEPT_ERRORS: usize = 5;

impl Shared {
    fn add(&self, variant: Option<&str>, f: impl Fn(&mut Counts)) {
        f(&mut self.total.lock());
        let mut variants = self.variants.lock();
        f(variants
            .entry(variant.unwrap_or("?").to_owned())
            .or_default());
    }

    fn note(&self, error: String) {
        let mut errors = self.errors.lock();
        if errors.len() < KEPT_ERRORS {
            errors.push(error);
        }
    }
}

/// The random choices of one turn, drawn when its conversation starts.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TurnDraws {
    feedback: f64,
    flip: f64,
    delay: Duration,
    reask: f64,
}

impl TurnDraws {
    fn draw(rng: &mut Rng, mean_delay: Duration) -> Self {
        Self {
            feedback: unit(rng),
            flip: unit(rng),
            delay: exponential(rng, mean_delay.as_secs_f64()),
            reask: unit(rng),
        }
    }

    /// The thumbs this user sends for a judged answer, if any.
    fn thumbs(&self, passed: bool, s: &Settings) -> Option<bool> {
        (self.feedback < s.feedback_rate).then_some(passed != (self.flip < s.noise))
    }

    fn reasks(&self, passed: bool, s: &Settings) -> bool {
        !passed && self.reask < s.reask_rate
    }
}

/// Uniform in [0, 1).
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Exponentially distributed with the given mean (seconds).
fn exponential(rng: &mut Rng, mean_secs: f64) -> Duration {
    if mean_secs <= 0.0 {
        return Duration::ZERO;
    }
    // 1 - u is in (0, 1], so the logarithm is finite.
    Duration::from_secs_f64(-mean_secs * (1.0 - unit(rng)).ln())
}

/// The follow-up of a user who did not like the answer: the same request
/// with the last user message asked again, so that the word sets of the
/// two stay near-identical (what the gateway's re-ask signal compares).
fn reworded(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(Value::Array(messages)) = body.get_mut("messages") {
        if let Some(last) = messages
            .iter_mut()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        {
            // One word more: the gateway's word-set similarity stays at or
            // above its default 0.8 for any question of four words or more.
            if let Some(Value::String(text)) = last.get_mut("content") {
                text.insert_str(0, "Again: ");
            }
        }
    }
    body
}

struct Conversation {
    episode: String,
    user: String,
    item: Item,
    turns: [TurnDraws; 2],
}

/// Runs the users until `duration` (or `max_conversations`), then waits
/// for the answers and thumbs still due. `progress` is called about once
/// a second.
pub async fn run(
    gateway: Gateway,
    grader: Arc<Grader>,
    items: Arc<Vec<Item>>,
    settings: Settings,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Summary {
    let settings = Arc::new(settings);
    let shared = Arc::new(Shared::default());
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut rng = Rng::new(settings.seed);
    let mut tasks = JoinSet::new();
    let (mut conversations, mut dropped) = (0u64, 0u64);
    let started = Instant::now();
    let mut next_arrival = started;
    let mut next_progress = started + Duration::from_secs(1);
    let snapshot = |conversations, dropped, in_flight: usize, draining| Progress {
        elapsed: started.elapsed(),
        planned: settings.duration,
        conversations,
        in_flight,
        dropped,
        total: shared.total.lock().clone(),
        draining,
    };
    let mean_gap = 1.0 / settings.rate;
    loop {
        next_arrival += exponential(&mut rng, mean_gap);
        let done = settings
            .max_conversations
            .is_some_and(|max| conversations + dropped >= max);
        if done || next_arrival.duration_since(started) >= settings.duration || items.is_empty() {
            break;
        }
        // Progress lines keep coming while waiting for a slow arrival.
        while next_progress < next_arrival {
            tokio::time::sleep_until(next_progress.into()).await;
            progress(&snapshot(conversations, dropped, tasks.len(), false));
            next_progress += Duration::from_secs(1);
        }
        tokio::time::sleep_until(next_arrival.into()).await;
        while tasks.try_join_next().is_some() {}
        // Drawn for every arrival, dropped or not, so that one seed gives
        // the same sequence of users and prompts on any machine speed.
        let conversation = Conversation {
            episode: format!("sim-{}-{}", settings.seed, conversations + dropped),
            user: format!("sim-user-{}", rng.next_u64() % settings.users),
            item: rng.pick(&items).clone(),
            turns: [
                TurnDraws::draw(&mut rng, settings.feedback_delay),
                TurnDraws::draw(&mut rng, settings.feedback_delay),
            ],
        };
        if tasks.len() >= settings.max_in_flight {
            dropped += 1;
            continue;
        }
        conversations += 1;
        let (gateway, grader, settings, shared, in_flight) = (
            gateway.clone(),
            grader.clone(),
            settings.clone(),
            shared.clone(),
            in_flight.clone(),
        );
        tasks.spawn(async move {
            in_flight.fetch_add(1, Ordering::Relaxed);
            converse(&gateway, &grader, &settings, &shared, conversation).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Drain: the last answers and their delayed thumbs.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            joined = tasks.join_next() => if joined.is_none() { break },
            _ = tick.tick() => progress(&snapshot(conversations, dropped, tasks.len(), true)),
        }
    }
    let summary = Summary {
        conversations,
        dropped,
        elapsed_secs: started.elapsed().as_secs_f64(),
        total: shared.total.lock().clone(),
        variants: shared.variants.lock().clone(),
        first_errors: shared.errors.lock().clone(),
    };
    progress(&snapshot(conversations, dropped, 0, true));
    summary
}

/// One user's conversation: the ask, the judgement, the thumbs, maybe one
/// re-ask.
async fn converse(
    gateway: &Gateway,
    grader: &Arc<Grader>,
    settings: &Settings,
    shared: &Shared,
    c: Conversation,
) {
    let mut body = Gateway::request_body(&c.item, &settings.route, &settings.params);
    body["user"] = Value::String(c.user.clone());
    // A labelled user: what its grader reads (the reference answer and the
    // item's own fields) travels with the request as OpenAI's `metadata`,
    // so the captured traffic can be graded and trained on (the dataset
    // reads them back into the item).
    if let Some(metadata) = crate::dataset::captured::labels_as_metadata(&c.item) {
        body["metadata"] = metadata;
    }
    let mut feedback = JoinSet::new();
    // The variant of the answer a re-ask is about.
    let mut answered_by: Option<String> = None;
    for (turn, draws) in c.turns.iter().enumerate() {
        if turn > 0 {
            body = reworded(&body);
            shared.add(answered_by.as_deref(), |n| n.reasks += 1);
        }
        let reply = gateway
            .chat(&body, Some(&c.episode), settings.params.timeout)
            .await;
        answered_by = reply.variant.clone();
        let Some(passed) = judge(grader, &c.item, &reply, shared).await else {
            break;
        };
        if let (Some(value), Some(id)) = (draws.thumbs(passed, settings), reply.inference_id) {
            let (gateway, metric, delay, variant) = (
                gateway.clone(),
                settings.metric.clone(),
                draws.delay,
                reply.variant.clone(),
            );
            feedback.spawn(async move {
                tokio::time::sleep(delay).await;
                (gateway.feedback(&id, &metric, value).await, variant)
            });
        }
        if !draws.reasks(passed, settings) {
            break;
        }
    }
    while let Some(joined) = feedback.join_next().await {
        if let Ok((sent, variant)) = joined {
            match sent {
                Ok(()) => shared.add(variant.as_deref(), |n| n.feedback_sent += 1),
                Err(e) => {
                    shared.note(e);
                    shared.add(variant.as_deref(), |n| n.feedback_failed += 1);
                }
            }
        }
    }
}

/// Counts the reply and grades its answer: `Some(passed)`, or `None` when
/// the request failed or the grader could not judge it.
async fn judge(grader: &Arc<Grader>, item: &Item, reply: &Reply, shared: &Shared) -> Option<bool> {
    let variant = reply.variant.as_deref();
    let cost = reply.totals.as_ref().map_or(0.0, |t| t.cost_usd);
    shared.add(variant, |n| n.requests += 1);
    let sample = match &reply.answer {
        Ok(sample) => sample.clone(),
        Err(e) => {
            shared.note(e.clone());
            shared.add(variant, |n| n.errors += 1);
            return None;
        }
    };
    shared.add(variant, |n| {
        n.answered += 1;
        n.cost_usd += cost;
    });
    let (grader, item) = (grader.clone(), item.clone());
    match tokio::task::spawn_blocking(move || grader.grade(&sample, &item)).await {
        Ok(Ok(grade)) => {
            if grade.passed {
                shared.add(variant, |n| n.passed += 1);
            }
            Some(grade.passed)
        }
        Ok(Err(e)) => {
            shared.note(format!("grader: {e}"));
            shared.add(variant, |n| n.grader_errors += 1);
            None
        }
        Err(e) => {
            shared.note(format!("grader panicked: {e}"));
            shared.add(variant, |n| n.grader_errors += 1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn settings() -> Settings {
        Settings {
            route: "r".into(),
            rate: 2.0,
            duration: Duration::from_secs(10),
            max_conversations: None,
            users: 5,
            feedback_rate: 0.5,
            noise: 0.1,
            feedback_delay: Duration::from_secs(1),
            reask_rate: 0.3,
            metric: "thumbs_up".into(),
            seed: 7,
            max_in_flight: 4,
            params: RequestParams::default(),
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let mut s = settings();
        s.noise = 1.5;
        assert_eq!(s.check(), Err(SettingsError::Probability("noise", 1.5)));
        let mut s = settings();
        s.rate = 0.0;
        assert_eq!(s.check(), Err(SettingsError::Rate(0.0)));
        let mut s = settings();
        s.users = 0;
        assert_eq!(s.check(), Err(SettingsError::Zero("users")));
        assert_eq!(settings().check(), Ok(()));
    }

    #[test]
    fn thumbs_follow_the_grader_with_the_configured_rates() {
        let s = settings();
        let mut rng = Rng::new(1);
        let n = 20_000;
        let (mut sent, mut agree, mut reasks) = (0, 0, 0);
        for _ in 0..n {
            let d = TurnDraws::draw(&mut rng, s.feedback_delay);
            if let Some(v) = d.thumbs(true, &s) {
                sent += 1;
                agree += usize::from(v);
            }
            reasks += usize::from(d.reasks(false, &s));
            assert!(!d.reasks(true, &s), "a passing answer is never re-asked");
        }
        let rate = |k: usize, of: usize| k as f64 / of as f64;
        assert!(
            (rate(sent, n) - 0.5).abs() < 0.02,
            "feedback rate {sent}/{n}"
        );
        assert!(
            (rate(agree, sent) - 0.9).abs() < 0.02,
            "agreement {agree}/{sent}"
        );
        assert!((rate(reasks, n) - 0.3).abs() < 0.02, "re-asks {reasks}/{n}");
    }

    #[test]
    fn no_noise_and_full_rate_thumb_every_answer_as_graded() {
        let mut s = settings();
        (s.noise, s.feedback_rate) = (0.0, 1.0);
        let mut rng = Rng::new(3);
        for _ in 0..1000 {
            let d = TurnDraws::draw(&mut rng, s.feedback_delay);
            assert_eq!(d.thumbs(true, &s), Some(true));
            assert_eq!(d.thumbs(false, &s), Some(false));
        }
    }

    #[test]
    fn delays_and_gaps_are_exponential_with_their_mean() {
        let mut rng = Rng::new(5);
        let n = 20_000;
        let total: f64 = (0..n)
            .map(|_| exponential(&mut rng, 2.0).as_secs_f64())
            .sum();
        assert!(
            (total / n as f64 - 2.0).abs() < 0.08,
            "mean {}",
            total / n as f64
        );
        assert_eq!(exponential(&mut rng, 0.0), Duration::ZERO);
    }

    #[test]
    fn a_reask_repeats_the_last_user_message_in_other_words() {
        let body = json!({"model": "r", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Extract the name."}
        ]});
        let again = reworded(&body);
        assert_eq!(again["messages"][0], body["messages"][0]);
        let text = again["messages"][1]["content"].as_str().unwrap();
        assert_eq!(text, "Again: Extract the name.");
        assert_ne!(
            again, body,
            "a re-ask is a different conversation, not a regeneration"
        );
    }

    #[test]
    fn pass_rate_leaves_out_answers_the_grader_could_not_judge() {
        let c = Counts {
            answered: 10,
            grader_errors: 2,
            passed: 6,
            ..Counts::default()
        };
        assert_eq!(c.pass_rate(), Some(0.75));
        assert_eq!(Counts::default().pass_rate(), None);
    }
}
