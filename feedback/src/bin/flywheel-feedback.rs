//! `flywheel-feedback`: schema migrations, retention and WAL inspection.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use flywheel_feedback::{
    retention,
    store::{Store, StoreConfig},
    wal, Record,
};

#[derive(Parser)]
#[command(
    name = "flywheel-feedback",
    about = "Flywheel capture: migrations, retention, WAL inspection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Conn {
    /// ClickHouse HTTP URL.
    #[arg(
        long,
        env = "FLYWHEEL_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    url: String,
    #[arg(long, env = "FLYWHEEL_CLICKHOUSE_DATABASE", default_value = "flywheel")]
    database: String,
    #[arg(long, env = "FLYWHEEL_CLICKHOUSE_USER")]
    user: Option<String>,
    #[arg(long, env = "FLYWHEEL_CLICKHOUSE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

impl Conn {
    fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::try_new(&StoreConfig {
            url: self.url.clone(),
            database: self.database.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
        })?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Creates the database and applies pending schema migrations.
    Migrate {
        #[command(flatten)]
        conn: Conn,
    },
    /// Drops month partitions older than N days, keeping inferences with
    /// feedback or training usage (copied to the *_retained tables).
    Retention {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        older_than_days: u32,
        /// Print what would be dropped and kept; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Prints a summary of each segment of a write-ahead log directory, with
    /// the ids of the keys its sealed segments were written with.
    WalInspect {
        dir: PathBuf,
        /// Key files (64 hex digits) that open sealed segments, as in
        /// `capture.encryption_key_file` and `encryption_old_key_files`;
        /// repeat for several. Without one, sealed segments show their key
        /// ids only.
        #[arg(long = "key-file")]
        key_files: Vec<PathBuf>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Migrate { conn } => {
            let store = conn.store()?;
            let applied = store.migrate().await.context("migration failed")?;
            let all = store.applied_migrations().await?;
            println!(
                "database {}: applied now {:?}; schema at {:?}",
                store.database(),
                applied,
                all
            );
        }
        Command::Retention {
            conn,
            older_than_days,
            dry_run,
        } => {
            let store = conn.store()?;
            let report = retention::run_retention(&store, older_than_days, dry_run).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::WalInspect { dir, key_files } => match wal_inspect(&dir, &key_files) {
            // `wal-inspect DIR | head` is fine.
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {}
            r => r?,
        },
    }
    Ok(())
}

fn wal_inspect(dir: &std::path::Path, key_files: &[PathBuf]) -> anyhow::Result<()> {
    use std::io::Write;
    let keys = match key_files.split_first() {
        None => None,
        Some((current, old)) => {
            let cfg = flywheel_feedback::CaptureConfig {
                encryption_key_file: Some(current.clone()),
                encryption_old_key_files: old.to_vec(),
                ..Default::default()
            };
            cfg.keyring_with(|var| std::env::var(var))
                .map_err(anyhow::Error::msg)?
        }
    };
    let segments = wal::list_segments(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:>20}  {:>10}  {:>8}  {:>8}  {:>13}  {:>13}  status",
        "segment", "bytes", "infer", "feedback", "min_ts_ms", "max_ts_ms"
    )?;
    let (mut total_bytes, mut total_records) = (0u64, 0usize);
    let show = |t: Option<u64>| t.map_or("-".into(), |t| t.to_string());
    for (seq, path) in segments {
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        total_bytes += bytes;
        let (inf, fb, min, max, status) = if bytes < wal::frame::HEADER_LEN as u64 {
            (
                0,
                0,
                None,
                None,
                "empty: created just before a crash (removed on open)".to_owned(),
            )
        } else {
            let sealed = match wal::segment_key_ids(&path) {
                Ok(Some(ids)) => format!(
                    " (sealed, key {})",
                    ids.into_iter().collect::<Vec<_>>().join(", ")
                ),
                _ => String::new(),
            };
            match wal::read_segment(&path, keys.as_deref()) {
                Ok(c) => {
                    let inf = c
                        .records
                        .iter()
                        .filter(|r| matches!(r, Record::Inference(_)))
                        .count();
                    total_records += c.records.len();
                    let status = if c.is_damaged() {
                        format!(
                            "damaged: {} corrupt bytes, {} undecodable{sealed}",
                            c.corrupt_bytes, c.undecodable
                        )
                    } else {
                        format!("ok{sealed}")
                    };
                    let ts = || c.records.iter().map(|r| r.ts_ms());
                    (inf, c.records.len() - inf, ts().min(), ts().max(), status)
                }
                Err(e) => (0, 0, None, None, format!("error: {e}{sealed}")),
            }
        };
        writeln!(
            out,
            "{seq:>20}  {bytes:>10}  {inf:>8}  {fb:>8}  {:>13}  {:>13}  {status}",
            show(min),
            show(max)
        )?;
    }
    writeln!(out, "total: {total_bytes} bytes, {total_records} records")?;
    Ok(())
}
