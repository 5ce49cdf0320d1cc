//! `bldst-bench --rate-limits off,process,redis`: what rate limiting costs a plain report.
//!
//! One server per mode — limits off, counted in the process, counted in a `redis-server` the
//! benchmark starts for itself — each measured with the plain report load at every client
//! count, the modes alternating within each round so they meet the same machine. With limits
//! on, the write limit is set far above the load (every write is counted, none refused), so
//! the difference is the counting alone. The report gives each mode's throughput and latency
//! and the time it adds to a report, as microseconds and as a share of the report's own cost.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

use crate::load::Target;
use crate::options::{Backend, Options, RateLimits, ReportKind};
use crate::phase::run_server_phase;
use crate::postgres::{AdminUrl, Psql, ScratchDatabase};
use crate::report::{median, ServerPhase};
use crate::server::ServerProcess;

/// A write limit no benchmark reaches: every write is counted, none refused.
const UNREACHED_WRITE_LIMIT: &str = "4000000000";

/// One phase's figures, for the report.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    round: u32,
    backend: Backend,
    mode: RateLimits,
    /// How often the server fell back from Redis to per-process counting during the phase's
    /// server life (0 unless Redis was slower than the server's timeout).
    redis_fallbacks: usize,
    phase: ServerPhase,
}

#[derive(Debug, Serialize)]
struct RateLimitResults {
    started_at: String,
    command: String,
    warmup_secs: u64,
    duration_secs: u64,
    samples: Vec<Sample>,
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.rate_limits.contains(&RateLimits::Off),
        "--rate-limits must include `off`: the cost is measured against it"
    );
    let started_at = chrono::Utc::now();
    let work_dir = tempfile::Builder::new()
        .prefix("bldst-bench-ratelimits-")
        .tempdir()
        .context("failed to create a working directory")?;
    let psql = Psql {
        program: options.psql.clone(),
    };
    let admin = AdminUrl::parse(&options.postgres_url)?;
    let redis = if options.rate_limits.contains(&RateLimits::Redis) {
        Some(OwnRedis::start(&options.redis_server).await?)
    } else {
        None
    };

    let mut samples = Vec::new();
    for round in 1..=options.rounds {
        for &backend in &options.backends {
            for &mode in &options.rate_limits {
                eprintln!(
                    "== round {round}/{}: {}, rate limits {} ==",
                    options.rounds,
                    backend.name(),
                    mode.name()
                );
                let env = environment(mode, redis.as_ref());
                samples.extend(
                    run_mode(
                        &options,
                        backend,
                        mode,
                        round,
                        &env,
                        work_dir.path(),
                        &psql,
                        &admin,
                    )
                    .await?,
                );
            }
        }
    }
    drop(redis);

    let results = RateLimitResults {
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        warmup_secs: options.warmup_secs,
        duration_secs: options.duration_secs,
        samples,
    };
    let markdown = markdown(&options, &results);
    println!("{markdown}");
    std::fs::create_dir_all(&options.results_dir)
        .with_context(|| format!("failed to create {}", options.results_dir.display()))?;
    let stem = format!("ratelimits-{}", results.started_at.replace(':', ""));
    let markdown_path = options.results_dir.join(format!("{stem}.md"));
    let json_path = options.results_dir.join(format!("{stem}.json"));
    std::fs::write(&markdown_path, &markdown)
        .with_context(|| format!("failed to write {}", markdown_path.display()))?;
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("failed to write {}", json_path.display()))?;
    eprintln!(
        "wrote {} and {}",
        markdown_path.display(),
        json_path.display()
    );
    Ok(())
}

/// The server's settings for `mode`.
fn environment(mode: RateLimits, redis: Option<&OwnRedis>) -> Vec<(&'static str, String)> {
    let on = || {
        vec![
            (
                "BUILDSTATE_RATE_LIMIT_WRITES",
                UNREACHED_WRITE_LIMIT.to_owned(),
            ),
            ("BUILDSTATE_RATE_LIMIT_FAILED_AUTHS", "30".to_owned()),
        ]
    };
    match (mode, redis) {
        (RateLimits::Off, _) => Vec::new(),
        (RateLimits::Process, _) => on(),
        (RateLimits::Redis, Some(redis)) => {
            let mut env = on();
            env.push(("REDIS_URL", redis.url()));
            env
        }
        (RateLimits::Redis, None) => unreachable!("Redis is started when a mode needs it"),
    }
}

