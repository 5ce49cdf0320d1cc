//! The benchmark run from start to end — server phases per store and client count, then the
//! pgbench ceiling — and its report: a Markdown table on stdout and in `bench/results/`, with
//! the raw figures beside it as JSON.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::load::{self, Target, Window};
use crate::options::{Backend, Options};
use crate::pgbench::{self, Script};
use crate::postgres::{AdminUrl, Psql, ScratchDatabase};
use crate::procfs::{self, CpuSnapshot, CpuUse};
use crate::server::ServerProcess;

const KIB_PER_MIB: f64 = 1024.0;
/// How often the server's resident memory is sampled under load.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    fn of(micros: &Histogram<u64>) -> Self {
        let ms = |value: u64| value as f64 / 1000.0;
        Latency {
            p50_ms: ms(micros.value_at_quantile(0.50)),
            p90_ms: ms(micros.value_at_quantile(0.90)),
            p99_ms: ms(micros.value_at_quantile(0.99)),
            max_ms: ms(micros.max()),
            mean_ms: micros.mean() / 1000.0,
        }
    }
}

/// One store, one client count, through the server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerPhase {
    pub backend: Backend,
    pub clients: u32,
    pub measured_secs: f64,
    pub transitions: u64,
    pub transitions_per_sec: f64,
    pub latency: Latency,
    pub errors: u64,
    pub first_errors: Vec<String>,
    pub resets: u64,
    /// The largest `VmRSS` sampled during the phase (warm-up included).
    pub peak_rss_mib: f64,
    pub cpu: CpuUse,
}

/// One store: its phases and the server's memory over its whole life.
#[derive(Debug, Clone, Serialize)]
pub struct BackendRun {
    pub backend: Backend,
    /// `VmRSS` once ready, before any load.
    pub idle_rss_mib: f64,
    /// `VmHWM`: the most the server was ever resident, read just before it was stopped.
    pub high_water_rss_mib: f64,
    pub phases: Vec<ServerPhase>,
}

/// One pgbench script at one client count.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingPhase {
    pub script: &'static str,
    pub clients: u32,
    pub transactions: u64,
    pub tps: f64,
    pub latency: Latency,
    pub failed: u64,
    pub pgbench_reported_tps: Option<f64>,
    pub cpu: CpuUse,
}

/// What the numbers were measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub postgres_version: Option<String>,
    pub bldst_version: String,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub started_at: String,
    pub command: String,
    pub machine: Machine,
    pub warmup_secs: u64,
    pub duration_secs: u64,
    pub backends: Vec<BackendRun>,
    pub ceiling: Vec<CeilingPhase>,
}

/// Runs every phase and writes the report.
pub async fn run(options: Options) -> anyhow::Result<()> {
    options.check()?;
    let started_at = chrono::Utc::now();
    let work_dir = tempfile::Builder::new()
        .prefix("bldst-bench-")
        .tempdir()
        .context("failed to create a working directory")?;
    let psql = Psql {
        program: options.psql.clone(),
    };
    let admin = AdminUrl::parse(&options.postgres_url)?;
    let machine = describe_machine(&options, &psql, &admin).await;

    let mut backends = Vec::new();
    for &backend in &options.backends {
        eprintln!("== {} ==", backend.name());
        backends.push(run_backend(&options, backend, work_dir.path(), &psql, &admin).await?);
    }

    let mut ceiling = Vec::new();
    if !options.skip_pgbench {
        eprintln!("== pgbench ceiling ==");
        let max_clients = options.clients.iter().copied().max().unwrap_or(1);
        let database = pgbench::prepare_database(&admin, &psql, work_dir.path(), max_clients)?;
        for &clients in &options.clients {
            for script in [pgbench::TRANSITION, pgbench::TRANSITION_WITH_AUTH] {
                let phase = run_ceiling(
                    &options,
                    &psql,
                    &admin,
                    &database,
                    script,
                    clients,
                    work_dir.path(),
                )
                .await?;
                eprintln!(
                    "  {:<16} {clients:>3} clients: {:>8.0} tps, p50 {:.2} ms, p99 {:.2} ms",
                    phase.script, phase.tps, phase.latency.p50_ms, phase.latency.p99_ms
                );
                ceiling.push(phase);
            }
        }
    }

    let results = Results {
        started_at: started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        warmup_secs: options.warmup_secs,
        duration_secs: options.duration_secs,
        backends,
        ceiling,
    };
    let markdown = markdown(&results);
    println!("{markdown}");
    write_results(&options.results_dir, &results, &markdown)
}

