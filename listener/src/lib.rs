//! The accept loop every Flywheel HTTP listener shares (the gateway, the
//! engine, the reward server, the dashboards): hyper connections (HTTP/1
//! or HTTP/2, detected per connection, or chosen by ALPN under TLS) with
//! bounded lifetimes, a cap on open connections, optional TLS, and a
//! bounded graceful shutdown that drains in-flight requests.
//!
//! What bounds a connection that does not behave ([`Limits`]):
//! - **silent or trickling before its first request** (the TLS handshake,
//!   the HTTP/1-vs-2 detection read and the HTTP/2 handshake, none of which
//!   hyper times out): closed `header_read_timeout` after it opened;
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
//!
//! Under TLS ([`Tls`]) the handshake runs on the connection's own task, so
//! a client that stalls in it holds one slot, never the accept loop; the
//! certificate files are reread while serving (every 10 s and on SIGHUP), so
//! a rotated certificate needs no restart.

mod activity;
mod tls;

#[cfg(test)]
mod tests;

use std::{future::Future, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
};

use crate::activity::{Activity, Tracked};
pub use crate::tls::{Tls, TlsArgs, TlsError, RELOAD_EVERY};

/// How long and how many connections may stay open; see the crate docs
/// for what each bounds.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Greater than 0; also bounds a connection's wait for its first
    /// request (TLS handshake included).
    pub header_read_timeout: Duration,
    /// Greater than 0.
    pub idle_timeout: Duration,
    /// In 1..=`Semaphore::MAX_PERMITS`.
    pub max_connections: usize,
    /// `None` = no HTTP/2 pings.
    pub http2_keep_alive_interval: Option<Duration>,
    pub http2_keep_alive_timeout: Duration,
    /// Greater than 0.
    pub http2_max_concurrent_streams: u32,
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    /// The gateway's documented `[server]` defaults; the engine, the reward
    /// server and the dashboards use them as they are.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: 4_096,
            http2_keep_alive_interval: Some(Duration::from_secs(20)),
            http2_keep_alive_timeout: Duration::from_secs(10),
            http2_max_concurrent_streams: 128,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains the
/// requests in flight for at most `limits.shutdown_grace`. With `tls`,
/// every connection is TLS (no plaintext fallback on the same port).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: &Limits,
    tls: Option<&Tls>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keep_alive_interval)
        .keep_alive_timeout(limits.http2_keep_alive_timeout)
        .max_concurrent_streams(limits.http2_max_concurrent_streams);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // Certificate rotation: rereads the files beside the accept loop.
    let reloader = tls.map(|tls| tokio::spawn(tls.clone().watch()));
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
        let service = Tracked::new(app.clone(), activity.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = tls.map(Tls::acceptor);
        let limits = (limits.header_read_timeout, limits.idle_timeout);
        tokio::spawn(async move {
            let conn = async move {
                match acceptor {
                    None => drive(&builder, watcher, stream, service).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => drive(&builder, watcher, stream, service).await,
                        Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
                    },
                }
            };
            tokio::select! {
                () = conn => {}
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
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    let grace = limits.shutdown_grace;
    tracing::info!(?grace, "shutting down: draining in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
}

/// [`serve`] with the default [`Limits`] until SIGINT or SIGTERM: the
/// engine's, the reward server's and the dashboards' listener.
pub async fn serve_until_signal(listener: TcpListener, app: axum::Router, tls: Option<&Tls>) {
    serve(listener, app, &Limits::default(), tls, shutdown_signal()).await;
}

/// One connection, plain or TLS, under graceful shutdown.
async fn drive<I>(builder: &auto::Builder<TokioExecutor>, watcher: Watcher, io: I, service: Tracked)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Resolves on SIGINT or SIGTERM. A signal that cannot be listened for is
/// logged and never fires (it must not read as a request to stop).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
