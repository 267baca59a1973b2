//! The routing table: which names a request's `model` may use, kept apart from the loaded
//! engines so that its rules are tested without a model.
//!
//! A name is a *version* (one loaded engine), an *alias* (a stable name such as a gateway
//! variant slot, `extract-a`, that points at one version and is re-pointed when the tuner
//! ships a new one), or *reserved* (a version being deployed, not yet routable). The three
//! never overlap, so a name always means one thing, and every alias points at a loaded
//! version: unloading a version removes its aliases with it (the canary controller unloads a
//! rolled-back candidate on its own and must not be refused because an alias still points
//! there).
//!
//! The registry keeps one table under one lock: resolving a name and taking a lease on its
//! version happen under the same read lock, so a re-pointed alias or an unloaded version
//! never sees a request that resolved the old way after the change.

use std::collections::{BTreeMap, HashSet};

use super::valid_name;
use crate::error::ApiError;

/// Why a name cannot be taken by a new version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameTaken {
    #[error("version `{0}` already exists or is being deployed")]
    Version(String),
    #[error("`{name}` is an alias (of version `{version}`); delete the alias first")]
    Alias { name: String, version: String },
}

/// Why an alias could not be set or deleted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    #[error("invalid alias name `{0}`: use 1-64 characters from [A-Za-z0-9._:-]")]
    InvalidName(String),
    #[error("`{0}` is a version (loaded or being deployed); an alias cannot take its name")]
    IsVersion(String),
    #[error("The model `{0}` does not exist or is not loaded")]
    UnknownVersion(String),
    /// Aliases point at versions only: a chain would move when its middle link moves.
    #[error("`{name}` is an alias (of version `{version}`); point an alias at a version")]
    TargetIsAlias { name: String, version: String },
    #[error("no alias `{0}`")]
    NotFound(String),
}

impl From<AliasError> for ApiError {
    fn from(e: AliasError) -> Self {
        let message = e.to_string();
        match e {
            AliasError::InvalidName(_) => ApiError::bad_param("alias", message),
            AliasError::IsVersion(_) => ApiError::conflict(message),
            AliasError::UnknownVersion(_) | AliasError::TargetIsAlias { .. } => {
                let mut a = ApiError::not_found(message);
                a.code = Some("model_not_found");
                a.param = Some("version");
                a
            }
            AliasError::NotFound(_) => ApiError::not_found(message),
        }
    }
}

/// Versions (`V`: the loaded engine, or anything in tests), aliases, reserved names and the
/// default version.
#[derive(Debug)]
pub struct Routes<V> {
    versions: BTreeMap<String, V>,
    /// alias → version name; every target is a key of `versions`.
    aliases: BTreeMap<String, String>,
    /// Names being deployed right now (not yet routable).
    reserved: HashSet<String>,
    /// What an empty `model` means; always a key of `versions`.
    default: String,
}

impl<V> Routes<V> {
    /// A table with one version, the default.
    pub fn new(name: String, version: V) -> Self {
        Self {
            versions: BTreeMap::from([(name.clone(), version)]),
            aliases: BTreeMap::new(),
            reserved: HashSet::new(),
            default: name,
        }
    }

    /// The versions, by name.
    pub fn versions(&self) -> impl Iterator<Item = &V> {
        self.versions.values()
    }

    /// alias → version name.
    pub fn aliases(&self) -> &BTreeMap<String, String> {
        &self.aliases
    }

    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// The version a request's `model` names: the default when empty, a version by its name,
    /// or an alias's version.
    pub fn resolve(&self, model: &str) -> Option<&V> {
        let name = match model {
            "" => self.default.as_str(),
            m => self.aliases.get(m).map_or(m, String::as_str),
        };
        self.versions.get(name)
    }

    /// Claims `name` for a version about to be deployed ([`Routes::insert_version`] or
    /// [`Routes::release`] ends the claim).
    pub fn reserve(&mut self, name: &str) -> Result<(), NameTaken> {
        if let Some(version) = self.aliases.get(name) {
            return Err(NameTaken::Alias {
                name: name.to_string(),
                version: version.clone(),
            });
        }
        if self.versions.contains_key(name) || !self.reserved.insert(name.to_string()) {
            return Err(NameTaken::Version(name.to_string()));
        }
        Ok(())
    }

