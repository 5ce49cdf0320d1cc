//! `state-store`: buildstate as a Concourse resource type (the v1 resource interface).
//!
//! The image installs the `bldst` binary as `/opt/resource/check`, `in` and `out`; it calls
//! [`run`] with the command its name says. Each command reads one JSON request on stdin,
//! writes exactly one JSON document on stdout and logs on stderr. On any failure it writes one
//! line on stderr, nothing on stdout, and exits non-zero. The token never appears in any output.
//!
//! - [`schema`]: the `source` and `params` keys (unknown keys are refused), and the versions.
//! - [`check`], [`get`] (`in`), [`put`] (`out`): the three commands, thin over
//!   `buildstate-client`; [`backoff`]: `out` waiting out a failed stage's backoff.
//! - [`connection`]: the client a command talks through and the identity it reports under;
//!   [`log`]: the stderr lines, scrubbed of the token.

pub mod backoff;
pub mod check;
pub mod connection;
pub mod get;
pub mod log;
pub mod put;
pub mod schema;

use std::io::{Read, Write};

use buildstate_client::env::EnvMap;

use connection::client_for;
pub use connection::concourse_run;
pub use log::Log;

/// One of the three commands of the resource interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Check,
    In,
    Out,
}

impl Command {
    /// The command a program called `name` (the file name of `argv[0]`) performs.
    pub fn from_program_name(name: &str) -> Option<Command> {
        match name {
            "check" => Some(Command::Check),
            "in" => Some(Command::In),
            "out" => Some(Command::Out),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Command::Check => "check",
            Command::In => "in",
            Command::Out => "out",
        }
    }
}

/// Runs the resource's `command` on the process's stdin, stdout, stderr, arguments and
/// environment: what `/opt/resource/{check,in,out}` do.
pub fn main(command: Command) -> std::process::ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let env = EnvMap::from_process();
    let code = run(
        command,
        &args,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
        &env,
    );
    std::process::ExitCode::from(code)
}

/// Exit code of a failed command (the resource interface only distinguishes zero/non-zero).
pub const FAILURE: u8 = 1;

/// Runs `command` with its arguments (`in` and `out` take the directory), reading the request
/// from `stdin`, writing the answer to `stdout` and logs to `stderr`, in the environment `env`.
/// Returns the exit code.
pub fn run(
    command: Command,
    args: &[String],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
    env: &EnvMap,
) -> u8 {
    let mut log = Log::new();
    let outcome = run_inner(command, args, stdin, env, &log);
    let (code, answer) = match outcome {
        Ok(answer) => (0, Some(answer)),
        Err(message) => {
            log.line(format!("error: {}: {message}", command.name()));
            (FAILURE, None)
        }
    };
    log.flush_to(stderr);
    if let Some(answer) = answer {
        let mut text = answer.to_string();
        text.push('\n');
        if stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            log.line(format!(
                "error: {}: cannot write the answer to stdout",
                command.name()
            ));
            log.flush_to(stderr);
            return FAILURE;
        }
    }
    code
}

fn run_inner(
    command: Command,
    args: &[String],
    stdin: &mut dyn Read,
    env: &EnvMap,
    log: &Log,
) -> Result<serde_json::Value, String> {
    let mut bytes = Vec::new();
    stdin
        .read_to_end(&mut bytes)
        .map_err(|error| format!("cannot read the request on stdin: {error}"))?;
    // Parsed loosely first, so that every later message can be scrubbed of the token.
    let request: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|error| format!("the request on stdin is not JSON: {error}"))?;
    if let Some(token) = request
        .get("source")
        .and_then(|source| source.get("token"))
        .and_then(serde_json::Value::as_str)
    {
        log.redact(token);
    }
    let directory = || -> Result<&str, String> {
        args.first()
            .map(String::as_str)
            .ok_or_else(|| format!("`{}` needs the directory as its argument", command.name()))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the async runtime: {error}"))?;
    let result = match command {
        Command::Check => {
            let request = schema::parse::<schema::CheckRequest>(request)?;
            let client = client_for(&request.source, env, log)?;
            runtime.block_on(check::check(&client, &request, log))
        }
        Command::In => {
            let request = schema::parse::<schema::InRequest>(request)?;
            let directory = directory()?;
            let client = client_for(&request.source, env, log)?;
            runtime.block_on(get::get(&client, &request, directory.as_ref(), env, log))
        }
        Command::Out => {
            let request = schema::parse::<schema::OutRequest>(request)?;
            let directory = directory()?;
            let client = client_for(&request.source, env, log)?;
            runtime.block_on(put::put(&client, &request, directory.as_ref(), env, log))
        }
    };
    result.map_err(|error| log.scrub(&error))
}