async fn run_backend(
    options: &Options,
    backend: Backend,
    work_dir: &Path,
    psql: &Psql,
    admin: &AdminUrl,
) -> anyhow::Result<BackendRun> {
    // Held until the server has stopped: dropping it drops the database.
    let mut scratch = None;
    let database_url = match backend {
        Backend::Sqlite => format!("sqlite://{}", work_dir.join("bench.db").display()),
        Backend::Postgres => {
            let database = ScratchDatabase::create(
                admin,
                psql,
                &format!("bldst_bench_{}_server", std::process::id()),
            )?;
            let url = database.url.clone();
            scratch = Some(database);
            url
        }
    };
    let server =
        ServerProcess::start(&options.bldst, &database_url, work_dir, backend.name()).await?;
    let idle_rss_mib = procfs::status_kib(server.pid, "VmRSS")? as f64 / KIB_PER_MIB;
    let target = Target {
        base_url: server.base_url.clone(),
        token: server.admin_token.clone(),
    };
    let mut phases = Vec::new();
    for &clients in &options.clients {
        if backend == Backend::Postgres {
            // Each phase starts from a clean checkpoint, like each pgbench phase does.
            psql.execute(admin.as_str(), "CHECKPOINT")?;
        }
        let phase = match run_server_phase(options, backend, &server, &target, clients).await {
            Ok(phase) => phase,
            Err(error) => {
                let tail = server.log_tail();
                let _ = server.stop().await;
                return Err(error.context(format!("server log ends with:\n{tail}")));
            }
        };
        eprintln!(
            "  {clients:>3} clients: {:>8.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors, peak RSS {:.1} MiB",
            phase.transitions_per_sec,
            phase.latency.p50_ms,
            phase.latency.p99_ms,
            phase.errors,
            phase.peak_rss_mib
        );
        phases.push(phase);
    }
    let high_water_rss_mib = procfs::status_kib(server.pid, "VmHWM")? as f64 / KIB_PER_MIB;
    server.stop().await?;
    drop(scratch);
    Ok(BackendRun {
        backend,
        idle_rss_mib,
        high_water_rss_mib,
        phases,
    })
}

async fn run_server_phase(
    options: &Options,
    backend: Backend,
    server: &ServerProcess,
    target: &Target,
    clients: u32,
) -> anyhow::Result<ServerPhase> {
    let build_ids = load::create_builds(target, clients).await?;
    let (stop_sampling, sampler) = procfs::sample_rss(server.pid, RSS_SAMPLE_EVERY);
    let window = Window::starting_now(options.warmup(), options.duration());
    let measure_cpu = async {
        tokio::time::sleep_until(window.measure_from.into()).await;
        let from = CpuSnapshot::take(Some(server.pid))?;
        tokio::time::sleep_until(window.end.into()).await;
        Ok::<_, anyhow::Error>(from.until(&CpuSnapshot::take(Some(server.pid))?))
    };
    let (outcome, cpu) = tokio::join!(
        load::run_clients(target, &build_ids, window, options.max_requests_per_client),
        measure_cpu
    );
    let _ = stop_sampling.send(());
    let rss_samples = sampler.await.context("the RSS sampler failed")?;
    let (outcome, cpu) = (outcome?, cpu?);
    let measured_secs = window.measured().as_secs_f64();
    Ok(ServerPhase {
        backend,
        clients,
        measured_secs,
        transitions: outcome.transitions,
        transitions_per_sec: outcome.transitions as f64 / measured_secs,
        latency: Latency::of(&outcome.latency_micros),
        errors: outcome.errors,
        first_errors: outcome.first_errors,
        resets: outcome.resets,
        peak_rss_mib: rss_samples.iter().copied().max().unwrap_or(0) as f64 / KIB_PER_MIB,
        cpu,
    })
}

