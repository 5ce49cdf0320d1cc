//! `bldst build run ID --state N -- COMMAND...`: makes one pipeline step resumable.
//!
//! It gates the stage (skip: exit 0; stop: exit 12; wait: wait out the backoff or another
//! run's lease, or exit 11), reports `in_progress` as this run (claiming the stage's lease),
//! runs the command with its output streamed through while heartbeating the lease, then
//! reports `completed` with the outputs the command wrote to `$BLDST_OUTPUTS_FILE`, or `failed`
//! with the tail of the command's stderr as the message — either releases the lease — and
//! exits with the command's code. Its own lines go to stderr, prefixed `bldst:`, so the
//! command's stdout stays the command's.
//!
//! This module runs one attempt ([`run_once`]); `--retry`'s loop over attempts is
//! [`super::run_loop`]'s.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use buildstate_client::gate_wait::{self, GateOutcome, NotWaited, WaitPolicy};
use buildstate_client::lease::{read_outputs_file, Heartbeats};
use buildstate_client::message::{keep_tail, message_from_output};
use buildstate_domain::limits::MAX_MESSAGE_CHARS;
use buildstate_domain::resumes::Resume;
use buildstate_domain::wire::{Build, ReportTransition};
use buildstate_domain::{BuildId, Outputs, ReportStatus, StateCode};
use clap::Args;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::config;
use super::context::Context;
use super::error::CliError;
use super::output::Printer;
use super::values::{self, parse_duration};
use buildstate_client::api::Client;
use buildstate_client::failure::exit;

/// How much of the command's stderr is kept for the failure message.
const STDERR_TAIL_BYTES: usize = 4096;

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: the command's own code when it ran (0 when the stage was \
already completed and skipped); 11 when the backoff was not waited out; 12 when the build is \
blocked, cancelled or completed, or an earlier stage failed; 11 also when another run holds \
the stage and its lease did not end within --max-wait; 3, 4, 5, 6 when the server said so \
before the command ran.

The command sees BUILDSTATE_BUILD_ID, BUILDSTATE_STATE and BLDST_OUTPUTS_FILE in its \
environment. What it writes to $BLDST_OUTPUTS_FILE (a JSON object of strings, or KEY=value \
lines) is reported as the stage's outputs with the completion; read earlier stages' outputs with \
`bldst build outputs \"$BUILDSTATE_BUILD_ID\" KEY`. Outputs are not for secrets.

With --retry, a failed command is run again once the server makes the stage's retry due \
(after its backoff; each wait at most --max-wait), until it succeeds or the build is blocked; \
the exit code is the last attempt's.

While the command runs, the stage is leased to this run (--run, else the report source with a \
random suffix) and heartbeats keep the lease; the completion or failure releases it.

Examples:
  bldst build run \"$BUILD_ID\" --state 15 -- ansible-playbook -i inventory base.yml
  bldst build run \"$BUILD_ID\" --state 15 --retry -- ansible-playbook -i inventory base.yml
  bldst build run \"$BUILD_ID\" --state 70 --no-wait -- ./run-integration-tests.sh
  bldst_cli build run \"$BUILD_ID\" --state 55 --max-wait 30m -- sh -c 'dnf -y install httpd'
  bldst build run \"$BUILD_ID\" --state 10 -- sh -c 'packer build . && echo ami_id=$(jq -r .builds[-1].artifact_id manifest.json | cut -d: -f2) >> \"$BLDST_OUTPUTS_FILE\"'"
)]
pub struct RunArgs {
    /// The build's id, e.g. from `bldst build create --quiet` or `bldst build list`; the
    /// setup action exports it for a job's later steps.
    #[arg(env = "BUILDSTATE_BUILD_ID")]
    pub(super) id: BuildId,
    /// The stage this command performs.
    #[arg(long, value_name = "N", value_parser = values::state_code(), hide_possible_values = true)]
    pub(super) state: StateCode,
    /// If the stage is backing off after a failure, exit 11 at once instead of waiting.
    #[arg(long)]
    no_wait: bool,
    /// The longest backoff to wait out before giving up with exit 11 (with --retry: before
    /// each retry).
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_duration)]
    pub(super) max_wait: Duration,
    /// When the command fails, wait until the server makes the stage's retry due (its
    /// backoff) and run the command again, until it succeeds or the build is blocked.
    #[arg(long, conflicts_with = "no_wait")]
    pub(super) retry: bool,
    /// How often to ask whether the retry is due once the backoff has elapsed.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval, hide = true)]
    pub(super) retry_poll: Duration,
    /// Where the reports come from [default: BUILDSTATE_SOURCE, or the CI run's URL].
    #[arg(long)]
    source: Option<String>,
    /// This run's identity, which holds the stage's lease [default: the source, or `local`,
    /// with a random suffix].
    #[arg(long, env = "BUILDSTATE_RUN")]
    run: Option<String>,
    /// How often to heartbeat the lease while the command runs [default: a third of the lease
    /// the server granted, from 250 ms to 10 s].
    #[arg(long, value_name = "DURATION", value_parser = parse_interval, hide = true)]
    heartbeat_every: Option<Duration>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// A duration as `--max-wait` takes it, or milliseconds (`200ms`, for tests).
