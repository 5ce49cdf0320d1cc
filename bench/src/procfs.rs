//! What the kernel says about a process and the machine: resident memory (`VmRSS`, `VmHWM`)
//! and CPU time, read from `/proc` so the numbers are the same ones `ps` and `top` show.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;

/// Clock ticks per second of `/proc/*/stat`: 100 on every Linux this runs on (`getconf
/// CLK_TCK`); reading it properly needs libc, which this crate does without.
const TICKS_PER_SECOND: f64 = 100.0;

/// A `kB` line of `/proc/<pid>/status`, such as `VmRSS` or `VmHWM`, in KiB.
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("failed to read /proc/{pid}/status"))?;
    status_field_kib(&status, field)
        .with_context(|| format!("/proc/{pid}/status has no `{field}` line"))
}

fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// `status_kib` summed over `pids` (the server processes of one run).
pub fn total_status_kib(pids: &[u32], field: &str) -> anyhow::Result<u64> {
    pids.iter().map(|&pid| status_kib(pid, field)).sum()
}

/// Samples the `VmRSS` of `pids`, summed, every `every` until the returned sender is used or
/// dropped; the task answers the samples, each as (`answered` at that moment, KiB), so memory
/// can be read against the reports answered so far.
pub fn sample_rss(
    pids: Vec<u32>,
    every: Duration,
    answered: Arc<AtomicU64>,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Vec<(u64, u64)>>,
) {
    let (stop, mut stopped) = oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut ticks = tokio::time::interval(every);
        // Bounded: an hour of samples at most, whatever happens to the sender.
        for _ in 0..36_000 {
            tokio::select! {
                _ = &mut stopped => break,
                _ = ticks.tick() => {
                    match total_status_kib(&pids, "VmRSS") {
                        Ok(kib) => samples.push((answered.load(Ordering::Relaxed), kib)),
                        Err(_) => break, // the process is gone
                    }
                }
            }
        }
        samples
    });
    (stop, sampler)
}

/// From `samples` of (reports answered, KiB): the first sample at or past each multiple of
/// `every` reports, as (the highest multiple it reached, MiB).
pub fn rss_every(samples: &[(u64, u64)], every: u64) -> Vec<(u64, f64)> {
    let mut marks = Vec::new();
    let mut next = every;
    for &(answered, kib) in samples {
        if every > 0 && answered >= next {
            // Labelled with the highest multiple reached: a multiple the sampling stepped
            // over has no reading of its own.
            marks.push(((answered / every) * every, kib as f64 / 1024.0));
            next = (answered / every + 1) * every;
        }
    }
    marks
}

/// CPU seconds (user + system) a process has used so far.
pub fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("failed to read /proc/{pid}/stat"))?;
    let ticks = stat_cpu_ticks(&stat).context("unexpected /proc/PID/stat format")?;
    Ok(ticks as f64 / TICKS_PER_SECOND)
}

/// utime + stime: fields 14 and 15, counted after the `)` that ends the command name (which
/// may itself hold spaces).
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's busy CPU time so far, in seconds summed over all cores.
pub fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("failed to read /proc/stat")?;
    parse_machine_busy(&stat).context("unexpected /proc/stat format")
}

fn parse_machine_busy(stat: &str) -> Option<f64> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some(total.checked_sub(idle)? as f64 / TICKS_PER_SECOND)
}

/// Waits until the machine keeps fewer than `below_cores` cores busy over one second, for at
/// most `patience`; answers the last second's figure (which is above `below_cores` only when
/// patience ran out).
pub async fn wait_for_quiet(below_cores: f64, patience: Duration) -> anyhow::Result<f64> {
    let deadline = std::time::Instant::now() + patience;
    let mut announced = false;
    loop {
        let from = machine_busy_seconds()?;
        let started = std::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = (machine_busy_seconds()? - from) / started.elapsed().as_secs_f64();
        if busy < below_cores {
            return Ok(busy);
        }
        if std::time::Instant::now() >= deadline {
            eprintln!(
                "warning: the machine is still busy ({busy:.2} cores) after {patience:?}: measuring anyway"
            );
            return Ok(busy);
        }
        if !announced {
            eprintln!("  waiting for the machine to be quiet ({busy:.2} cores busy)…");
            announced = true;
        }
    }
}

/// CPU use between two moments, each as cores kept busy (1.0 = one core the whole time).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CpuUse {
    /// The whole machine, every process.
    pub machine_cores: f64,
    /// The `bldst server` processes, together.
    pub server_cores: Option<f64>,
    /// This load generator.
    pub load_generator_cores: Option<f64>,
}

/// A snapshot of the counters [`CpuUse`] is computed from.
#[derive(Debug, Clone, Copy)]
pub struct CpuSnapshot {
    machine_busy: f64,
    server: Option<f64>,
    load_generator: Option<f64>,
    at: std::time::Instant,
}

impl CpuSnapshot {
    /// Counters now; `server_pids` are summed (none: no server figure).
    pub fn take(server_pids: &[u32]) -> anyhow::Result<Self> {
        let server = if server_pids.is_empty() {
            None
        } else {
            Some(
                server_pids
                    .iter()
                    .map(|&pid| process_cpu_seconds(pid))
                    .sum::<anyhow::Result<f64>>()?,
            )
        };
        Ok(CpuSnapshot {
            machine_busy: machine_busy_seconds()?,
            server,
            load_generator: Some(process_cpu_seconds(std::process::id())?),
            at: std::time::Instant::now(),
        })
    }

    /// CPU used from `self` to `later`.
    pub fn until(&self, later: &CpuSnapshot) -> CpuUse {
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let per_wall = |from: Option<f64>, to: Option<f64>| Some((to? - from?) / wall);
        CpuUse {
            machine_cores: (later.machine_busy - self.machine_busy) / wall,
            server_cores: per_wall(self.server, later.server),
            load_generator_cores: per_wall(self.load_generator, later.load_generator),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_at_each_multiple_of_the_reports_answered() {
        let samples = [
            (0, 1024),
            (9_000, 2048),
            (10_500, 3072),
            (12_000, 4096),
            (31_000, 5120),
        ];
        assert_eq!(
            rss_every(&samples, 10_000),
            [(10_000, 3.0), (30_000, 5.0)],
            "a mark the sampling stepped over (20,000) is not made up"
        );
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let status = "Name:\tbldst\nVmHWM:\t   41236 kB\nVmRSS:\t   39112 kB\nThreads:\t3\n";
        assert_eq!(status_field_kib(status, "VmRSS"), Some(39112));
        assert_eq!(status_field_kib(status, "VmHWM"), Some(41236));
        assert_eq!(status_field_kib(status, "Threads"), None);
        assert_eq!(status_field_kib(status, "VmSwap"), None);
    }

    #[test]
    fn cpu_ticks_are_counted_after_a_command_name_with_spaces() {
        let stat = "4242 (tokio runtime) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3";
        assert_eq!(stat_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        assert_eq!(parse_machine_busy(stat), Some(1.5));
    }

    #[test]
    fn this_process_can_be_measured() -> anyhow::Result<()> {
        assert!(status_kib(std::process::id(), "VmRSS")? > 0);
        assert!(process_cpu_seconds(std::process::id())? >= 0.0);
        Ok(())
    }
}
