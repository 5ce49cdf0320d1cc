//! `bldst-retries-bench`: how soon after its due time the server records a failed stage's
//! `retry_due` entry with 10,000 failed builds waiting, and what the retry scheduler costs a
//! server that has nothing due. See `BENCHMARKS.md` ("Retries that happen by themselves").
//!
//! For each store and process count: starts `bldst server` processes on a fresh database (a
//! SQLite file, or a scratch PostgreSQL database) and writes `--builds` builds into it that
//! failed once and wait an hour for their retry. While they all wait, it reads the processes'
//! CPU time from `/proc` over `--idle-secs` (only the scheduler runs: nothing is due and no
//! request comes). Then `--trickle` of them come due one every 100 ms while the rest wait, and
//! then the rest all at once; for each phase it reads from the database how long after its
//! `next_attempt_at` each `retry_due` was recorded, and whether any build got two.

#[allow(dead_code)]
mod postgres;
#[allow(dead_code)]
mod procfs;
#[allow(dead_code)]
mod server;
mod single_thread;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser as _;
use sqlx::Row as _;

/// Measures the retry scheduler: delay after the due time, and its CPU when nothing is due.
#[derive(Debug, clap::Parser)]
#[command(name = "bldst-retries-bench")]
struct Options {
    /// The `bldst` binary to measure (build it with `cargo build --release`).
    #[arg(long)]
    bldst: PathBuf,
    /// Runs, each `STORE:PROCESSES` (several processes need PostgreSQL).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sqlite:1,postgres:1,postgres:3"
    )]
    runs: Vec<String>,
    /// Failed builds waiting for their retry.
    #[arg(long, default_value_t = 10_000)]
    builds: usize,
    /// Of those, how many come due one by one (every 100 ms) while the others wait; then the
    /// others all come due at once.
    #[arg(long, default_value_t = 100)]
    trickle: usize,
    /// How long to read the servers' CPU while every build waits.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// The scheduler's tick (`BUILDSTATE_RETRY_CHECK_MILLIS`): the server's default.
    #[arg(long, default_value_t = 1000)]
    retry_check_millis: u64,
    #[command(flatten)]
    postgres: postgres::PostgresFlags,
}

fn main() -> ExitCode {
    single_thread::run(run(Options::parse()))
}

async fn run(options: Options) -> anyhow::Result<()> {
    println!(
        "| store | processes | phase | builds due | recorded | twice | idle CPU % of a core (all processes, {}s) | delay p50 ms | p99 ms | max ms |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        options.idle_secs
    );
    for spec in &options.runs {
        let (store, processes) = spec
            .split_once(':')
            .with_context(|| format!("`{spec}` is not STORE:PROCESSES"))?;
        let processes: usize = processes
            .parse()
            .with_context(|| format!("`{spec}`: the process count is not a number"))?;
        anyhow::ensure!(
            processes >= 1 && (processes == 1 || store == "postgres"),
            "`{spec}`: one process on SQLite, one or more on PostgreSQL"
        );
        for row in measure(&options, store, processes).await? {
            println!("{row}");
        }
    }
    Ok(())
}

/// One run: its table rows (the trickle, then the burst).
async fn measure(options: &Options, store: &str, processes: usize) -> anyhow::Result<Vec<String>> {
    let dir = tempfile::tempdir()?;
    let _scratch;
    let url = match store {
        "sqlite" => format!("sqlite://{}", dir.path().join("retries.db").display()),
        "postgres" => {
            let (admin, psql) = options.postgres.admin()?;
            let database = postgres::ScratchDatabase::create(&admin, &psql, "bldst_retries_bench")?;
            let url = database.url.clone();
            _scratch = database;
            url
        }
        other => anyhow::bail!("unknown store `{other}`: sqlite or postgres"),
    };
    let env = [(
        "BUILDSTATE_RETRY_CHECK_MILLIS",
        options.retry_check_millis.to_string(),
    )];
    let mut servers = vec![
        server::ServerProcess::start(&options.bldst, &url, None, dir.path(), "server-1", &env)
            .await?,
    ];
    for n in 2..=processes {
        let token = servers[0].admin_token.clone();
        servers.push(
            server::ServerProcess::start_another(
                &options.bldst,
                &url,
                None,
                token,
                dir.path(),
                &format!("server-{n}"),
                &env,
            )
            .await?,
        );
    }
    sqlx::any::install_default_drivers();
    let mut database = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await?;
    let ids = seed(&mut database, options.builds).await?;

    // Every build waits an hour: only the scheduler's scan runs.
    let pids: Vec<u32> = servers.iter().map(|server| server.pid).collect();
    let cpu = || -> anyhow::Result<f64> {
        pids.iter()
            .map(|&pid| procfs::process_cpu_seconds(pid))
            .sum()
    };
    let cpu_before = cpu()?;
    let idle_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(options.idle_secs)).await;
    let idle_cpu = 100.0 * (cpu()? - cpu_before) / idle_started.elapsed().as_secs_f64();

    // A trickle: `--trickle` builds come due one every 100 ms, the rest still waiting.
    let (trickle, burst) = ids.split_at(options.trickle.min(ids.len()));
    let now = chrono::Utc::now().timestamp_millis();
    for (n, id) in trickle.iter().enumerate() {
        due_at(&mut database, id, now + 2_000 + 100 * n as i64).await?;
    }
    let trickle_phase = delays(options, &mut database, trickle).await?;
    // A burst: every other build comes due at the same moment.
    let now = chrono::Utc::now().timestamp_millis();
    sqlx::query("UPDATE builds SET next_attempt_at = $1 WHERE retry_due_seq IS NULL")
        .bind(now + 2_000)
        .execute(&mut database)
        .await?;
    let burst_phase = delays(options, &mut database, burst).await?;
    drop(database);
    for server in servers {
        server.stop().await?;
    }
    Ok(vec![
        trickle_phase.row(
            store,
            processes,
            &format!("trickle, {} waiting", burst.len()),
            &format!("{idle_cpu:.2}"),
        ),
        burst_phase.row(store, processes, "burst", "-"),
    ])
}