fn parse_interval(text: &str) -> Result<Duration, String> {
    match text.trim().strip_suffix("ms").map(str::parse::<u64>) {
        Some(Ok(millis)) if millis > 0 => Ok(Duration::from_millis(millis)),
        Some(_) => Err(format!("`{text}` is not a duration")),
        None => parse_duration(text).and_then(|duration| {
            if duration.is_zero() {
                Err("the interval must be more than 0".to_owned())
            } else {
                Ok(duration)
            }
        }),
    }
}

/// One attempt's end: the exit code, with a failure the server recorded, the build as that
/// failure left it (failed, or blocked), and the resume the server recorded when this attempt
/// claimed the stage (docs/rules.md, "What resuming saved").
pub(super) struct Attempt {
    pub(super) code: u8,
    pub(super) failed: Option<Build>,
    pub(super) resumed: Option<Resume>,
}

/// The run identity of this `bldst build run`: `--run`, else the report source (or `local`)
/// with a random suffix. Every attempt of a `--retry` loop uses the same one.
pub(super) fn run_identity(args: &RunArgs, context: &Context<'_>) -> String {
    let source = config::report_source(args.source.as_deref(), context.env);
    args.run.clone().unwrap_or_else(|| {
        let base = source.as_deref().unwrap_or("local");
        let suffix = buildstate_client::api::new_idempotency_key();
        format!("{base}#{}", &suffix[..suffix.len().min(8)])
    })
}

