//! `bldst server`: runs the REST service, or bootstraps its first admin.

use buildstate_domain::{Email, Username};
use buildstate_server::ServerConfig;
use clap::{Arg, ArgAction, Args, Subcommand};

use super::exit;
use super::output::Printer;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  bldst server                                    # SQLite file ./buildstate.db, 127.0.0.1:8000
  DATABASE_URL=postgres://ci@db/buildstate bldst server --listen 0.0.0.0:8000
  bldst server bootstrap --username admin --email admin@example.com")]
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
    }
}