/// What one phase measured.
struct Phase {
    due: usize,
    twice: i64,
    /// Milliseconds from each build's due time to its `retry_due`, sorted.
    delays: Vec<i64>,
}

impl Phase {
    fn row(&self, store: &str, processes: usize, phase: &str, idle_cpu: &str) -> String {
        let percentile = |p: f64| -> String {
            if self.delays.is_empty() {
                return "-".to_owned();
            }
            let index =
                ((self.delays.len() as f64 * p).ceil() as usize).clamp(1, self.delays.len()) - 1;
            self.delays[index].to_string()
        };
        format!(
            "| {store} | {processes} | {phase} | {} | {} | {} | {idle_cpu} | {} | {} | {} |",
            self.due,
            self.delays.len(),
            self.twice,
            percentile(0.5),
            percentile(0.99),
            percentile(1.0),
        )
    }
}

async fn due_at(
    database: &mut sqlx::AnyConnection,
    id: &str,
    at_millis: i64,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE builds SET next_attempt_at = $1 WHERE id = $2")
        .bind(at_millis)
        .bind(id)
        .execute(database)
        .await?;
    Ok(())
}

/// Waits until every build of `ids` has its `retry_due` (for at most 150 s), a few ticks more,
/// and answers what the phase measured.
async fn delays(
    options: &Options,
    database: &mut sqlx::AnyConnection,
    ids: &[String],
) -> anyhow::Result<Phase> {
    let deadline = Instant::now() + Duration::from_secs(150);
    // The ids are the benchmark's own (`b_` and digits): no input reaches this SQL.
    let in_list = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    loop {
        let recorded: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM builds WHERE id IN ({in_list}) AND retry_due_seq IS NOT NULL"
        ))
        .fetch_one(&mut *database)
        .await?;
        if recorded >= ids.len() as i64 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few more ticks: a second entry for any build would show now.
    tokio::time::sleep(Duration::from_millis(5 * options.retry_check_millis)).await;
    let rows = sqlx::query(&format!(
        "SELECT h.recorded_at - b.next_attempt_at AS delay_ms FROM builds b \
         JOIN build_history h ON h.build_id = b.id AND h.seq = b.retry_due_seq \
         WHERE b.id IN ({in_list})"
    ))
    .fetch_all(&mut *database)
    .await?;
    let mut delays: Vec<i64> = rows
        .iter()
        .map(|row| row.try_get::<i64, _>("delay_ms"))
        .collect::<Result<_, _>>()?;
    delays.sort_unstable();
    let twice: i64 = sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM (SELECT build_id FROM build_history WHERE kind = 'retry_due' \
         AND build_id IN ({in_list}) GROUP BY build_id HAVING COUNT(*) > 1) AS twice"
    ))
    .fetch_one(&mut *database)
    .await?;
    let early = delays.iter().filter(|&&delay| delay < 0).count();
    anyhow::ensure!(
        early == 0,
        "{early} retries were recorded before their due time"
    );
    Ok(Phase {
        due: ids.len(),
        twice,
        delays,
    })
}

/// Writes `builds` builds that failed stage 15 once and wait an hour for their retry, with
/// their two history entries (started, failed), straight into the database (as
/// bldst-reports-bench seeds its history): through the API this took minutes on a busy
/// machine, and only the waiting builds matter here. Answers their ids.
async fn seed(database: &mut sqlx::AnyConnection, builds: usize) -> anyhow::Result<Vec<String>> {
    use buildstate_server::db::{bind_values, HistoryRow, NewBuildRow};
    use sqlx::Connection as _;
    let now = chrono::Utc::now().timestamp_millis();
    let ids: Vec<String> = (0..builds).map(|n| format!("b_{n:020}")).collect();
    // The store's own rows and statements, so that they follow its schema.
    let build_sql = NewBuildRow::insert_sql(1);
    let history_sql = HistoryRow::insert_sql(2);
    for chunk in ids.chunks(200) {
        let mut tx = database.begin().await?;
        for id in chunk {
            let build = NewBuildRow {
                id,
                build_key: None,
                platform: "aws",
                image_type: "rhel8",
                description: None,
                labels: "{}",
                state: 15,
                status: "failed",
                failures: 1,
                max_retries: 3,
                next_attempt_at: Some(now + 3_600_000),
                last_message: None,
                last_seq: 2,
                created_at: now,
                updated_at: now,
                retry_policy: None,
            };
            bind_values(sqlx::query(&build_sql), build.values())
                .execute(&mut *tx)
                .await?;
            let started = HistoryRow {
                build_id: id,
                seq: 1,
                state: 0,
                kind: "started",
                message: None,
                attempt: None,
                reported_by: None,
                token_id: None,
                source: None,
                recorded_at: now,
                outputs: None,
                duration_ms: None,
            };
            let failed = HistoryRow {
                seq: 2,
                state: 15,
                kind: "failed",
                attempt: Some(1),
                ..started.clone()
            };
            let values = [started, failed].into_iter().flat_map(HistoryRow::values);
            bind_values(sqlx::query(&history_sql), values)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    Ok(ids)
}
