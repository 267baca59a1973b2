//! The blocking HTTP client shared by `score_model` and `endpoint`. Built on
//! first use (a blocking reqwest client owns a runtime thread, which a
//! grader that is only validated should not start).

use std::{sync::OnceLock, time::Duration};

use reqwest::blocking::Client;
use serde_json::Value;

use super::snippet;

pub(crate) struct Http {
    timeout: Duration,
    client: OnceLock<Result<Client, String>>,
}

/// A reply that arrived, whatever its status.
pub(crate) struct Reply {
    pub status: u16,
    pub body: String,
}

impl Http {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            client: OnceLock::new(),
        }
    }

    fn client(&self) -> Result<&Client, String> {
        self.client
            .get_or_init(|| {
                Client::builder()
                    .timeout(self.timeout)
                    .build()
                    .map_err(|e| format!("building the HTTP client: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// POSTs `body` as JSON. Transport failures (refused, timed out) are
    /// `Err`; any HTTP status is a `Reply`.
    pub fn post_json(
        &self,
        url: &str,
        headers: &[(String, String)],
        bearer: Option<&str>,
        body: &Value,
    ) -> Result<Reply, String> {
        let mut req = self.client()?.post(url).json(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(key) = bearer {
            req = req.bearer_auth(key);
        }
        let resp = req.send().map_err(|e| describe(url, &e))?;
        let status = resp.status().as_u16();
        let body = resp.text().map_err(|e| describe(url, &e))?;
        Ok(Reply { status, body })
    }
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `HTTP 500: <start of the body>`.
    pub fn status_error(&self, what: &str) -> String {
        format!(
            "{what} returned HTTP {}: {}",
            self.status,
            snippet(&self.body, 300)
        )
    }
}

fn describe(url: &str, e: &reqwest::Error) -> String {
    // reqwest's Display hides the cause ("error sending request"); the
    // source chain says "connection refused" or "operation timed out".
    let mut msg = format!("POST {url}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}
