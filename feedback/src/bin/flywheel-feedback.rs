//! `flywheel-feedback`: schema migrations, retention and WAL inspection.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use flywheel_feedback::store::{Store, StoreConfig};
use flywheel_feedback::{retention, wal};

#[derive(Parser)]
#[command(name = "flywheel-feedback", about = "Flywheel capture: migrations, retention, WAL inspection")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Conn {
    /// ClickHouse HTTP URL.
    #[arg(long, env = "FLYWHEEL_CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
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
    /// Prints a summary of each segment of a write-ahead log directory.
    WalInspect { dir: PathBuf },
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
            println!("database {}: applied now {:?}; schema at {:?}", store.database(), applied, all);
        }
        Command::Retention { conn, older_than_days, dry_run } => {
            let store = conn.store()?;
            let report = retention::run_retention(&store, older_than_days, dry_run).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::WalInspect { dir } => wal_inspect(&dir)?,
    }
    Ok(())
}

fn wal_inspect(dir: &std::path::Path) -> anyhow::Result<()> {
    let segments = wal::list_segments(dir).with_context(|| format!("listing {}", dir.display()))?;
    println!("{:>20}  {:>10}  {:>8}  {:>8}  {:>13}  {:>13}  status", "segment", "bytes", "infer", "feedback", "min_ts_ms", "max_ts_ms");
    let (mut total_bytes, mut total_records) = (0u64, 0usize);
    for (seq, path) in segments {
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        total_bytes += bytes;
        match wal::read_segment(&path) {
            Ok(c) => {
                let inf = c.records.iter().filter(|r| matches!(r, flywheel_feedback::Record::Inference(_))).count();
                let min = c.records.iter().map(|r| r.ts_ms()).min();
                let max = c.records.iter().map(|r| r.ts_ms()).max();
                total_records += c.records.len();
                let status = if c.is_damaged() {
                    format!("damaged: {} corrupt bytes, {} undecodable", c.corrupt_bytes, c.undecodable)
                } else {
                    "ok".into()
                };
                let show = |t: Option<u64>| t.map_or("-".into(), |t| t.to_string());
                println!(
                    "{seq:>20}  {bytes:>10}  {inf:>8}  {:>8}  {:>13}  {:>13}  {status}",
                    c.records.len() - inf,
                    show(min),
                    show(max)
                );
            }
            Err(e) => println!("{seq:>20}  {bytes:>10}  {:>8}  {:>8}  {:>13}  {:>13}  error: {e}", "-", "-", "-", "-"),
        }
    }
    println!("total: {total_bytes} bytes, {total_records} records");
    Ok(())
}
