//! Accept loop of the mock: plain hyper (HTTP/1.1 and h2c) on a
//! multi-threaded tokio runtime, one task per connection.

use std::{io::Write, net::SocketAddr, sync::Arc};

use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

use super::{handlers::handle, state::MockState};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot announce the listening address: {0}")]
    Announce(std::io::Error),
}

/// Binds `addr` and prints `listening on ADDR` as the first stdout line
/// (tests that start the mock on port 0 read the real port from it).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {local}").map_err(ServeError::Announce)?;
    out.flush().map_err(ServeError::Announce)?;
    Ok(listener)
}

/// Serves connections forever.
pub async fn serve(listener: TcpListener, state: Arc<MockState>) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Typically EMFILE under extreme load: back off briefly
                // instead of spinning, and keep serving.
                eprintln!("flywheel-mock: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // Small SSE chunks must leave immediately, not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            // Connection errors (including our injected cuts) are expected.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
