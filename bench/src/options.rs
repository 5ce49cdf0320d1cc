//! The command line of `bldst-bench`.

use std::path::PathBuf;
use std::time::Duration;

/// Which store a server phase runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The shape of the reports a server phase sends, measured side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportKind {
    /// Today's report: state, status, message.
    Plain,
    /// Completions carry three outputs (an image id, an address, a snapshot id).
    Outputs,
    /// Every report comes from an identified run: `in_progress` claims the stage's lease,
    /// `failed`/`completed` are the holder's and release it.
    Leased,
    /// Plain reports on a build started with a retry policy of 21 stage rules (one per
    /// stage, no `restart_from`, so the cycle is the same): what reading and applying a policy
    /// costs a report.
    Policy,
}

impl ReportKind {
    pub fn name(self) -> &'static str {
        match self {
            ReportKind::Plain => "plain",
            ReportKind::Outputs => "outputs",
            ReportKind::Leased => "leased",
            ReportKind::Policy => "policy",
        }
    }
}

/// How the server under test enforces its rate limits (`--rate-limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimits {
    /// No limits (`BUILDSTATE_RATE_LIMIT_WRITES=0`, `…_FAILED_AUTHS=0`).
    Off,
    /// Counted in the server process (no `REDIS_URL`).
    Process,
    /// Counted in a `redis-server` the benchmark starts for itself (`REDIS_URL`).
    Redis,
}

impl RateLimits {
    pub fn name(self) -> &'static str {
        match self {
            RateLimits::Off => "off",
            RateLimits::Process => "process",
            RateLimits::Redis => "redis",
        }
    }
}

/// Load-tests a release `bldst server` with transition reports, beside pgbench's ceiling.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "bldst-bench", version)]
pub struct Options {
    /// The `bldst` binary to benchmark (build it with `cargo build --release`).
    #[arg(long)]
    pub bldst: PathBuf,
    /// Stores to run the server on.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    pub backends: Vec<Backend>,
    /// Server processes on one database, each count a run of its own beside the others in every
    /// round (`1,3`: one process, then three): the clients are spread over the processes in
    /// turn, as a round-robin load balancer spreads them. Above 1 needs PostgreSQL only
    /// (`--backends postgres`): a SQLite file belongs to one process.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub server_processes: Vec<u32>,
    /// PostgreSQL connections of a run's server processes together: each process's pool is
    /// this divided by the process count (rounded up), so that one process and three compare
    /// with the same connections and stay inside PostgreSQL's `max_connections`.
    #[arg(long, default_value_t = 32)]
    pub database_connections: u32,
    /// Runtime worker threads of a run's server processes together, split like the
    /// connections (each process gets this divided by the process count, at least one, through
    /// tokio's `TOKIO_WORKER_THREADS`), so that three processes get the machine one process
    /// gets instead of three times its threads. 0: each process takes tokio's default (one
    /// thread per core, each).
    #[arg(long, default_value_t = 0)]
    pub worker_threads: u32,
    /// Concurrent clients, one build each; every count is a phase of its own.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub clients: Vec<u32>,
    /// Passes over every phase; the report shows the median (the machine is noisy).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Seconds of load before measuring starts (not counted).
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Seconds measured in each phase.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// A PostgreSQL on this machine, as a superuser that may create databases; the benchmark
    /// creates scratch databases beside the one named and drops them afterwards.
    #[arg(
        long,
        env = "BLDST_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub postgres_url: String,
    /// Skip the pgbench ceiling.
    #[arg(long)]
    pub skip_pgbench: bool,
    #[arg(long, default_value = "pgbench")]
    pub pgbench: PathBuf,
    #[arg(long, default_value = "psql")]
    pub psql: PathBuf,
    /// Where the Markdown table and the raw JSON are written.
    #[arg(long, default_value = "bench/results")]
    pub results_dir: PathBuf,
    /// Before each phase, wait until the rest of the machine keeps fewer than this many cores
    /// busy (measured over a second): the machine is shared, and a compile beside the
    /// benchmark halves its numbers.
    #[arg(long, default_value_t = 0.15)]
    pub quiet_below_cores: f64,
    /// The longest wait for a quiet machine before a phase; it then runs anyway, and the
    /// report shows how busy the machine was.
    #[arg(long, default_value_t = 300)]
    pub quiet_wait_secs: u64,
    /// Report shapes, each a phase of its own at every client count (plain first, the others
    /// compared with it).
    #[arg(long, value_delimiter = ',', default_value = "plain,outputs,leased")]
    pub kinds: Vec<ReportKind>,
    /// Stages held by leases in the heartbeat phase, each heartbeating every
    /// --heartbeat-every-secs (0 skips the phase).
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_stages: u32,
    #[arg(long, default_value_t = 10)]
    pub heartbeat_every_secs: u64,
    /// Rate limiting in the server: `off` (the default) runs the report benchmark above; more
    /// than one mode (e.g. `off,process,redis`) instead measures what rate limiting costs a
    /// plain report: one server per mode, each counting every write but never refusing one,
    /// the modes alternating within each round; no pgbench, heartbeat or other report kinds.
    #[arg(long, value_delimiter = ',', default_value = "off")]
    pub rate_limits: Vec<RateLimits>,
    /// The `redis-server` program for `--rate-limits redis` (started on a free port, no
    /// persistence, stopped at the end; never the machine's own Redis).
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// A safety bound: no client sends more requests than this in one phase.
    #[arg(long, default_value_t = 5_000_000)]
    pub max_requests_per_client: u64,
}

