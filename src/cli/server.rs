//! `bldst server`: runs the REST service, bootstraps its first admin, or creates a token out
//! of band (the way back in when every admin token is lost).

use buildstate_domain::{Email, Scope, Username};
use buildstate_server::ServerConfig;
use clap::{Arg, ArgAction, Args, Subcommand};

use super::output::Printer;
use super::values::parse_duration;
use buildstate_client::failure::exit;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  bldst server                                    # SQLite file ./buildstate.db, 127.0.0.1:8000
  DATABASE_URL=postgres://ci@db/buildstate bldst server --listen 0.0.0.0:8000
  bldst server bootstrap --username admin --email admin@example.com
  SECRET_KEY=... bldst server token create --username admin --scope admin   # locked out")]
pub struct ServerArgs {
    #[command(flatten)]
    config: ServerConfig,
    #[command(subcommand)]
    command: Option<ServerCommand>,
}

#[derive(Debug, Subcommand)]
enum ServerCommand {
    /// On a fresh install: create the first admin user and print its admin token (once).
    ///
    /// Run it where the server's database is reachable, with the server's DATABASE_URL and
    /// SECRET_KEY (or the same flags); it refuses once an admin exists. The token goes to
    /// stdout, everything else to stderr.
    #[command(after_help = "Examples:
  export BUILDSTATE_API_TOKEN=$(bldst server bootstrap --username admin --email admin@example.com)
  bldst server bootstrap --database-url postgres://ci@db/bst --username ops --email ops@example.com")]
    Bootstrap {
        /// The admin's user name: lowercase letters, digits, `.`, `_` and `-`.
        #[arg(long)]
        username: Username,
        /// The admin's email address.
        #[arg(long)]
        email: Email,
    },
    /// Create a token straight in the server's database, with no token: for when every admin
    /// token is revoked, expired or lost.
    #[command(
        subcommand,
        after_help = "Examples:
  SECRET_KEY=... bldst server token create --username admin --scope admin"
    )]
    Token(ServerTokenCommand),
    /// Remove builds that finished (completed or cancelled) before a date, with their history.
    ///
    /// Works in batches, one short transaction each, so a running server keeps answering
    /// reports meanwhile. With --export, every build is first appended to FILE as one JSON
    /// line (`{"build": …, "history": […]}`) and only then removed.
    #[command(after_help = "Examples:
  bldst server prune --finished-before 90d --export pruned.jsonl
  bldst server prune --finished-before 2026-01-01")]
    Prune {
        /// A date (`2026-01-31`, `2026-01-31T12:00:00Z`) or an age (`90d`, `12h`: finished
        /// longer ago than that).
        #[arg(long, value_name = "DATE|AGE")]
        finished_before: String,
        /// Append each removed build and its history to FILE as JSON lines first.
        #[arg(long, value_name = "FILE")]
        export: Option<std::path::PathBuf>,
        /// Builds removed per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
        batch_size: u32,
    },
    /// Copy the SQLite database to a new file, consistently, while the server runs.
    ///
    /// Uses SQLite's `VACUUM INTO`; the file must not exist yet. Back PostgreSQL up with its
    /// own tools (pg_dump).
    #[command(after_help = "Examples:
  bldst server backup /backups/buildstate-$(date +%F).db")]
    Backup {
        /// The new file.
        path: std::path::PathBuf,
    },
    /// Ask a running server whether it is ready (`GET /ready`): exit 0 if so, 1 if not.
    ///
    /// For a container's health check, where the image has no curl or shell: by default it
    /// asks the server this configuration describes (--listen, with 127.0.0.1 for 0.0.0.0,
    /// and https when --tls-cert is set; that loopback certificate is not verified, since
    /// nothing secret is sent). One line on stderr says why when not ready.
    #[command(after_help = "Examples:
  bldst server healthcheck                                  # the server at $BUILDSTATE_LISTEN
  bldst server healthcheck --url https://buildstate.example.com/ready")]
    Healthcheck {
        /// Ask this URL instead (its certificate is verified).
        #[arg(long, value_name = "URL")]
        url: Option<reqwest::Url>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        timeout_secs: u64,
    },
}

