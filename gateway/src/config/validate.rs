//! [`UninitializedConfig::load`]: the checks serde cannot express
//! (references between tables, ranges) and the parsing of every string the
//! runtime needs as a typed value (URLs, headers, addresses, digests), done
//! once. Each error names the key that is wrong.

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use flywheel_api::keys::parse_sha256_hex;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use redis::IntoConnectionInfo;
use rustls::pki_types::{pem::PemObject, CertificateDer};

use super::{
    uninitialized::{
        UninitializedApiKeyConfig, UninitializedAuthConfig, UninitializedConfig,
        UninitializedProviderConfig, UninitializedRedisConfig, UninitializedServerConfig,
    },
    AdminConfig, ApiKeyConfig, AuthConfig, Config, ProviderConfig, RedisConfig, RouteConfig,
    ServerConfig,
};

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

/// 64 lower-case hex digits (what `sha256sum` and `hash-key` print) as a
/// digest.
fn sha256_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    parse_sha256_hex(hex)
}

impl UninitializedConfig {
    /// Checks the config and converts it to its runtime form.
    pub fn load(self) -> Result<Config, ConfigError> {
        let server = load_server(self.server)?;
        let auth = load_auth(self.auth)?;
        let digest = |key: &str, value: &Option<String>| match value {
            None => Ok(None),
            Some(token) => sha256_digest(token)
                .map(Some)
                .ok_or_else(|| invalid(key, "must be 64 lower-case hex characters")),
        };
        let admin = AdminConfig {
            token_sha256: digest("admin.token_sha256", &self.admin.token_sha256)?,
            metrics_token_sha256: digest(
                "admin.metrics_token_sha256",
                &self.admin.metrics_token_sha256,
            )?,
        };
        let redis = load_redis(self.redis)?;
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
        let providers = self
            .providers
            .into_iter()
            .map(|(name, p)| {
                let provider = load_provider(&name, p)?;
                Ok((name, provider))
            })
            .collect::<Result<BTreeMap<_, _>, ConfigError>>()?;
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
        for (key, value) in [
            (
                "upstream.max_sse_event_bytes",
                self.upstream.max_sse_event_bytes,
            ),
            (
                "upstream.max_response_bytes",
                self.upstream.max_response_bytes,
            ),
            ("feedback.recent_max_bytes", self.feedback.recent_max_bytes),
            ("metering.max_queued_bytes", self.metering.max_queued_bytes),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
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
                    if !providers.contains_key(&target.provider) {
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
        let routes = self
            .routes
            .into_iter()
            .map(|route| RouteConfig {
                name: route.name,
                variants: route.variants,
                retry: route.retry.unwrap_or_else(|| self.retry.clone()),
            })
            .collect();
        let capture = match self.capture {
            None => None,
            Some(mut c) => {
                c.resolve_password()
                    .map_err(|e| invalid("capture.password_env", e))?;
                // Read the keys now, so that a bad one stops the load.
                c.wal_config()
                    .map_err(|e| invalid("capture.encryption_key_file", e))?;
                Some(c)
            }
        };
        Ok(Config {
            server,
            auth,
            admin,
            metering: self.metering,
            redis,
            feedback: self.feedback,
            capture,
            circuit_breaker: self.circuit_breaker,
            upstream: self.upstream,
            providers,
            routes,
        })
    }
}

fn load_server(s: UninitializedServerConfig) -> Result<ServerConfig, ConfigError> {
    for (key, value) in [
        ("server.max_body_bytes", s.max_body_bytes as u64),
        ("server.header_read_timeout_ms", s.header_read_timeout_ms),
        ("server.idle_timeout_ms", s.idle_timeout_ms),
        (
            "server.http2_keep_alive_timeout_ms",
            s.http2_keep_alive_timeout_ms,
        ),
        (
            "server.http2_max_concurrent_streams",
            u64::from(s.http2_max_concurrent_streams),
        ),
    ] {
        if value == 0 {
            return Err(invalid(key, "must be greater than 0"));
        }
    }
    if !(1..=tokio::sync::Semaphore::MAX_PERMITS).contains(&s.max_connections) {
        return Err(invalid(
            "server.max_connections",
            format!("must be in 1..={}", tokio::sync::Semaphore::MAX_PERMITS),
        ));
    }
    let tls = match (&s.tls_cert_file, &s.tls_key_file) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(
            flywheel_listener::Tls::load(cert, key)
                .map_err(|e| invalid("server.tls_cert_file", e.to_string()))?,
        ),
        (Some(_), None) => return Err(invalid("server.tls_key_file", "needed with tls_cert_file")),
        (None, Some(_)) => return Err(invalid("server.tls_cert_file", "needed with tls_key_file")),
    };
    Ok(ServerConfig {
        listen: s.listen,
        max_body_bytes: s.max_body_bytes,
        body_read_timeout: Duration::from_millis(s.body_read_timeout_ms),
        limits: flywheel_listener::Limits {
            header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(s.idle_timeout_ms),
            max_connections: s.max_connections,
            http2_keep_alive_interval: (s.http2_keep_alive_interval_ms > 0)
                .then(|| Duration::from_millis(s.http2_keep_alive_interval_ms)),
            http2_keep_alive_timeout: Duration::from_millis(s.http2_keep_alive_timeout_ms),
            http2_max_concurrent_streams: s.http2_max_concurrent_streams,
            shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
        },
        tls,
    })
}

/// The certificates of a PEM file, at least one.
fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The public roots (webpki) and `extra` as the trust anchors, on *ring*.
fn client_tls(extra: Vec<CertificateDer<'static>>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra {
        roots
            .add(cert)
            .map_err(|e| format!("a certificate cannot be a trust anchor: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn load_auth(a: UninitializedAuthConfig) -> Result<AuthConfig, ConfigError> {
    if a.enabled && a.keys.is_empty() {
        return Err(invalid(
            "auth.keys",
            "no API keys configured; add [[auth.keys]] or set auth.enabled = false",
        ));
    }
    let keys = a
        .keys
        .into_iter()
        .enumerate()
        .map(|(i, key)| {
            let UninitializedApiKeyConfig {
                tenant,
                sha256,
                requests_per_minute,
                tokens_per_minute,
                pin_variants,
            } = key;
            let sha256 = sha256_digest(&sha256).ok_or_else(|| {
                invalid(
                    format!("auth.keys[{i}].sha256"),
                    "must be 64 lower-case hex characters (flywheel-gateway hash-key TOKEN)",
                )
            })?;
            if tenant.is_empty() {
                return Err(invalid(
                    format!("auth.keys[{i}].tenant"),
                    "must not be empty",
                ));
            }
            Ok(ApiKeyConfig {
                tenant,
                sha256,
                requests_per_minute,
                tokens_per_minute,
                pin_variants,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(AuthConfig {
        enabled: a.enabled,
        keys,
    })
}

fn load_redis(r: UninitializedRedisConfig) -> Result<RedisConfig, ConfigError> {
    let url = match r.url {
        None => None,
        Some(url) => Some(
            url.as_str()
                .into_connection_info()
                .map_err(|e| invalid("redis.url", e.to_string()))?,
        ),
    };
    Ok(RedisConfig {
        url,
        key_prefix: r.key_prefix,
        command_timeout: Duration::from_millis(r.command_timeout_ms),
        weights_poll: Duration::from_millis(r.weights_poll_ms),
    })
}

fn load_provider(
    name: &str,
    p: UninitializedProviderConfig,
) -> Result<ProviderConfig, ConfigError> {
    let key = format!("providers.{name}.base_url");
    let base_url: Uri = p
        .base_url
        .parse()
        .map_err(|e| invalid(&key, format!("not a URL: {e}")))?;
    match base_url.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(invalid(key, "must start with http:// or https://")),
    }
    if base_url.host().is_none() {
        return Err(invalid(key, "has no host"));
    }
    let authorization = match &p.api_key_env {
        None => None,
        Some(var) => {
            let key = format!("providers.{name}.api_key_env");
            let secret = std::env::var_os(var)
                .ok_or_else(|| invalid(&key, format!("environment variable {var} is not set")))?;
            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(secret.as_encoded_bytes());
            let mut value = HeaderValue::from_bytes(&value).map_err(|_| {
                invalid(
                    key,
                    format!("environment variable {var} is not a valid header value"),
                )
            })?;
            value.set_sensitive(true);
            Some(value)
        }
    };
    let mut headers = HeaderMap::new();
    for (h, v) in &p.headers {
        match (
            HeaderName::from_bytes(h.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(h), Ok(v)) => {
                headers.insert(h, v);
            }
            _ => {
                return Err(invalid(
                    format!("providers.{name}.headers.{h}"),
                    "not a valid HTTP header",
                ))
            }
        }
    }
    let replicas = p
        .replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.parse::<SocketAddr>()
                .map_err(|_| invalid(format!("providers.{name}.replicas[{i}]"), "must be IP:PORT"))
        })
        .collect::<Result<_, _>>()?;
    if !p.health_path.starts_with('/') || p.health_check_ms == 0 {
        return Err(invalid(
            format!("providers.{name}.health_path"),
            "must start with / (and health_check_ms must be > 0)",
        ));
    }
    let ca_key = format!("providers.{name}.ca_file");
    let extra_roots = match &p.ca_file {
        None => Vec::new(),
        Some(path) => {
            if base_url.scheme_str() != Some("https") {
                return Err(invalid(ca_key, "needs an https:// base_url"));
            }
            load_ca_file(path).map_err(|e| invalid(&ca_key, e))?
        }
    };
    let tls = client_tls(extra_roots).map_err(|e| invalid(ca_key, e))?;
    if p.price_input_per_1m < 0.0 || p.price_output_per_1m < 0.0 || p.price_per_second < 0.0 {
        return Err(invalid(
            format!("providers.{name}.price_*"),
            "prices must not be negative",
        ));
    }
    Ok(ProviderConfig {
        base_url,
        authorization,
        headers,
        connect_timeout: Duration::from_millis(p.connect_timeout_ms),
        price_input_per_1m: p.price_input_per_1m,
        price_output_per_1m: p.price_output_per_1m,
        price_per_second: p.price_per_second,
        forward_response_format: p.forward_response_format,
        continuation: p.continuation,
        replicas,
        health_path: p.health_path,
        health_check: Duration::from_millis(p.health_check_ms),
        tls,
    })
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
    fn tls_files_are_loaded_at_start_and_a_half_or_bad_pair_is_named() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../listener/testdata");
        let server = |extra: &str| format!("{PROVIDERS}[server]\n{extra}");
        let e = err(&server(&format!("tls_cert_file = \"{dir}/server.pem\"\n")));
        assert!(e.contains("server.tls_key_file"), "{e}");
        let e = err(&server(&format!(
            "tls_cert_file = \"{dir}/server.pem\"\ntls_key_file = \"{dir}/other.key\"\n"
        )));
        assert!(
            e.contains("server.tls_cert_file") && e.contains("other.key"),
            "{e}"
        );
        let c = Config::parse(&server(&format!(
            "tls_cert_file = \"{dir}/server.pem\"\ntls_key_file = \"{dir}/server.key\"\n"
        )))
        .unwrap();
        assert!(c.server.tls.is_some());
    }

    #[test]
    fn keys_may_pin_variants_only_when_they_say_so() {
        let key = |extra: &str| {
            format!(
                "[[auth.keys]]\ntenant = \"t\"\nsha256 = \"{}\"\n{extra}",
                flywheel_api::keys::sha256_hex("k")
            )
        };
        let c = Config::parse(&key("")).unwrap();
        assert!(!c.auth.keys[0].pin_variants, "off by default");
        let c = Config::parse(&key("pin_variants = true\n")).unwrap();
        assert!(c.auth.keys[0].pin_variants);
        let e = err(&key("pin_variants = \"yes\"\n"));
        assert!(e.contains("pin_variants"), "{e}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(&format!(
            "{PROVIDERS}\n[[routes]]\nname = \"r\"\n[[routes.variants]]\nname = \"a\"\ntargets = [{{ provider = \"p\", model = \"m\" }}]\n"
        ))
        .unwrap();
        assert_eq!(c.routes[0].retry.max_retries, 2);
        assert_eq!(c.routes[0].variants[0].weight, 1);
        assert_eq!(c.server.max_body_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn strings_are_parsed_once_with_defaults() {
        let c = Config::parse(&format!(
            "{PROVIDERS}headers = {{ x-a = \"1\" }}\nreplicas = [\"127.0.0.1:9\"]\n\
             [admin]\ntoken_sha256 = \"{}\"\n[redis]\nurl = \"redis://127.0.0.1:6379/0\"\n\
             [[routes]]\nname = \"r\"\nretry = {{ max_retries = 5 }}\n\
             [[routes.variants]]\nname = \"a\"\ntargets = [{{ provider = \"p\", model = \"m\" }}]\n",
            flywheel_api::keys::sha256_hex("admin")
        ))
        .unwrap();
        let p = &c.providers["p"];
        assert_eq!(p.base_url.path(), "/v1");
        assert_eq!(p.headers["x-a"], "1");
        assert!(p.authorization.is_none());
        assert_eq!(p.replicas, ["127.0.0.1:9".parse::<SocketAddr>().unwrap()]);
        assert_eq!(p.connect_timeout, Duration::from_millis(2_000));
        assert_eq!(p.health_check, Duration::from_millis(1_000));
        assert_eq!(p.health_path, "/health");
        assert!(flywheel_api::keys::token_matches(
            "admin",
            &c.admin.token_sha256.unwrap()
        ));
        assert!(c.redis.url.is_some());
        assert_eq!(c.redis.command_timeout, Duration::from_millis(50));
        assert_eq!(c.redis.weights_poll, Duration::from_millis(1_000));
        assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(c.server.tls.is_none());
        assert_eq!(c.server.limits.header_read_timeout, Duration::from_secs(30));
        assert_eq!(c.server.body_read_timeout, Duration::from_secs(30));
        assert_eq!(c.server.limits.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.server.limits.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.server.limits.max_connections, 4_096);
        assert_eq!(
            c.server.limits.http2_keep_alive_interval,
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            c.server.limits.http2_keep_alive_timeout,
            Duration::from_secs(10)
        );
        assert_eq!(c.server.limits.http2_max_concurrent_streams, 128);
        assert_eq!(c.upstream.max_sse_event_bytes, 1024 * 1024);
        assert_eq!(c.upstream.max_response_bytes, 32 * 1024 * 1024);
        assert_eq!(c.feedback.recent_max_bytes, 128 * 1024 * 1024);
        assert_eq!(c.metering.max_queued_bytes, 64 * 1024 * 1024);
        // A route's own [retry] table replaces the global one, defaults included.
        assert_eq!(c.routes[0].retry.max_retries, 5);
        assert_eq!(c.routes[0].retry.total_timeout_ms, 120_000);
    }

    #[test]
    fn unparsable_values_are_named() {
        for (text, key) in [
            ("[providers.p]\nbase_url = \"ftp://x/v1\"\n", "providers.p.base_url"),
            ("[providers.p]\nbase_url = \"http://x/v1\"\nheaders = { \"a b\" = \"1\" }\n", "providers.p.headers.a b"),
            ("[providers.p]\nbase_url = \"http://x/v1\"\nreplicas = [\"host:1\"]\n", "providers.p.replicas[0]"),
            ("[providers.p]\nbase_url = \"http://x/v1\"\napi_key_env = \"FLYWHEEL_TEST_UNSET_VAR\"\n", "providers.p.api_key_env"),
            ("[admin]\ntoken_sha256 = \"abc\"\n", "admin.token_sha256"),
            ("[admin]\nmetrics_token_sha256 = \"abc\"\n", "admin.metrics_token_sha256"),
            ("[capture]\npassword_env = \"FLYWHEEL_TEST_UNSET_VAR\"\n", "capture.password_env"),
            ("[redis]\nurl = \"http://x\"\n", "redis.url"),
        ] {
            let e = err(&format!("[auth]\nenabled = false\n{text}"));
            assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
        }
        // Upper-case hex is refused, as before: keys are compared as printed.
        let upper = flywheel_api::keys::sha256_hex("k").to_uppercase();
        let e = err(&format!(
            "[[auth.keys]]\ntenant = \"t\"\nsha256 = \"{upper}\"\n"
        ));
        assert!(e.contains("auth.keys[0].sha256"), "{e}");
    }

    #[test]
    fn limits_of_zero_are_refused_naming_the_key() {
        for (table, key) in [
            ("server", "header_read_timeout_ms"),
            ("server", "idle_timeout_ms"),
            ("server", "max_connections"),
            ("server", "http2_keep_alive_timeout_ms"),
            ("server", "http2_max_concurrent_streams"),
            ("upstream", "max_sse_event_bytes"),
            ("upstream", "max_response_bytes"),
            ("feedback", "recent_max_bytes"),
            ("metering", "max_queued_bytes"),
        ] {
            let e = err(&format!("{PROVIDERS}[{table}]\n{key} = 0\n"));
            assert!(e.contains(&format!("`{table}.{key}`")), "{e}");
        }
        let c = Config::parse(&format!(
            "{PROVIDERS}[server]\nhttp2_keep_alive_interval_ms = 0\n"
        ));
        assert_eq!(c.unwrap().server.limits.http2_keep_alive_interval, None);
    }

    #[test]
    fn the_tuner_table_is_left_to_the_tuner() {
        let text = format!(
            "{PROVIDERS}\n{}",
            include_str!("../../../config/tuner.example.toml")
        );
        Config::parse(&text).unwrap();
    }

    #[test]
    fn example_configs_load() {
        Config::parse(include_str!("../../../config/flywheel.example.toml")).unwrap();
        Config::parse(include_str!("../../../config/tasks-bench.toml")).unwrap();
    }
}
