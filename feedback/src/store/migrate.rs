//! Numbered schema migrations (`feedback/migrations/NNNN_name.sql`, embedded
//! in the binary) and their runner.
//!
//! The runner creates the database and `schema_migrations` if needed, then
//! applies, in order, each migration whose version is not recorded there,
//! and records it. Every statement is idempotent on its own (`IF NOT
//! EXISTS`; `ADD COLUMN` is skipped when `system.columns` already has the
//! column, since 18.16 has no `ADD COLUMN IF NOT EXISTS`), so a run that
//! died half-way, or two gateways migrating at once, converge.
//!
//! Migration files: statements end with `;`, lines starting with `--` are
//! comments, `{db}` is replaced by the database name (the HTTP `database`
//! parameter does not reach materialized views' inner queries on 18.16,
//! so every name is qualified), at most one `ADD COLUMN` per `ALTER`.

use super::{check_identifier, timed, Result, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// All migrations, in version order. Never edit an applied one: add a new
/// file.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sql: include_str!("../../migrations/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "rollups",
        sql: include_str!("../../migrations/0002_rollups.sql"),
    },
    Migration {
        version: 3,
        name: "retained",
        sql: include_str!("../../migrations/0003_retained.sql"),
    },
    Migration {
        version: 4,
        name: "tuner",
        sql: include_str!("../../migrations/0004_tuner.sql"),
    },
    Migration {
        version: 5,
        name: "canary",
        sql: include_str!("../../migrations/0005_canary.sql"),
    },
    Migration {
        version: 6,
        name: "shadow",
        sql: include_str!("../../migrations/0006_shadow.sql"),
    },
    Migration {
        version: 7,
        name: "canary_unload",
        sql: include_str!("../../migrations/0007_canary_unload.sql"),
    },
    Migration {
        version: 8,
        name: "dashboards",
        sql: include_str!("../../migrations/0008_dashboards.sql"),
    },
    Migration {
        version: 9,
        name: "episodes",
        sql: include_str!("../../migrations/0009_episodes.sql"),
    },
];

/// The statements of a migration file, `{db}` substituted.
pub fn statements(sql: &str, db: &str) -> Vec<String> {
    let without_comments: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.replace("{db}", db))
        .collect()
}

/// `(table, column)` when `stmt` is `ALTER TABLE [db.]table ADD COLUMN column ...`.
pub fn add_column_target(stmt: &str) -> Option<(String, String)> {
    let words: Vec<&str> = stmt.split_whitespace().collect();
    let is = |i: usize, w: &str| words.get(i).is_some_and(|x| x.eq_ignore_ascii_case(w));
    if !(is(0, "ALTER") && is(1, "TABLE") && is(3, "ADD") && is(4, "COLUMN")) {
        return None;
    }
    let table = words[2].rsplit('.').next()?.trim_matches('`').to_owned();
    let column = words.get(5)?.trim_matches('`').to_owned();
    Some((table, column))
}

impl Store {
    /// Applies the migrations of this crate; returns the versions applied by
    /// this call (empty when the schema was up to date).
    pub async fn migrate(&self) -> Result<Vec<u32>> {
        self.migrate_with(MIGRATIONS).await
    }

    /// Applies `migrations` (sorted by version) that are not recorded yet.
    pub async fn migrate_with(&self, migrations: &[Migration]) -> Result<Vec<u32>> {
        let db = self.database();
        check_identifier(db)?;
        let system = self.client().clone().with_database("system");
        timed(
            "create database",
            system
                .query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
                .execute(),
        )
        .await?;
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations \
             (version UInt32, name String, applied_ms UInt64) \
             ENGINE = ReplacingMergeTree() ORDER BY version"
        );
        timed(
            "create schema_migrations",
            self.client().query(&ddl).execute(),
        )
        .await?;
        let applied: Vec<u32> = self
            .applied_migrations()
            .await?
            .into_iter()
            .map(|(v, _)| v)
            .collect();

        let mut done = Vec::new();
        for m in migrations {
            if applied.contains(&m.version) {
                continue;
            }
            for stmt in statements(m.sql, db) {
                let adds = add_column_target(&stmt);
                if let Some((table, column)) = &adds {
                    if self.has_column(table, column).await? {
                        continue;
                    }
                }
                if let Err(source) = self.client().query(&stmt).execute().await {
                    // Services that start together (gateway, controller,
                    // tuner) migrate at once: another one may have added
                    // the column between the check and the ALTER.
                    if let Some((table, column)) = &adds {
                        if self.has_column(table, column).await? {
                            continue;
                        }
                    }
                    return Err(StoreError::Migration {
                        version: m.version,
                        name: m.name,
                        source,
                    });
                }
            }
            let record = format!(
                "INSERT INTO {db}.schema_migrations (version, name, applied_ms) VALUES (?, ?, ?)"
            );
            timed(
                "record migration",
                self.client()
                    .query(&record)
                    .bind(m.version)
                    .bind(m.name)
                    .bind(crate::now_ms())
                    .execute(),
            )
            .await?;
            tracing::info!(
                database = db,
                version = m.version,
                name = m.name,
                "migration applied"
            );
            done.push(m.version);
        }
        Ok(done)
    }

    /// `(version, name)` of the applied migrations, ascending.
    pub async fn applied_migrations(&self) -> Result<Vec<(u32, String)>> {
        let sql = format!(
            "SELECT version, name FROM {}.schema_migrations FINAL ORDER BY version",
            self.database()
        );
        timed(
            "applied migrations",
            self.client().query(&sql).fetch_all::<(u32, String)>(),
        )
        .await
    }

    async fn has_column(&self, table: &str, column: &str) -> Result<bool> {
        let n = timed(
            "system.columns",
            self.client()
                .query("SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?")
                .bind(self.database())
                .bind(table)
                .bind(column)
                .fetch_one::<u64>(),
        )
        .await?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_substitutes() {
        let s = statements(
            "-- c;omment\nCREATE TABLE {db}.a (x UInt8) ENGINE = Log;\n\nSELECT 1;\n",
            "d",
        );
        assert_eq!(
            s,
            vec!["CREATE TABLE d.a (x UInt8) ENGINE = Log", "SELECT 1"]
        );
        for m in MIGRATIONS {
            assert!(!statements(m.sql, "x").is_empty());
        }
    }

    #[test]
    fn detects_add_column() {
        assert_eq!(
            add_column_target("alter table db.t ADD  COLUMN c Int8 DEFAULT 0"),
            Some(("t".into(), "c".into()))
        );
        assert_eq!(add_column_target("ALTER TABLE t DROP COLUMN c"), None);
    }
}
