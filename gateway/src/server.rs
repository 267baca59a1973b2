//! The accept loop: hyper connections (HTTP/1 or HTTP/2, detected per
//! connection) with bounded lifetimes, a cap on open connections, and a
//! bounded graceful shutdown that drains in-flight requests.
//!
//! What bounds a connection that does not behave:
//! - **silent or trickling before its first request** (including the
//!   HTTP/1-vs-2 detection read and the HTTP/2 handshake, which hyper does
//!   not time out): closed `header_read_timeout` after it opened;
//! - **HTTP/1 request head** (trickled headers, idle keep-alive): hyper's
//!   `header_read_timeout`, from the first byte awaited;
//! - **idle between requests, any protocol** (an HTTP/2 connection that
//!   keeps answering pings but sends nothing): closed after `idle_timeout`
//!   with no request in flight; a request in flight (its response body
//!   included) keeps it open;
//! - **dead HTTP/2 peer**: keep-alive pings every
//!   `http2_keep_alive_interval`, closed when one is not acknowledged
//!   within `http2_keep_alive_timeout`;
//! - **too many streams**: `http2_max_concurrent_streams` per connection;
//! - **too many connections**: at most `max_connections` open; over the
//!   cap the loop stops accepting, so new connections wait in the kernel's
//!   listen backlog (not refused) until one closes, which the timeouts
//!   above guarantee.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use parking_lot::Mutex;
use tokio::{net::TcpListener, sync::Semaphore, time::Instant};

use crate::config::ServerConfig;

pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    cfg: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(cfg.http2_keep_alive_interval)
        .keep_alive_timeout(cfg.http2_keep_alive_timeout)
        .max_concurrent_streams(cfg.http2_max_concurrent_streams);
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // Over the cap, stop accepting: new connections wait in the listen
        // backlog until an open one closes.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let service = TowerToHyperService::new(Tracked {
            app: app.clone(),
            activity: activity.clone(),
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let limits = (cfg.header_read_timeout, cfg.idle_timeout);
        tokio::spawn(async move {
            tokio::select! {
                result = conn => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = activity.idle_past(limits) => {
                    // Nothing in flight: dropping the connection loses no
                    // request, and the client learns by the close.
                    tracing::debug!("closing an idle connection");
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    let grace = cfg.shutdown_grace;
    tracing::info!(?grace, "shutting down: draining in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
}

/// Requests of one connection: how many are in flight (until their
/// response body ends), whether any started, and since when it is idle.
struct Activity {
    in_flight: AtomicUsize,
    /// Since when nothing is in flight, and whether a request ever was:
    /// until the first one, the connection is held to the header timeout
    /// from when it opened.
    idle_since: Mutex<(Instant, bool)>,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new((Instant::now(), false)),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Resolves once the connection has had no request in flight for its
    /// limit: `first` from when it opened until a request started,
    /// `idle` after that.
    async fn idle_past(&self, (first, idle): (Duration, Duration)) {
        loop {
            let (deadline, limit, busy) = {
                // Read together: a request ending updates both under the lock.
                let idle_since = self.idle_since.lock();
                let (since, served) = *idle_since;
                let limit = if served { idle } else { first };
                (
                    since + limit,
                    limit,
                    self.in_flight.load(Ordering::SeqCst) > 0,
                )
            };
            if !busy && Instant::now() >= deadline {
                return;
            }
            // Busy or not yet due: look again at the deadline (or, while a
            // request is in flight, a limit later).
            let next = if Instant::now() >= deadline {
                Instant::now() + limit
            } else {
                deadline
            };
            tokio::time::sleep_until(next).await;
        }
    }
}

/// One request in flight; its drop (the response body ended or was
/// dropped) makes the connection idle from then if it was the last.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut idle_since = self.0.idle_since.lock();
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *idle_since = (Instant::now(), true);
        } else {
            idle_since.1 = true;
        }
    }
}

/// The app, counting each request in flight on its connection.
#[derive(Clone)]
struct Tracked {
    app: axum::Router,
    activity: Arc<Activity>,
}

impl tower::Service<http::Request<Incoming>> for Tracked {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let app = self.app.clone();
        Box::pin(async move {
            let response = tower::ServiceExt::oneshot(app, request).await?;
            Ok(response.map(|body| {
                Body::new(Counted {
                    body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response body that holds its request's [`InFlight`] until it ends.
struct Counted {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::SocketAddr,
        time::{Duration, Instant},
    };

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    use super::*;
    use crate::config::Config;

    const GET: &[u8] = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";

    /// The accept loop on a loopback port with this `[server]` table,
    /// serving `GET /health`.
    async fn start(server: &str) -> SocketAddr {
        let text = format!("[auth]\nenabled = false\n[server]\n{server}");
        let config = Config::parse(&text).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move {
            serve(listener, app, &config.server, std::future::pending()).await;
        });
        addr
    }

    /// Whether the server closed the connection (EOF or reset) by `deadline`.
    async fn closed_by(conn: &mut TcpStream, deadline: Instant) -> bool {
        let mut buf = [0u8; 512];
        loop {
            let read = tokio::time::timeout_at(deadline.into(), conn.read(&mut buf)).await;
            match read {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                // A 408 or another answer before the close.
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Sends one request on a new connection; the time to the answer.
    async fn get(addr: SocketAddr) -> Duration {
        let start = Instant::now();
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(GET).await.unwrap();
        let mut buf = [0u8; 512];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        start.elapsed()
    }

    #[tokio::test]
    async fn a_connection_that_starts_no_request_is_closed_after_the_header_timeout() {
        let addr = start("header_read_timeout_ms = 300\n").await;
        let mut conns = Vec::new();
        for prefix in [&b""[..], b"PRI * HTTP/2.0\r\n", b"GET /health HTTP/1.1\r\n"] {
            for _ in 0..5 {
                let mut conn = TcpStream::connect(addr).await.unwrap();
                conn.write_all(prefix).await.unwrap();
                conns.push((prefix, conn));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (prefix, conn) in &mut conns {
            let sent = String::from_utf8_lossy(prefix);
            assert!(closed_by(conn, deadline).await, "still open after {sent:?}");
        }
    }

    #[tokio::test]
    async fn slowloris_leaves_the_server_serving_others_and_is_closed() {
        let addr = start("header_read_timeout_ms = 2000\n").await;
        let mut idle = Vec::new();
        for _ in 0..2000 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // 200 clients sending a request head one byte a second.
        let mut trickling = Vec::new();
        for _ in 0..200 {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            trickling.push(tokio::spawn(async move {
                for byte in GET {
                    if conn.write_all(&[*byte]).await.is_err() {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                false
            }));
        }
        for _ in 0..5 {
            let took = get(addr).await;
            assert!(took < Duration::from_secs(1), "an answer took {took:?}");
        }
        let deadline = Instant::now() + Duration::from_secs(6);
        for conn in &mut idle {
            assert!(
                closed_by(conn, deadline).await,
                "an idle connection is open"
            );
        }
        for task in trickling {
            assert!(task.await.unwrap(), "a trickling connection stayed open");
        }
    }

    #[tokio::test]
    async fn over_max_connections_new_connections_wait_for_a_free_slot() {
        let addr = start("header_read_timeout_ms = 1000\nmax_connections = 2\n").await;
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The third waits in the backlog until the silent two are closed.
        let took = get(addr).await;
        assert!(
            took >= Duration::from_millis(600),
            "answered over the cap: {took:?}"
        );
        assert!(took < Duration::from_secs(3), "never served: {took:?}");
    }
}
