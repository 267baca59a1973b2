//! The engines' admin API, as the controller and the tuner service use it:
//! `DELETE /admin/models/{name}?wait=true` stops routing to a version,
//! drains its in-flight requests and unloads it, answering once it is
//! freed; the tuner also deploys versions (`POST /admin/models`), asks
//! whether one is loaded (`GET /admin/models/{name}`, so a restarted
//! service never deploys twice) and points aliases at them (`PUT
//! /admin/aliases/{alias}`, `GET /admin/models`'s `aliases`).
//!
//! The admin token comes from the controller's configuration
//! (`FLYWHEEL_ENGINE_ADMIN_TOKEN`), never from an experiment: specs are
//! stored in ClickHouse, where more people can read them.

use std::time::Duration;

use crate::unload::EngineOutcome;

/// Default limit of one unload: the engine answers after draining, so
/// this bounds the longest request still streaming from the version.
pub const DEFAULT_UNLOAD_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("engine HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// An error and its causes, `a: b: c` (reqwest's own message names only
/// the request, not why it failed: refused, DNS, reset).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A deploy, alias or lookup call that did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no engine admin token configured (FLYWHEEL_ENGINE_ADMIN_TOKEN)")]
    NoToken,
    #[error("{engine}: unreachable: {reason}")]
    Unreachable { engine: String, reason: String },
    #[error("{engine}: HTTP {status}: {body}")]
    Status {
        engine: String,
        status: u16,
        body: String,
    },
}

/// Calls the engines' admin API.
#[derive(Clone)]
pub struct EngineAdmin {
    client: reqwest::Client,
    token: Option<String>,
}

impl std::fmt::Debug for EngineAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("EngineAdmin")
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

impl Default for EngineAdmin {
    /// No token: every unload is recorded as failing, saying so.
    fn default() -> Self {
        Self::new(None, DEFAULT_UNLOAD_TIMEOUT).unwrap_or_else(|_| Self {
            client: reqwest::Client::default(),
            token: None,
        })
    }
}

