//! TLS: HTTP/1 and HTTP/2 by ALPN, a stalled handshake, plain HTTP on a
//! TLS port, and files that cannot serve.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{client::TlsStream, TlsConnector};

use super::{closed_by, start};
use crate::{Limits, Tls, TlsArgs, TlsError};

/// A test-only file (`testdata/make.sh`).
fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn server_tls() -> Tls {
    Tls::load(&testdata("server.pem"), &testdata("server.key")).unwrap()
}

/// A TLS connection that trusts the test CA, offering `alpn`.
async fn connect(addr: std::net::SocketAddr, alpn: &[u8]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(testdata("ca.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

fn health() -> http::Request<Empty<Bytes>> {
    http::Request::get("https://localhost/health")
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap()
}

async fn text(response: http::Response<hyper::body::Incoming>) -> (u16, String) {
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn https_serves_http2_and_http1_as_the_client_negotiates() {
    let addr = start(Limits::default(), Some(server_tls())).await;

    let tls = connect(addr, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(health()).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(text(response).await, (200, "ok".into()));

    let tls = connect(addr, b"http/1.1").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(health()).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_11);
    assert_eq!(text(response).await, (200, "ok".into()));
}

#[tokio::test]
async fn a_client_that_stalls_in_the_handshake_is_closed_after_the_header_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let addr = start(limits, Some(server_tls())).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // The first bytes of a ClientHello record, then nothing.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    assert!(
        closed_by(&mut silent, deadline).await,
        "a silent client stayed"
    );
    assert!(
        closed_by(&mut partial, deadline).await,
        "a stalled handshake stayed"
    );
    // The listener still serves.
    let tls = connect(addr, b"http/1.1").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(
        text(sender.send_request(health()).await.unwrap()).await.0,
        200
    );
}

#[tokio::test]
async fn plain_http_on_a_tls_port_gets_no_answer_and_is_closed() {
    let addr = start(Limits::default(), Some(server_tls())).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection was left open");
    assert!(
        !got.starts_with(b"HTTP/"),
        "answered in plain HTTP: {got:?}"
    );
}

#[test]
fn files_that_cannot_serve_are_refused_at_load_with_the_reason() {
    let missing = Tls::load(&testdata("nope.pem"), &testdata("server.key")).unwrap_err();
    assert!(matches!(missing, TlsError::Cert { .. }), "{missing}");
    assert!(missing.to_string().contains("nope.pem"), "{missing}");

    // A key where the certificate should be.
    let no_cert = Tls::load(&testdata("server.key"), &testdata("server.key")).unwrap_err();
    assert!(matches!(no_cert, TlsError::NoCert { .. }), "{no_cert}");

    // A certificate where the key should be.
    let no_key = Tls::load(&testdata("server.pem"), &testdata("server.pem")).unwrap_err();
    assert!(matches!(no_key, TlsError::Key { .. }), "{no_key}");

    let other = Tls::load(&testdata("server.pem"), &testdata("other.key")).unwrap_err();
    assert!(matches!(other, TlsError::Config { .. }), "{other}");

    let half = TlsArgs {
        tls_cert: Some(testdata("server.pem")),
        tls_key: None,
    };
    assert!(matches!(half.load(), Err(TlsError::Half("--tls-cert"))));
    assert!(TlsArgs::default().load().unwrap().is_none());
}

/// Whether a client that trusts only `ca` completes a handshake with `addr`.
async fn trusted_by(addr: std::net::SocketAddr, ca: &str) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(testdata(ca)).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .is_ok()
}

/// A private copy of `server.pem` and `server.key` that a test may rotate.
fn rotatable(test: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("flywheel-tls-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(testdata("server.pem"), &cert).unwrap();
    std::fs::copy(testdata("server.key"), &key).unwrap();
    (cert, key)
}

#[tokio::test]
async fn a_rotated_certificate_reaches_new_connections_and_a_half_done_rotation_changes_nothing() {
    let (cert, key) = rotatable("reload");
    let tls = Tls::load(&cert, &key).unwrap();
    let addr = start(Limits::default(), Some(tls.clone())).await;
    assert!(trusted_by(addr, "ca.pem").await);
    assert!(!trusted_by(addr, "rotated-ca.pem").await);
    assert!(!tls.reload().unwrap(), "unchanged files reloaded");

    // A connection opened before the rotation.
    let before = connect(addr, b"http/1.1").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(before))
        .await
        .unwrap();
    tokio::spawn(conn);

    // The certificate is replaced before its key: that pair cannot serve,
    // and the listener keeps the one it has.
    std::fs::copy(testdata("rotated.pem"), &cert).unwrap();
    let half = tls.reload().unwrap_err();
    assert!(matches!(half, TlsError::Config { .. }), "{half}");
    assert!(trusted_by(addr, "ca.pem").await);
    assert!(!tls.reload().unwrap(), "the same bad pair was parsed again");

    std::fs::copy(testdata("rotated.key"), &key).unwrap();
    assert!(tls.reload().unwrap());
    assert!(trusted_by(addr, "rotated-ca.pem").await);
    assert!(!trusted_by(addr, "ca.pem").await);
    // The connection from before keeps its session.
    assert_eq!(
        text(sender.send_request(health()).await.unwrap()).await.0,
        200
    );
}

#[tokio::test]
async fn a_serving_listener_rereads_its_certificate_files_by_itself() {
    let (cert, key) = rotatable("watch");
    let tls = Tls::load(&cert, &key)
        .unwrap()
        .with_reload_every(Duration::from_millis(50));
    let addr = start(Limits::default(), Some(tls)).await;
    assert!(trusted_by(addr, "ca.pem").await);
    std::fs::copy(testdata("rotated.key"), &key).unwrap();
    std::fs::copy(testdata("rotated.pem"), &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !trusted_by(addr, "rotated-ca.pem").await {
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