async fn run_ceiling(
    options: &Options,
    psql: &Psql,
    admin: &AdminUrl,
    database: &ScratchDatabase,
    script: Script,
    clients: u32,
    work_dir: &Path,
) -> anyhow::Result<CeilingPhase> {
    psql.execute(admin.as_str(), "CHECKPOINT")?;
    let outcome = pgbench::run(
        &options.pgbench,
        &database.url,
        script,
        clients,
        options.warmup(),
        options.duration(),
        work_dir,
    )
    .await?;
    Ok(CeilingPhase {
        script: script.name,
        clients,
        transactions: outcome.transactions,
        tps: outcome.transactions as f64 / options.duration().as_secs_f64(),
        latency: Latency::of(&outcome.latency_micros),
        failed: outcome.failed,
        pgbench_reported_tps: outcome.reported_tps,
        cpu: outcome.cpu,
    })
}

async fn describe_machine(options: &Options, psql: &Psql, admin: &AdminUrl) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|meminfo| {
            meminfo
                .lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|release| release.trim().to_owned())
        .unwrap_or_default();
    let postgres_version = std::process::Command::new(&psql.program)
        .args([
            "-X",
            "-A",
            "-t",
            "-d",
            admin.as_str(),
            "-c",
            "SHOW server_version",
        ])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
    let bldst_version = tokio::process::Command::new(&options.bldst)
        .arg("--version")
        .output()
        .await
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    Machine {
        cpu_model,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib: memory_kib / KIB_PER_MIB / KIB_PER_MIB,
        kernel,
        postgres_version,
        bldst_version,
    }
}

