//! Command line of `flywheel-load`.

use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use clap::Parser;
use http::{HeaderName, HeaderValue, Uri};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(
    name = "flywheel-load",
    version,
    about = "Open-loop constant-rate HTTP load generator (coordinated-omission safe)",
    long_about = "Open-loop constant-rate HTTP load generator (coordinated-omission safe).\n\n\
Request i is scheduled at start + i/rate and its latency is measured from that scheduled time, \
so server stalls show up in the percentiles. Requests that would exceed --max-in-flight are \
dropped (not sent) and counted. Warm-up requests are sent but excluded from the statistics. \
Latency and TTFT percentiles cover successful (2xx, complete) requests; failures are counted by kind: \
status_CODE, connect, request, body, incomplete_stream, timeout.\n\n\
Exits 0 whenever the run completes, errors included (read them from the report); \
non-zero only for bad arguments."
)]
pub struct LoadArgs {
    /// Target URL (http:// only), e.g. http://127.0.0.1:8080/v1/chat/completions.
    #[arg(long, value_parser = parse_url)]
    pub url: Uri,

    /// Target request rate, in requests per second.
    #[arg(long, value_parser = parse_rate)]
    pub rate: f64,

    /// Length of the measured phase, e.g. 10s, 500ms, 2m (bare number = seconds).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Duration,

    /// Warm-up phase before the measured one, at the same rate; its requests are not counted.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,

    /// Streaming requests: sets "stream": true in the body, records time to first `data:` event (TTFT)
    /// and requires the body to end with `data: [DONE]`.
    #[arg(long)]
    pub stream: bool,

    /// Extra request header "Name: value"; repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,

    /// File with the request body (JSON); default: a small chat request for --model.
    #[arg(long)]
    pub body_file: Option<PathBuf>,

    /// Model of the default body (ignored with --body-file).
    #[arg(long, default_value = "mock-model")]
    pub model: String,

    /// Most requests outstanding at once; scheduled requests beyond it are dropped and counted.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,

    /// Per-request timeout, counted as error kind "timeout".
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub timeout: Duration,

    /// Use HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1 connections.
    #[arg(long)]
    pub http2: bool,

    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Write the --id-header value of every answered request (2xx, and for
    /// streams complete), warm-up included, one per line: what a fault test
    /// checks against the captured events.
    #[arg(long, value_name = "FILE")]
    pub ids_out: Option<PathBuf>,

    /// Response header that names a request, for --ids-out.
    #[arg(long, default_value = "x-flywheel-request-id", value_parser = parse_header_name)]
    pub id_header: HeaderName,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("cannot read body file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl LoadArgs {
    /// The request body. With --stream, a JSON object body gets
    /// `"stream": true`; a non-JSON body file is sent as is.
    pub fn body(&self) -> Result<Bytes, BodyError> {
        let Some(path) = &self.body_file else {
            let mut body = json!({
                "model": self.model,
                "messages": [{"role": "user", "content": "Say hello to the load generator."}],
            });
            if self.stream {
                body["stream"] = Value::Bool(true);
            }
            return Ok(body.to_string().into_bytes().into());
        };
        let raw = std::fs::read(path).map_err(|source| BodyError::Read {
            path: path.clone(),
            source,
        })?;
        if self.stream {
            if let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&raw) {
                obj.insert("stream".into(), Value::Bool(true));
                return Ok(Value::Object(obj).to_string().into_bytes().into());
            }
        }
        Ok(raw.into())
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "invalid rate {s:?}: expected a positive number of requests per second"
        )),
    }
}

fn parse_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s.parse().map_err(|e| format!("invalid URL {s:?}: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "invalid URL {s:?}: expected http://HOST[:PORT]/PATH"
        ));
    }
    Ok(uri)
}

fn parse_header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.trim().as_bytes())
        .map_err(|e| format!("invalid header name {s:?}: {e}"))
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("invalid header {s:?}: expected \"Name: value\""))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|e| format!("invalid header name in {s:?}: {e}"))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|e| format!("invalid header value in {s:?}: {e}"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_command_line() {
        let args = LoadArgs::try_parse_from([
            "flywheel-load",
            "--url",
            "http://127.0.0.1:9/v1/chat/completions",
            "--rate",
            "500",
            "--duration",
            "10s",
            "--warmup",
            "2s",
            "--stream",
            "-H",
            "Authorization: Bearer x",
            "--ids-out",
            "ids.txt",
        ])
        .unwrap();
        assert_eq!(args.ids_out, Some(PathBuf::from("ids.txt")));
        assert_eq!(args.id_header, "x-flywheel-request-id");
        assert_eq!(args.rate, 500.0);
        assert_eq!(args.warmup, Duration::from_secs(2));
        assert_eq!(args.headers[0].1, "Bearer x");
        let body: Value = serde_json::from_slice(&args.body().unwrap()).unwrap();
        assert_eq!(body["stream"], true);
        assert_eq!(body["model"], "mock-model");
    }

    #[test]
    fn rejects_bad_arguments() {
        for bad in [
            vec!["--url", "https://x/", "--rate", "1", "--duration", "1s"],
            vec!["--url", "http://x/", "--rate", "0", "--duration", "1s"],
            vec!["--url", "http://x/", "--rate", "1", "--duration", "soon"],
            vec![
                "--url",
                "http://x/",
                "--rate",
                "1",
                "--duration",
                "1s",
                "-H",
                "nocolon",
            ],
        ] {
            let argv = std::iter::once("flywheel-load").chain(bad.iter().copied());
            assert!(LoadArgs::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }
}
