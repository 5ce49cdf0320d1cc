//! The benchmark from start to end: for each round, the server phases (every store, every
//! count of server processes, every client count), then the pgbench ceiling at the same client
//! counts; then the report.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::load::{self, Target, Window};
use crate::options::{Backend, Options, RateLimits, ReportKind};
use crate::pgbench::{self, Script};
use crate::phase::{cpu_in_window, quiet, run_server_phase};
use crate::postgres::{AdminUrl, Psql, ScratchDatabase};
use crate::procfs;
use crate::report::{
    self, BackendRun, CeilingPhase, HeartbeatPhase, Latency, Machine, Results, Round, KIB_PER_MIB,
};
use crate::server::ServerProcess;

/// Runs every round and writes the report.
pub async fn run(options: Options) -> anyhow::Result<()> {
    options.check()?;
    if options.rate_limits != [RateLimits::Off] {
        return crate::rate_limits::run(options).await;
    }
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
    // One database for every pgbench phase, like one server per store and round.
    let ceiling_database = if options.skip_pgbench {
        None
    } else {
        let max_clients = options.clients.iter().copied().max().unwrap_or(1);
        Some(pgbench::prepare_database(
            &admin,
            &psql,
            work_dir.path(),
            max_clients,
        )?)
    };

    let mut rounds = Vec::new();
    for round in 1..=options.rounds {
        let mut backends = Vec::new();
        for &backend in &options.backends {
            for &processes in &options.server_processes {
                eprintln!(
                    "== round {round}/{}: {} ==",
                    options.rounds,
                    report::run_label(backend, processes)
                );
                let run = run_backend(
                    &options,
                    backend,
                    processes,
                    round,
                    work_dir.path(),
                    &psql,
                    &admin,
                )
                .await?;
                backends.push(run);
            }
        }
        let mut ceiling = Vec::new();
        if let Some(database) = &ceiling_database {
            eprintln!("== round {round}/{}: pgbench ceiling ==", options.rounds);
            for &clients in &options.clients {
                for script in [pgbench::TRANSITION, pgbench::TRANSITION_WITH_AUTH] {
                    let phase = run_ceiling(
                        &options,
                        &psql,
                        &admin,
                        database,
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
        rounds.push(Round { backends, ceiling });
    }
    drop(ceiling_database);

    let results = Results::new(
        started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        std::env::args().collect::<Vec<_>>().join(" "),
        machine,
        &options,
        rounds,
    );
    let markdown = report::markdown(&results);
    println!("{markdown}");
    report::write_results(&options.results_dir, &results, &markdown)
}

/// Stops every server of a run, each with SIGTERM.
async fn stop_all(servers: Vec<ServerProcess>) -> anyhow::Result<()> {
    for server in servers {
        server.stop().await?;
    }
    Ok(())
}

/// Every server's log tail, for an error.
fn log_tails(servers: &[ServerProcess]) -> String {
    servers
        .iter()
        .map(ServerProcess::log_tail)
        .collect::<Vec<_>>()
        .join("\n--\n")
}

/// One store with `processes` server processes on one fresh database: every client count and
/// report shape, then the heartbeats.
async fn run_backend(
    options: &Options,
    backend: Backend,
    processes: u32,
    round: u32,
    work_dir: &Path,
    psql: &Psql,
    admin: &AdminUrl,
) -> anyhow::Result<BackendRun> {
    // Held until the server has stopped: dropping it drops the database.
    let mut scratch = None;
    let database_url = match backend {
        Backend::Sqlite => {
            let file = work_dir.join(format!("bench-{round}.db"));
            format!("sqlite://{}", file.display())
        }
        Backend::Postgres => {
            let database = ScratchDatabase::create(
                admin,
                psql,
                &format!("bldst_bench_{}_server_{processes}", std::process::id()),
            )?;
            let url = database.url.clone();
            scratch = Some(database);
            url
        }
    };
    let pool = options.pool_per_process(processes);
    let threads = options.threads_per_process(processes);
    let mut servers: Vec<ServerProcess> = Vec::new();
    for process in 1..=processes {
        let log_name = format!("{}-x{processes}-{round}-{process}", backend.name());
        // The first bootstraps the database; the others share its admin token.
        let started = match servers.first() {
            None => {
                ServerProcess::start(
                    &options.bldst,
                    &database_url,
                    Some(pool),
                    work_dir,
                    &log_name,
                    &threads,
                )
                .await
            }
            Some(first) => {
                ServerProcess::start_another(
                    &options.bldst,
                    &database_url,
                    Some(pool),
                    first.admin_token.clone(),
                    work_dir,
                    &log_name,
                    &threads,
                )
                .await
            }
        };
        match started {
            Ok(server) => servers.push(server),
            Err(error) => {
                stop_all(servers).await?;
                return Err(error);
            }
        }
    }
    let pids: Vec<u32> = servers.iter().map(|server| server.pid).collect();
    let idle_rss_mib = procfs::total_status_kib(&pids, "VmRSS")? as f64 / KIB_PER_MIB;
    let target = Target {
        base_urls: servers
            .iter()
            .map(|server| server.base_url.clone())
            .collect(),
        token: servers[0].admin_token.clone(),
    };
    let mut phases = Vec::new();
    for &clients in &options.clients {
        // The report shapes back to back at each client count, so they meet the same machine,
        // each round starting from the next one: the first phase on a fresh database runs
        // ~20% slower whatever its shape, so a fixed order would always charge it to the same
        // shape, and with as many rounds as shapes each pays it once (the medians drop it).
        for kind in kinds_for_round(&options.kinds, round) {
            if backend == Backend::Postgres {
                // Each phase starts from a vacuumed table and a clean checkpoint, as pgbench's
                // own runs do. Every client hammers one build row ~1000 times a second and
                // each report's UPDATE leaves a dead version behind (a changing status rules
                // out HOT): without a vacuum between phases (and this machine's PostgreSQL
                // runs with autovacuum off) each phase inherits the last one's dead rows and
                // runs slower than the one before, whatever its report shape.
                psql.execute(&database_url, "VACUUM ANALYZE")?;
                psql.execute(admin.as_str(), "CHECKPOINT")?;
            }
            let phase =
                match run_server_phase(options, backend, &pids, &target, clients, kind).await {
                    Ok(phase) => phase,
                    Err(error) => {
                        let tail = log_tails(&servers);
                        let _ = stop_all(servers).await;
                        return Err(error.context(format!("server log ends with:\n{tail}")));
                    }
                };
            eprintln!(
                "  {clients:>3} clients, {:<7}: {:>8.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors, peak RSS {:.1} MiB",
                kind.name(),
                phase.transitions_per_sec,
                phase.latency.p50_ms,
                phase.latency.p99_ms,
                phase.errors,
                phase.peak_rss_mib
            );
            if !phase.rss_by_reports.is_empty() {
                let marks: Vec<String> = phase
                    .rss_by_reports
                    .iter()
                    .map(|(reports, mib)| format!("{}k: {mib:.1}", reports / 1000))
                    .collect();
                eprintln!("    VmRSS MiB after reports: {}", marks.join(", "));
            }
            phases.push(phase);
        }
    }
    let heartbeat = if options.heartbeat_stages > 0 {
        match run_heartbeat_phase(options, backend, &pids, &target).await {
            Ok(phase) => {
                eprintln!(
                    "  heartbeats: {} stages every {} s: {:.1}/s, p99 {:.2} ms, {} errors, server {} % of one core",
                    phase.stages,
                    phase.every_secs,
                    phase.heartbeats_per_sec,
                    phase.latency.p99_ms,
                    phase.errors,
                    phase
                        .cpu
                        .server_cores
                        .map_or("?".to_owned(), |cores| format!("{:.2}", cores * 100.0))
                );
                Some(phase)
            }
            Err(error) => {
                let tail = log_tails(&servers);
                let _ = stop_all(servers).await;
                return Err(error.context(format!("server log ends with:\n{tail}")));
            }
        }
    } else {
        None
    };
    let high_water_rss_mib = procfs::total_status_kib(&pids, "VmHWM")? as f64 / KIB_PER_MIB;
    stop_all(servers).await?;
    drop(scratch);
    Ok(BackendRun {
        backend,
        processes,
        idle_rss_mib,
        high_water_rss_mib,
        phases,
        heartbeat,
    })
}

/// The report shapes in the order round `round` (from 1) runs them: rotated by one each round.
fn kinds_for_round(kinds: &[ReportKind], round: u32) -> Vec<ReportKind> {
    let mut rotated = kinds.to_vec();
    if !rotated.is_empty() {
        let by = (round.saturating_sub(1) as usize) % rotated.len();
        rotated.rotate_left(by);
    }
    rotated
}

/// `--heartbeat-stages` builds, each with stage 0 leased to a run of its own, heartbeating every
/// `--heartbeat-every-secs`; measures the server's CPU over the window.
async fn run_heartbeat_phase(
    options: &Options,
    backend: Backend,
    server_pids: &[u32],
    target: &Target,
) -> anyhow::Result<HeartbeatPhase> {
    let build_ids =
        load::create_builds(target, options.heartbeat_stages, ReportKind::Plain).await?;
    load::claim_stages(target, &build_ids).await?;
    let every = Duration::from_secs(options.heartbeat_every_secs);
    let background_cores = quiet(options).await?;
    let window = Window::starting_now(options.warmup(), options.duration());
    let measure_cpu = cpu_in_window(window, server_pids);
    let (outcome, cpu) = tokio::join!(
        load::run_heartbeats(target, &build_ids, every, window),
        measure_cpu
    );
    let (outcome, cpu) = (outcome?, cpu?);
    let measured_secs = window.measured().as_secs_f64();
    Ok(HeartbeatPhase {
        backend,
        stages: options.heartbeat_stages,
        every_secs: options.heartbeat_every_secs,
        measured_secs,
        heartbeats: outcome.heartbeats,
        heartbeats_per_sec: outcome.heartbeats as f64 / measured_secs,
        latency: Latency::of(&outcome.latency_micros),
        errors: outcome.errors,
        first_errors: outcome.first_errors,
        background_cores,
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
    let background_cores = quiet(options).await?;
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
        background_cores,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_starts_from_the_next_shape() {
        let kinds = [ReportKind::Plain, ReportKind::Outputs, ReportKind::Leased];
        let first: Vec<ReportKind> = (1..=4)
            .map(|round| kinds_for_round(&kinds, round)[0])
            .collect();
        assert_eq!(
            first,
            [
                ReportKind::Plain,
                ReportKind::Outputs,
                ReportKind::Leased,
                ReportKind::Plain
            ]
        );
        assert_eq!(
            kinds_for_round(&kinds, 2),
            [ReportKind::Outputs, ReportKind::Leased, ReportKind::Plain]
        );
        assert!(kinds_for_round(&[], 3).is_empty());
    }
}
