//! The gateway, as the dashboards reach it (`--gateway-url`): the
//! playground's chat and thumbs go through its public API with a tenant's
//! key, like any client's; the circuits come from its `/metrics`.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// Connecting to the gateway (loopback or a LAN): past this it is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `/metrics` and `/v1/feedback` are quick; a chat stream has no total
/// limit (a long answer streams for minutes), only the gateway's own.
const SHORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The gateway's circuit gauge (`gateway/src/metrics.rs`).
pub const CIRCUIT_METRIC: &str = "flywheel_circuit_state";

#[derive(Debug, Clone)]
pub struct Gateway {
    base: String,
    http: reqwest::Client,
    /// Bearer token of `/metrics` (the gateway asks for one once it has an
    /// admin or metrics token).
    metrics_token: Option<String>,
}

/// One provider's circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Circuit {
    pub provider: String,
    /// `closed`, `open`, `half_open` (or the raw gauge value if unknown).
    pub state: String,
}

impl Gateway {
    /// `url` is the gateway's base (`http://127.0.0.1:8080`), without `/v1`.
    pub fn new(url: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            http,
            metrics_token: None,
        })
    }

    /// Sends `token` as the bearer token of `/metrics`.
    pub fn with_metrics_token(mut self, token: Option<String>) -> Self {
        self.metrics_token = token;
        self
    }

    pub async fn circuits(&self) -> Result<Vec<Circuit>, reqwest::Error> {
        let mut request = self
            .http
            .get(format!("{}/metrics", self.base))
            .timeout(SHORT_TIMEOUT);
        if let Some(token) = &self.metrics_token {
            request = request.bearer_auth(token);
        }
        let text = request.send().await?.error_for_status()?.text().await?;
        Ok(parse_circuits(&text))
    }

    /// A streamed chat completion of `route` pinned to `variant`.
    pub async fn chat(
        &self,
        key: &str,
        variant: &str,
        body: &Value,
    ) -> Result<reqwest::Response, reqwest::Error> {
        self.http
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .header(flywheel_api::headers::VARIANT, variant)
            .json(body)
            .send()
            .await
    }

    /// `POST /v1/feedback` with `body`.
    pub async fn feedback(
        &self,
        key: &str,
        body: &Value,
    ) -> Result<reqwest::Response, reqwest::Error> {
        self.http
            .post(format!("{}/v1/feedback", self.base))
            .bearer_auth(key)
            .timeout(SHORT_TIMEOUT)
            .json(body)
            .send()
            .await
    }
}

/// The circuits of a Prometheus text exposition: each
/// `flywheel_circuit_state{provider="P"} V` line, sorted by provider.
pub fn parse_circuits(text: &str) -> Vec<Circuit> {
    let mut out: Vec<Circuit> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(CIRCUIT_METRIC)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once('}')?;
            let provider = label(labels, "provider")?;
            let value = value.trim();
            let state = match value.parse::<f64>().ok()? as i64 {
                0 => "closed".to_owned(),
                1 => "open".to_owned(),
                2 => "half_open".to_owned(),
                _ => value.to_owned(),
            };
            Some(Circuit { provider, state })
        })
        .collect();
    out.sort_by(|a, b| a.provider.cmp(&b.provider));
    out
}

/// The value of label `name` in `a="x",b="y"` (Prometheus escapes `\"`,
/// `\\` and `\n` inside values).
fn label(labels: &str, name: &str) -> Option<String> {
    let mut rest = labels;
    loop {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        if key.trim_start_matches(',').trim() == name {
            return Some(value);
        }
        rest = after.get(end + 1..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_circuit_gauge() {
        let text = "# HELP flywheel_circuit_state Circuit breaker per provider\n\
            # TYPE flywheel_circuit_state gauge\n\
            flywheel_circuit_state{provider=\"mock\"} 1\n\
            flywheel_circuit_state{provider=\"engine\"} 0\n\
            flywheel_circuit_state{zone=\"a\",provider=\"q\\\"x\"} 2\n\
            flywheel_circuit_state_other{provider=\"no\"} 1\n\
            flywheel_requests_total{provider=\"mock\"} 5\n";
        assert_eq!(
            parse_circuits(text),
            vec![
                Circuit {
                    provider: "engine".into(),
                    state: "closed".into()
                },
                Circuit {
                    provider: "mock".into(),
                    state: "open".into()
                },
                Circuit {
                    provider: "q\"x".into(),
                    state: "half_open".into()
                },
            ]
        );
    }
}
