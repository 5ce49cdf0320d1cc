//! `bldst build ...`: start or resume a build, report stages (with outputs), read builds,
//! their outputs and their history, gate a stage, and the operator actions (retry, reset, cancel). `build run` lives in
//! [`super::run`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use buildstate_client::failure::gate_exit_code;
use buildstate_client::lease::{env_lines, parse_assignment, read_outputs_file};
use buildstate_client::message::read_message_file;
use buildstate_client::policy::parse_policy;
use buildstate_domain::limits::{BUILD_PAGE_MAX, HISTORY_PAGE_MAX};
use buildstate_domain::wire::{
    BuildFilter, BuildQuery, ReportTransition, StartBuild, TransitionResult,
};
use buildstate_domain::{
    BuildId, BuildKey, BuildRetryPolicy, BuildStatus, ImageType, Labels, Outputs, Platform,
    ReportStatus, StateCode,
};
use clap::{Args, Subcommand};

use super::context::Context;
use super::error::CliError;
use super::{config, run as run_stage, run_loop, values, watch};
use buildstate_client::failure::exit;

/// History entries asked for per page when reading a whole history.
const HISTORY_PAGE: u32 = HISTORY_PAGE_MAX;

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(subcommand)]
    command: BuildCommand,
}

#[derive(Debug, Subcommand)]
enum BuildCommand {
    /// Start a build, or resume the unfinished build with the same --key.
    #[command(after_help = "Examples:
  bldst build create --platform aws --image-type rhel8 --description \"RHEL 8 base image\"
  BUILD_ID=$(bldst build create --platform aws --image-type rhel8 --key aws/rhel8/$GIT_SHA \\
      --label git_sha=$GIT_SHA --quiet)")]
    Create(CreateArgs),
    /// Report that a stage is in progress, completed or failed.
    #[command(after_help = "Examples:
  bldst build update \"$BUILD_ID\" --state 10 --status completed
  bldst build update \"$BUILD_ID\" --state 55 --status failed --message-file ansible-error.log
  bldst build update \"$BUILD_ID\" --state 20 --status in_progress --expected-state 20
  bldst build update \"$BUILD_ID\" --state 10 --status completed --set ami_id=ami-0abc
  bldst build update \"$BUILD_ID\" --state 10 --status completed --outputs-file packer-outputs.json

Outputs (--set, --outputs-file) go with a `completed` report: at most 32, keys are
environment-variable names (letters, digits, `_`; at most 64 characters), values 1 to 1024 bytes
of single-line text. Anyone who can read the build reads them: never put secrets in them.")]
    Update(UpdateArgs),
    /// Show the outputs the build's completed stages left for the runs that resume it.
    #[command(
        after_help = "A later stage's value wins; the STAGE column says which stage set it.
With KEY, prints just that value (exit 3 if no stage set it).

Examples:
  bldst build outputs \"$BUILD_ID\"
  AMI_ID=$(bldst build outputs \"$BUILD_ID\" ami_id)
  eval \"$(bldst build outputs \"$BUILD_ID\" --format env)\"
  bldst build outputs \"$BUILD_ID\" --format env >> \"$GITHUB_ENV\"
  bldst build outputs \"$BUILD_ID\" --output json"
    )]
    Outputs {
        /// The build.
        id: BuildId,
        /// Print only this output's value.
        key: Option<String>,
        /// `env`: KEY=value lines for `eval` or `$GITHUB_ENV` (a value with characters a shell
        /// would misread is single-quoted).
        #[arg(long, value_enum)]
        format: Option<OutputsFormat>,
    },
    /// Show one build.
    #[command(after_help = "Examples:
  bldst build get \"$BUILD_ID\"
  bldst build get \"$BUILD_ID\" --output json")]
    Get {
        /// The build's id, e.g. from `bldst build create --quiet` or `bldst build list`.
        id: BuildId,
    },
    /// List builds, newest first.
    #[command(after_help = "Examples:
  bldst build list
  bldst build list --platform aws --status failed --limit 10
  bldst build list --key aws/rhel8/$GIT_SHA --quiet")]
    List(ListArgs),
    /// Show a build's history, oldest first.
    #[command(after_help = "Examples:
  bldst build history \"$BUILD_ID\"
  bldst build history \"$BUILD_ID\" --after 12 --limit 20 --output json")]
    History {
        /// The build's id, e.g. from `bldst build create --quiet` or `bldst build list`.
        id: BuildId,
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0, value_name = "SEQ")]
        after: i64,
        /// At most this many entries (1 to 1000); all of them without it.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(HISTORY_PAGE_MAX)))]
        limit: Option<u32>,
    },
    /// Follow a build live: one line per transition until it is completed, blocked or cancelled.
    #[command(
        after_help = "Exit codes: 0 the build completed, 12 it is blocked or cancelled, 130 \
stopped with Ctrl-C; 3, 5, 6 as for every command. A dropped connection is resumed where it \
broke off (nothing is missed or shown twice). With --output json, one event per line: \
{\"build\": ..., \"entry\": ...}.

