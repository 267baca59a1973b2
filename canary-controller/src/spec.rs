//! What an experiment is: its statistical settings, where quality comes
//! from, the ramp, and how percentages become route weights. Stored as JSON
//! in `experiments.spec_json`, so a new knob needs no migration (every
//! field has a default).

use flywheel_canary::{
    ramp::{default_steps, RampError},
    Ramp, RampStep, Settings,
};
use serde::{Deserialize, Serialize};

/// One feedback metric that counts as quality.
///
/// Per inference, quality is the weighted mean of the values of the named
/// metrics that it has (the latest value of each, booleans as 0/1; an
/// `invert`ed metric counts as `1 − value`, for signals where 1 is bad such
/// as `implicit_reask`). Inference-level feedback applies to its
/// inference, episode-level feedback to every inference of the episode on
/// the route. An inference with none of them is "no data", never a zero.
/// Online grader scores are feedback too (their own metric and source).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityMetric {
    pub metric: String,
    #[serde(default = "one")]
    pub weight: f64,
    #[serde(default)]
    pub invert: bool,
}

fn one() -> f64 {
    1.0
}

impl QualityMetric {
    /// `NAME[:WEIGHT][:invert]`, e.g. `thumbs_up`, `grader_exact:2`,
    /// `implicit_reask:1:invert`.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        let mut parts = s.split(':');
        let metric = parts.next().unwrap_or_default().trim().to_owned();
        let mut q = Self {
            metric,
            weight: 1.0,
            invert: false,
        };
        for part in parts {
            match part.trim() {
                "invert" => q.invert = true,
                w => {
                    q.weight = w
                        .parse()
                        .map_err(|_| SpecError::Metric(format!("{s}: bad weight {w:?}")))?
                }
            }
        }
        Ok(q)
    }
}

/// The definition of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Spec {
    /// The decision's settings ([`flywheel_canary::decision`]).
    pub settings: Settings,
    /// The ramp: shadow → 1 → 5 → 25 → 50 → 100 % by default.
    pub steps: Vec<RampStep>,
    /// Where quality comes from (at least one metric).
    pub quality: Vec<QualityMetric>,
    /// Sum of the incumbent's and the candidate's weights written to Redis:
    /// 10000 gives 0.01 % resolution. Other variants of the route keep
    /// their weights, so they should be 0 during an experiment.
    pub weight_scale: u32,
    /// Share of the incumbent's requests mirrored to the candidate during
    /// shadow steps (the gateway samples them).
    pub shadow_fraction: f64,
    /// The model versions behind the two variants on the engine pool, so
    /// the controller can free the one that no longer serves
    /// ([`crate::unload`]). Empty: nothing is unloaded.
    pub engine: EnginePlan,
}

/// Which model versions to unload from which engines, and how long the
/// old version stays loaded after a promotion.
///
/// The engines' admin token is not part of it: the spec is stored in
/// ClickHouse, which many can read; the controller takes the token from
/// its own configuration (`FLYWHEEL_ENGINE_ADMIN_TOKEN`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnginePlan {
    /// The candidate's version on the engines: unloaded once the
    /// experiment ends without promoting it.
    pub candidate_model: Option<String>,
    /// The incumbent's version on the engines: kept loaded for
    /// `grace_secs` after a promotion (an instant manual rollback), then
    /// unloaded.
    pub incumbent_model: Option<String>,
    /// Each engine replica's base URL (`http://10.0.0.5:8080`).
    pub engines: Vec<String>,
    /// How long after a promotion a manual rollback may restore the
    /// incumbent, s; the old version is unloaded when it ends.
    pub grace_secs: u64,
}

/// Default grace period after a promotion: one hour.
pub const DEFAULT_GRACE_SECS: u64 = 3600;

impl Default for EnginePlan {
    fn default() -> Self {
        Self {
            candidate_model: None,
            incumbent_model: None,
            engines: vec![],
            grace_secs: DEFAULT_GRACE_SECS,
        }
    }
}

