//! The `bldst` command line: argument parsing, configuration, logging, dispatch to the
//! commands, and the one mapping from failures to documented exit codes.
//!
//! Every command talks to the server through [`crate::client::Client`]; none re-implements a
//! rule of the product contract. On failure a command prints one line, `error: ...`, on stderr
//! and nothing on stdout.

mod accounts;
mod build;
pub mod config;
pub mod output;
mod report;
mod run;
#[cfg(feature = "server")]
mod server;
pub mod streams;
mod values;
mod watch;

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::client::{Client, ClientConfig, ClientError};
use buildstate_client::failure;
use buildstate_domain::wire::ErrorCode;
use config::{EnvLookup, Settings};
use output::{OutputFormat, Printer};
use streams::{Input, Streams};

/// Exit codes, documented in `docs/cli.md` and `bldst --help`; shared with the other front
/// ends.
pub use buildstate_client::failure::exit;

const EXIT_CODES_HELP: &str = "\
Exit codes:
   0  success (build gate: run the stage)
   1  failure with no code of its own (server error, I/O)
   2  usage error: a missing or invalid flag or value
   3  not found: no such build, token or user
   4  conflict: the build refused the change (e.g. stage already completed, build blocked,
      another run holds the stage)
   5  authentication: no token, or an invalid, expired or too narrow one
   6  the server was unreachable after retries
   7  rate limited: the token's write limit still refused after the retries (429)
  10  build gate: skip (the stage already completed)
  11  build gate: wait (the stage is backing off, or another run holds it); build run: did
      not wait
  12  build gate: stop (blocked, cancelled, completed, or after a failed stage);
      build run: did not run; build watch: the build is blocked or cancelled
 130  build watch: stopped with Ctrl-C
  build run exits with its command's own code whenever it ran the command.

Configuration: flags, then BUILDSTATE_API_URL and BUILDSTATE_API_TOKEN, then the file saved by
`bldst auth login` (BUILDSTATE_CONFIG, else $XDG_CONFIG_HOME/buildstate/config.json, else
~/.config/buildstate/config.json). BUILDSTATE_DEBUG=1 logs requests like --verbose; NO_COLOR
turns colour off.

Examples:
  bldst auth login --api-url http://buildstate:8000 < token.txt
  BUILD_ID=$(bldst build create --platform aws --image-type rhel8 --key aws/rhel8/$GIT_SHA --quiet)
  bldst build run \"$BUILD_ID\" --state 15 -- ansible-playbook base.yml
  bldst build get \"$BUILD_ID\"";

