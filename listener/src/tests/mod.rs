//! The accept loop on a loopback port, driven by raw sockets and a TLS
//! client: one file per concern.

mod limits;
mod tls;

use std::{net::SocketAddr, time::Instant};

use tokio::{
    io::{AsyncRead, AsyncReadExt},
    net::TcpListener,
};

use crate::{serve, Limits, Tls};

/// The accept loop on a loopback port, serving `GET /health`.
async fn start(limits: Limits, tls: Option<Tls>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move {
        serve(listener, app, &limits, tls.as_ref(), std::future::pending()).await;
    });
    addr
}

/// Whether the server closed the connection (EOF or reset) by `deadline`.
async fn closed_by(conn: &mut (impl AsyncRead + Unpin), deadline: Instant) -> bool {
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
