//! The database's own ceiling: pgbench running the server's per-report statements
//! (`bench/pgbench-transition*.sql`) on a scratch database with buildstate's schema, one build
//! row per client, measured over the same warm-up and window as the server.
//!
//! pgbench's per-transaction log (`-l`) gives every transaction's end time and latency, so its
//! throughput and percentiles are computed over the same window, the same way, as ours.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::process::Command;

use crate::postgres::{AdminUrl, Psql, ScratchDatabase};
use crate::procfs::{CpuSnapshot, CpuUse};

/// The schema the server's migrations create, applied to pgbench's scratch database.
const POSTGRES_SCHEMA: &str =
    include_str!("../../crates/server/migrations/postgres/0001_initial.sql");

/// A pgbench script: what the server does per report, with or without the token lookup.
#[derive(Debug, Clone, Copy)]
pub struct Script {
    pub name: &'static str,
    pub file_name: &'static str,
    pub sql: &'static str,
}

pub const TRANSITION: Script = Script {
    name: "transition",
    file_name: "pgbench-transition.sql",
    sql: include_str!("../pgbench-transition.sql"),
};

pub const TRANSITION_WITH_AUTH: Script = Script {
    name: "transition+auth",
    file_name: "pgbench-transition-with-auth.sql",
    sql: include_str!("../pgbench-transition-with-auth.sql"),
};

/// The token hash the with-auth script looks up (see its header).
const SEEDED_TOKEN_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Creates pgbench's scratch database: buildstate's schema, one user and token, and one build
/// per client up to `max_clients`.
pub fn prepare_database(
    admin: &AdminUrl,
    psql: &Psql,
    work_dir: &Path,
    max_clients: u32,
) -> anyhow::Result<ScratchDatabase> {
    let database = ScratchDatabase::create(
        admin,
        psql,
        &format!("bldst_bench_{}_pgbench", std::process::id()),
    )?;
    let schema = work_dir.join("schema.sql");
    std::fs::write(&schema, POSTGRES_SCHEMA)?;
    psql.execute_file(&database.url, &schema)
        .context("failed to apply buildstate's schema for pgbench")?;
    psql.execute(
        &database.url,
        &format!(
            "INSERT INTO users (id, username, email, role, created_at) \
               VALUES ('u_bench', 'bench', 'bench@example.com', 'admin', 0); \
             INSERT INTO api_tokens (id, user_id, secret_hash, description, scope, created_at) \
               VALUES ('t_benchbenchbenchb', 'u_bench', '{SEEDED_TOKEN_HASH}', 'bldst-bench', \
                       'admin', 0); \
             INSERT INTO builds (id, build_key, platform, image_type, description, labels, state, \
               status, failures, max_retries, next_attempt_at, last_message, last_seq, \
               created_at, updated_at) \
             SELECT 'b_' || lpad(n::text, 20, '0'), NULL, 'aws', 'bench', \
               'bldst-bench client ' || n, '{{}}', 0, 'running', 0, 100, NULL, NULL, 1, 0, 0 \
             FROM generate_series(0, {last}) AS n",
            last = max_clients.saturating_sub(1),
        ),
    )
    .context("failed to seed pgbench's database")?;
    psql.execute(&database.url, "VACUUM ANALYZE")?;
    Ok(database)
}

/// What one pgbench run measured.
#[derive(Debug)]
pub struct PgbenchOutcome {
    /// Transactions that started and finished inside the measured window.
    pub transactions: u64,
    pub latency_micros: Histogram<u64>,
    /// Failed transactions over the whole run (there should be none).
    pub failed: u64,
    /// pgbench's own figure over its whole run, warm-up included, for reference.
    pub reported_tps: Option<f64>,
    pub cpu: CpuUse,
}

/// Runs `script` with `clients` connections for the warm-up plus the window (plus a second,
/// so the window is full), then reads its transaction log.
pub async fn run(
    pgbench: &Path,
    database_url: &str,
    script: Script,
    clients: u32,
    warmup: Duration,
    duration: Duration,
    work_dir: &Path,
) -> anyhow::Result<PgbenchOutcome> {
    let script_path = work_dir.join(script.file_name);
    std::fs::write(&script_path, script.sql)?;
    let log_prefix = format!(
        "log_{}_c{clients}",
        script.file_name.trim_end_matches(".sql")
    );
    for stale in log_files(work_dir, &log_prefix)? {
        std::fs::remove_file(stale)?;
    }
    let seconds = warmup.as_secs() + duration.as_secs() + 1;
    let child = Command::new(pgbench)
        .current_dir(work_dir)
        .args(["--no-vacuum", "--protocol=prepared", "--jobs=1", "--log"])
        .arg(format!("--log-prefix={log_prefix}"))
        .arg(format!("--client={clients}"))
        .arg(format!("--time={seconds}"))
        .arg("--file")
        .arg(&script_path)
        .arg(database_url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("failed to start `{}`", pgbench.display()))?;

    tokio::time::sleep(warmup).await;
    let cpu_from = CpuSnapshot::take(&[])?;
    tokio::time::sleep(duration).await;
    let cpu = cpu_from.until(&CpuSnapshot::take(&[])?);
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .context("pgbench did not finish a minute after its time was up")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed ({}): {}{}",
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );

    let mut records = Vec::new();
    for path in log_files(work_dir, &log_prefix)? {
        let log = std::fs::read_to_string(&path)?;
        for line in log.lines() {
            records.push(parse_log_line(line)?);
        }
        // The next round at this client count writes logs of the same prefix.
        std::fs::remove_file(&path)?;
    }
    let mut outcome = summarize(&records, warmup, duration)?;
    outcome.reported_tps = reported_tps(&stdout);
    outcome.cpu = cpu;
    Ok(outcome)
}