/// Records how far each image build got, so a re-run resumes at the failed step.
#[derive(Debug, Parser)]
#[command(
    name = "bldst",
    version,
    propagate_version = true,
    arg_required_else_help = true,
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The buildstate server [default: BUILDSTATE_API_URL, the saved login, http://127.0.0.1:8000]
    #[arg(long, global = true, value_name = "URL")]
    pub api_url: Option<String>,
    /// The API token [default: BUILDSTATE_API_TOKEN, the saved login]. Prefer the variable or
    /// `bldst auth login`: other users can see command lines. `auth login --token -` reads it
    /// from stdin.
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// How to print answers: `table` for people, `json` (the API's field names) for scripts.
    #[arg(
        long,
        short,
        global = true,
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,
    /// Log each request (never the token) on stderr; so does BUILDSTATE_DEBUG=1.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// Send the token over plain http:// to a host other than this machine, where anyone on
    /// the network path can read it; so does BUILDSTATE_ALLOW_INSECURE=1. Prefer https://.
    #[arg(long, global = true)]
    pub allow_insecure: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start, follow and steer builds; report and gate stages; run a stage's command.
    #[command(after_help = "Examples:
  BUILD_ID=$(bldst build create --platform aws --image-type rhel8 --key aws/rhel8/$GIT_SHA --quiet)
  bldst build run \"$BUILD_ID\" --state 15 -- ansible-playbook base.yml
  bldst build list --status failed
  bldst build history \"$BUILD_ID\"")]
    Build(build::BuildArgs),
    /// Success rates, failures, stage durations, stuck builds and recovery times (the dashboard's reports).
    #[command(after_help = "Examples:
  bldst report success --days 30
  bldst report failures
  bldst report durations --output json
  bldst report stuck --after 2h
  bldst report recovery")]
    Report(report::ReportArgs),
    /// Create and list users (admin).
    #[command(after_help = "Examples:
  bldst user create --username builder --email builder@example.com
  bldst user list")]
    User(accounts::UserArgs),
    /// Create, list and revoke API tokens.
    #[command(after_help = "Examples:
  bldst token create --username builder --description \"concourse aws-rhel8\" --expires-in 90d
  bldst token list
  bldst token revoke t_0123456789abcdef")]
    Token(accounts::TokenArgs),
    /// Save, check and forget the server URL and token this CLI uses.
    #[command(after_help = "Examples:
  bldst auth login --api-url http://buildstate:8000 < token.txt
  bldst auth status
  bldst auth logout --revoke")]
    Auth(accounts::AuthArgs),
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  bldst completions bash > /etc/bash_completion.d/bldst
  bldst completions zsh > \"${fpath[1]}/_bldst\"
  bldst completions fish > ~/.config/fish/completions/bldst.fish")]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Run the REST server (SQLite by default, PostgreSQL when DATABASE_URL says so).
    #[cfg(feature = "server")]
    // Boxed: the server's settings are many times the size of every other command's.
    Server(Box<server::ServerArgs>),
}

/// A failure with the exit code it maps to and one line for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub code: u8,
    pub message: String,
    /// The server's error code (`build_not_found`, …) when the failure is the server's answer.
    pub api_code: Option<String>,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            api_code: None,
        }
    }

    /// The error as one JSON object, for `--output json`: `{"error": {"code", "message",
    /// "exit_code"}}`, the API's envelope plus the exit code. `code` is the server's code when
    /// the server refused, else the kind of the exit code (`usage`, `unreachable`, …).
    pub fn to_json(&self) -> String {
        let code = self
            .api_code
            .clone()
            .unwrap_or_else(|| exit_kind(self.code).to_owned());
        serde_json::json!({
            "error": { "code": code, "message": self.message, "exit_code": self.code }
        })
        .to_string()
    }

    /// A bad value or combination of flags: exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::new(exit::USAGE, message)
    }

    /// A failure without a code of its own: exit code 1.
    pub fn failure(message: impl Into<String>) -> Self {
        CliError::new(exit::FAILURE, message)
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<ClientError> for CliError {
    fn from(error: ClientError) -> Self {
        let api_code = match &error {
            ClientError::Api { code, .. } => Some(code.as_str().to_owned()),
            _ => None,
        };
        CliError {
            api_code,
            ..CliError::new(exit_code(&error), describe(&error))
        }
    }
}

/// The name of an exit code's kind, the `code` of a JSON error that is not the server's.
pub fn exit_kind(code: u8) -> &'static str {
    match code {
        exit::USAGE => "usage",
        exit::NOT_FOUND => "not_found",
        exit::CONFLICT => "conflict",
        exit::AUTH => "authentication",
        exit::UNREACHABLE => "unreachable",
        exit::RATE_LIMITED => "rate_limited",
        exit::GATE_SKIP => "skip",
        exit::GATE_WAIT => "wait",
        exit::GATE_STOP => "stop",
        _ => "failure",
    }
}

/// The exit code for a failed API call (the one mapping, shared by the front ends).
pub use buildstate_client::failure::exit_code;