Examples:
  bldst build watch \"$BUILD_ID\"
  bldst build watch \"$BUILD_ID\" --after 0
  bldst build watch \"$BUILD_ID\" --output json | jq -c '.entry'"
    )]
    Watch {
        /// The build's id, e.g. from `bldst build create --quiet` or `bldst build list`.
        id: BuildId,
        /// Replay the history after this sequence number first (0: all of it); without it,
        /// only what happens from now on.
        #[arg(long, value_name = "SEQ", value_parser = parse_count::<i64>)]
        after: Option<i64>,
    },
    /// Should this stage run? Answers run, skip, wait or stop, and exits 0, 10, 11 or 12.
    #[command(
        after_help = "Exit codes: 0 run, 10 skip (already completed), 11 wait (backing off after \
a failure), 12 stop (blocked, cancelled or completed, or after a failed stage); 3, 5, 6 as \
for every command.

Examples:
  bldst build gate \"$BUILD_ID\" --state 15
  bldst build gate \"$BUILD_ID\" --state 15; case $? in
    0) ansible-playbook base.yml ;;
    10) echo \"stage 15 already done\" ;;
    11) echo \"backing off; try later\"; exit 1 ;;
    *) echo \"stop\"; exit 1 ;;
  esac"
    )]
    Gate {
        /// The build's id, e.g. from `bldst build create --quiet` or `bldst build list`.
        id: BuildId,
        /// The stage about to run.
        #[arg(long, value_name = "N", value_parser = values::state_code(), hide_possible_values = true)]
        state: StateCode,
    },
    /// Gate a stage, report it in progress, run a command, report how it went.
    Run(run_stage::RunArgs),
    /// Operator: clear the failures of a blocked or failed stage so it runs again.
    #[command(after_help = "Examples:
  bldst build retry \"$BUILD_ID\" --reason \"mirror was down; fixed\"")]
    Retry(ReasonArgs),
    /// Operator: move the build back to the current or an earlier stage.
    #[command(after_help = "Examples:
  bldst build reset \"$BUILD_ID\" --state 15 --reason \"base configuration changed\"")]
    Reset {
        /// The build's id, e.g. from `bldst build create --quiet` or `bldst build list`.
        id: BuildId,
        /// The stage to move back to.
        #[arg(long, value_name = "N", value_parser = values::state_code(), hide_possible_values = true)]
        state: StateCode,
        /// Why: it goes into the build's history.
        #[arg(long)]
        reason: String,
    },
    /// Operator: give the build up.
    #[command(after_help = "Examples:
  bldst build cancel \"$BUILD_ID\" --reason \"superseded by a newer commit\"")]
    Cancel(ReasonArgs),
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// aws, azure, gcp, vsphere, …
    #[arg(long)]
    platform: Platform,
    /// rhel8, ubuntu-22.04-web, …
    #[arg(long)]
    image_type: ImageType,
    /// What is being built, for people, e.g. "RHEL 8 base image".
    #[arg(long)]
    description: Option<String>,
    /// Your identity for the build, e.g. aws/rhel8/<git sha>: an unfinished build with this key
    /// is resumed instead of starting a second one.
    #[arg(long)]
    key: Option<BuildKey>,
    /// A label, `name=value`; repeat for more.
    #[arg(long = "label", value_name = "NAME=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Failures a stage may have before the build is blocked [default: the server's].
    #[arg(long, value_name = "N", value_parser = parse_count::<u32>)]
    max_retries: Option<u32>,
    /// The build's retry policy per stage (retries, backoff, restart_from), a YAML or JSON
    /// file (`-`: stdin); see docs/rules.md, "Retry policies". A resumed build keeps its own.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Print only the build id, for `BUILD_ID=$(...)` (not with --output json).
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct UpdateArgs {
    /// The build's id, e.g. from `bldst build create --quiet` or `bldst build list`.
    id: BuildId,
    /// The stage reported on.
    #[arg(long, value_name = "N", value_parser = values::state_code(), hide_possible_values = true)]
    state: StateCode,
    /// completed, failed or in_progress.
    #[arg(long, value_parser = values::report_status(), hide_possible_values = true)]
    status: ReportStatus,
    /// What happened, for the history.
    #[arg(long, conflicts_with = "message_file")]
    message: Option<String>,
    /// Read the message from a file (`-`: stdin); only its last 16384 characters are kept.
    #[arg(long, value_name = "PATH")]
    message_file: Option<PathBuf>,
    /// Refuse the report (exit 4) unless the build is at this state.
    #[arg(long, value_name = "N", value_parser = values::state_code(), hide_possible_values = true)]
    expected_state: Option<StateCode>,
    /// Where the report comes from [default: BUILDSTATE_SOURCE, or the CI run's URL].
    #[arg(long)]
    source: Option<String>,
    /// Makes the report safe to repeat: a second report with the same key changes nothing.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// An output of the completed stage, `KEY=VALUE`; repeat for more.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_output)]
    set: Vec<(String, String)>,
    /// Outputs of the completed stage from a file: a JSON object of strings, or KEY=value
    /// lines (`--set` wins over the file for the same key).
    #[arg(long, value_name = "PATH")]
    outputs_file: Option<PathBuf>,
    /// This run's identity for leases [default: --source]: an `in_progress` from it claims the
    /// stage; other runs' reports on the stage are refused (exit 4) while the lease lasts.
    #[arg(long, env = "BUILDSTATE_RUN")]
    run: Option<String>,
    /// The fencing value of the lease this run holds (`lease.fence` of the claim's answer);
    /// refused (exit 4) once another run has taken the stage over.
    #[arg(long, value_name = "N")]
    fence: Option<i64>,
}

