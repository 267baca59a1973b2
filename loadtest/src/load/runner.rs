//! The open-loop schedule and the per-request work.
//!
//! Scheduling runs on a dedicated OS thread: `std::thread::sleep` wakes within
//! tens of microseconds, whereas tokio's timer has millisecond granularity,
//! which would add up to a millisecond of fake latency to every request when
//! measuring from the scheduled time.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header::CONTENT_TYPE, HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::sync::mpsc;

use super::{
    cli::LoadArgs,
    report::{new_histogram, Percentiles, Report, MAX_US},
    stream_check::StreamCheck,
};

/// Why one request did not count as ok; the Display form is the error kind
/// key of the report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("status_{0}")]
    Status(u16),
    #[error("connect")]
    Connect,
    /// Failed after connecting but before a response head (reset, closed).
    #[error("request")]
    Request,
    /// The body broke off while being read (e.g. a cut stream).
    #[error("body")]
    Body,
    /// A stream that completed without `data: [DONE]`.
    #[error("incomplete_stream")]
    IncompleteStream,
    #[error("timeout")]
    Timeout,
}

struct Sample {
    latency: Duration,
    ttft: Option<Duration>,
    result: Result<(), RequestError>,
    /// Whether the request counts in the statistics (not warm-up).
    measured: bool,
    /// The `--id-header` value, when the response had one.
    id: Option<String>,
}

/// A run: the report, and (with `--ids-out`) the ids of the answered
/// requests, warm-up included, in the order they completed.
pub struct Run {
    pub report: Report,
    pub answered_ids: Vec<String>,
}

/// Everything a request task needs, shared by all of them.
struct Target {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    stream: bool,
    timeout: Duration,
    /// The `--id-header` to read, only with `--ids-out`: without it no
    /// request pays for the copy, and the run keeps no ids.
    id_header: Option<http::HeaderName>,
}

pub async fn run(args: &LoadArgs, body: Bytes) -> Run {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        // Open loop: as many connections as there are requests in flight.
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .http2_only(args.http2)
        .build(connector);
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in &args.headers {
        headers.insert(name.clone(), value.clone());
    }
    let target = Arc::new(Target {
        client,
        uri: args.url.clone(),
        headers,
        body,
        stream: args.stream,
        timeout: args.timeout,
        id_header: args.ids_out.is_some().then(|| args.id_header.clone()),
    });

    let rate = args.rate;
    let total = ((args.warmup + args.duration).as_secs_f64() * rate).floor() as u64;
    // Request i is warm-up while its scheduled time i/rate is before the end of warm-up.
    let warm = (args.warmup.as_secs_f64() * rate).ceil() as u64;
    let max_in_flight = args.max_in_flight;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let handle = tokio::runtime::Handle::current();

    // Without a thread the run cannot happen at all; the OS refusing one is
    // fatal for a load generator.
    #[expect(clippy::expect_used, reason = "no scheduler thread, no run")]
    let scheduler = std::thread::Builder::new()
        .name("flywheel-load-scheduler".into())
        .spawn(move || {
            let start = Instant::now();
            let (mut sent, mut dropped) = (0u64, 0u64);
            for i in 0..total {
                let at = start + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if at > now {
                    // A plain thread, not a runtime worker: sleeping is its job.
                    #[expect(clippy::disallowed_methods, reason = "dedicated scheduler thread")]
                    std::thread::sleep(at - now);
                }
                let measured = i >= warm;
                if in_flight.load(Ordering::Relaxed) >= max_in_flight {
                    dropped += measured as u64;
                    continue;
                }
                in_flight.fetch_add(1, Ordering::Relaxed);
                sent += measured as u64;
                let tx = tx.clone();
                let target = target.clone();
                let in_flight = in_flight.clone();
                handle.spawn(async move {
                    let sample = one(&target, at, measured).await;
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                    let _ = tx.send(sample);
                });
            }
            (sent, dropped)
        })
        .expect("spawn scheduler thread");

    let mut latency = new_histogram();
    let mut ttft = new_histogram();
    let mut ok = 0u64;
    let mut error_kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut answered_ids = Vec::new();
    let us = |d: Duration| (d.as_micros() as u64).clamp(1, MAX_US);
    // Ends when the scheduler and every request have dropped their sender.
    while let Some(s) = rx.recv().await {
        if let (Ok(()), Some(id)) = (&s.result, s.id) {
            answered_ids.push(id);
        }
        if !s.measured {
            continue;
        }
        match s.result {
            Ok(()) => {
                ok += 1;
                latency.saturating_record(us(s.latency));
                if let Some(t) = s.ttft {
                    ttft.saturating_record(us(t));
                }
            }
            Err(e) => *error_kinds.entry(e.to_string()).or_default() += 1,
        }
    }
    // The scheduler thread only sleeps and sends: a panic there is a bug,
    // and passing it on is the honest report.
    let joined = tokio::task::spawn_blocking(move || scheduler.join()).await;
    let (sent, dropped) = match joined {
        Ok(Ok(counts)) => counts,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => (0, 0),
    };

    let duration_s = args.duration.as_secs_f64();
    let report = Report {
        target_rate: rate,
        achieved_qps: if duration_s > 0.0 {
            ok as f64 / duration_s
        } else {
            0.0
        },
        duration_s,
        warmup_s: args.warmup.as_secs_f64(),
        sent,
        ok,
        errors: error_kinds.values().sum(),
        error_kinds,
        dropped,
        latency_ms: Percentiles::from_histogram(&latency),
        ttft_ms: args.stream.then(|| Percentiles::from_histogram(&ttft)),
    };
    Run {
        report,
        answered_ids,
    }
}

/// Sends one request and reads its body to the end. Times are measured from
/// `scheduled`, not from when the request actually went out.
async fn one(t: &Target, scheduled: Instant, measured: bool) -> Sample {
    let mut ttft = None;
    let mut id = None;
    let work = async {
        // Method, URI and headers were checked when the target was built.
        let mut req = Request::new(Full::new(t.body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = t.uri.clone();
        *req.headers_mut() = t.headers.clone();
        let resp = t.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                RequestError::Connect
            } else {
                RequestError::Request
            }
        })?;
        let status = resp.status();
        id = t
            .id_header
            .as_ref()
            .and_then(|h| resp.headers().get(h))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = resp.into_body();
        let mut check = t.stream.then(StreamCheck::default);
        // Read to the end even for error statuses so the connection is reused.
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| RequestError::Body)?;
            if let (Some(check), Some(data)) = (check.as_mut(), frame.data_ref()) {
                if check.feed(data) {
                    ttft = Some(scheduled.elapsed());
                }
            }
        }
        if !status.is_success() {
            return Err(RequestError::Status(status.as_u16()));
        }
        if check.is_some_and(|c| !c.ends_with_done()) {
            return Err(RequestError::IncompleteStream);
        }
        Ok(())
    };
    let result = tokio::time::timeout(t.timeout, work)
        .await
        .unwrap_or(Err(RequestError::Timeout));
    Sample {
        latency: scheduled.elapsed(),
        ttft,
        result,
        measured,
        id,
    }
}