/// One server with `mode`'s settings, the plain report load at every client count.
#[allow(clippy::too_many_arguments)]
async fn run_mode(
    options: &Options,
    backend: Backend,
    mode: RateLimits,
    round: u32,
    env: &[(&str, String)],
    work_dir: &Path,
    psql: &Psql,
    admin: &AdminUrl,
) -> anyhow::Result<Vec<Sample>> {
    let name = format!("{}-{}-{round}", backend.name(), mode.name());
    let mut scratch = None;
    let database_url = match backend {
        Backend::Sqlite => format!("sqlite://{}", work_dir.join(format!("{name}.db")).display()),
        Backend::Postgres => {
            let database = ScratchDatabase::create(
                admin,
                psql,
                &format!("bldst_bench_{}_ratelimits", std::process::id()),
            )?;
            let url = database.url.clone();
            scratch = Some(database);
            url
        }
    };
    let server =
        ServerProcess::start(&options.bldst, &database_url, None, work_dir, &name, env).await?;
    let target = Target {
        base_urls: vec![server.base_url.clone()],
        token: server.admin_token.clone(),
    };
    let store = store(&server).await?;
    let expected = match mode {
        RateLimits::Redis => "redis",
        RateLimits::Off | RateLimits::Process => "process",
    };
    anyhow::ensure!(
        store == expected,
        "the server counts its rate limits in `{store}`, not `{expected}`:\n{}",
        server.log_tail()
    );
    let mut samples = Vec::new();
    for &clients in &options.clients {
        if backend == Backend::Postgres {
            psql.execute(admin.as_str(), "CHECKPOINT")?;
        }
        let phase = match run_server_phase(
            options,
            backend,
            &[server.pid],
            &target,
            clients,
            ReportKind::Plain,
        )
        .await
        {
            Ok(phase) => phase,
            Err(error) => {
                let tail = server.log_tail();
                let _ = server.stop().await;
                return Err(error.context(format!("server log ends with:\n{tail}")));
            }
        };
        eprintln!(
            "  {clients:>3} clients: {:>8.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            phase.transitions_per_sec, phase.latency.p50_ms, phase.latency.p99_ms, phase.errors,
        );
        samples.push(Sample {
            round,
            backend,
            mode,
            redis_fallbacks: 0,
            phase,
        });
    }
    let fallbacks = server.log_text().matches("Redis does not answer").count();
    for sample in &mut samples {
        sample.redis_fallbacks = fallbacks;
    }
    server.stop().await?;
    drop(scratch);
    Ok(samples)
}

/// `/status`'s `rate_limits.store`.
async fn store(server: &ServerProcess) -> anyhow::Result<String> {
    let status: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/status", server.base_url))
        .bearer_auth(&server.admin_token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(status["rate_limits"]["store"]
        .as_str()
        .unwrap_or("(not shown)")
        .to_owned())
}

fn markdown(options: &Options, results: &RateLimitResults) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Rate limiting's cost, run {}: {} round(s) of a {} s warm-up and {} s measured per phase, \
         plain reports, one token; medians over the rounds. `µs/report` is the inverse of the \
         throughput (the server's time per report with every client busy); `added` is the \
         difference from `off`, and its share of a report with limits off.\n",
        results.started_at, options.rounds, results.warmup_secs, results.duration_secs
    );
    let _ = writeln!(
        out,
        "| backend | clients | rate limits | req/s | (min–max) | p50 ms | p99 ms | µs/report | added µs | added % | errors | Redis fallbacks |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for &backend in &options.backends {
        for &clients in &options.clients {
            let of = |mode: RateLimits| -> Vec<&Sample> {
                results
                    .samples
                    .iter()
                    .filter(|s| {
                        s.backend == backend && s.phase.clients == clients && s.mode == mode
                    })
                    .collect()
            };
            let rate =
                |samples: &[&Sample]| median(samples.iter().map(|s| s.phase.transitions_per_sec));
            let off = of(RateLimits::Off);
            if off.is_empty() {
                continue;
            }
            let off_micros = 1e6 / rate(&off);
            for &mode in &options.rate_limits {
                let samples = of(mode);
                if samples.is_empty() {
                    continue;
                }
                let rps = rate(&samples);
                let micros = 1e6 / rps;
                let added = micros - off_micros;
                let (min, max) = samples.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), s| {
                    let rps = s.phase.transitions_per_sec;
                    (lo.min(rps), hi.max(rps))
                });
                let (added, share) = if mode == RateLimits::Off {
                    ("—".to_owned(), "—".to_owned())
                } else {
                    (
                        format!("{added:+.0}"),
                        format!("{:+.1} %", added / off_micros * 100.0),
                    )
                };
                let _ = writeln!(
                    out,
                    "| {} | {clients} | {} | {rps:.0} | {min:.0}–{max:.0} | {:.2} | {:.2} | {micros:.0} | {added} | {share} | {} | {} |",
                    backend.name(),
                    mode.name(),
                    median(samples.iter().map(|s| s.phase.latency.p50_ms)),
                    median(samples.iter().map(|s| s.phase.latency.p99_ms)),
                    samples.iter().map(|s| s.phase.errors).sum::<u64>(),
                    samples.iter().map(|s| s.redis_fallbacks).max().unwrap_or(0),
                );
            }
        }
    }
    let background = results
        .samples
        .iter()
        .map(|s| s.phase.background_cores)
        .fold(0.0_f64, f64::max);
    let _ = writeln!(
        out,
        "\nThe busiest the rest of the machine was before a phase: {background:.2} cores."
    );
    out
}

/// A `redis-server` of the benchmark's own on a free loopback port; killed when dropped.
struct OwnRedis {
    port: u16,
    _child: Child,
}

impl OwnRedis {
    async fn start(program: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("failed to find a free port")?
            .port();
        let child = Command::new(program)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("failed to start `{}`", program.display()))?;
        for _ in 0..200 {
            if pong(port).await {
                return Ok(OwnRedis {
                    port,
                    _child: child,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("`{}` did not answer PING on port {port}", program.display())
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

async fn pong(port: u16) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).await.is_ok() && &answer == b"+PONG\r\n"
}
