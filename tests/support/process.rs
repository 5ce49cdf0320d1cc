//! The real `bldst server` binary as a child process, for what only a process shows: several
//! processes on one database, signals, the listener's limits, TLS, the log format.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use buildstate::client::{Client, ClientConfig};

/// The `SECRET_KEY` of the server processes the tests start, and of their bootstraps.
pub const TEST_SECRET_KEY: &str = "test-secret-key-of-32-bytes-or-more";

/// The words after `bldst` that bootstrap the first admin, `admin`.
pub const BOOTSTRAP_ARGS: [&str; 6] = [
    "server",
    "bootstrap",
    "--username",
    "admin",
    "--email",
    "admin@example.com",
];

/// Which database `bldst server bootstrap` writes to.
#[derive(Debug, Clone, Copy)]
pub enum BootstrapDatabase<'a> {
    /// The one `DATABASE_URL` names.
    Url(&'a str),
    /// The default one (no `DATABASE_URL`): the SQLite file in this working directory.
    DefaultFileIn(&'a std::path::Path),
}

/// Runs `bldst server bootstrap` ([`BOOTSTRAP_ARGS`]) on `database`, with
/// [`TEST_SECRET_KEY`]; its whole output, whether it succeeded or not.
pub fn bootstrap_output(database: BootstrapDatabase<'_>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bldst"));
    command
        .args(BOOTSTRAP_ARGS)
        .env("SECRET_KEY", TEST_SECRET_KEY);
    match database {
        BootstrapDatabase::Url(url) => command.env("DATABASE_URL", url),
        BootstrapDatabase::DefaultFileIn(dir) => {
            command.current_dir(dir).env_remove("DATABASE_URL")
        }
    };
    command.output().expect("bldst server bootstrap runs")
}

/// A running `bldst server`; killed when dropped.
pub struct ServerProcess {
    /// `127.0.0.1:PORT`, as the server logged it.
    pub address: String,
    pub base_url: String,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `bldst server --listen 127.0.0.1:0 ARGS…` on `database_url` with `SECRET_KEY`
    /// set as the in-process test servers set it, and, as they have it, no retry scheduler
    /// (tests of automatic retries turn it on with `BUILDSTATE_RETRY_CHECK_MILLIS` in `env`),
    /// plus `env`; waits until it listens.
    pub async fn start(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bldst"));
        command
            .args(["server", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("DATABASE_URL", database_url)
            .env("SECRET_KEY", TEST_SECRET_KEY)
            .env("BUILDSTATE_RETRY_CHECK_MILLIS", "0")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .env_remove("BUILDSTATE_LOG_FORMAT");
        if database_url.starts_with("postgres") {
            // The suite's budget of PostgreSQL connections counts each process as a test
            // server's pool and one listening connection (`super::POSTGRES_SERVERS_AT_ONCE`).
            let pool = super::TEST_POOL_SIZE.to_string();
            command.env("BUILDSTATE_DATABASE_MAX_CONNECTIONS", pool);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let scheme = if args.contains(&"--tls-cert") {
            "https"
        } else {
            "http"
        };
        Self::spawn(command, scheme).await
    }

    /// Starts `command`, a `bldst server` however it is run (e.g. inside an image), and waits
    /// until it logs the address it listens on; `scheme` is `http` or `https`.
    pub async fn spawn(mut command: Command, scheme: &str) -> Self {
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("bldst server starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, address) = tokio::sync::oneshot::channel();
        let lines = Arc::clone(&log);
        // Keep draining the log after the address line, so the server never writes to a
        // closed pipe, and keep every line for tests that read the log.
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let (Some(address), true) = (logged_address(&line), found.is_some()) {
                    if let Some(sender) = found.take() {
                        let _ = sender.send(address);
                    }
                }
                lines.lock().expect("log lines").push(line);
            }
        });
        let address = match tokio::time::timeout(Duration::from_secs(60), address).await {
            Ok(Ok(address)) => address,
            _ => {
                let _ = child.kill();
                panic!(
                    "bldst server did not log its address; its log:\n{}",
                    log.lock().expect("log lines").join("\n")
                );
            }
        };
        ServerProcess {
            base_url: format!("{scheme}://{address}"),
            address,
            child,
            log,
        }
    }

    /// Runs `bldst server bootstrap` on `database_url`; returns the first admin's token.
    pub fn bootstrap(database_url: &str) -> String {
        let output = bootstrap_output(BootstrapDatabase::Url(database_url));
        assert!(
            output.status.success(),
            "bootstrap: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("utf-8")
            .trim()
            .to_owned()
    }

    /// A client of this process with `token`.
    pub fn client_with(&self, token: &str) -> Client {
        let mut config = ClientConfig::new(&self.base_url, Some(token.to_owned()));
        config.timeout = Duration::from_secs(20);
        config.retry_base = Duration::from_millis(20);
        Client::new(config).expect("client")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Every line the server logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lines").clone()
    }

    /// Sends SIGTERM, as a container runtime or systemd stops a service.
    #[cfg(unix)]
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Sends SIGKILL and waits for the process to end: a crash, with no chance to answer or
    /// flush anything.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("wait for the killed server");
    }

    /// Waits (up to a minute) for the process to exit.
    pub async fn exited(&mut self) -> ExitStatus {
        for _ in 0..1200 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("bldst server did not exit within a minute");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // A failing test's message may say "the cause is in its log": show that log with it
        // (the test harness prints what a failed test wrote).
        if std::thread::panicking() {
            eprintln!(
                "--- the log of bldst server at {} ---\n{}\n--- end of its log ---",
                self.address,
                self.log
                    .lock()
                    .map(|lines| lines.join("\n"))
                    .unwrap_or_default()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the "listening" line, in the text or the JSON log format.
fn logged_address(line: &str) -> Option<String> {
    if let Some(rest) = line.split("address=").nth(1) {
        return rest.split_whitespace().next().map(str::to_owned);
    }
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    json.pointer("/fields/address")?.as_str().map(str::to_owned)
}
