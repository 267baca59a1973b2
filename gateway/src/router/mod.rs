//! Routes: a public model name → weighted variants → an ordered fallback
//! chain of targets. The table is swapped atomically, so weight changes made
//! through the admin API take effect on the next request without a restart.

mod hash;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use arc_swap::ArcSwap;
pub use hash::sticky_point;

use crate::{
    config::{Config, RetryConfig},
    upstream::Provider,
};

pub struct Target {
    pub provider: Arc<Provider>,
    pub model: String,
}

pub struct Variant {
    pub name: String,
    pub weight: u32,
    pub targets: Arc<[Target]>,
}

pub struct Route {
    pub name: String,
    pub variants: Vec<Variant>,
    pub retry: RetryConfig,
}

impl Route {
    /// The index of the variant that serves a request. A pinned variant
    /// (`x-flywheel-variant`, from a caller allowed to pin) is taken as
    /// named: weights and stickiness are skipped, so an offline eval can
    /// reach a candidate whose weight is still 0. Otherwise [`Route::pick`].
    pub fn choose(
        &self,
        pinned: Option<&str>,
        sticky_key: Option<&str>,
    ) -> Result<usize, UnknownVariant> {
        match pinned {
            Some(name) => self.variant_index(name).ok_or_else(|| UnknownVariant {
                route: self.name.clone(),
                variant: name.to_owned(),
            }),
            None => Ok(self.pick(sticky_key)),
        }
    }

    /// The index of the variant named `name`.
    pub fn variant_index(&self, name: &str) -> Option<usize> {
        self.variants.iter().position(|v| v.name == name)
    }

    /// Picks a variant's index by weight. With a sticky key (episode id or
    /// `user`) the same key always lands on the same variant for given
    /// weights, and a weight change only moves the keys whose point crosses
    /// a boundary.
    pub fn pick(&self, sticky_key: Option<&str>) -> usize {
        let total: u64 = self.variants.iter().map(|v| u64::from(v.weight)).sum();
        let point = match sticky_key {
            Some(key) => sticky_point(&self.name, key, total),
            None => rand::random_range(0..total),
        };
        let mut acc = 0u64;
        for (i, v) in self.variants.iter().enumerate() {
            acc += u64::from(v.weight);
            if point < acc {
                return i;
            }
        }
        unreachable!("point < total and weights sum to total")
    }
}

/// A pinned variant name that the route does not have.
#[derive(Debug, thiserror::Error)]
#[error("the route `{route}` has no variant `{variant}`")]
pub struct UnknownVariant {
    pub route: String,
    pub variant: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("the route `{0}` does not exist")]
    UnknownRoute(String),
    #[error("the route has no variant `{0}`")]
    UnknownVariant(String),
    #[error("at least one variant needs a weight > 0")]
    AllZero,
    #[error("a mirror's fraction must be in (0, 1], got {0}")]
    Fraction(f64),
}

#[derive(Debug, thiserror::Error)]
#[error("a route targets the unknown provider `{0}`")]
pub struct UnknownProvider(String);

pub struct Router {
    routes: ArcSwap<HashMap<String, Arc<Route>>>,
    /// Shadow mirrors per route (the canary's shadow step), from Redis.
    mirrors: ArcSwap<HashMap<String, Mirror>>,
}

/// A route's shadow mirror: a sampled `fraction` of its requests served by
/// another variant is also sent to `variant`, whose answer is metered
/// (marked shadow, paired with the served request) and never returned.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub variant: String,
    /// In (0, 1].
    pub fraction: f64,
}