/// Runs one attempt of `bldst build run` as run `run`: gate, report, run, report.
pub(super) async fn run_once(
    args: &RunArgs,
    context: &Context<'_>,
    client: &Client,
    run: &str,
) -> Result<Attempt, CliError> {
    let stage = args.state;
    let id = &args.id;
    let program = args
        .command
        .first()
        .map(|program| program.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = config::report_source(args.source.as_deref(), context.env);
    if let Some(code) = gate_until_runnable(client, args, run, &context.printer).await? {
        return Ok(Attempt {
            code,
            failed: None,
            resumed: None,
        });
    }
    let report = |status, message: String, fence: Option<i64>, outputs: Outputs| ReportTransition {
        state: stage,
        status,
        message: Some(message),
        expected_state: None,
        source: source.clone(),
        run: Some(run.to_owned()),
        fence,
        outputs,
    };
    let claimed = client
        .report_transition(
            id,
            &report(
                ReportStatus::InProgress,
                format!("running `{program}`"),
                None,
                Outputs::default(),
            ),
            None,
        )
        .await?;
    let lease = claimed.build.lease.clone();
    let resumed = claimed.resumed.clone();
    let fence = lease.as_ref().map(|lease| lease.fence);
    context.printer.note(&format!(
        "bldst: stage {stage} of build `{id}`: running `{program}`"
    ));

    let outputs_file =
        std::env::temp_dir().join(format!("bldst-outputs-{id}-{stage}-{}", std::process::id()));
    let _ = std::fs::remove_file(&outputs_file);
    let heartbeats = lease.as_ref().map(|lease| {
        // The server's own clock on both ends: the claim's time and the lease's end.
        let every = args
            .heartbeat_every
            .unwrap_or_else(|| lease.heartbeat_every(claimed.build.updated_at));
        Heartbeats::start(client.clone(), id.clone(), lease, every)
    });
    let started = Instant::now();
    let outcome = run_command(&args.command, id, stage, &outputs_file).await;
    let elapsed = started.elapsed().as_secs();
    if let Some(lost) = heartbeats.and_then(Heartbeats::stop) {
        context.printer.note(&format!(
            "bldst: the lease on stage {stage} was lost while the command ran: {lost}"
        ));
    }
    let outputs = read_outputs_file(&outputs_file);
    let _ = std::fs::remove_file(&outputs_file);
    // A command that succeeded but left unusable outputs has failed its stage: a resumed run
    // would start without what it needs.
    let (outputs, outputs_problem) = match outputs {
        Ok(outputs) => (outputs, None),
        Err(error) => (Outputs::default(), Some(error.to_string())),
    };
    // `explain`: the command said nothing itself about why it ended (a spawn failure or a
    // signal), so we say it.
    let (code, status, message, explain) = match outcome {
        Ok(Finished { status, .. }) if status.success() && outputs_problem.is_some() => (
            exit::FAILURE,
            ReportStatus::Failed,
            format!(
                "`{program}` succeeded after {elapsed}s but its outputs cannot be used: {}",
                outputs_problem.unwrap_or_default()
            ),
            true,
        ),
        Ok(Finished { status, .. }) if status.success() => (
            exit::SUCCESS,
            ReportStatus::Completed,
            format!("`{program}` succeeded after {elapsed}s"),
            false,
        ),
        Ok(Finished {
            status,
            stderr_tail,
        }) => {
            let how = describe_status(status);
            // Cleaned: a coloured or NUL-bearing log would make the server refuse the report.
            let tail = message_from_output(&stderr_tail);
            let tail = tail.trim();
            let message = if tail.is_empty() {
                format!("`{program}` {how} after {elapsed}s (no stderr output)")
            } else {
                format!("`{program}` {how} after {elapsed}s; the end of its stderr:\n{tail}")
            };
            let explain = status.code().is_none();
            (exit_code_of(status), ReportStatus::Failed, message, explain)
        }
        Err(SpawnError { code, message }) => (code, ReportStatus::Failed, message, true),
    };
    let message = keep_tail(&message, MAX_MESSAGE_CHARS);
    let outputs = if status == ReportStatus::Completed {
        outputs
    } else {
        Outputs::default()
    };
    let reported = client
        .report_transition(id, &report(status, message.clone(), fence, outputs), None)
        .await;
    match (status, reported) {
        (ReportStatus::Completed, Ok(result)) => {
            context.printer.note(&format!("bldst: {}", result.note));
            Ok(Attempt {
                code,
                failed: None,
                resumed,
            })
        }
        (ReportStatus::Completed, Err(error)) => {
            let error = CliError::from(error);
            Err(CliError::new(
                error.code,
                format!(
                    "`{program}` succeeded but stage {stage} of build `{id}` could not be reported completed: {}; report it with `bldst build update {id} --state {stage} --status completed`",
                    error.message
                ),
            ))
        }
        (_, Ok(result)) => {
            if explain {
                context.printer.note(&format!(
                    "bldst: {}",
                    message.lines().next().unwrap_or_default()
                ));
            }
            context.printer.note(&format!("bldst: {}", result.note));
            Ok(Attempt {
                code,
                failed: Some(result.build),
                resumed,
            })
        }
        (_, Err(error)) => {
            context.printer.note(&format!(
                "error: `{program}` failed and the failure of stage {stage} of build `{id}` could not be recorded: {}",
                CliError::from(error).message
            ));
            Ok(Attempt {
                code,
                failed: None,
                resumed,
            })
        }
    }
}

/// Asks the gate until the stage may run. `Some(code)` means: do not run, exit with `code`.
async fn gate_until_runnable(
    client: &Client,
    args: &RunArgs,
    run: &str,
    printer: &Printer,
) -> Result<Option<u8>, CliError> {
    let (id, stage) = (&args.id, args.state);
    let policy = WaitPolicy {
        no_wait: args.no_wait,
        max_wait: args.max_wait,
    };
    let mut on_wait = |answer: &buildstate_domain::wire::GateAnswer, wait: Duration| {
        let wait = wait.as_secs();
        if answer.build_status == buildstate_domain::BuildStatus::Failed {
            printer.note(&format!(
                "bldst: stage {stage} of build `{id}` is backing off; waiting {wait}s"
            ));
        } else {
            printer.note(&format!(
                "bldst: build `{id}`: {}; waiting {wait}s",
                answer.reason
            ));
        }
    };
    match gate_wait::gate_until_runnable_for_run(client, id, stage, Some(run), policy, &mut on_wait)
        .await?
    {
        GateOutcome::Run(_) => Ok(None),
        GateOutcome::Skip(answer) => {
            printer.note(&format!(
                "bldst: skipping stage {stage} of build `{id}`: {}",
                answer.reason
            ));
            Ok(Some(exit::SUCCESS))
        }
        GateOutcome::Stop(answer) => Err(CliError::new(
            exit::GATE_STOP,
            format!(
                "not running stage {stage} of build `{id}`: {}{}",
                answer.reason,
                stop_hint(answer.build_status, id)
            ),
        )),
        GateOutcome::NotWaited(answer, NotWaited::NoWait) => Err(CliError::new(
            exit::GATE_WAIT,
            format!(
                "not running stage {stage} of build `{id}` yet: {}; re-run later, or without --no-wait to wait",
                answer.reason
            ),
        )),
        GateOutcome::NotWaited(answer, NotWaited::LongerThanMaxWait) => Err(CliError::new(
            exit::GATE_WAIT,
            format!(
                "not running stage {stage} of build `{id}`: {}, longer than --max-wait {}s; re-run later",
                answer.reason,
                args.max_wait.as_secs()
            ),
        )),
    }
}

fn stop_hint(status: buildstate_domain::BuildStatus, id: &BuildId) -> String {
    match status {
        buildstate_domain::BuildStatus::Blocked => {
            format!("; an operator can run `bldst build retry {id} --reason ...`")
        }
        _ => String::new(),
    }
}

/// A command that ran to its end, with the last bytes of its stderr.
struct Finished {
    status: ExitStatus,
    stderr_tail: Vec<u8>,
}

/// A command that could not be started: the shell's code for it and a sentence.
struct SpawnError {
    code: u8,
    message: String,
}

/// Runs `command` with stdin and stdout inherited and stderr copied through as it comes.
///
/// A first Ctrl-C or SIGTERM is left to the command (a terminal sends it to the command too),
/// so that its failure is reported when it exits; a second one kills it.
async fn run_command(
    command: &[OsString],
    id: &BuildId,
    stage: StateCode,
    outputs_file: &std::path::Path,
) -> Result<Finished, SpawnError> {
    let Some((program, arguments)) = command.split_first() else {
        return Err(SpawnError {
            code: exit::USAGE,
            message: "no command to run".to_owned(),
        });
    };
    let program_name = program.to_string_lossy();
    let mut child = tokio::process::Command::new(program)
        .args(arguments)
        .env("BUILDSTATE_BUILD_ID", id.as_str())
        .env("BUILDSTATE_STATE", stage.to_string())
        .env("BLDST_OUTPUTS_FILE", outputs_file)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| SpawnError {
            // The codes a shell uses: 127 for "not found", 126 for "cannot execute".
            code: if error.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            },
            message: format!("cannot start `{program_name}`: {error}"),
        })?;
    let stderr = child.stderr.take();
    let copier = tokio::spawn(async move {
        match stderr {
            Some(stderr) => copy_keeping_tail(stderr).await,
            None => Vec::new(),
        }
    });
    let mut interrupts = 0;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            () = interrupted() => {
                interrupts += 1;
                if interrupts > 1 {
                    let _ = child.start_kill();
                }
            }
        }
    };
    let stderr_tail = copier.await.unwrap_or_default();
    match status {
        Ok(status) => Ok(Finished {
            status,
            stderr_tail,
        }),
        Err(error) => Err(SpawnError {
            code: exit::FAILURE,
            message: format!("lost track of `{program_name}`: {error}"),
        }),
    }
}

