//! Strict reading of one grader config object: every error names the JSON
//! path of the field at fault, because configs are hand-written and a bare
//! "invalid config" wastes a training run's setup time.
//!
//! Configs are untrusted input (hand-written, read by the trainer, the eval
//! and the reward server): nothing here indexes or panics, a bad field is
//! an error.

#![deny(clippy::indexing_slicing, clippy::panic)]

use serde_json::{Map, Value};

use super::{template::Template, GraderError};

pub(crate) struct Cfg<'a> {
    obj: &'a Map<String, Value>,
    path: String,
}

impl<'a> Cfg<'a> {
    pub fn new(value: &'a Value, path: &str, allowed: &[&str]) -> Result<Self, GraderError> {
        Self::object(
            value,
            path,
            allowed,
            "a grader config must be a JSON object",
        )
    }

    /// An optional nested object (`sampling_params`), read as strictly.
    pub fn opt_nested(&self, key: &str, allowed: &[&str]) -> Result<Option<Cfg<'a>>, GraderError> {
        self.opt(key)
            .map(|v| Self::object(v, &self.path(key), allowed, "must be a JSON object"))
            .transpose()
    }

    /// Any object below this one, at `path`, read as strictly.
    pub fn at(value: &'a Value, path: &str, allowed: &[&str]) -> Result<Cfg<'a>, GraderError> {
        Self::object(value, path, allowed, "must be a JSON object")
    }

    fn object(
        value: &'a Value,
        path: &str,
        allowed: &[&str],
        not_object: &str,
    ) -> Result<Self, GraderError> {
        let obj = value.as_object().ok_or_else(|| GraderError::Config {
            path: path.to_owned(),
            message: not_object.into(),
        })?;
        let cfg = Cfg {
            obj,
            path: path.to_owned(),
        };
        if let Some(key) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(cfg.err(
                key,
                format!("unknown field `{key}` (allowed: {})", allowed.join(", ")),
            ));
        }
        Ok(cfg)
    }

    pub fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    pub fn err(&self, key: &str, message: impl Into<String>) -> GraderError {
        GraderError::Config {
            path: self.path(key),
            message: message.into(),
        }
    }

    pub fn opt(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key)
    }

    pub fn req(&self, key: &str) -> Result<&'a Value, GraderError> {
        self.opt(key)
            .ok_or_else(|| self.err(key, format!("missing required field `{key}`")))
    }

    pub fn req_str(&self, key: &str) -> Result<&'a str, GraderError> {
        self.req(key)?
            .as_str()
            .ok_or_else(|| self.err(key, "must be a string"))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, GraderError> {
        self.opt(key)
            .map(|v| v.as_str().ok_or_else(|| self.err(key, "must be a string")))
            .transpose()
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, GraderError> {
        self.opt(key)
            .map(|v| v.as_f64().ok_or_else(|| self.err(key, "must be a number")))
            .transpose()
    }

    /// A non-negative integer.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GraderError> {
        self.opt(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| self.err(key, "must be a non-negative integer"))
            })
            .transpose()
    }

    pub fn req_array(&self, key: &str) -> Result<&'a Vec<Value>, GraderError> {
        self.req(key)?
            .as_array()
            .ok_or_else(|| self.err(key, "must be an array"))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GraderError> {
        self.opt(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.err(key, "must be a boolean"))
            })
            .transpose()
    }

    pub fn template(&self, key: &str, text: &str) -> Result<Template, GraderError> {
        Template::parse(text).map_err(|m| self.err(key, m))
    }

    pub fn req_template(&self, key: &str) -> Result<Template, GraderError> {
        let text = self.req_str(key)?;
        self.template(key, text)
    }
}