impl EngineAdmin {
    /// `timeout` bounds each call, drain included.
    pub fn new(token: Option<String>, timeout: Duration) -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .build()?;
        Ok(Self {
            client,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// Unloads `model` from one engine. 2xx: unloaded; 404: not there,
    /// which is what we want (already unloaded, or never deployed), so it
    /// counts as done; anything else is an error to retry.
    pub async fn unload(&self, engine: &str, model: &str) -> EngineOutcome {
        let mut out = EngineOutcome {
            engine: engine.to_owned(),
            ok: false,
            status: None,
            error: None,
            drained: None,
        };
        let Some(token) = &self.token else {
            out.error = Some(
                "no engine admin token configured (FLYWHEEL_ENGINE_ADMIN_TOKEN or [engines] admin_token)"
                    .into(),
            );
            return out;
        };
        let url = format!(
            "{}/admin/models/{model}?wait=true",
            engine.trim_end_matches('/')
        );
        let response = match self.client.delete(&url).bearer_auth(token).send().await {
            Ok(r) => r,
            Err(e) => {
                out.error = Some(if e.is_timeout() {
                    "timed out (still draining, or unreachable)".into()
                } else {
                    format!("unreachable: {}", chain(&e))
                });
                return out;
            }
        };
        let status = response.status();
        out.status = Some(status.as_u16());
        if status.is_success() {
            out.ok = true;
            out.drained = response
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v.get("drained").and_then(serde_json::Value::as_u64));
        } else if status == reqwest::StatusCode::NOT_FOUND {
            out.ok = true;
        } else {
            let body = response.text().await.unwrap_or_default();
            let excerpt: String = body.chars().take(200).collect();
            out.error = Some(format!("HTTP {}: {excerpt}", status.as_u16()));
        }
        out
    }

    /// Sends an admin call to `engine` and reads the answer; a status
    /// other than 2xx or `allowed` is an error with the body's start.
    async fn call(
        &self,
        engine: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        allowed: Option<reqwest::StatusCode>,
    ) -> Result<(reqwest::StatusCode, serde_json::Value), CallError> {
        let token = self.token.as_ref().ok_or(CallError::NoToken)?;
        let url = format!("{}{path}", engine.trim_end_matches('/'));
        let mut request = self.client.request(method, &url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let unreachable = |e: reqwest::Error| CallError::Unreachable {
            engine: engine.to_owned(),
            reason: chain(&e),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if status.is_success() || Some(status) == allowed {
            let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            return Ok((status, value));
        }
        Err(CallError::Status {
            engine: engine.to_owned(),
            status: status.as_u16(),
            body: text.chars().take(300).collect(),
        })
    }

    /// Whether `engine` has the version `name` loaded.
    pub async fn is_deployed(&self, engine: &str, name: &str) -> Result<bool, CallError> {
        let path = format!("/admin/models/{name}");
        let (status, _) = self
            .call(
                engine,
                reqwest::Method::GET,
                &path,
                None,
                Some(reqwest::StatusCode::NOT_FOUND),
            )
            .await?;
        Ok(status.is_success())
    }

    /// Loads the model directory `path` (as the engine's machine sees it)
    /// as the version `name`; answers once it serves.
    pub async fn deploy(&self, engine: &str, name: &str, path: &str) -> Result<(), CallError> {
        let body = serde_json::json!({"name": name, "path": path});
        self.call(
            engine,
            reqwest::Method::POST,
            "/admin/models",
            Some(body),
            None,
        )
        .await
        .map(drop)
    }

    /// Points `alias` at the version `version` (requests for the alias are
    /// served by it from then on).
    pub async fn set_alias(
        &self,
        engine: &str,
        alias: &str,
        version: &str,
    ) -> Result<(), CallError> {
        let body = serde_json::json!({"version": version});
        let path = format!("/admin/aliases/{alias}");
        self.call(engine, reqwest::Method::PUT, &path, Some(body), None)
            .await
            .map(drop)
    }

    /// The engine's aliases, alias → version.
    pub async fn aliases(
        &self,
        engine: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, CallError> {
        let (_, v) = self
            .call(engine, reqwest::Method::GET, "/admin/models", None, None)
            .await?;
        Ok(v.get("aliases")
            .cloned()
            .and_then(|a| serde_json::from_value(a).ok())
            .unwrap_or_default())
    }

    /// Unloads `model` from every engine at once; outcomes in the order of
    /// `engines`.
    pub async fn unload_all(&self, engines: &[String], model: &str) -> Vec<EngineOutcome> {
        let handles: Vec<_> = engines
            .iter()
            .map(|e| {
                let admin = self.clone();
                let (e, m) = (e.clone(), model.to_owned());
                tokio::spawn(async move { admin.unload(&e, &m).await })
            })
            .collect();
        let mut outcomes = Vec::with_capacity(handles.len());
        for (h, e) in handles.into_iter().zip(engines) {
            outcomes.push(h.await.unwrap_or_else(|j| EngineOutcome {
                engine: e.clone(),
                ok: false,
                status: None,
                error: Some(format!("unload task failed: {j}")),
                drained: None,
            }));
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;

    /// An engine stand-in that answers every request with `status` and
    /// `body`, and hands back the request heads it saw.
    async fn engine(
        status: &'static str,
        body: &'static str,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut seen = vec![];
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            }
            seen
        });
        (url, task)
    }

    #[tokio::test]
    async fn unloads_with_the_token_and_counts_a_missing_version_as_done() {
        let admin = EngineAdmin::new(Some("tok".into()), Duration::from_secs(5)).unwrap();
        let (url, seen) = engine("200 OK", r#"{"id":"v2","deleted":true,"drained":3}"#).await;
        let o = admin.unload(&url, "v2").await;
        assert_eq!((o.ok, o.status, o.drained), (true, Some(200), Some(3)));
        let head = seen.await.unwrap().remove(0);
        assert!(
            head.starts_with("DELETE /admin/models/v2?wait=true "),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("authorization: bearer tok"),
            "{head}"
        );

        let (url, _) = engine("404 Not Found", r#"{"error":{"code":"model_not_found"}}"#).await;
        let o = admin.unload(&format!("{url}/"), "v2").await;
        assert_eq!((o.ok, o.status, o.error), (true, Some(404), None));

        let (url, _) = engine("401 Unauthorized", r#"{"error":"invalid admin token"}"#).await;
        let o = admin.unload(&url, "v2").await;
        assert!(
            !o.ok && o.error.as_deref().unwrap().starts_with("HTTP 401"),
            "{o:?}"
        );
    }

    #[tokio::test]
    async fn without_a_token_or_an_engine_the_outcome_says_why() {
        let o = EngineAdmin::default()
            .unload("http://127.0.0.1:9", "v2")
            .await;
        assert!(!o.ok && o.error.unwrap().contains("no engine admin token"));
        // A port nothing listens on (bound, then dropped).
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let admin = EngineAdmin::new(Some("s3cret".into()), Duration::from_secs(5)).unwrap();
        let all = admin
            .unload_all(&[format!("http://127.0.0.1:{port}")], "v2")
            .await;
        assert_eq!(all.len(), 1);
        assert!(
            !all[0].ok && all[0].error.as_deref().unwrap().starts_with("unreachable"),
            "{all:?}"
        );
        assert!(format!("{admin:?}").contains('…') && !format!("{admin:?}").contains("s3cret"));
    }
}