/// How the CLI's messages say to fix the URL or the token.
const HINTS: failure::Hints<'static> = failure::Hints {
    no_token: "run `bldst auth login`, or set BUILDSTATE_API_TOKEN",
    bad_token: "log in again with `bldst auth login`, or set BUILDSTATE_API_TOKEN",
    api_url: "--api-url or BUILDSTATE_API_URL",
    allow_insecure: "pass --allow-insecure (or set BUILDSTATE_ALLOW_INSECURE=1)",
    field: flag_of_field,
};

/// The flag that sets a request field (`max_retries` is `--max-retries`, quoted), where the
/// names differ, the flag's own.
fn flag_of_field(field: &str) -> String {
    let flag = match field {
        "expires_in_seconds" => "expires-in".to_owned(),
        "labels" => "label".to_owned(),
        "outputs" => "set".to_owned(),
        "after_secs" => "after".to_owned(),
        "after_by_code" => "after-by-code".to_owned(),
        other => other.replace('_', "-"),
    };
    format!("`--{flag}`")
}

/// The server's sentence, with a hint on what to do next where the server cannot know it:
/// which command lists what was not found, how to go on when a build takes no more reports.
fn describe(error: &ClientError) -> String {
    let sentence = failure::describe(error, &HINTS);
    let ClientError::Api { code, details, .. } = error else {
        return sentence;
    };
    let finished_as = details
        .as_ref()
        .and_then(|details| details.get("status"))
        .and_then(|status| status.as_str());
    match (code, finished_as) {
        (ErrorCode::BuildNotFound, _) => {
            format!(
                "{sentence}; `bldst build list` lists the builds (`--key KEY` finds one by key)"
            )
        }
        (ErrorCode::BuildFinished, Some("cancelled")) => format!(
            "{sentence}; to build again, start a new build for its key: \
             `bldst build create --key KEY ...` (`bldst build get ID` shows the key)"
        ),
        (ErrorCode::BuildFinished, Some("completed")) => format!(
            "{sentence}; to build again, start a new build: `bldst build create --key KEY ...`"
        ),
        (ErrorCode::NotFound, _) if sentence.starts_with("token") => {
            format!("{sentence}; `bldst token list` lists the tokens")
        }
        (ErrorCode::NotFound, _) if sentence.starts_with("user") => {
            format!("{sentence}; `bldst user list` lists the users")
        }
        _ => sentence,
    }
}

/// What every command gets: the resolved settings, the printer, the environment and stdin.
pub struct Context<'a> {
    pub settings: Settings,
    pub printer: Printer,
    pub env: EnvLookup<'a>,
    /// `--allow-insecure` or BUILDSTATE_ALLOW_INSECURE: a token may go over plain http://.
    pub allow_insecure: bool,
    pub stdin: Input,
    /// Whether stdin is a person at a terminal, as opposed to a pipe or a file.
    pub stdin_is_terminal: bool,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .field("printer", &self.printer)
            .finish()
    }
}

impl Context<'_> {
    /// A client for the resolved URL and token.
    ///
    /// Fails with exit code 5 when there is no token, saying how to get one.
    pub fn client(&self) -> Result<Client, CliError> {
        if self.settings.token.is_none() {
            let hint = match &self.settings.saved_token_url {
                Some(saved) => format!(
                    " (the saved login is for {saved}, not {})",
                    self.settings.api_url
                ),
                None => String::new(),
            };
            return Err(CliError::new(
                exit::AUTH,
                format!("no API token{hint}: run `bldst auth login`, or set BUILDSTATE_API_TOKEN"),
            ));
        }
        self.client_with(self.settings.token.clone())
    }

    /// A client for the resolved URL with `token`.
    pub fn client_with(&self, token: Option<String>) -> Result<Client, CliError> {
        Ok(Client::new(self.client_config(token))?)
    }

    /// Like [`Context::client`], telling stderr about each retry and reconnection: for
    /// commands that run for long (`build watch`), where silence would look like a hang.
    pub fn client_telling_retries(&self) -> Result<Client, CliError> {
        self.client()?;
        let mut config = self.client_config(self.settings.token.clone());
        config.on_retry = Some(std::sync::Arc::new(|line: &str| eprintln!("note: {line}")));
        Ok(Client::new(config)?)
    }

    fn client_config(&self, token: Option<String>) -> ClientConfig {
        let mut config = ClientConfig::new(&self.settings.api_url, token);
        config.timeout = Duration::from_secs(30);
        config.allow_insecure = self.allow_insecure;
        config
    }
}