    /// Gives up a reservation (a failed deploy); nothing happens if there is none.
    pub fn release(&mut self, name: &str) {
        self.reserved.remove(name);
    }

    /// Makes a reserved name a routable version.
    pub fn insert_version(&mut self, name: String, version: V) {
        self.reserved.remove(&name);
        self.versions.insert(name, version);
    }

    pub fn has_version(&self, name: &str) -> bool {
        self.versions.contains_key(name)
    }

    pub fn version_count(&self) -> usize {
        self.versions.len()
    }

    /// Stops routing to a version: removes it and every alias pointing at it (returned,
    /// sorted), and moves the default to the first remaining version if it was the default.
    /// `None` if there is no such version.
    pub fn remove_version(&mut self, name: &str) -> Option<(V, Vec<String>)> {
        let version = self.versions.remove(name)?;
        let removed: Vec<String> = self
            .aliases
            .iter()
            .filter(|(_, target)| *target == name)
            .map(|(alias, _)| alias.clone())
            .collect();
        for alias in &removed {
            self.aliases.remove(alias);
        }
        if self.default == name {
            self.default = self.versions.keys().next().cloned().unwrap_or_default();
        }
        Some((version, removed))
    }

    /// Points `alias` at the loaded version `version`, creating or re-pointing it. Returns
    /// the version it pointed at before, if any.
    pub fn set_alias(&mut self, alias: &str, version: &str) -> Result<Option<String>, AliasError> {
        if !valid_name(alias) {
            return Err(AliasError::InvalidName(alias.to_string()));
        }
        if self.versions.contains_key(alias) || self.reserved.contains(alias) {
            return Err(AliasError::IsVersion(alias.to_string()));
        }
        if !self.versions.contains_key(version) {
            return Err(match self.aliases.get(version) {
                Some(target) => AliasError::TargetIsAlias {
                    name: version.to_string(),
                    version: target.clone(),
                },
                None => AliasError::UnknownVersion(version.to_string()),
            });
        }
        Ok(self.aliases.insert(alias.to_string(), version.to_string()))
    }