/// pgbench's logs of one run: `PREFIX.PID`, plus `PREFIX.PID.THREAD` for further threads.
fn log_files(work_dir: &Path, log_prefix: &str) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(work_dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(&format!("{log_prefix}."))
        {
            files.push(entry.path());
        }
    }
    Ok(files)
}

/// One line of pgbench's per-transaction log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LogRecord {
    /// `None` for a failed or skipped transaction.
    latency_micros: Option<u64>,
    /// When it finished, in microseconds since the Unix epoch.
    finished_micros: u64,
}

/// `client_id transaction_no time script_no time_epoch time_us [...]`, where `time` is the
/// latency in microseconds, or `failed`/`skipped`.
fn parse_log_line(line: &str) -> anyhow::Result<LogRecord> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let field = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .and_then(|value| value.parse().ok())
            .with_context(|| format!("unexpected pgbench log line `{line}`"))
    };
    Ok(LogRecord {
        latency_micros: fields.get(2).and_then(|value| value.parse().ok()),
        finished_micros: field(4)? * 1_000_000 + field(5)?,
    })
}

/// Counts the transactions inside the window that opens `warmup` after the first one ended.
fn summarize(
    records: &[LogRecord],
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<PgbenchOutcome> {
    let mut latency_micros = Histogram::new_with_bounds(1, 60_000_000, 3)?;
    let first_end = records
        .iter()
        .map(|record| record.finished_micros)
        .min()
        .context("pgbench logged no transaction")?;
    let from = first_end + duration_micros(warmup);
    let to = from + duration_micros(duration);
    let mut transactions = 0;
    let mut failed = 0;
    for record in records {
        let Some(latency) = record.latency_micros else {
            failed += 1;
            continue;
        };
        let started = record.finished_micros.saturating_sub(latency);
        if started >= from && record.finished_micros <= to {
            transactions += 1;
            latency_micros.saturating_record(latency);
        }
    }
    Ok(PgbenchOutcome {
        transactions,
        latency_micros,
        failed,
        reported_tps: None,
        cpu: CpuUse::default(),
    })
}

fn duration_micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// `tps = 1739.457282 (without initial connection time)`
fn reported_tps(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_give_latency_and_end_time() -> anyhow::Result<()> {
        assert_eq!(
            parse_log_line("3 117 4599 0 1764470000 250000")?,
            LogRecord {
                latency_micros: Some(4599),
                finished_micros: 1_764_470_000_250_000
            }
        );
        assert_eq!(
            parse_log_line("0 5 failed 0 1764470001 7 serialization")?.latency_micros,
            None
        );
        assert!(parse_log_line("garbage").is_err());
        Ok(())
    }

    #[test]
    fn only_transactions_wholly_inside_the_window_count() -> anyhow::Result<()> {
        let second = 1_000_000;
        let at = |end: u64, latency: u64| LogRecord {
            latency_micros: Some(latency),
            finished_micros: end,
        };
        let records = [
            at(10 * second, 1_000),         // the first: opens the warm-up
            at(11 * second + 500, 1_000),   // began in the warm-up
            at(11 * second + 5_000, 2_000), // inside
            at(12 * second, 3_000),         // inside, ends on the edge
            at(12 * second + 100, 1_000),   // ends after the window
            LogRecord {
                latency_micros: None,
                finished_micros: 11 * second + 9,
            },
        ];
        let outcome = summarize(&records, Duration::from_secs(1), Duration::from_secs(1))?;
        assert_eq!((outcome.transactions, outcome.failed), (2, 1));
        let latency = &outcome.latency_micros;
        assert_eq!(latency.len(), 2);
        assert!(latency.equivalent(latency.max(), 3_000));
        Ok(())
    }

    #[test]
    fn pgbench_reported_tps_is_read() {
        let stdout =
            "latency average = 4.599 ms\ntps = 1739.457282 (without initial connection time)\n";
        assert_eq!(reported_tps(stdout), Some(1739.457282));
        assert_eq!(reported_tps("nothing"), None);
    }

    #[test]
    fn the_scripts_use_the_seeded_token_and_build_ids() {
        assert!(TRANSITION_WITH_AUTH.sql.contains(SEEDED_TOKEN_HASH));
        for script in [TRANSITION, TRANSITION_WITH_AUTH] {
            assert!(script
                .sql
                .contains("'b_' || lpad(:client_id::text, 20, '0')"));
            assert!(script.sql.contains("FOR UPDATE"));
        }
    }
}