/// The command line as parsed, shown in help and completed. Clap's derive cannot say all of
/// it, so the tree is adjusted here:
/// - negative numbers are values (`--state -5` gets the same answer as `--state=-5`, not
///   clap's "unexpected argument");
/// - `bldst server` takes the server's flags after its subcommands too, and refuses the
///   client's flags (they would do nothing there) with a sentence that says so.
pub fn command() -> clap::Command {
    let command = negative_numbers_are_values(Cli::command());
    #[cfg(feature = "server")]
    let command = {
        let client_flags: Vec<clap::Arg> = command
            .get_arguments()
            .filter(|arg| arg.is_global_set())
            .cloned()
            .collect();
        command.mut_subcommand("server", |server| {
            server::server_flags_only(server, &client_flags)
        })
    };
    command
}

fn negative_numbers_are_values(command: clap::Command) -> clap::Command {
    command
        .allow_negative_numbers(true)
        .mut_subcommands(negative_numbers_are_values)
}

/// Parses `arguments` (the program name first) as [`command`] does.
pub fn parse(arguments: &[std::ffi::OsString]) -> Result<Cli, clap::Error> {
    let mut command = command();
    let matches = command.try_get_matches_from_mut(arguments)?;
    Cli::from_arg_matches(&matches).map_err(|error| error.format(&mut command))
}

/// Parses the process's arguments, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let arguments: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match parse(&arguments) {
        Ok(cli) => cli,
        Err(error) => return usage_exit(&error, &arguments),
    };
    let json_errors = cli.global.output == OutputFormat::Json;
    init_logging(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(run(cli, &config::process_env, Streams::process())) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            print_error(&error, json_errors);
            ExitCode::from(error.code)
        }
    }
}

/// Prints a failure on stderr: one `error: ` line, or with `--output json` one JSON object.
fn print_error(error: &CliError, json: bool) {
    if json {
        eprintln!("{}", error.to_json());
    } else {
        eprintln!("error: {}", error.message);
    }
}

/// Whether the raw arguments ask for JSON output (`-o json`, `--output=json`, `-ojson`), for
/// errors found before the arguments could be parsed.
fn asks_for_json(arguments: &[std::ffi::OsString]) -> bool {
    let words: Vec<&str> = arguments
        .iter()
        .skip(1)
        .map_while(|argument| argument.to_str())
        .take_while(|word| *word != "--")
        .collect();
    words.iter().enumerate().any(|(index, word)| match *word {
        "-o" | "--output" => words.get(index + 1) == Some(&"json"),
        _ => matches!(*word, "-ojson" | "--output=json" | "-o=json"),
    })
}

/// Prints a clap error: help and version as clap does, anything else as one line.
fn usage_exit(error: &clap::Error, arguments: &[std::ffi::OsString]) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(exit::USAGE))
        }
        kind => {
            let command = command_path(arguments);
            let mut line = one_line_usage_error(&error.render().to_string(), &command);
            if kind == ErrorKind::UnknownArgument && command.ends_with("build run") {
                line.push_str(" (the command to run goes after `--`)");
            }
            print_error(&CliError::usage(line), asks_for_json(arguments));
            ExitCode::from(exit::USAGE)
        }
    }
}

