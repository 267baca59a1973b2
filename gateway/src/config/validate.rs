//! Checks that serde cannot express: references between tables, ranges.
//! Each error names the key that is wrong.

use std::{collections::HashSet, path::PathBuf};

use super::Config;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.server.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be greater than 0"));
        }
        if self.auth.enabled && self.auth.keys.is_empty() {
            return Err(invalid(
                "auth.keys",
                "no API keys configured; add [[auth.keys]] or set auth.enabled = false",
            ));
        }
        for (i, key) in self.auth.keys.iter().enumerate() {
            if !is_sha256_hex(&key.sha256) {
                return Err(invalid(
                    format!("auth.keys[{i}].sha256"),
                    "must be 64 lower-case hex characters (flywheel-gateway hash-key TOKEN)",
                ));
            }
            if key.tenant.is_empty() {
                return Err(invalid(
                    format!("auth.keys[{i}].tenant"),
                    "must not be empty",
                ));
            }
        }
        if let Some(token) = &self.admin.token_sha256 {
            if !is_sha256_hex(token) {
                return Err(invalid(
                    "admin.token_sha256",
                    "must be 64 lower-case hex characters",
                ));
            }
        }
        let cb = &self.circuit_breaker;
        if !(cb.error_ratio > 0.0 && cb.error_ratio <= 1.0) {
            return Err(invalid("circuit_breaker.error_ratio", "must be in (0, 1]"));
        }
        if cb.window == 0 || cb.min_requests > cb.window {
            return Err(invalid(
                "circuit_breaker.min_requests",
                "must be at most circuit_breaker.window (> 0)",
            ));
        }
        if cb.half_open_probes == 0 {
            return Err(invalid(
                "circuit_breaker.half_open_probes",
                "must be at least 1",
            ));
        }
        for (name, p) in &self.providers {
            let key = format!("providers.{name}.base_url");
            let uri: http::Uri = p
                .base_url
                .parse()
                .map_err(|e| invalid(&key, format!("not a URL: {e}")))?;
            match uri.scheme_str() {
                Some("http") | Some("https") => {}
                _ => return Err(invalid(key, "must start with http:// or https://")),
            }
            if uri.host().is_none() {
                return Err(invalid(key, "has no host"));
            }
            if let Some(var) = &p.api_key_env {
                if std::env::var_os(var).is_none() {
                    return Err(invalid(
                        format!("providers.{name}.api_key_env"),
                        format!("environment variable {var} is not set"),
                    ));
                }
            }
            for (h, v) in &p.headers {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err()
                    || http::HeaderValue::from_str(v).is_err()
                {
                    return Err(invalid(
                        format!("providers.{name}.headers.{h}"),
                        "not a valid HTTP header",
                    ));
                }
            }
            for (i, r) in p.replicas.iter().enumerate() {
                if r.parse::<std::net::SocketAddr>().is_err() {
                    return Err(invalid(
                        format!("providers.{name}.replicas[{i}]"),
                        "must be IP:PORT",
                    ));
                }
            }
            if !p.health_path.starts_with('/') || p.health_check_ms == 0 {
                return Err(invalid(
                    format!("providers.{name}.health_path"),
                    "must start with / (and health_check_ms must be > 0)",
                ));
            }
            if p.price_input_per_1m < 0.0 || p.price_output_per_1m < 0.0 || p.price_per_second < 0.0
            {
                return Err(invalid(
                    format!("providers.{name}.price_*"),
                    "prices must not be negative",
                ));
            }
        }
        let mut metric_names = HashSet::new();
        for (i, m) in self.feedback.metrics.iter().enumerate() {
            if m.name.is_empty() || m.name.starts_with("implicit_") {
                return Err(invalid(
                    format!("feedback.metrics[{i}].name"),
                    "must be non-empty and must not start with `implicit_` (reserved for implicit signals)",
                ));
            }
            if !metric_names.insert(m.name.as_str()) {
                return Err(invalid(
                    format!("feedback.metrics[{i}].name"),
                    format!("duplicate metric `{}`", m.name),
                ));
            }
        }
        let r = self.feedback.implicit.reask_similarity;
        if !(r > 0.0 && r <= 1.0) {
            return Err(invalid(
                "feedback.implicit.reask_similarity",
                "must be in (0, 1]",
            ));
        }
        let mut route_names = HashSet::new();
        for (r, route) in self.routes.iter().enumerate() {
            if !route_names.insert(route.name.as_str()) {
                return Err(invalid(
                    format!("routes[{r}].name"),
                    format!("duplicate route `{}`", route.name),
                ));
            }
            if route.variants.is_empty() {
                return Err(invalid(
                    format!("routes[{r}].variants"),
                    "a route needs at least one variant",
                ));
            }
            if route.variants.iter().all(|v| v.weight == 0) {
                return Err(invalid(
                    format!("routes[{r}].variants"),
                    "at least one variant needs a weight > 0",
                ));
            }
            let mut variant_names = HashSet::new();
            for (v, variant) in route.variants.iter().enumerate() {
                if !variant_names.insert(variant.name.as_str()) {
                    return Err(invalid(
                        format!("routes[{r}].variants[{v}].name"),
                        format!("duplicate variant `{}`", variant.name),
                    ));
                }
                if variant.targets.is_empty() {
                    return Err(invalid(
                        format!("routes[{r}].variants[{v}].targets"),
                        "needs at least one target",
                    ));
                }
                for (t, target) in variant.targets.iter().enumerate() {
                    if !self.providers.contains_key(&target.provider) {
                        return Err(invalid(
                            format!("routes[{r}].variants[{v}].targets[{t}].provider"),
                            format!("unknown provider `{}`", target.provider),
                        ));
                    }
                }
            }
            if let Some(retry) = &route.retry {
                if retry.total_timeout_ms == 0 || retry.attempt_timeout_ms == 0 {
                    return Err(invalid(
                        format!("routes[{r}].retry"),
                        "timeouts must be greater than 0",
                    ));
                }
            }
        }
        if self.retry.total_timeout_ms == 0 || self.retry.attempt_timeout_ms == 0 {
            return Err(invalid("retry", "timeouts must be greater than 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROVIDERS: &str = r#"
        [auth]
        enabled = false
        [providers.p]
        base_url = "http://127.0.0.1:1/v1"
    "#;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err("[server]\nlisten_addr = \"x\"\n");
        assert!(e.contains("listen_addr"), "{e}");
    }

    #[test]
    fn unknown_provider_is_named() {
        let e = err(&format!(
            "{PROVIDERS}\n[[routes]]\nname = \"r\"\n[[routes.variants]]\nname = \"a\"\ntargets = [{{ provider = \"nope\", model = \"m\" }}]\n"
        ));
        assert!(
            e.contains("routes[0].variants[0].targets[0].provider") && e.contains("nope"),
            "{e}"
        );
    }

    #[test]
    fn auth_without_keys_is_rejected() {
        let e = err("[providers.p]\nbase_url = \"http://x/v1\"\n");
        assert!(e.contains("auth.keys"), "{e}");
    }

    #[test]
    fn bad_key_hash_is_rejected() {
        let e = err("[[auth.keys]]\ntenant = \"t\"\nsha256 = \"abc\"\n");
        assert!(e.contains("auth.keys[0].sha256"), "{e}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(&format!(
            "{PROVIDERS}\n[[routes]]\nname = \"r\"\n[[routes.variants]]\nname = \"a\"\ntargets = [{{ provider = \"p\", model = \"m\" }}]\n"
        ))
        .unwrap();
        assert_eq!(c.retry.max_retries, 2);
        assert_eq!(c.routes[0].variants[0].weight, 1);
        assert_eq!(c.server.max_body_bytes, 4 * 1024 * 1024);
    }
}
