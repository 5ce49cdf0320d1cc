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
mod run;
#[cfg(feature = "server")]
mod server;

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory as _, Parser, Subcommand};

use crate::client::{Client, ClientConfig, ClientError};
use buildstate_client::failure;
use config::{EnvLookup, Settings};
use output::{OutputFormat, Printer};

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
  10  build gate: skip (the stage already completed)
  11  build gate: wait (the stage is backing off, or another run holds it); build run: did
      not wait
  12  build gate: stop (blocked, cancelled, completed, or after a failed stage);
      build run: did not run
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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start, follow and steer builds; report and gate stages; run a stage's command.
    Build(build::BuildArgs),
    /// Create and list users (admin).
    User(accounts::UserArgs),
    /// Create, list and revoke API tokens.
    Token(accounts::TokenArgs),
    /// Save, check and forget the server URL and token this CLI uses.
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
    Server(server::ServerArgs),
}

/// A failure with the exit code it maps to and one line for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
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
        CliError::new(exit_code(&error), describe(&error))
    }
}

/// The exit code for a failed API call (the one mapping, shared by the front ends).
pub use buildstate_client::failure::exit_code;

/// How the CLI's messages say to fix the URL or the token.
const HINTS: failure::Hints<'static> = failure::Hints {
    no_token: "run `bldst auth login`, or set BUILDSTATE_API_TOKEN",
    bad_token: "log in again with `bldst auth login`, or set BUILDSTATE_API_TOKEN",
    api_url: "--api-url or BUILDSTATE_API_URL",
};

/// The server's sentence, with a hint on what to do next where the server cannot know it.
fn describe(error: &ClientError) -> String {
    failure::describe(error, &HINTS)
}

/// What every command gets: the resolved settings, the printer and the environment.
pub struct Context<'a> {
    pub settings: Settings,
    pub printer: Printer,
    pub env: EnvLookup<'a>,
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
        let mut config = ClientConfig::new(&self.settings.api_url, token);
        config.timeout = Duration::from_secs(30);
        Ok(Client::new(config)?)
    }
}

/// Parses the process's arguments, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let arguments: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&arguments) {
        Ok(cli) => cli,
        Err(error) => return usage_exit(&error, &arguments),
    };
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
    match runtime.block_on(run(cli, &config::process_env)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {}", error.message);
            ExitCode::from(error.code)
        }
    }
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
            eprintln!("error: {line}");
            ExitCode::from(exit::USAGE)
        }
    }
}

/// The subcommand words of `arguments`, e.g. `bldst build update`, found by walking the
/// command tree; flags and values are left out.
fn command_path(arguments: &[std::ffi::OsString]) -> String {
    let mut command = Cli::command();
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

/// Runs one parsed command with the environment `env`; `Ok` holds the exit code.
pub async fn run(cli: Cli, env: EnvLookup<'_>) -> Result<u8, CliError> {
    let Cli { global, command } = cli;
    let printer = Printer::new(global.output, env("NO_COLOR").is_some());
    match command {
        Command::Completions { shell } => {
            let mut command = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "bldst", &mut script);
            output::write_stdout(String::from_utf8_lossy(&script).trim_end())?;
            Ok(exit::SUCCESS)
        }
        #[cfg(feature = "server")]
        Command::Server(args) => server::run(args)
            .await
            .map_err(|error| CliError::failure(format!("{error:#}"))),
        Command::Build(args) => build::run(args, &context(&global, printer, env)?).await,
        Command::User(args) => accounts::run_user(args, &context(&global, printer, env)?).await,
        Command::Token(args) => accounts::run_token(args, &context(&global, printer, env)?).await,
        Command::Auth(args) => {
            accounts::run_auth(args, &global, &context(&global, printer, env)?).await
        }
    }
}

fn context<'a>(
    global: &GlobalArgs,
    printer: Printer,
    env: EnvLookup<'a>,
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
    })
}

/// Whether stdin is a terminal (a person), as opposed to a pipe or a file.
pub(crate) fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        // By default a failed log write is reported with `eprintln!`, which panics when stderr
        // is a closed pipe: a server whose log reader went away would crash on its next line.
        .log_internal_errors(false)
        .try_init();
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
        Cli::command().debug_assert();
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
