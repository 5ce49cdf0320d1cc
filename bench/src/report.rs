//! What a run measured and its report: the median of the rounds per store, count of server
//! processes and client count, its ratio to one process's and to pgbench's ceiling, as a Markdown table on stdout and in `bench/results/`, with every
//! round's raw figures beside it as JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::options::{Backend, Options, ReportKind};
use crate::pgbench;
use crate::procfs::CpuUse;

pub const KIB_PER_MIB: f64 = 1024.0;

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
    pub fn of(micros: &Histogram<u64>) -> Self {
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
    pub kind: ReportKind,
    pub measured_secs: f64,
    pub transitions: u64,
    pub transitions_per_sec: f64,
    pub latency: Latency,
    pub errors: u64,
    pub first_errors: Vec<String>,
    pub resets: u64,
    /// The largest `VmRSS` sampled during the phase (warm-up included).
    pub peak_rss_mib: f64,
    /// `VmRSS` (MiB) as the reports answered in the phase (warm-up included) passed each
    /// multiple of 10,000: whether memory stays flat as the history grows.
    pub rss_by_reports: Vec<(u64, f64)>,
    /// Cores busy in the second before the phase (other work on the machine).
    pub background_cores: f64,
    pub cpu: CpuUse,
}

/// One store with one or more server processes on one database: its phases and the servers'
/// memory (summed over the processes) over their whole life.
#[derive(Debug, Clone, Serialize)]
pub struct BackendRun {
    pub backend: Backend,
    pub processes: u32,
    /// `VmRSS` once ready, before any load.
    pub idle_rss_mib: f64,
    /// `VmHWM`: the most the servers were ever resident, read just before they were stopped.
    pub high_water_rss_mib: f64,
    pub phases: Vec<ServerPhase>,
    pub heartbeat: Option<HeartbeatPhase>,
}

/// Many leased stages heartbeating at a fixed interval: what it costs the server.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatPhase {
    pub backend: Backend,
    pub stages: u32,
    pub every_secs: u64,
    pub measured_secs: f64,
    pub heartbeats: u64,
    pub heartbeats_per_sec: f64,
    pub latency: Latency,
    pub errors: u64,
    pub first_errors: Vec<String>,
    pub background_cores: f64,
    pub cpu: CpuUse,
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
    /// Cores busy in the second before the phase (other work on the machine).
    pub background_cores: f64,
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

/// One pass over every phase.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub backends: Vec<BackendRun>,
    pub ceiling: Vec<CeilingPhase>,
}

/// One store, process count and client count, summarized over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub backend: Backend,
    pub processes: u32,
    pub clients: u32,
    pub kind: ReportKind,
    /// This kind's throughput over the plain report's at the same store, process count and
    /// client count.
    pub vs_plain: Option<f64>,
    /// This throughput over one process's at the same store, client count and kind (when
    /// this is a run of several and one process was measured too).
    pub vs_one_process: Option<f64>,
    /// The median round's throughput, and the extremes.
    pub transitions_per_sec: f64,
    pub transitions_per_sec_min: f64,
    pub transitions_per_sec_max: f64,
    /// Medians over the rounds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Over every round.
    pub errors: u64,
    pub peak_rss_mib: f64,
    /// Medians over the rounds of pgbench's throughput at the same client count (PostgreSQL).
    pub ceiling_tps: Option<f64>,
    pub ceiling_with_auth_tps: Option<f64>,
    /// `transitions_per_sec` over the ceilings.
    pub ratio: Option<f64>,
    pub ratio_with_auth: Option<f64>,
}

/// One pgbench script and client count, summarized over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingSummary {
    pub script: &'static str,
    pub clients: u32,
    pub tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub failed: u64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub started_at: String,
    pub command: String,
    pub machine: Machine,
    pub warmup_secs: u64,
    pub duration_secs: u64,
    pub summary: Vec<Summary>,
    pub ceiling_summary: Vec<CeilingSummary>,
    pub rounds: Vec<Round>,
}