/// How `build outputs` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputsFormat {
    /// KEY=value lines.
    Env,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Only builds for this platform (aws, azure, gcp, vsphere, …).
    #[arg(long)]
    platform: Option<Platform>,
    /// Only builds of this image type (rhel8, ubuntu-22.04-web, …).
    #[arg(long)]
    image_type: Option<ImageType>,
    /// running, in_progress, failed, blocked, completed or cancelled.
    #[arg(long, value_parser = values::build_status(), hide_possible_values = true)]
    status: Option<BuildStatus>,
    /// Only builds at this state code.
    #[arg(long, value_name = "N", value_parser = values::state_code(), hide_possible_values = true)]
    state: Option<StateCode>,
    /// Only builds with this key, e.g. aws/rhel8/<git sha>.
    #[arg(long)]
    key: Option<BuildKey>,
    /// At most this many builds (1 to 500) [default: 50].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(BUILD_PAGE_MAX)))]
    limit: Option<u32>,
    /// Skip this many builds first.
    #[arg(long, value_name = "N", value_parser = parse_count::<u64>)]
    offset: Option<u64>,
    /// Print only the build ids, one per line (not with --output json).
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct ReasonArgs {
    /// The build's id, e.g. from `bldst build create --quiet` or `bldst build list`.
    id: BuildId,
    /// Why: it goes into the build's history.
    #[arg(long)]
    reason: String,
}

