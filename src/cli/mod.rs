//! The `bldst` command line: argument parsing, configuration, logging, dispatch to the
//! commands, and the one mapping from failures to documented exit codes.
//!
//! Every command talks to the server through [`buildstate_client::api::Client`]; none re-implements a
//! rule of the product contract. On failure a command prints one line, `error: ...`, on stderr
//! and nothing on stdout.

mod accounts;
mod build;
pub mod config;
pub mod context;
pub mod error;
mod logging;
pub mod output;
mod report;
mod run;
mod run_loop;
#[cfg(feature = "server")]
mod server;
pub mod streams;
mod values;
mod watch;

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use config::EnvLookup;
pub use context::Context;
use context::{context, GlobalArgs};
pub use error::{exit_kind, CliError};
use output::{OutputFormat, Printer};
use streams::Streams;
pub use values::parse_duration;

/// Exit codes, documented in `docs/cli.md` and `bldst --help`; shared with the other front
/// ends.
pub use buildstate_client::failure::exit;
/// The exit code for a failed API call (the one mapping, shared by the front ends).
pub use buildstate_client::failure::exit_code;

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
    logging::init_logging(cli.global.verbose);
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
        streams.stderr.clone(),
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
    fn a_clap_error_becomes_one_line_naming_the_help_to_read() {
        let rendered = "error: the following required arguments were not provided:\n  --state <N>\n  --status <STATUS>\n\nUsage: bldst build update --state <N> --status <STATUS> <ID>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line_usage_error(rendered, "bldst build update"),
            "the following required arguments were not provided: --state <N>, --status <STATUS>; see `bldst build update --help`"
        );
    }
}