/// The subcommand words of `arguments`, e.g. `bldst build update`, found by walking the
/// command tree; flags and values are left out.
fn command_path(arguments: &[std::ffi::OsString]) -> String {
    let mut command = command();
    let mut path = vec![command.get_name().to_owned()];
    for argument in arguments.iter().skip(1) {
        let Some(word) = argument.to_str() else {
            continue;
        };
        if word == "--" {
            break;
        }
        let Some(sub) = command.find_subcommand(word).cloned() else {
            continue;
        };
        path.push(sub.get_name().to_owned());
        command = sub;
    }
    path.join(" ")
}

/// Folds clap's multi-paragraph error into one line that ends with the help of `command` to
/// read.
fn one_line_usage_error(rendered: &str, command: &str) -> String {
    let mut parts = Vec::new();
    for paragraph in rendered.trim().split("\n\n") {
        let paragraph = paragraph.trim();
        if paragraph.starts_with("Usage:") || paragraph.starts_with("For more information") {
            continue;
        }
        let mut lines = paragraph.lines().map(str::trim);
        let first = lines.next().unwrap_or("");
        let first = first.strip_prefix("error: ").unwrap_or(first);
        let rest: Vec<&str> = lines.filter(|line| !line.is_empty()).collect();
        if rest.is_empty() {
            parts.push(first.to_owned());
        } else {
            parts.push(format!("{first} {}", rest.join(", ")));
        }
    }
    format!("{}; see `{command} --help`", parts.join("; "))
}

/// Runs one parsed command with the environment `env` and the standard streams `streams`;
/// `Ok` holds the exit code.
pub async fn run(cli: Cli, env: EnvLookup<'_>, streams: Streams) -> Result<u8, CliError> {
    let Cli { global, command } = cli;
    let printer = Printer::new(
        global.output,
        env("NO_COLOR").is_some(),
        streams.stdout.clone(),
        streams.stdout_is_terminal,
    )
    .with_columns(env("COLUMNS").as_deref());
    match command {
        Command::Completions { shell } => {
            let mut command = self::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "bldst", &mut script);
            printer.line(String::from_utf8_lossy(&script).trim_end())?;
            Ok(exit::SUCCESS)
        }
        #[cfg(feature = "server")]
        Command::Server(args) => server::run(*args, &printer)
            .await
            .map_err(|error| CliError::failure(format!("{error:#}"))),
        Command::Build(args) => build::run(args, &context(&global, printer, env, streams)?).await,
        Command::Report(args) => report::run(args, &context(&global, printer, env, streams)?).await,
        Command::User(args) => {
            accounts::run_user(args, &context(&global, printer, env, streams)?).await
        }
        Command::Token(args) => {
            accounts::run_token(args, &context(&global, printer, env, streams)?).await
        }
        Command::Auth(args) => {
            accounts::run_auth(args, &global, &context(&global, printer, env, streams)?).await
        }
    }
}

fn context<'a>(
    global: &GlobalArgs,
    printer: Printer,
    env: EnvLookup<'a>,
    streams: Streams,
) -> Result<Context<'a>, CliError> {
    let path = config::config_path(env);
    let file = match &path {
        Some(path) => config::load(path).map_err(CliError::failure)?,
        None => None,
    };
    // `auth login --token -` reads the token from stdin; it is never a token itself.
    let flag_token = global.token.as_deref().filter(|token| *token != "-");
    let settings = config::resolve(
        global.api_url.as_deref(),
        flag_token,
        env,
        file.as_ref(),
        path,
    );
    tracing::debug!(
        target: "bldst::config",
        "server {} (from {}); token from {}",
        settings.api_url,
        settings.api_url_from,
        settings
            .token_from
            .map_or_else(|| "nowhere".to_owned(), |from| from.to_string())
    );
    Ok(Context {
        settings,
        printer,
        env,
        allow_insecure: global.allow_insecure
            || buildstate_client::api::allow_insecure_from_env(env),
        stdin: streams.stdin,
        stdin_is_terminal: streams.stdin_is_terminal,
    })
}