    /// Deletes an alias; returns the version it pointed at.
    pub fn remove_alias(&mut self, alias: &str) -> Result<String, AliasError> {
        self.aliases
            .remove(alias)
            .ok_or_else(|| AliasError::NotFound(alias.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `base` and `v2` loaded (versions are their own names here), `base` the default.
    fn table() -> Routes<&'static str> {
        let mut r = Routes::new("base".into(), "base");
        r.reserve("v2").unwrap();
        r.insert_version("v2".into(), "v2");
        r
    }

    #[test]
    fn an_alias_routes_to_its_version_and_can_be_re_pointed() {
        let mut r = table();
        assert_eq!(r.set_alias("extract-a", "v2"), Ok(None));
        assert_eq!(r.resolve("extract-a"), Some(&"v2"));
        assert_eq!(r.set_alias("extract-a", "base"), Ok(Some("v2".into())));
        assert_eq!(r.resolve("extract-a"), Some(&"base"));
        assert_eq!(r.set_alias("extract-a", "base"), Ok(Some("base".into())));
        assert_eq!(
            r.aliases(),
            &BTreeMap::from([("extract-a".to_string(), "base".to_string())])
        );
    }

    #[test]
    fn versions_and_the_default_resolve_as_before() {
        let mut r = table();
        r.set_alias("a", "v2").unwrap();
        assert_eq!(r.resolve(""), Some(&"base"));
        assert_eq!(r.resolve("base"), Some(&"base"));
        assert_eq!(r.resolve("v2"), Some(&"v2"));
        assert_eq!(r.resolve("nope"), None);
    }

    #[test]
    fn an_alias_must_point_at_a_loaded_version() {
        let mut r = table();
        assert_eq!(
            r.set_alias("a", "missing"),
            Err(AliasError::UnknownVersion("missing".into()))
        );
        r.reserve("v3").unwrap();
        assert_eq!(
            r.set_alias("a", "v3"),
            Err(AliasError::UnknownVersion("v3".into())),
            "a version still being deployed is not routable yet"
        );
        r.set_alias("a", "v2").unwrap();
        assert_eq!(
            r.set_alias("b", "a"),
            Err(AliasError::TargetIsAlias {
                name: "a".into(),
                version: "v2".into()
            })
        );
        assert!(r.aliases().get("b").is_none());
    }

    #[test]
    fn an_alias_cannot_take_a_versions_name_or_an_invalid_one() {
        let mut r = table();
        assert_eq!(
            r.set_alias("base", "v2"),
            Err(AliasError::IsVersion("base".into()))
        );
        r.reserve("v3").unwrap();
        assert_eq!(
            r.set_alias("v3", "v2"),
            Err(AliasError::IsVersion("v3".into()))
        );
        for bad in ["", "has space", "slash/y", &"x".repeat(65)] {
            assert_eq!(
                r.set_alias(bad, "v2"),
                Err(AliasError::InvalidName(bad.to_string()))
            );
        }
        assert!(r.aliases().is_empty());
    }

    #[test]
    fn a_version_cannot_take_an_aliases_name() {
        let mut r = table();
        r.set_alias("extract-a", "v2").unwrap();
        assert_eq!(
            r.reserve("extract-a"),
            Err(NameTaken::Alias {
                name: "extract-a".into(),
                version: "v2".into()
            })
        );
        assert_eq!(r.reserve("v2"), Err(NameTaken::Version("v2".into())));
        r.reserve("v3").unwrap();
        assert_eq!(r.reserve("v3"), Err(NameTaken::Version("v3".into())));
        r.release("v3");
        assert_eq!(r.reserve("v3"), Ok(()));
    }

    #[test]
    fn unloading_a_version_removes_every_alias_pointing_at_it() {
        let mut r = table();
        r.set_alias("b", "v2").unwrap();
        r.set_alias("a", "v2").unwrap();
        r.set_alias("keep", "base").unwrap();
        assert_eq!(
            r.remove_version("v2"),
            Some(("v2", vec!["a".to_string(), "b".to_string()]))
        );
        assert_eq!(r.resolve("a"), None);
        assert_eq!(r.resolve("keep"), Some(&"base"));
        assert_eq!(r.aliases().len(), 1);
        assert_eq!(r.remove_version("v2"), None);
        // The name is free again, for a version or an alias.
        assert_eq!(r.set_alias("a", "base"), Ok(None));
        assert_eq!(r.reserve("b"), Ok(()));
    }

    #[test]
    fn unloading_the_default_moves_the_default_to_another_version() {
        let mut r = table();
        assert_eq!(r.remove_version("base").map(|(v, _)| v), Some("base"));
        assert_eq!(r.default_name(), "v2");
        assert_eq!(r.resolve(""), Some(&"v2"));
        assert_eq!(r.version_count(), 1);
    }

    #[test]
    fn deleting_an_alias_returns_its_version_and_frees_the_name() {
        let mut r = table();
        r.set_alias("a", "v2").unwrap();
        assert_eq!(r.remove_alias("a"), Ok("v2".into()));
        assert_eq!(r.remove_alias("a"), Err(AliasError::NotFound("a".into())));
        assert_eq!(r.resolve("a"), None);
        assert_eq!(r.resolve("v2"), Some(&"v2"));
    }

    #[test]
    fn alias_errors_map_to_openai_statuses() {
        use axum::http::StatusCode;
        let cases = [
            (
                AliasError::InvalidName("x y".into()),
                StatusCode::BAD_REQUEST,
            ),
            (AliasError::IsVersion("v".into()), StatusCode::CONFLICT),
            (
                AliasError::UnknownVersion("v".into()),
                StatusCode::NOT_FOUND,
            ),
            (AliasError::NotFound("a".into()), StatusCode::NOT_FOUND),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::from(e).status, status);
        }
        let e = ApiError::from(AliasError::UnknownVersion("v".into()));
        assert_eq!(e.code, Some("model_not_found"));
        assert_eq!(e.param, Some("version"));
    }
}