impl EnginePlan {
    /// The named versions (candidate, then incumbent).
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.candidate_model
            .iter()
            .chain(self.incumbent_model.iter())
            .map(String::as_str)
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        for m in self.models() {
            // The name goes into a URL path: keep it to what the engine
            // accepts as a version name.
            let ok = !m.is_empty()
                && m.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
            if !ok {
                return Err(SpecError::Engine(format!("bad model version name {m:?}")));
            }
        }
        if self.candidate_model.is_some() && self.candidate_model == self.incumbent_model {
            return Err(SpecError::Engine(
                "candidate and incumbent model versions must differ".into(),
            ));
        }
        for u in &self.engines {
            // Plain HTTP, as the gateway reaches the engine pool.
            if !u.starts_with("http://") || u.len() <= "http://".len() {
                return Err(SpecError::Engine(format!(
                    "engine {u:?}: give its base URL, http://HOST:PORT"
                )));
            }
        }
        if self.models().next().is_some() && self.engines.is_empty() {
            return Err(SpecError::Engine(
                "a model version is named but no engine (--engine URL)".into(),
            ));
        }
        if self.grace_secs > 7 * 86_400 {
            return Err(SpecError::Engine(format!(
                "grace_secs {} is more than a week",
                self.grace_secs
            )));
        }
        Ok(())
    }
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            steps: default_steps(),
            quality: vec![],
            weight_scale: 10_000,
            shadow_fraction: 1.0,
            engine: EnginePlan::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("settings: {0}")]
    Settings(#[from] flywheel_canary::decision::SettingsError),
    #[error("ramp: {0}")]
    Ramp(#[from] RampError),
    #[error("quality: {0}")]
    Metric(String),
    #[error("weight_scale must be between 100 and 1000000, got {0}")]
    WeightScale(u32),
    #[error("shadow_fraction must be in (0, 1], got {0}")]
    ShadowFraction(f64),
    #[error("step {0:?}: not a percentage or `shadow`")]
    Step(String),
    #[error("engine: {0}")]
    Engine(String),
}

impl Spec {
    pub fn validate(&self) -> Result<(), SpecError> {
        self.settings.validate()?;
        Ramp::new(self.steps.clone())?;
        if self.quality.is_empty() {
            return Err(SpecError::Metric(
                "name at least one feedback metric (e.g. --metric thumbs_up)".into(),
            ));
        }
        for q in &self.quality {
            let name_ok = !q.metric.is_empty()
                && q.metric
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c));
            if !name_ok {
                return Err(SpecError::Metric(format!("bad metric name {:?}", q.metric)));
            }
            if !(q.weight.is_finite() && q.weight > 0.0) {
                return Err(SpecError::Metric(format!(
                    "{}: weight must be positive, got {}",
                    q.metric, q.weight
                )));
            }
        }
        if !(100..=1_000_000).contains(&self.weight_scale) {
            return Err(SpecError::WeightScale(self.weight_scale));
        }
        if !(self.shadow_fraction > 0.0 && self.shadow_fraction <= 1.0) {
            return Err(SpecError::ShadowFraction(self.shadow_fraction));
        }
        self.engine.validate()
    }

    /// `shadow,1,5,25,50,100` → steps.
    pub fn parse_steps(s: &str) -> Result<Vec<RampStep>, SpecError> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                if p.eq_ignore_ascii_case("shadow") {
                    return Ok(RampStep::shadow());
                }
                let pct = p.trim_end_matches('%');
                pct.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .map(RampStep::live)
                    .ok_or_else(|| SpecError::Step(p.to_owned()))
            })
            .collect()
    }

    /// (incumbent, candidate) weights for a candidate share in percent:
    /// the candidate gets at least 1 when its share is positive.
    pub fn split(&self, candidate_percent: f64) -> (u32, u32) {
        let scale = self.weight_scale;
        if candidate_percent <= 0.0 {
            return (scale, 0);
        }
        let c = (f64::from(scale) * candidate_percent / 100.0).round();
        let c = (c as u32).clamp(1, scale);
        (scale - c, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metrics_and_steps() {
        assert_eq!(
            QualityMetric::parse("implicit_reask:0.5:invert").unwrap(),
            QualityMetric {
                metric: "implicit_reask".into(),
                weight: 0.5,
                invert: true
            }
        );
        assert_eq!(QualityMetric::parse("thumbs").unwrap().weight, 1.0);
        assert!(QualityMetric::parse("x:heavy").is_err());
        let steps = Spec::parse_steps("shadow, 1, 5%,100").unwrap();
        assert_eq!(steps.len(), 4);
        assert!(steps[0].shadow);
        assert_eq!(steps[2].candidate_percent, 5.0);
        assert!(Spec::parse_steps("1,x,100").is_err());
        assert_eq!(
            Spec::parse_steps("shadow,1,5,25,50,100").unwrap(),
            default_steps()
        );
    }

    #[test]
    fn validates() {
        let ok = Spec {
            quality: vec![QualityMetric::parse("thumbs_up").unwrap()],
            ..Spec::default()
        };
        assert!(ok.validate().is_ok());
        assert!(matches!(
            Spec::default().validate(),
            Err(SpecError::Metric(_))
        ));
        let bad_name = Spec {
            quality: vec![QualityMetric::parse("x' OR 1").unwrap()],
            ..ok.clone()
        };
        assert!(bad_name.validate().is_err());
        let bad_ramp = Spec {
            steps: Spec::parse_steps("5,1,100").unwrap(),
            ..ok.clone()
        };
        assert!(matches!(bad_ramp.validate(), Err(SpecError::Ramp(_))));
        let bad_scale = Spec {
            weight_scale: 10,
            ..ok.clone()
        };
        assert!(bad_scale.validate().is_err());
        // Defaults fill what a stored spec lacks.
        let s: Spec = serde_json::from_str(r#"{"quality":[{"metric":"m"}]}"#).unwrap();
        assert_eq!(s.weight_scale, 10_000);
        assert_eq!(s.quality[0].weight, 1.0);
        assert!(s.validate().is_ok());
        assert_eq!(s.engine, EnginePlan::default());
        assert_eq!(s.engine.grace_secs, DEFAULT_GRACE_SECS);
    }

    #[test]
    fn validates_the_engine_plan() {
        let plan = |c: Option<&str>, i: Option<&str>, e: &[&str]| EnginePlan {
            candidate_model: c.map(Into::into),
            incumbent_model: i.map(Into::into),
            engines: e.iter().map(|s| s.to_string()).collect(),
            grace_secs: 60,
        };
        assert!(plan(None, None, &[]).validate().is_ok());
        assert!(plan(Some("v2"), Some("v1"), &["http://e:1"])
            .validate()
            .is_ok());
        // A model without engines, engines without a scheme, a name that
        // would change the admin URL, the same version twice.
        assert!(plan(Some("v2"), None, &[]).validate().is_err());
        assert!(plan(Some("v2"), None, &["e:1"]).validate().is_err());
        assert!(plan(Some("../x"), None, &["http://e:1"])
            .validate()
            .is_err());
        assert!(plan(Some("v"), Some("v"), &["http://e:1"])
            .validate()
            .is_err());
    }

    #[test]
    fn splits_weights() {
        let s = Spec::default();
        assert_eq!(s.split(0.0), (10_000, 0));
        assert_eq!(s.split(1.0), (9_900, 100));
        assert_eq!(s.split(0.001), (9_999, 1));
        assert_eq!(s.split(100.0), (0, 10_000));
        assert_eq!(s.split(50.0), (5_000, 5_000));
    }
}