/// The report: the headline table, then latency and CPU detail.
pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let machine = &results.machine;
    let _ = writeln!(
        out,
        "Run {} — {} cores ({}), {:.0} GiB, Linux {}, PostgreSQL {}, {}; warm-up {} s, measured {} s per phase.\n",
        results.started_at,
        machine.cores,
        machine.cpu_model,
        machine.memory_gib,
        machine.kernel,
        machine.postgres_version.as_deref().unwrap_or("?"),
        machine.bldst_version,
        results.warmup_secs,
        results.duration_secs,
    );
    let ceiling = |script: &str, clients: u32| {
        results
            .ceiling
            .iter()
            .find(|phase| phase.script == script && phase.clients == clients)
    };
    let _ = writeln!(
        out,
        "| backend | clients | req/s | p50 ms | p99 ms | errors | peak RSS MiB | pgbench tps | ratio | pgbench+auth tps | ratio (+auth) |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for run in &results.backends {
        for phase in &run.phases {
            let (plain, with_auth) = match run.backend {
                Backend::Postgres => (
                    ceiling(pgbench::TRANSITION.name, phase.clients),
                    ceiling(pgbench::TRANSITION_WITH_AUTH.name, phase.clients),
                ),
                Backend::Sqlite => (None, None),
            };
            let tps = |ceiling: Option<&CeilingPhase>| {
                ceiling.map_or("—".to_owned(), |c| format!("{:.0}", c.tps))
            };
            let ratio = |ceiling: Option<&CeilingPhase>| {
                ceiling.filter(|c| c.tps > 0.0).map_or("—".to_owned(), |c| {
                    format!("{:.2}", phase.transitions_per_sec / c.tps)
                })
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.1} | {} | {} | {} | {} |",
                run.backend.name(),
                phase.clients,
                phase.transitions_per_sec,
                phase.latency.p50_ms,
                phase.latency.p99_ms,
                phase.errors,
                phase.peak_rss_mib,
                tps(plain),
                ratio(plain),
                tps(with_auth),
                ratio(with_auth),
            );
        }
    }

    let _ = writeln!(out, "\nServer memory (MiB): ");
    for run in &results.backends {
        let _ = writeln!(
            out,
            "- {}: idle {:.1}, peak sampled under load {:.1}, VmHWM over the server's life {:.1}",
            run.backend.name(),
            run.idle_rss_mib,
            run.phases
                .iter()
                .map(|phase| phase.peak_rss_mib)
                .fold(0.0, f64::max),
            run.high_water_rss_mib
        );
    }

    if !results.ceiling.is_empty() {
        let _ = writeln!(
            out,
            "\npgbench ceiling (same window, from its per-transaction log):\n"
        );
        let _ = writeln!(
            out,
            "| script | clients | tps | p50 ms | p99 ms | failed | pgbench's own tps (whole run) |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        for phase in &results.ceiling {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} |",
                phase.script,
                phase.clients,
                phase.tps,
                phase.latency.p50_ms,
                phase.latency.p99_ms,
                phase.failed,
                phase
                    .pgbench_reported_tps
                    .map_or("—".to_owned(), |tps| format!("{tps:.0}")),
            );
        }
    }

    let _ = writeln!(
        out,
        "\nCPU during the measured window, in cores kept busy (the machine has {}):\n",
        machine.cores
    );
    let _ = writeln!(
        out,
        "| run | clients | whole machine | bldst server | load generator | rest (PostgreSQL, OS) | server CPU µs per request |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    let cores = |value: Option<f64>| value.map_or("—".to_owned(), |v| format!("{v:.2}"));
    for run in &results.backends {
        for phase in &run.phases {
            let cpu = phase.cpu;
            let rest = cpu.machine_cores
                - cpu.server_cores.unwrap_or(0.0)
                - cpu.load_generator_cores.unwrap_or(0.0);
            let per_request = cpu
                .server_cores
                .filter(|_| phase.transitions_per_sec > 0.0)
                .map_or("—".to_owned(), |server| {
                    format!("{:.0}", server / phase.transitions_per_sec * 1e6)
                });
            let _ = writeln!(
                out,
                "| server on {} | {} | {:.2} | {} | {} | {:.2} | {} |",
                run.backend.name(),
                phase.clients,
                cpu.machine_cores,
                cores(cpu.server_cores),
                cores(cpu.load_generator_cores),
                rest,
                per_request,
            );
        }
    }
    for phase in &results.ceiling {
        let _ = writeln!(
            out,
            "| pgbench {} | {} | {:.2} | — | — | {:.2} | — |",
            phase.script, phase.clients, phase.cpu.machine_cores, phase.cpu.machine_cores,
        );
    }
    let errors: Vec<&String> = results
        .backends
        .iter()
        .flat_map(|run| run.phases.iter().flat_map(|phase| &phase.first_errors))
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "\nFirst errors:\n");
        for error in errors {
            let _ = writeln!(out, "- {error}");
        }
    }
    out
}

/// Writes `<results_dir>/<UTC time>.md` and `.json`.
fn write_results(results_dir: &Path, results: &Results, markdown: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(results_dir)
        .with_context(|| format!("failed to create {}", results_dir.display()))?;
    let stem = results.started_at.replace(':', "");
    let markdown_path = results_dir.join(format!("{stem}.md"));
    let json_path = results_dir.join(format!("{stem}.json"));
    std::fs::write(&markdown_path, markdown)
        .with_context(|| format!("failed to write {}", markdown_path.display()))?;
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("failed to write {}", json_path.display()))?;
    eprintln!(
        "wrote {} and {}",
        markdown_path.display(),
        json_path.display()
    );
    Ok(())
}