/// Copies `stderr` to ours as it comes and returns its last [`STDERR_TAIL_BYTES`] bytes.
async fn copy_keeping_tail(mut stderr: tokio::process::ChildStderr) -> Vec<u8> {
    let mut tail: VecDeque<u8> = VecDeque::with_capacity(STDERR_TAIL_BYTES * 2);
    let mut ours = tokio::io::stderr();
    let mut buffer = [0u8; 8192];
    loop {
        let read = match stderr.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let chunk = &buffer[..read];
        // Our stderr going away must not stop the command: keep reading.
        let _ = ours.write_all(chunk).await;
        let _ = ours.flush().await;
        tail.extend(chunk);
        let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
        tail.drain(..excess);
    }
    let mut tail: Vec<u8> = tail.into();
    // Start at a line boundary when there is one, so the message does not open mid-line.
    if tail.len() >= STDERR_TAIL_BYTES {
        if let Some(newline) = tail.iter().position(|byte| *byte == b'\n') {
            tail.drain(..=newline);
        }
    }
    tail
}

/// Completes when the process receives SIGINT or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The exit code a shell would give: the command's code, or 128 + the signal that killed it.
fn exit_code_of(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code & 0xff).unwrap_or(exit::FAILURE);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + (signal & 0x7f)).unwrap_or(exit::FAILURE);
        }
    }
    exit::FAILURE
}

fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            return format!("was killed by signal {signal}");
        }
    }
    "ended abnormally".to_owned()
}
