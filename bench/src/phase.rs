//! One measured phase, shared by the benchmark's runs (`run`) and its rate-limit comparison
//! (`rate_limits`): waiting for a quiet machine, then the clients' reports against running
//! servers, with the servers' memory and CPU sampled meanwhile.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::load::{self, Target, Window};
use crate::options::{Backend, Options, ReportKind};
use crate::procfs::{self, CpuSnapshot, CpuUse};
use crate::report::{Latency, ServerPhase, KIB_PER_MIB};

/// How often the server's resident memory is sampled under load.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Memory is reported each time this many more reports have been answered in a phase.
const RSS_MARK_EVERY: u64 = 10_000;

/// `clients` clients sending `kind` reports to the servers at `target` (processes
/// `server_pids`) for the options' warm-up and duration, once the machine is quiet.
pub async fn run_server_phase(
    options: &Options,
    backend: Backend,
    server_pids: &[u32],
    target: &Target,
    clients: u32,
    kind: ReportKind,
) -> anyhow::Result<ServerPhase> {
    let build_ids = load::create_builds(target, clients, kind).await?;
    let background_cores = quiet(options).await?;
    let answered = Arc::new(AtomicU64::new(0));
    let (stop_sampling, sampler) =
        procfs::sample_rss(server_pids.to_vec(), RSS_SAMPLE_EVERY, answered.clone());
    let window = Window::starting_now(options.warmup(), options.duration());
    let measure_cpu = cpu_in_window(window, server_pids);
    let (outcome, cpu) = tokio::join!(
        load::run_clients(
            target,
            &build_ids,
            kind,
            window,
            options.max_requests_per_client,
            answered
        ),
        measure_cpu
    );
    let _ = stop_sampling.send(());
    let rss_samples = sampler.await.context("the RSS sampler failed")?;
    let (outcome, cpu) = (outcome?, cpu?);
    let measured_secs = window.measured().as_secs_f64();
    Ok(ServerPhase {
        backend,
        clients,
        kind,
        measured_secs,
        transitions: outcome.transitions,
        transitions_per_sec: outcome.transitions as f64 / measured_secs,
        latency: Latency::of(&outcome.latency_micros),
        errors: outcome.errors,
        first_errors: outcome.first_errors,
        resets: outcome.resets,
        peak_rss_mib: rss_samples.iter().map(|&(_, kib)| kib).max().unwrap_or(0) as f64
            / KIB_PER_MIB,
        rss_by_reports: procfs::rss_every(&rss_samples, RSS_MARK_EVERY),
        background_cores,
        cpu,
    })
}

/// Waits until the machine is as quiet as the options ask (or their patience runs out); answers
/// the cores that were busy meanwhile.
pub async fn quiet(options: &Options) -> anyhow::Result<f64> {
    procfs::wait_for_quiet(
        options.quiet_below_cores,
        Duration::from_secs(options.quiet_wait_secs),
    )
    .await
}

/// The servers' (`server_pids`) CPU over the measured part of `window`, once it has ended.
pub async fn cpu_in_window(window: Window, server_pids: &[u32]) -> anyhow::Result<CpuUse> {
    tokio::time::sleep_until(window.measure_from.into()).await;
    let from = CpuSnapshot::take(server_pids)?;
    tokio::time::sleep_until(window.end.into()).await;
    Ok(from.until(&CpuSnapshot::take(server_pids)?))
}