impl Results {
    /// Summarizes `rounds`: medians per store (or script) and client count.
    pub fn new(
        started_at: String,
        command: String,
        machine: Machine,
        options: &Options,
        rounds: Vec<Round>,
    ) -> Self {
        let ceiling_phases = |script: &str, clients: u32| -> Vec<&CeilingPhase> {
            rounds
                .iter()
                .flat_map(|round| &round.ceiling)
                .filter(|phase| phase.script == script && phase.clients == clients)
                .collect()
        };
        let mut ceiling_summary = Vec::new();
        for &clients in &options.clients {
            for script in [pgbench::TRANSITION.name, pgbench::TRANSITION_WITH_AUTH.name] {
                let phases = ceiling_phases(script, clients);
                if phases.is_empty() {
                    continue;
                }
                ceiling_summary.push(CeilingSummary {
                    script,
                    clients,
                    tps: median(phases.iter().map(|phase| phase.tps)),
                    p50_ms: median(phases.iter().map(|phase| phase.latency.p50_ms)),
                    p99_ms: median(phases.iter().map(|phase| phase.latency.p99_ms)),
                    failed: phases.iter().map(|phase| phase.failed).sum(),
                });
            }
        }
        let ceiling_tps = |script: &str, clients: u32| {
            ceiling_summary
                .iter()
                .find(|summary| summary.script == script && summary.clients == clients)
                .map(|summary| summary.tps)
        };

        let mut summary = Vec::new();
        let runs = options.backends.iter().flat_map(|&backend| {
            options
                .server_processes
                .iter()
                .map(move |&processes| (backend, processes))
        });
        for (backend, processes) in runs {
            for &clients in &options.clients {
                for &kind in &options.kinds {
                    let phases: Vec<&ServerPhase> = rounds
                        .iter()
                        .flat_map(|round| &round.backends)
                        .filter(|run| run.backend == backend && run.processes == processes)
                        .flat_map(|run| &run.phases)
                        .filter(|phase| phase.clients == clients && phase.kind == kind)
                        .collect();
                    if phases.is_empty() {
                        continue;
                    }
                    let throughput = || phases.iter().map(|phase| phase.transitions_per_sec);
                    let transitions_per_sec = median(throughput());
                    let (plain, with_auth) = match backend {
                        Backend::Postgres => (
                            ceiling_tps(pgbench::TRANSITION.name, clients),
                            ceiling_tps(pgbench::TRANSITION_WITH_AUTH.name, clients),
                        ),
                        // pgbench measures PostgreSQL only.
                        Backend::Sqlite => (None, None),
                    };
                    let ratio = |ceiling: Option<f64>| {
                        ceiling
                            .filter(|tps| *tps > 0.0)
                            .map(|tps| transitions_per_sec / tps)
                    };
                    summary.push(Summary {
                        backend,
                        processes,
                        clients,
                        kind,
                        vs_plain: None,
                        vs_one_process: None,
                        transitions_per_sec,
                        transitions_per_sec_min: throughput().fold(f64::INFINITY, f64::min),
                        transitions_per_sec_max: throughput().fold(0.0, f64::max),
                        p50_ms: median(phases.iter().map(|phase| phase.latency.p50_ms)),
                        p99_ms: median(phases.iter().map(|phase| phase.latency.p99_ms)),
                        errors: phases.iter().map(|phase| phase.errors).sum(),
                        peak_rss_mib: phases
                            .iter()
                            .map(|phase| phase.peak_rss_mib)
                            .fold(0.0, f64::max),
                        ceiling_tps: plain,
                        ceiling_with_auth_tps: with_auth,
                        ratio: ratio(plain),
                        ratio_with_auth: ratio(with_auth),
                    });
                }
            }
        }
        let rates: Vec<(Backend, u32, u32, ReportKind, f64)> = summary
            .iter()
            .map(|row| {
                let key = (row.backend, row.processes, row.clients, row.kind);
                (key.0, key.1, key.2, key.3, row.transitions_per_sec)
            })
            .collect();
        let rate_of = |backend: Backend, processes: u32, clients: u32, kind: ReportKind| {
            rates
                .iter()
                .find(|rate| {
                    rate.0 == backend && rate.1 == processes && rate.2 == clients && rate.3 == kind
                })
                .map(|rate| rate.4)
                .filter(|rate| *rate > 0.0)
        };
        for row in &mut summary {
            row.vs_plain = rate_of(row.backend, row.processes, row.clients, ReportKind::Plain)
                .map(|rate| row.transitions_per_sec / rate);
            row.vs_one_process = (row.processes > 1)
                .then(|| rate_of(row.backend, 1, row.clients, row.kind))
                .flatten()
                .map(|rate| row.transitions_per_sec / rate);
        }
        Results {
            started_at,
            command,
            machine,
            warmup_secs: options.warmup_secs,
            duration_secs: options.duration_secs,
            summary,
            ceiling_summary,
            rounds,
        }
    }
}

