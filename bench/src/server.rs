//! The server under test: release `bldst server` child processes on free loopback ports (one,
//! or several on one PostgreSQL database), with an admin token from `bldst server bootstrap`,
//! stopped with SIGTERM like a service manager would.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// The token-hashing key of benchmark servers (their databases are thrown away).
const BENCH_SECRET_KEY: &str = "bldst-bench-secret-key-of-32-bytes-or-more";
/// How long a server may take to answer `/ready` (it applies migrations first).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to drain after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `bldst server`.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pub pid: u32,
    pub base_url: String,
    pub admin_token: String,
    log_path: PathBuf,
}

/// `bldst ARGS` with this run's settings: the database, the benchmark's key, no backoff and
/// up to 100 failures a stage (so every report of the benchmark's cycle is accepted), and the
/// PostgreSQL pool size (the server's default if `None`).
fn server_command(
    bldst: &Path,
    database_url: &str,
    database_max_connections: Option<u32>,
    args: &[&str],
) -> Command {
    let mut command = Command::new(bldst);
    command.args(args);
    // Only this run's settings: a BUILDSTATE_* of the caller's shell must not leak in.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BUILDSTATE_") {
            command.env_remove(key);
        }
    }
    command
        .env("DATABASE_URL", database_url)
        .env("SECRET_KEY", BENCH_SECRET_KEY)
        .env("BUILDSTATE_BACKOFF_BASE_SECS", "0")
        .env("BUILDSTATE_MAX_RETRIES", "100")
        // Rate limits off (the benchmark's one token writes thousands of times a second);
        // `--rate-limits` turns them on through `ServerProcess::start`'s `env`.
        .env("BUILDSTATE_RATE_LIMIT_WRITES", "0")
        .env("BUILDSTATE_RATE_LIMIT_FAILED_AUTHS", "0")
        .env_remove("REDIS_URL")
        .stdin(Stdio::null());
    if let Some(pool) = database_max_connections {
        command.env("BUILDSTATE_DATABASE_MAX_CONNECTIONS", pool.to_string());
    }
    command
}

/// Creates the first admin on `database_url` (applying the migrations) and answers its token,
/// which every server process on that database (all with the benchmark's key) accepts.
async fn bootstrap(bldst: &Path, database_url: &str) -> anyhow::Result<String> {
    printed_token(
        bldst,
        database_url,
        &[
            "server",
            "bootstrap",
            "--username",
            "bench",
            "--email",
            "bench@example.com",
        ],
    )
    .await
}

/// A new admin token for `bench` on a database an earlier run bootstrapped and left behind
/// (`bldst server token create`); that command applies any migrations the database lacks.
#[allow(dead_code)] // bldst-reports-bench's `--reuse`; bldst-bench compiles this module too
pub async fn existing_admin_token(bldst: &Path, database_url: &str) -> anyhow::Result<String> {
    printed_token(
        bldst,
        database_url,
        &[
            "server",
            "token",
            "create",
            "--username",
            "bench",
            "--scope",
            "admin",
        ],
    )
    .await
}

/// Runs `bldst ARGS` on `database_url` and answers the token it prints.
async fn printed_token(bldst: &Path, database_url: &str, args: &[&str]) -> anyhow::Result<String> {
    // The subcommand, for messages: the words before the first flag.
    let words: Vec<&str> = args
        .iter()
        .copied()
        .take_while(|arg| !arg.starts_with("--"))
        .collect();
    let command = format!("bldst {}", words.join(" "));
    let output = server_command(bldst, database_url, Some(1), args)
        .output()
        .await
        .with_context(|| format!("failed to run `{command}` ({})", bldst.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "`{command}` failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let token = String::from_utf8(output.stdout)
        .with_context(|| format!("the token `{command}` printed is not UTF-8"))?
        .trim()
        .to_owned();
    anyhow::ensure!(!token.is_empty(), "`{command}` printed no token");
    Ok(token)
}

impl ServerProcess {
    /// Bootstraps an admin on `database_url`, starts the server on it with a pool of
    /// `database_max_connections` (the server's default if `None`) and `env` on top of the
    /// benchmark's settings (e.g. its share of the worker threads, the rate limits on, `REDIS_URL`), and waits for `/ready`.
    /// The server's output goes to `log_dir/NAME.log`.
    pub async fn start(
        bldst: &Path,
        database_url: &str,
        database_max_connections: Option<u32>,
        log_dir: &Path,
        name: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let admin_token = bootstrap(bldst, database_url).await?;
        Self::launch(
            bldst,
            database_url,
            database_max_connections,
            admin_token,
            log_dir,
            name,
            env,
        )
        .await
    }

    /// Starts a server on a database [`ServerProcess::start`] bootstrapped, with a pool of
    /// `database_max_connections` (the default if `None`), and waits for `/ready`: one of
    /// several processes on one database. Its output goes to `log_dir/NAME.log`.
    pub async fn start_another(
        bldst: &Path,
        database_url: &str,
        database_max_connections: Option<u32>,
        admin_token: String,
        log_dir: &Path,
        name: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        Self::launch(
            bldst,
            database_url,
            database_max_connections,
            admin_token,
            log_dir,
            name,
            env,
        )
        .await
    }

    async fn launch(
        bldst: &Path,
        database_url: &str,
        database_max_connections: Option<u32>,
        admin_token: String,
        log_dir: &Path,
        name: &str,
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let listen = free_loopback_address()?;
        let log_path = log_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("failed to create {}", log_path.display()))?;
        let mut command =
            server_command(bldst, database_url, database_max_connections, &["server"]);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command
            .env("BUILDSTATE_LISTEN", &listen)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("failed to start `{} server`", bldst.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let mut server = ServerProcess {
            child,
            pid,
            base_url: format!("http://{listen}"),
            admin_token,
            log_path,
        };
        server.wait_until_ready().await?;
        Ok(server)
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("{}/ready", self.base_url);
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "the server exited ({status}) before it was ready:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(response) = http.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!(
            "the server was not ready after {READY_TIMEOUT:?}:\n{}",
            self.log_tail()
        )
    }

    /// The server's whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then SIGKILL if it has not drained within [`STOP_TIMEOUT`].
    pub async fn stop(mut self) -> anyhow::Result<()> {
        // tokio can only SIGKILL; `kill` sends the graceful signal without unsafe code.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                eprintln!("warning: the server did not stop within {STOP_TIMEOUT:?}; killing it");
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

/// A loopback address with a port nobody listens on right now.
fn free_loopback_address() -> anyhow::Result<String> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("failed to find a free port")?;
    Ok(probe.local_addr()?.to_string())
}
