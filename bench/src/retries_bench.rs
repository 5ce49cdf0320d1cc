//! `bldst-retries-bench`: how soon after its due time the server records a failed stage's
//! `retry_due` entry with 10,000 failed builds waiting, and what the retry scheduler costs a
//! server that has nothing due. See `BENCHMARKS.md` ("Retries that happen by themselves").
//!
//! For each store and process count: starts release `bldst server` processes on a fresh
//! database (a SQLite file, or a scratch PostgreSQL database), starts `--builds` builds and fails
//! each once through their API (spread over the processes), so every build waits out the
//! server's backoff. While they all wait, it reads the processes' CPU time from `/proc` over
//! `--idle-secs` (only the scheduler runs: nothing is due and no request comes). Then it waits
//! until every build has its `retry_due` and reads, from the database, how long after its
//! `next_attempt_at` each was recorded, and whether any build got two.

#[allow(dead_code)]
mod postgres;
#[allow(dead_code)]
mod procfs;
#[allow(dead_code)]
mod server;
mod single_thread;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
    /// The servers' backoff after a first failure, in seconds: long enough for the seeding and
    /// the idle measurement to end before the first build comes due.
    #[arg(long, default_value_t = 120)]
    backoff_secs: u64,
    /// How long to read the servers' CPU while every build waits (cut short, and said so, if
    /// the first build would come due first).
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// The scheduler's tick (`BUILDSTATE_RETRY_CHECK_MILLIS`): the server's default.
    #[arg(long, default_value_t = 1000)]
    retry_check_millis: u64,
    /// Requests in flight while seeding.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    #[command(flatten)]
    postgres: postgres::PostgresFlags,
}

fn main() -> ExitCode {
    single_thread::run(run(Options::parse()))
}

async fn run(options: Options) -> anyhow::Result<()> {
    println!(
        "| store | processes | builds | seeding s | idle window s | idle CPU % of a core (all processes) | recorded | twice | delay p50 ms | p99 ms | max ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
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
        let row = measure(&options, store, processes).await?;
        println!("{row}");
    }
    Ok(())
}

/// One run: its table row.
async fn measure(options: &Options, store: &str, processes: usize) -> anyhow::Result<String> {
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
    let env = [
        (
            "BUILDSTATE_RETRY_CHECK_MILLIS",
            options.retry_check_millis.to_string(),
        ),
        (
            "BUILDSTATE_BACKOFF_BASE_SECS",
            options.backoff_secs.to_string(),
        ),
        ("BUILDSTATE_MAX_RETRIES", "3".to_owned()),
    ];
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

    let seeding = Instant::now();
    let first_due = Instant::now() + Duration::from_secs(options.backoff_secs);
    seed(options, &servers).await?;
    let seeding_secs = seeding.elapsed().as_secs_f64();

    // Nothing is due and nothing is asked: what remains is the scheduler's scan.
    let window = Duration::from_secs(options.idle_secs)
        .min(first_due.saturating_duration_since(Instant::now() + Duration::from_secs(2)));
    let pids: Vec<u32> = servers.iter().map(|server| server.pid).collect();
    let cpu_before: f64 = pids
        .iter()
        .map(|&pid| procfs::process_cpu_seconds(pid))
        .sum::<anyhow::Result<f64>>()?;
    let idle_started = Instant::now();
    tokio::time::sleep(window).await;
    let cpu_after: f64 = pids
        .iter()
        .map(|&pid| procfs::process_cpu_seconds(pid))
        .sum::<anyhow::Result<f64>>()?;
    let idle_secs = idle_started.elapsed().as_secs_f64();
    let idle_cpu_percent = 100.0 * (cpu_after - cpu_before) / idle_secs;

    // Every build comes due within the seeding time after the first one; give them a minute
    // more than that.
    let deadline = first_due + Duration::from_secs_f64(seeding_secs) + Duration::from_secs(60);
    sqlx::any::install_default_drivers();
    let mut database = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await?;
    loop {
        let recorded: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM build_history WHERE kind = 'retry_due'")
                .fetch_one(&mut database)
                .await?;
        if recorded >= options.builds as i64 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A few more ticks: a second entry for any build would show now.
    tokio::time::sleep(Duration::from_millis(5 * options.retry_check_millis)).await;
    let rows = sqlx::query(
        "SELECT h.recorded_at - b.next_attempt_at AS delay_ms FROM builds b \
         JOIN build_history h ON h.build_id = b.id AND h.seq = b.retry_due_seq",
    )
    .fetch_all(&mut database)
    .await?;
    let mut delays: Vec<i64> = rows
        .iter()
        .map(|row| row.try_get::<i64, _>("delay_ms"))
        .collect::<Result<_, _>>()?;
    delays.sort_unstable();
    let twice: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT build_id FROM build_history WHERE kind = 'retry_due' \
         GROUP BY build_id HAVING COUNT(*) > 1) AS twice",
    )
    .fetch_one(&mut database)
    .await?;
    let early = delays.iter().filter(|&&delay| delay < 0).count();
    anyhow::ensure!(
        early == 0,
        "{early} retries were recorded before their due time"
    );
    drop(database);
    for server in servers {
        server.stop().await?;
    }
    let percentile = |p: f64| -> String {
        if delays.is_empty() {
            return "-".to_owned();
        }
        let index = ((delays.len() as f64 * p).ceil() as usize).clamp(1, delays.len()) - 1;
        delays[index].to_string()
    };
    Ok(format!(
        "| {store} | {processes} | {} | {seeding_secs:.1} | {idle_secs:.1} | {idle_cpu_percent:.2} | {} | {twice} | {} | {} | {} |",
        options.builds,
        delays.len(),
        percentile(0.5),
        percentile(0.99),
        percentile(1.0),
    ))
}

/// Starts `--builds` builds and fails each at stage 15, `--clients` requests at a time, spread
/// over the servers in turn.
async fn seed(options: &Options, servers: &[server::ServerProcess]) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let targets: Arc<Vec<(String, String)>> = Arc::new(
        servers
            .iter()
            .map(|server| (server.base_url.clone(), server.admin_token.clone()))
            .collect(),
    );
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..options.clients {
        let (http, next, targets, builds) =
            (http.clone(), next.clone(), targets.clone(), options.builds);
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= builds {
                    return anyhow::Ok(());
                }
                let (base, token) = &targets[n % targets.len()];
                let started: serde_json::Value = http
                    .post(format!("{base}/builds"))
                    .bearer_auth(token)
                    .json(&serde_json::json!({"platform": "aws", "image_type": "rhel8"}))
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                let id = started["build"]["id"]
                    .as_str()
                    .context("the started build has no id")?;
                http.post(format!("{base}/builds/{id}/transitions"))
                    .bearer_auth(token)
                    .json(&serde_json::json!({"state": 15, "status": "failed"}))
                    .send()
                    .await?
                    .error_for_status()?;
            }
        });
    }
    while let Some(worker) = workers.join_next().await {
        worker??;
    }
    Ok(())
}