/// The `/ready` URL of the server `config` describes, and whether its certificate is to be
/// verified (not for our own loopback listener).
fn ready_url(
    config: &ServerConfig,
    url: Option<reqwest::Url>,
) -> anyhow::Result<(reqwest::Url, bool)> {
    if let Some(url) = url {
        return Ok((url, true));
    }
    let mut address = config.listen;
    if address.ip().is_unspecified() {
        address.set_ip(match address {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let url = reqwest::Url::parse(&format!("{scheme}://{address}/ready"))?;
    Ok((url, false))
}

/// `bldst server healthcheck`: 0 when `/ready` answers 200, 1 otherwise.
async fn healthcheck(
    config: &ServerConfig,
    url: Option<reqwest::Url>,
    timeout_secs: u64,
) -> anyhow::Result<u8> {
    let (url, verify) = ready_url(config, url)?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(timeout_secs))
        .danger_accept_invalid_certs(!verify)
        .build()?;
    match client.get(url.clone()).send().await {
        Ok(answer) if answer.status().is_success() => Ok(exit::SUCCESS),
        Ok(answer) => {
            eprintln!("not ready: {url} answered {}", answer.status());
            Ok(exit::FAILURE)
        }
        Err(error) => {
            // reqwest's own sentence is generic; its causes say what went wrong.
            let mut reason = error.to_string();
            let mut cause = std::error::Error::source(&error);
            while let Some(inner) = cause {
                reason = format!("{reason}: {inner}");
                cause = inner.source();
            }
            eprintln!("not ready: {reason}");
            Ok(exit::FAILURE)
        }
    }
}

/// A cut-off from a date, a date and time, or an age (before now).
fn finished_before(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    if let Ok(day) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    let age = parse_duration(text).map_err(|_| {
        anyhow::anyhow!(
            "`{text}` is neither a date (2026-01-31, 2026-01-31T12:00:00Z) nor an age (90d, 12h)"
        )
    })?;
    let age = chrono::Duration::from_std(age)?;
    chrono::Utc::now()
        .checked_sub_signed(age)
        .ok_or_else(|| anyhow::anyhow!("`{text}` reaches before the calendar starts"))
}

#[derive(Debug, Subcommand)]
enum ServerTokenCommand {
    /// Create a token for an existing user and print it (once) on stdout.
    ///
    /// Needs the server's DATABASE_URL and SECRET_KEY, not a token: whoever holds both owns the
    /// install already. The token records no creator, so revoking another token never revokes
    /// it. Works while the server runs.
    #[command(after_help = "Examples:
  SECRET_KEY=... bldst server token create --username admin --scope admin
  DATABASE_URL=postgres://ci@db/buildstate SECRET_KEY=... \\
      bldst server token create --username concourse --scope write --description \"pipelines\"")]
    Create {
        /// The user the token is for (an admin user for an `admin` token).
        #[arg(long, visible_alias = "user")]
        username: Username,
        /// read, write or admin.
        #[arg(long, default_value = "admin")]
        scope: Scope,
        /// What the token is for.
        #[arg(
            long,
            default_value = "recovery token made by `bldst server token create`"
        )]
        description: String,
        /// When it expires: a duration such as 1d or 12h; never if absent.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
}

