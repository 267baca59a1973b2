//! Events per second from the write-ahead log into ClickHouse.
//!
//! `cargo bench -p flywheel-feedback --bench ship` (ClickHouse from
//! `scripts/services.sh start`; `FLYWHEEL_CLICKHOUSE_URL` overrides).
//! `SHIP_RECORDS` (default 200000) sets the number of inference events;
//! `SHIP_BODIES=1` adds ~1 KB request/response bodies to each;
//! `SHIP_BATCH_ROWS` / `SHIP_BATCH_MB` override the shipper's batch limits;
//! `RUST_LOG=flywheel_feedback=debug` prints per-batch phase timings.
//! Prints append and ship rates; the shipping rate counts inference events
//! (each with one attempt row) from the first shipment until the log is
//! empty.

// Test code: a failed unwrap is a failed test. clippy.toml lets `#[test]`
// functions unwrap; this extends that to the helpers here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use flywheel_feedback::{Record, Shipper, ShipperConfig, Wal, WalConfig};

fn main() {
    let n: usize = env_or("SHIP_RECORDS", 200_000);
    let bodies = std::env::var("SHIP_BODIES").is_ok_and(|v| v == "1");
    // `RUST_LOG=flywheel_feedback=debug` shows the shipper's per-segment
    // phase timings (read, mark, insert).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let store = common::migrated_store("bench").await;
        let wal = Arc::new(Wal::open(dir.path(), WalConfig::default()).unwrap());
        let mut records = common::records(n, 1_700_000_000_000, "chat", "a");
        if bodies {
            for r in &mut records {
                if let Record::Inference(e) = r {
                    e.request_body = Some(format!("{{\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}", "x".repeat(400)));
                    e.response_body = Some(format!("{{\"choices\":[{{\"message\":{{\"content\":\"{}\"}}}}]}}", "y".repeat(400)));
                }
            }
        }
        let t = Instant::now();
        for chunk in records.chunks(100) {
            wal.append(chunk).unwrap();
        }
        let append = t.elapsed();
        let mb = wal.stats().bytes_on_disk as f64 / 1e6;
        let cpu0 = cpu_seconds();
        let t = Instant::now();
        let shipper = Shipper::spawn(
            Arc::clone(&wal),
            store.clone(),
            ShipperConfig {
                migrate: false,
                max_segment_age: Duration::ZERO,
                batch_rows: env_or("SHIP_BATCH_ROWS", ShipperConfig::default().batch_rows),
                batch_bytes: env_or("SHIP_BATCH_MB", ShipperConfig::default().batch_bytes >> 20) << 20,
                ..ShipperConfig::default()
            },
        );
        while wal.stats().records_pending > 0 {
            assert!(t.elapsed() < Duration::from_secs(600), "shipping stalled: {:?}", shipper.stats());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ship = t.elapsed();
        let cpu = cpu_seconds().zip(cpu0).map(|(b, a)| format!(", shipper CPU {:.2} s", b - a)).unwrap_or_default();
        println!(
            "{n} inference events, bodies {}, {mb:.1} MB of log: append {:.0} events/s, ship {:.0} events/s ({:.2} s{cpu})",
            if bodies { "on" } else { "off" },
            n as f64 / append.as_secs_f64(),
            n as f64 / ship.as_secs_f64(),
            ship.as_secs_f64()
        );
        shipper.shutdown(Duration::from_secs(1)).await;
        common::drop_db(&store).await;
    });
}

/// User + system CPU time of this process (Linux `/proc`; assumes 100
/// ticks per second), to tell the shipper's own cost from a busy box.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
