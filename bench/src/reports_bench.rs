//! `bldst-reports-bench`: seeds a large history (100,000 builds and about 2 million transitions
//! by default) into a fresh SQLite file and a scratch PostgreSQL database, starts `bldst server`
//! on each, and measures the p50 of every report and of the dashboard's first page (its HTML
//! and the API calls the page makes). See `BENCHMARKS.md` ("Reports and the dashboard").

// The server and PostgreSQL helpers are shared with `bldst-bench`; this binary uses part of them.
#[allow(dead_code)]
mod postgres;
mod seed;
#[allow(dead_code)]
mod server;
mod single_thread;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser as _;

/// Seeds a large history and measures the reports and the dashboard's first page.
#[derive(Debug, clap::Parser)]
#[command(name = "bldst-reports-bench")]
struct Options {
    /// The `bldst` binary to serve the seeded databases with.
    #[arg(long)]
    bldst: PathBuf,
    /// Stores to seed and measure.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    /// Builds to seed (each gets its whole history: about 20 transitions on average).
    #[arg(long, default_value_t = 100_000)]
    builds: usize,
    /// How often a stage is reported `in_progress` before it completes or fails.
    #[arg(long, default_value_t = 0.1)]
    in_progress_chance: f64,
    /// Requests per measured endpoint (after one warm-up request).
    #[arg(long, default_value_t = 15)]
    samples: usize,
    /// Where the SQLite file goes (kept for another look; delete it after).
    #[arg(long, default_value = "target/reports-bench.db")]
    sqlite_path: PathBuf,
    #[command(flatten)]
    postgres: postgres::PostgresFlags,
    /// The scratch PostgreSQL database's name (another name lets two checkouts measure on one
    /// server without dropping each other's).
    #[arg(long, default_value = "bldst_reports_bench")]
    postgres_database: String,
    /// Leave the seeded databases in place at the end (the SQLite file always stays), for a
    /// later `--reuse` run.
    #[arg(long)]
    keep: bool,
    /// Measure the databases a `--keep` run left instead of seeding new ones: the same history
    /// served by another `bldst` (before and after a change). That `bldst` applies the
    /// migrations the databases lack first; how long that took is printed.
    #[arg(long)]
    reuse: bool,
}

/// What the dashboard's reports page and first page ask for.
const ENDPOINTS: [(&str, &str); 14] = [
    ("report: success (7 days)", "/reports/success"),
    ("report: success (90 days)", "/reports/success?days=90"),
    ("report: failures (7 days)", "/reports/failures"),
    ("report: failures (90 days)", "/reports/failures?days=90"),
    ("report: durations (7 days)", "/reports/durations"),
    ("report: durations (90 days)", "/reports/durations?days=90"),
    ("report: stuck and blocked", "/reports/stuck"),
    ("report: recovery (7 days)", "/reports/recovery"),
    ("report: savings (7 days)", "/reports/savings"),
    ("report: savings (90 days)", "/reports/savings?days=90"),
    ("dashboard: HTML", "/dashboard/"),
    ("dashboard: GET /builds?limit=50", "/builds?limit=50"),
    (
        "dashboard: filtered list",
        "/builds?limit=50&platform=vsphere&status=blocked",
    ),
    ("dashboard: GET /status", "/status"),
];

fn main() -> ExitCode {
    single_thread::run(run(Options::parse()))
}

async fn run(options: Options) -> anyhow::Result<()> {
    let log_dir = tempfile::tempdir()?;
    println!(
        "| backend | what | p50 ms | min ms | max ms | answer bytes |\n|---|---|---:|---:|---:|---:|"
    );
    for backend in &options.backends {
        let scratch;
        let url = match backend.as_str() {
            "sqlite" => {
                if !options.reuse {
                    let _ = std::fs::remove_file(&options.sqlite_path);
                }
                format!("sqlite://{}", options.sqlite_path.display())
            }
            "postgres" => {
                let (admin, psql) = options.postgres.admin()?;
                let name = options.postgres_database.as_str();
                let mut database = if options.reuse {
                    postgres::ScratchDatabase::existing(&admin, &psql, name)
                } else {
                    postgres::ScratchDatabase::create(&admin, &psql, name)?
                };
                if options.keep {
                    database.keep();
                }
                scratch = database;
                scratch.url.clone()
            }
            other => anyhow::bail!("unknown backend `{other}`: sqlite or postgres"),
        };
        let server = if options.reuse {
            let started = Instant::now();
            let token = server::existing_admin_token(&options.bldst, &url)
                .await
                .context("applying the migrations to the database an earlier run seeded")?;
            let server = server::ServerProcess::start_another(
                &options.bldst,
                &url,
                None,
                token,
                log_dir.path(),
                backend,
                &[],
            )
            .await
            .context("starting the server on the database an earlier run seeded")?;
            eprintln!(
                "{backend}: reused the seeded database; migrations and start took {:.1}s",
                started.elapsed().as_secs_f64()
            );
            if backend == "postgres" {
                // A migration that rewrote rows leaves them not all-visible until autovacuum
                // passes (within minutes on a live server); measure what it leaves behind.
                let (_, psql) = options.postgres.admin()?;
                psql.execute(&url, "VACUUM ANALYZE build_history")?;
            }
            server
        } else {
            // The server applies the migrations; the history goes in behind its back (it
            // caches nothing the reports or the list read).
            let server = server::ServerProcess::start(
                &options.bldst,
                &url,
                None,
                log_dir.path(),
                backend,
                &[],
            )
            .await
            .context("starting the server on an empty database")?;
            let started = Instant::now();
            let seeded = seed::seed(&url, options.builds, options.in_progress_chance, 42).await?;
            eprintln!(
                "{backend}: seeded {} builds, {} transitions, {} resumes in {:.1}s ({} completed, {} blocked, {} cancelled, {} unfinished)",
                seeded.builds,
                seeded.transitions,
                seeded.resumes,
                started.elapsed().as_secs_f64(),
                seeded.completed,
                seeded.blocked,
                seeded.cancelled,
                seeded.unfinished
            );
            server
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        for (what, path) in ENDPOINTS {
            let url = format!("{}{path}", server.base_url);
            let mut times = Vec::with_capacity(options.samples);
            let mut bytes = 0;
            for sample in 0..=options.samples {
                let started = Instant::now();
                let answer = http
                    .get(&url)
                    .bearer_auth(&server.admin_token)
                    .send()
                    .await?;
                let status = answer.status();
                let body = answer.bytes().await?;
                let elapsed = started.elapsed();
                anyhow::ensure!(status.is_success(), "GET {path}: {status}");
                bytes = body.len();
                if sample > 0 {
                    times.push(elapsed);
                }
            }
            times.sort();
            let ms = |duration: &Duration| duration.as_secs_f64() * 1000.0;
            println!(
                "| {backend} | {what} | {:.1} | {:.1} | {:.1} | {bytes} |",
                ms(&times[times.len() / 2]),
                ms(&times[0]),
                ms(&times[times.len() - 1]),
            );
        }
        server.stop().await?;
    }
    Ok(())
}
