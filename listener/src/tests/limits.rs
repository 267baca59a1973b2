//! Connections that misbehave in plain HTTP: silent, trickling, too many.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::closed_by;
use crate::Limits;

const GET: &[u8] = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";

/// The accept loop on a loopback port with these limits, serving
/// `GET /health`.
async fn start(limits: Limits) -> SocketAddr {
    super::start(limits, None).await
}

/// The default limits with this header timeout.
fn header_timeout(ms: u64) -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(ms),
        ..Limits::default()
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
    let addr = start(header_timeout(300)).await;
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
    let addr = start(header_timeout(2000)).await;
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
    let addr = start(Limits {
        max_connections: 2,
        ..header_timeout(1000)
    })
    .await;
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