impl Router {
    /// The routes of a config over its providers. Fails only if a target
    /// names a provider missing from `providers` (config load checked that
    /// every target names one of the config's providers).
    pub fn new(
        config: &Config,
        providers: &HashMap<String, Arc<Provider>>,
    ) -> Result<Self, UnknownProvider> {
        let mut routes = HashMap::new();
        for r in &config.routes {
            let mut variants = Vec::with_capacity(r.variants.len());
            for v in &r.variants {
                let targets = v
                    .targets
                    .iter()
                    .map(|t| {
                        let provider = providers
                            .get(&t.provider)
                            .ok_or_else(|| UnknownProvider(t.provider.clone()))?;
                        Ok(Target {
                            provider: provider.clone(),
                            model: t.model.clone(),
                        })
                    })
                    .collect::<Result<_, UnknownProvider>>()?;
                variants.push(Variant {
                    name: v.name.clone(),
                    weight: v.weight,
                    targets,
                });
            }
            let route = Route {
                name: r.name.clone(),
                variants,
                retry: r.retry.clone(),
            };
            routes.insert(r.name.clone(), Arc::new(route));
        }
        Ok(Self {
            routes: ArcSwap::from_pointee(routes),
            mirrors: ArcSwap::from_pointee(HashMap::new()),
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Route>> {
        self.routes.load().get(name).cloned()
    }

    /// Public route names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.routes.load().keys().cloned().collect();
        names.sort();
        names
    }

    /// Current weights of every route's variants.
    pub fn weights(&self) -> BTreeMap<String, BTreeMap<String, u32>> {
        self.routes
            .load()
            .values()
            .map(|r| {
                (
                    r.name.clone(),
                    r.variants
                        .iter()
                        .map(|v| (v.name.clone(), v.weight))
                        .collect(),
                )
            })
            .collect()
    }

    /// Replaces the weights of the named variants of a route; variants not
    /// named keep their weight. All or nothing.
    pub fn set_weights(
        &self,
        route: &str,
        weights: &BTreeMap<String, u32>,
    ) -> Result<(), WeightsError> {
        let current = self.routes.load();
        let old = current
            .get(route)
            .ok_or_else(|| WeightsError::UnknownRoute(route.to_owned()))?;
        if let Some(unknown) = weights
            .keys()
            .find(|k| !old.variants.iter().any(|v| &v.name == *k))
        {
            return Err(WeightsError::UnknownVariant(unknown.clone()));
        }
        let variants: Vec<Variant> = old
            .variants
            .iter()
            .map(|v| Variant {
                name: v.name.clone(),
                weight: weights.get(&v.name).copied().unwrap_or(v.weight),
                targets: v.targets.clone(),
            })
            .collect();
        if variants.iter().all(|v| v.weight == 0) {
            return Err(WeightsError::AllZero);
        }
        let mut next = HashMap::clone(&current);
        next.insert(
            route.to_owned(),
            Arc::new(Route {
                name: old.name.clone(),
                variants,
                retry: old.retry.clone(),
            }),
        );
        // A concurrent writer could interleave here; admin updates are rare
        // and the last write wins, which is what an operator expects.
        self.routes.store(Arc::new(next));
        Ok(())
    }

    /// The route's shadow mirror, if any.
    pub fn mirror(&self, route: &str) -> Option<Mirror> {
        self.mirrors.load().get(route).cloned()
    }

    /// Every route's mirror.
    pub fn mirrors(&self) -> BTreeMap<String, Mirror> {
        self.mirrors
            .load()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Sets (or, with `None`, removes) a route's mirror.
    pub fn set_mirror(&self, route: &str, mirror: Option<Mirror>) -> Result<(), WeightsError> {
        let current = self.routes.load();
        let r = current
            .get(route)
            .ok_or_else(|| WeightsError::UnknownRoute(route.to_owned()))?;
        let mut next = HashMap::clone(&self.mirrors.load());
        match mirror {
            Some(m) => {
                if !r.variants.iter().any(|v| v.name == m.variant) {
                    return Err(WeightsError::UnknownVariant(m.variant));
                }
                if !(m.fraction > 0.0 && m.fraction <= 1.0) {
                    return Err(WeightsError::Fraction(m.fraction));
                }
                next.insert(route.to_owned(), m);
            }
            None => {
                next.remove(route);
            }
        }
        self.mirrors.store(Arc::new(next));
        Ok(())
    }
}

/// A test config: route `r` with variants `base` (weight 100) and `cand`
/// (weight 0), on a provider nobody listens on.
#[cfg(test)]
pub(crate) const TWO_VARIANTS: &str = r#"
[auth]
enabled = false
[providers.a]
base_url = "http://127.0.0.1:1/v1"
[[routes]]
name = "r"
[[routes.variants]]
name = "base"
targets = [{ provider = "a", model = "m" }]
[[routes.variants]]
name = "cand"
weight = 0
targets = [{ provider = "a", model = "m2" }]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        let config = Config::parse(TWO_VARIANTS).unwrap();
        let providers =
            crate::upstream::build_providers(&config, &Arc::new(crate::metrics::Metrics::new()))
                .unwrap();
        Router::new(&config, &providers).unwrap()
    }

    #[test]
    fn a_pinned_variant_is_served_even_with_weight_zero() {
        let route = router().get("r").unwrap();
        // Whatever the sticky key, weights alone never choose `cand`.
        for key in ["u1", "u2", "u3"] {
            assert_eq!(route.choose(None, Some(key)).unwrap(), 0);
            assert_eq!(route.choose(Some("cand"), Some(key)).unwrap(), 1);
        }
        assert_eq!(route.choose(Some("cand"), None).unwrap(), 1);
        assert_eq!(route.choose(Some("base"), None).unwrap(), 0);
    }

    #[test]
    fn pinning_an_unknown_variant_names_it_and_the_route() {
        let route = router().get("r").unwrap();
        let e = route.choose(Some("nope"), Some("u1")).unwrap_err();
        assert_eq!((e.route.as_str(), e.variant.as_str()), ("r", "nope"));
        assert_eq!(e.to_string(), "the route `r` has no variant `nope`");
    }

    #[test]
    fn mirrors_are_checked_set_and_removed() {
        let r = router();
        assert_eq!(r.mirror("r"), None);
        let m = Mirror {
            variant: "cand".into(),
            fraction: 0.25,
        };
        r.set_mirror("r", Some(m.clone())).unwrap();
        assert_eq!(r.mirror("r"), Some(m.clone()));
        assert_eq!(r.mirrors().len(), 1);
        assert!(matches!(
            r.set_mirror(
                "r",
                Some(Mirror {
                    variant: "nope".into(),
                    ..m.clone()
                })
            ),
            Err(WeightsError::UnknownVariant(_))
        ));
        assert!(matches!(
            r.set_mirror(
                "r",
                Some(Mirror {
                    fraction: 0.0,
                    ..m.clone()
                })
            ),
            Err(WeightsError::Fraction(_))
        ));
        assert!(matches!(
            r.set_mirror("x", Some(m.clone())),
            Err(WeightsError::UnknownRoute(_))
        ));
        assert_eq!(r.mirror("r"), Some(m), "failed sets change nothing");
        r.set_mirror("r", None).unwrap();
        assert_eq!(r.mirror("r"), None);
    }
}