/// Runs `bldst build ...`.
pub async fn run(args: BuildArgs, context: &Context<'_>) -> Result<u8, CliError> {
    let printer = &context.printer;
    match args.command {
        BuildCommand::Run(args) => return run_loop::run(args, context).await,
        BuildCommand::Create(args) => create(args, context).await?,
        BuildCommand::Update(args) => update(args, context).await?,
        BuildCommand::Get { id } => {
            let build = context.client()?.get_build(&id).await?;
            printer.build(&build)?;
        }
        BuildCommand::List(args) => list(args, context).await?,
        BuildCommand::History { id, after, limit } => {
            history(&id, after, limit, context).await?;
        }
        BuildCommand::Outputs { id, key, format } => {
            return outputs(&id, key.as_deref(), format, context).await;
        }
        BuildCommand::Watch { id, after } => return watch::run(&id, after, context).await,
        BuildCommand::Gate { id, state } => {
            let answer = context.client()?.gate(&id, state).await?;
            printer.gate(&answer)?;
            return Ok(gate_exit_code(answer.decision));
        }
        BuildCommand::Retry(ReasonArgs { id, reason }) => {
            let result = context.client()?.retry_build(&id, &reason).await?;
            print_transition(&result, context)?;
        }
        BuildCommand::Reset { id, state, reason } => {
            let result = context.client()?.reset_build(&id, state, &reason).await?;
            print_transition(&result, context)?;
        }
        BuildCommand::Cancel(ReasonArgs { id, reason }) => {
            let result = context.client()?.cancel_build(&id, &reason).await?;
            print_transition(&result, context)?;
        }
    }
    Ok(exit::SUCCESS)
}

/// A count (`--max-retries`, `--offset`): a whole number, 0 or more.
fn parse_count<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("`{text}` is not a count: use a whole number, 0 or more"))
}

/// `--quiet` prints bare ids and `--output json` whole objects: asking for both is refused
/// before anything is sent, rather than one silently winning.
fn quiet_or_json(quiet: bool, context: &Context<'_>, command: &str) -> Result<(), CliError> {
    if quiet && context.printer.is_json() {
        return Err(CliError::usage(format!(
            "--quiet (ids only) and --output json (whole objects) cannot be combined: drop one; \
             see `bldst build {command} --help`"
        )));
    }
    Ok(())
}

async fn create(args: CreateArgs, context: &Context<'_>) -> Result<(), CliError> {
    quiet_or_json(args.quiet, context, "create")?;
    let labels: BTreeMap<String, String> = args.labels.into_iter().collect();
    let labels = Labels::try_from(labels).map_err(|error| CliError::usage(error.to_string()))?;
    let retry_policy = args.policy.as_deref().map(read_policy_file).transpose()?;
    let request = StartBuild {
        platform: args.platform,
        image_type: args.image_type,
        description: args.description,
        key: args.key,
        labels,
        max_retries: args.max_retries,
        retry_policy,
    };
    let started = context.client()?.start_build(&request).await?;
    let build = &started.build;
    let printer = &context.printer;
    if printer.is_json() {
        return printer.json(&started);
    }
    // The note goes to stderr, so `--quiet` output and the table stay pure data.
    if started.resumed {
        printer.note(&format!(
            "resumed unfinished build `{}` with key `{}`: stage {} ({})",
            build.id,
            build.key.as_ref().map_or("", BuildKey::as_str),
            build.state,
            build.status
        ));
    } else {
        printer.note(&format!("started build `{}`", build.id));
    }
    if let Some(warning) = &started.warning {
        printer.note(&format!("warning: {warning}"));
    }
    if args.quiet {
        printer.line(build.id.as_str())
    } else {
        printer.build(build)
    }
}

/// Reads and checks the retry policy in `path` (`-`: stdin): a usage error (exit 2) naming the
/// file, and the rule and setting, when it cannot be read or is not a valid policy.
fn read_policy_file(path: &Path) -> Result<BuildRetryPolicy, CliError> {
    let origin = format!("`{}`", path.display());
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|error| CliError::usage(format!("cannot read the retry policy {origin}: {error}")))?;
    parse_policy(&text, &origin).map_err(|error| CliError::usage(error.to_string()))
}

async fn update(args: UpdateArgs, context: &Context<'_>) -> Result<(), CliError> {
    let message = match (&args.message, &args.message_file) {
        (Some(message), _) => Some(message.clone()),
        (None, Some(path)) => {
            Some(read_message_file(path, &mut *context.stdin.lock()).map_err(CliError::usage)?)
        }
        (None, None) => None,
    };
    let mut outputs: BTreeMap<String, String> = match &args.outputs_file {
        Some(path) => read_outputs_file(path)
            .map_err(|error| CliError::usage(error.to_string()))?
            .into(),
        None => BTreeMap::new(),
    };
    outputs.extend(args.set);
    let outputs = Outputs::try_from(outputs).map_err(|error| CliError::usage(error.to_string()))?;
    let report = ReportTransition {
        state: args.state,
        status: args.status,
        message,
        expected_state: args.expected_state,
        source: config::report_source(args.source.as_deref(), context.env),
        run: args.run,
        fence: args.fence,
        outputs,
    };
    let result = context
        .client()?
        .report_transition(&args.id, &report, args.idempotency_key.as_deref())
        .await?;
    print_transition(&result, context)
}