/// `--verbose` or `BUILDSTATE_DEBUG=1` turn on request logging; `RUST_LOG` overrides both.
fn init_logging(verbose: bool) {
    use tracing_subscriber::EnvFilter;
    let debug = verbose
        || std::env::var("BUILDSTATE_DEBUG").is_ok_and(|value| !value.is_empty() && value != "0");
    let default = if debug {
        "info,bldst=debug,buildstate=debug"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // By default a failed log write is reported with `eprintln!`, which panics when stderr
        // is a closed pipe: a server whose log reader went away would crash on its next line.
        .log_internal_errors(false);
    // `BUILDSTATE_LOG_FORMAT=json`: one JSON object per line for log shippers, with the
    // fields of every enclosing span (a request's id among them).
    let json = std::env::var("BUILDSTATE_LOG_FORMAT").is_ok_and(|format| format == "json");
    let _ = if json {
        logs.json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        logs.with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .try_init()
    };
}

/// Parses a duration such as `90`, `90s`, `15m`, `12h` or `30d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let invalid = || {
        format!("`{text}` is not a duration: use a number with s, m, h or d, e.g. 90s, 15m, 30d")
    };
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let unit_seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(unit_seconds)
        .map(Duration::from_secs)
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }

    /// Every help text a user can reach, as `(command path, what is missing)`.
    fn missing_help(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        let path = format!("{path} {}", command.get_name()).trim().to_owned();
        if command.get_about().is_none() && path != "bldst" {
            missing.push(format!("{path}: no description"));
        }
        let examples = command
            .get_after_help()
            .is_some_and(|text| text.to_string().contains("Examples:"));
        if !examples {
            missing.push(format!("{path}: no example"));
        }
        for arg in command.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            let empty = arg
                .get_help()
                .is_none_or(|help| help.to_string().trim().is_empty());
            if !arg.is_hide_set() && !builtin && empty {
                missing.push(format!("{path}: `{}` has no help", arg.get_id()));
            }
        }
        for sub in command.get_subcommands() {
            if sub.get_name() != "help" {
                missing_help(sub, &path, missing);
            }
        }
    }

    #[test]
    fn every_command_has_a_description_an_example_and_help_for_each_argument() {
        let mut command = command();
        command.build();
        let mut missing = Vec::new();
        missing_help(&command, "", &mut missing);
        assert!(missing.is_empty(), "{missing:#?}");
    }

    #[test]
    fn the_command_path_skips_flags_and_values() {
        let arguments: Vec<std::ffi::OsString> = [
            "bldst", "-o", "json", "build", "update", "b_1", "--state", "x",
        ]
        .into_iter()
        .map(Into::into)
        .collect();
        assert_eq!(command_path(&arguments), "bldst build update");
    }

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
        for bad in ["", "m", "1w", "-5", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_clap_error_becomes_one_line_naming_the_help_to_read() {
        let rendered = "error: the following required arguments were not provided:\n  --state <N>\n  --status <STATUS>\n\nUsage: bldst build update --state <N> --status <STATUS> <ID>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line_usage_error(rendered, "bldst build update"),
            "the following required arguments were not provided: --state <N>, --status <STATUS>; see `bldst build update --help`"
        );
    }

    #[test]
    fn every_client_error_has_one_exit_code() {
        let api = |status: u16| ClientError::Api {
            status,
            code: buildstate_domain::wire::ErrorCode::Other("x".into()),
            message: "m".into(),
            field: None,
            details: None,
        };
        let codes: Vec<u8> = [401, 403, 404, 409, 422, 400, 500, 503]
            .into_iter()
            .map(|status| exit_code(&api(status)))
            .collect();
        assert_eq!(codes, [5, 5, 3, 4, 2, 2, 1, 1]);
        let unreachable = ClientError::Unreachable {
            url: "http://x".into(),
            attempts: 4,
            cause: "refused".into(),
        };
        assert_eq!(exit_code(&unreachable), exit::UNREACHABLE);
    }
}