/// Makes `bldst server` take the server's flags and only those: every server flag is accepted
/// after a subcommand as well (`bldst server bootstrap --database-url ...`), and each of
/// `client_flags` (the root's `--api-url`, `--token`, `-o`, `-v`) is shadowed by a hidden flag
/// of the same name that refuses with a sentence naming the server's flags, instead of being
/// listed in the server's help and doing nothing.
pub fn server_flags_only(server: clap::Command, client_flags: &[Arg]) -> clap::Command {
    let server = server.mut_args(|arg| arg.global(true).help_heading("Server options"));
    client_flags.iter().fold(server, |server, client| {
        let name = client
            .get_long()
            .map_or_else(|| client.get_id().to_string(), |long| format!("--{long}"));
        let refusal = format!(
            "`{name}` is a client flag; `bldst server` takes the server's flags \
             (--database-url, --listen, ...: see `bldst server --help`)"
        );
        // The client's flag itself (same id, long and short), made hidden and refusing.
        let shadow = client
            .clone()
            .hide(true)
            .global(true)
            .action(ArgAction::Set)
            .num_args(0..=1)
            .default_value(None)
            .default_missing_value("")
            .value_parser(move |_: &str| -> Result<String, String> { Err(refusal.clone()) });
        server.arg(shadow)
    })
}

pub async fn run(args: ServerArgs, printer: &Printer) -> anyhow::Result<u8> {
    match args.command {
        None => {
            buildstate_server::run(args.config).await?;
            Ok(exit::SUCCESS)
        }
        Some(ServerCommand::Bootstrap { username, email }) => {
            let state = args.config.app_state().await?;
            let secret = buildstate_server::bootstrap_admin(&state, &username, &email).await?;
            eprintln!(
                "created admin user `{username}`; its admin token follows (shown only this once):"
            );
            printer
                .line(secret.as_ref())
                .map_err(|error| anyhow::anyhow!(error.message))?;
            Ok(exit::SUCCESS)
        }
        Some(ServerCommand::Token(ServerTokenCommand::Create {
            username,
            scope,
            description,
            expires_in,
        })) => {
            // Without the server's key the token would hash to something the server never
            // finds: refuse rather than print a token that cannot work.
            if args.config.secret_key.as_deref().unwrap_or("").is_empty() {
                anyhow::bail!(
                    "SECRET_KEY is not set: set it (and DATABASE_URL) to the running server's values, \
                     so that the new token hashes the way the server checks it"
                );
            }
            let state = args.config.app_state().await?;
            let created = buildstate_server::create_token_out_of_band(
                &state,
                &username,
                scope,
                &description,
                expires_in,
            )
            .await?;
            eprintln!(
                "created {scope} token `{}` for `{username}`; the token follows (shown only this once):",
                created.token.id
            );
            printer
                .line(&created.secret)
                .map_err(|error| anyhow::anyhow!(error.message))?;
            Ok(exit::SUCCESS)
        }

        Some(ServerCommand::Prune {
            finished_before: before,
            export,
            batch_size,
        }) => {
            let cutoff = finished_before(&before)?;
            let mut file = match &export {
                Some(path) => Some(std::io::BufWriter::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|error| {
                            anyhow::anyhow!("cannot open `{}`: {error}", path.display())
                        })?,
                )),
                None => None,
            };
            let state = args.config.app_state().await?;
            let export = file
                .as_mut()
                .map(|file| file as &mut (dyn std::io::Write + Send));
            let removed = state
                .db
                .prune_finished_before(cutoff, batch_size, export)
                .await
                .map_err(|error| anyhow::anyhow!("failed to prune: {error:#}"))?;
            eprintln!(
                "removed {removed} build(s) that finished before {}",
                cutoff.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            Ok(exit::SUCCESS)
        }
        Some(ServerCommand::Healthcheck { url, timeout_secs }) => {
            healthcheck(&args.config, url, timeout_secs).await
        }
        Some(ServerCommand::Backup { path }) => {
            let state = args.config.app_state().await?;
            state
                .db
                .backup_to(&path)
                .await
                .map_err(|error| anyhow::anyhow!("{error:#}"))?;
            eprintln!("backed the database up to `{}`", path.display());
            Ok(exit::SUCCESS)
        }
    }
}