/// A run's name in the report: the store, and the process count when above one.
pub fn run_label(backend: Backend, processes: u32) -> String {
    match processes {
        1 => backend.name().to_owned(),
        n => format!("{} × {n} processes", backend.name()),
    }
}

/// The phases of `row`'s store, process count, client count and kind, every round.
fn phases_of<'a>(results: &'a Results, row: &Summary) -> Vec<&'a ServerPhase> {
    results
        .rounds
        .iter()
        .flat_map(|round| &round.backends)
        .filter(|run| run.backend == row.backend && run.processes == row.processes)
        .flat_map(|run| &run.phases)
        .filter(|phase| phase.clients == row.clients && phase.kind == row.kind)
        .collect()
}

/// The median (the mean of the middle two for an even count); 0 for none.
pub(crate) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The report: the headline table (medians over the rounds), memory, every round's figures,
/// pgbench's latencies and where the CPU went.
pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let machine = &results.machine;
    let rounds = results.rounds.len();
    let _ = writeln!(
        out,
        "Run {} — {} cores ({}), {:.0} GiB, Linux {}, PostgreSQL {}, {}; {rounds} round(s) of a \
         {} s warm-up and {} s measured per phase; medians over the rounds.\n",
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
    let or_dash = |value: Option<f64>, decimals: usize| {
        value.map_or("—".to_owned(), |value| format!("{value:.decimals$}"))
    };
    let _ = writeln!(
        out,
        "| backend | processes | clients | report | req/s | vs plain | vs 1 process | (min–max) | p50 ms | p99 ms | errors | peak RSS MiB | pgbench tps | ratio | pgbench+auth tps | ratio (+auth) |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in &results.summary {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {:.0}–{:.0} | {:.2} | {:.2} | {} | {:.1} | {} | {} | {} | {} |",
            row.backend.name(),
            row.processes,
            row.clients,
            row.kind.name(),
            row.transitions_per_sec,
            or_dash(row.vs_plain, 2),
            or_dash(row.vs_one_process, 2),
            row.transitions_per_sec_min,
            row.transitions_per_sec_max,
            row.p50_ms,
            row.p99_ms,
            row.errors,
            row.peak_rss_mib,
            or_dash(row.ceiling_tps, 0),
            or_dash(row.ratio, 2),
            or_dash(row.ceiling_with_auth_tps, 0),
            or_dash(row.ratio_with_auth, 2),
        );
    }

    let _ = writeln!(
        out,
        "\nServer memory, MiB (all of a run's processes together; largest over the rounds):\n"
    );
    let mut labels: Vec<(Backend, u32)> = Vec::new();
    for run in results.rounds.iter().flat_map(|round| &round.backends) {
        if !labels.contains(&(run.backend, run.processes)) {
            labels.push((run.backend, run.processes));
        }
    }
    for &(backend, processes) in &labels {
        let runs: Vec<&BackendRun> = results
            .rounds
            .iter()
            .flat_map(|round| &round.backends)
            .filter(|run| run.backend == backend && run.processes == processes)
            .collect();
        if runs.is_empty() {
            continue;
        }
        let largest =
            |value: fn(&BackendRun) -> f64| runs.iter().map(|run| value(run)).fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "- {}: idle {:.1}; sampled under load (VmRSS every 100 ms) {:.1}; VmHWM over the server's life {:.1}",
            run_label(backend, processes),
            largest(|run| run.idle_rss_mib),
            largest(|run| run.phases.iter().map(|phase| phase.peak_rss_mib).fold(0.0, f64::max)),
            largest(|run| run.high_water_rss_mib),
        );
    }

    let marked: Vec<(usize, &BackendRun, &ServerPhase)> = results
        .rounds
        .iter()
        .enumerate()
        .flat_map(|(round, r)| r.backends.iter().map(move |run| (round, run)))
        .flat_map(|(round, run)| run.phases.iter().map(move |phase| (round, run, phase)))
        .filter(|(_, _, phase)| !phase.rss_by_reports.is_empty())
        .collect();
    if !marked.is_empty() {
        let _ = writeln!(
            out,
            "\nServer memory as reports are answered (VmRSS MiB after each 10,000, warm-up included):\n"
        );
        for (round, run, phase) in marked {
            let marks: Vec<String> = phase
                .rss_by_reports
                .iter()
                .map(|(reports, mib)| format!("{}k {mib:.1}", reports / 1000))
                .collect();
            let _ = writeln!(
                out,
                "- {}, {} clients, {}, round {}: {}",
                run_label(run.backend, run.processes),
                phase.clients,
                phase.kind.name(),
                round + 1,
                marks.join(", ")
            );
        }
    }

    if rounds > 1 {
        let _ = writeln!(
            out,
            "\nEvery round (req/s for the server, tps for pgbench):\n"
        );
        let header: String = (1..=rounds).map(|n| format!(" round {n} |")).collect();
        let _ = writeln!(out, "| run | clients |{header}");
        let _ = writeln!(out, "|---|---:|{}", "---:|".repeat(rounds));
        for row in &results.summary {
            let cells: String = results
                .rounds
                .iter()
                .map(|round| {
                    let value = round
                        .backends
                        .iter()
                        .filter(|run| run.backend == row.backend && run.processes == row.processes)
                        .flat_map(|run| &run.phases)
                        .find(|phase| phase.clients == row.clients && phase.kind == row.kind)
                        .map(|phase| phase.transitions_per_sec);
                    format!(" {} |", or_dash(value, 0))
                })
                .collect();
            let _ = writeln!(
                out,
                "| server on {}, {} | {} |{cells}",
                run_label(row.backend, row.processes),
                row.kind.name(),
                row.clients
            );
        }
        for row in &results.ceiling_summary {
            let cells: String = results
                .rounds
                .iter()
                .map(|round| {
                    let value = round
                        .ceiling
                        .iter()
                        .find(|phase| phase.script == row.script && phase.clients == row.clients)
                        .map(|phase| phase.tps);
                    format!(" {} |", or_dash(value, 0))
                })
                .collect();
            let _ = writeln!(out, "| pgbench {} | {} |{cells}", row.script, row.clients);
        }
    }

    if !results.ceiling_summary.is_empty() {
        let _ = writeln!(
            out,
            "\npgbench ceiling (same windows, from its per-transaction log; medians):\n"
        );
        let _ = writeln!(out, "| script | clients | tps | p50 ms | p99 ms | failed |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
        for row in &results.ceiling_summary {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {} |",
                row.script, row.clients, row.tps, row.p50_ms, row.p99_ms, row.failed
            );
        }
    }

    let _ = writeln!(
        out,
        "\nCPU during the measured windows, in cores kept busy (the machine has {}; means over the rounds):\n",
        machine.cores
    );
    let _ = writeln!(
        out,
        "| run | clients | busy before (other work) | whole machine | bldst server(s) | load generator | rest (PostgreSQL, OS) | server CPU µs per request |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in &results.summary {
        let phases = phases_of(results, row);
        let mean = |value: &dyn Fn(&ServerPhase) -> f64| {
            phases.iter().map(|phase| value(phase)).sum::<f64>() / phases.len().max(1) as f64
        };
        let machine_cores = mean(&|phase| phase.cpu.machine_cores);
        let server_cores = mean(&|phase| phase.cpu.server_cores.unwrap_or(0.0));
        let load_cores = mean(&|phase| phase.cpu.load_generator_cores.unwrap_or(0.0));
        let requests = mean(&|phase| phase.transitions_per_sec);
        // Process and machine counters are sampled apart: clamp the small negative noise.
        let rest = (machine_cores - server_cores - load_cores).max(0.0);
        let _ = writeln!(
            out,
            "| server on {}, {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            run_label(row.backend, row.processes),
            row.kind.name(),
            row.clients,
            mean(&|phase| phase.background_cores),
            machine_cores,
            server_cores,
            load_cores,
            rest,
            or_dash((requests > 0.0).then(|| server_cores / requests * 1e6), 0),
        );
    }
    for row in &results.ceiling_summary {
        let phases: Vec<&CeilingPhase> = results
            .rounds
            .iter()
            .flat_map(|round| &round.ceiling)
            .filter(|phase| phase.script == row.script && phase.clients == row.clients)
            .collect();
        let count = phases.len().max(1) as f64;
        let background = phases
            .iter()
            .map(|phase| phase.background_cores)
            .sum::<f64>()
            / count;
        let busy = phases
            .iter()
            .map(|phase| phase.cpu.machine_cores)
            .sum::<f64>()
            / count;
        let _ = writeln!(
            out,
            "| pgbench {} | {} | {background:.2} | {busy:.2} | — | — | {busy:.2} | — |",
            row.script, row.clients,
        );
    }

    let heartbeats: Vec<(String, &HeartbeatPhase)> = results
        .rounds
        .iter()
        .flat_map(|round| &round.backends)
        .filter_map(|run| {
            let phase = run.heartbeat.as_ref()?;
            Some((run_label(run.backend, run.processes), phase))
        })
        .collect();
    if !heartbeats.is_empty() {
        let _ = writeln!(
            out,
            "\nHeartbeats: leased stages each heartbeating at a fixed interval, every round:\n"
        );
        let _ = writeln!(
            out,
            "| backend | stages | every s | heartbeats/s | p50 ms | p99 ms | errors | busy before | bldst server(s), % of one core |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (label, phase) in &heartbeats {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {:.2} | {:.2} | {} | {:.2} | {} |",
                label,
                phase.stages,
                phase.every_secs,
                phase.heartbeats_per_sec,
                phase.latency.p50_ms,
                phase.latency.p99_ms,
                phase.errors,
                phase.background_cores,
                or_dash(phase.cpu.server_cores.map(|cores| cores * 100.0), 2),
            );
        }
    }

    let errors: Vec<&String> = results
        .rounds
        .iter()
        .flat_map(|round| &round.backends)
        .flat_map(|run| {
            run.phases
                .iter()
                .flat_map(|phase| &phase.first_errors)
                .chain(run.heartbeat.iter().flat_map(|phase| &phase.first_errors))
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "\nFirst errors:\n");
        for error in errors.iter().take(10) {
            let _ = writeln!(out, "- {error}");
        }
    }
    out
}

/// Writes `<results_dir>/<UTC time>.md` and `.json`.
pub fn write_results(results_dir: &Path, results: &Results, markdown: &str) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_odd_or_even_count() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }
}