async fn list(args: ListArgs, context: &Context<'_>) -> Result<(), CliError> {
    quiet_or_json(args.quiet, context, "list")?;
    let filter = BuildFilter {
        platform: args.platform,
        image_type: args.image_type,
        status: args.status,
        state: args.state,
        key: args.key,
    };
    let query = BuildQuery::new(&filter, args.limit, args.offset);
    let page = context.client()?.list_builds(&query).await?;
    let printer = &context.printer;
    if printer.is_json() {
        printer.json(&page)
    } else if args.quiet {
        let ids: Vec<&str> = page.builds.iter().map(|build| build.id.as_str()).collect();
        if ids.is_empty() {
            Ok(())
        } else {
            printer.line(&ids.join("\n"))
        }
    } else {
        printer.builds(&page.builds)?;
        if let Some(offset) = page.next_offset {
            printer.note(&format!("more builds: add --offset {offset}"));
        }
        Ok(())
    }
}

async fn history(
    id: &BuildId,
    after: i64,
    limit: Option<u32>,
    context: &Context<'_>,
) -> Result<(), CliError> {
    let client = context.client()?;
    let mut page = client
        .history(id, after, limit.unwrap_or(HISTORY_PAGE))
        .await?;
    if limit.is_none() {
        // Without --limit, read to the end.
        while let Some(next) = page.next_after {
            let more = client.history(id, next, HISTORY_PAGE).await?;
            page.entries.extend(more.entries);
            page.next_after = more.next_after;
        }
    }
    let printer = &context.printer;
    if printer.is_json() {
        printer.json(&page)
    } else {
        printer.history(&page.entries)
    }
}

/// Prints the answer to a report or an operator action: the server's sentence about it.
fn print_transition(result: &TransitionResult, context: &Context<'_>) -> Result<(), CliError> {
    let printer = &context.printer;
    if printer.is_json() {
        printer.json(result)
    } else {
        printer.line(&format!("build `{}`: {}", result.build.id, result.note))
    }
}

async fn outputs(
    id: &BuildId,
    key: Option<&str>,
    format: Option<OutputsFormat>,
    context: &Context<'_>,
) -> Result<u8, CliError> {
    let outputs = context.client()?.outputs(id).await?;
    let printer = &context.printer;
    if let Some(key) = key {
        let Some(output) = outputs.get(key) else {
            let known: Vec<&str> = outputs.keys().map(String::as_str).collect();
            return Err(CliError::new(
                exit::NOT_FOUND,
                format!(
                    "build `{id}` has no output `{key}`{}",
                    if known.is_empty() {
                        " (no stage has set any)".to_owned()
                    } else {
                        format!(" (it has: {})", known.join(", "))
                    }
                ),
            ));
        };
        if printer.is_json() {
            printer.json(output)?;
        } else if format == Some(OutputsFormat::Env) {
            printer
                .line(env_lines(&BTreeMap::from([(key.to_owned(), output.clone())])).trim_end())?;
        } else {
            printer.line(&output.value)?;
        }
        return Ok(exit::SUCCESS);
    }
    if printer.is_json() {
        printer.json(&outputs)?;
    } else if format == Some(OutputsFormat::Env) {
        let lines = env_lines(&outputs);
        if !lines.is_empty() {
            printer.line(lines.trim_end())?;
        }
    } else {
        printer.outputs(&outputs)?;
    }
    Ok(exit::SUCCESS)
}

fn parse_output(text: &str) -> Result<(String, String), String> {
    let (key, value) = parse_assignment(text)?;
    buildstate_domain::outputs::check_output_key(&key).map_err(|error| error.to_string())?;
    buildstate_domain::outputs::check_output_value(&key, &value)
        .map_err(|error| error.to_string())?;
    Ok((key, value))
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not a label: write it as name=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_name_equals_value() {
        assert_eq!(
            parse_label("git_sha=0a1b=c"),
            Ok(("git_sha".to_owned(), "0a1b=c".to_owned()))
        );
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=x").is_err());
    }
}