impl Options {
    /// The pool of each of `processes` server processes (see `--database-connections`).
    pub fn pool_per_process(&self, processes: u32) -> u32 {
        self.database_connections.div_ceil(processes.max(1))
    }

    /// The environment giving each of `processes` server processes its share of
    /// `--worker-threads` (nothing when that is 0).
    pub fn threads_per_process(&self, processes: u32) -> Vec<(&'static str, String)> {
        if self.worker_threads == 0 {
            return Vec::new();
        }
        let share = (self.worker_threads / processes.max(1)).max(1);
        vec![("TOKIO_WORKER_THREADS", share.to_string())]
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup_secs)
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }

    /// Refuses settings that would not measure anything or would send load off this machine.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.duration_secs > 0, "--duration-secs must be at least 1");
        anyhow::ensure!(
            !self.clients.is_empty() && self.clients.iter().all(|&n| (1..=256).contains(&n)),
            "--clients must list counts from 1 to 256"
        );
        anyhow::ensure!(!self.backends.is_empty(), "--backends lists no store");
        anyhow::ensure!((1..=20).contains(&self.rounds), "--rounds must be 1 to 20");
        anyhow::ensure!(!self.kinds.is_empty(), "--kinds lists no report shape");
        anyhow::ensure!(
            !self.server_processes.is_empty()
                && self.server_processes.iter().all(|&n| (1..=8).contains(&n)),
            "--server-processes must list counts from 1 to 8"
        );
        anyhow::ensure!(
            self.server_processes.iter().all(|&n| n == 1) || self.backends == [Backend::Postgres],
            "--server-processes above 1 needs `--backends postgres`: a SQLite file belongs to one \
             server process"
        );
        anyhow::ensure!(
            (1..=256).contains(&self.database_connections),
            "--database-connections must be 1 to 256"
        );
        anyhow::ensure!(
            self.heartbeat_stages <= 100_000,
            "--heartbeat-stages must be at most 100000"
        );
        anyhow::ensure!(
            (1..=600).contains(&self.heartbeat_every_secs),
            "--heartbeat-every-secs must be 1 to 600"
        );
        if self.backends.contains(&Backend::Postgres) || !self.skip_pgbench {
            crate::postgres::AdminUrl::parse(&self.postgres_url)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(args: &[&str]) -> Options {
        Options::parse_from(["bldst-bench", "--bldst", "bldst"].iter().chain(args))
    }

    #[test]
    fn several_server_processes_share_the_database_connections() {
        let options = parse(&["--backends", "postgres", "--server-processes", "1,3"]);
        options.check().expect("valid");
        assert_eq!(options.server_processes, [1, 3]);
        assert_eq!(options.pool_per_process(1), 32);
        assert_eq!(options.pool_per_process(3), 11);
    }

    #[test]
    fn several_server_processes_are_refused_on_sqlite() {
        let options = parse(&["--server-processes", "1,3"]);
        let error = options
            .check()
            .expect_err("sqlite is in the default backends");
        assert!(error.to_string().contains("--backends postgres"), "{error}");
        let zero = parse(&["--backends", "postgres", "--server-processes", "0"]);
        assert!(zero.check().is_err());
    }
}
