//! Events per second from the write-ahead log into ClickHouse.
//!
//! `cargo bench -p flywheel-feedback --bench ship` (ClickHouse from
//! `scripts/services.sh start`; `FLYWHEEL_CLICKHOUSE_URL` overrides).
//! `SHIP_RECORDS` (default 200000) sets the number of inference events;
//! `SHIP_BODIES=1` adds ~1 KB request/response bodies to each.
//! Prints append and ship rates; the shipping rate counts inference events
//! (each with one attempt row) from the first shipment until the log is
//! empty.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use flywheel_feedback::{Record, Shipper, ShipperConfig, Wal, WalConfig};

fn main() {
    let n: usize = std::env::var("SHIP_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let bodies = std::env::var("SHIP_BODIES").is_ok_and(|v| v == "1");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
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
        let t = Instant::now();
        let shipper = Shipper::spawn(
            Arc::clone(&wal),
            store.clone(),
            ShipperConfig { migrate: false, max_segment_age: Duration::ZERO, ..ShipperConfig::default() },
        );
        while wal.stats().records_pending > 0 {
            assert!(t.elapsed() < Duration::from_secs(600), "shipping stalled: {:?}", shipper.stats());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ship = t.elapsed();
        println!(
            "{n} inference events, bodies {}, {mb:.1} MB of log: append {:.0} events/s, ship {:.0} events/s ({:.2} s)",
            if bodies { "on" } else { "off" },
            n as f64 / append.as_secs_f64(),
            n as f64 / ship.as_secs_f64(),
            ship.as_secs_f64()
        );
        shipper.shutdown(Duration::from_secs(1)).await;
        common::drop_db(&store).await;
    });
}
