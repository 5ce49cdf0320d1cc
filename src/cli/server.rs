//! `bldst server`: runs the REST service, or bootstraps its first admin.

use buildstate_domain::{Email, Username};
use buildstate_server::ServerConfig;
use clap::{Args, Subcommand};

use super::exit;

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
    /// Run it where the server's database is reachable; it refuses once an admin exists.
    Bootstrap {
        #[arg(long)]
        username: Username,
        #[arg(long)]
        email: Email,
    },
}

pub async fn run(args: ServerArgs) -> anyhow::Result<u8> {
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
            println!("{secret}");
            Ok(exit::SUCCESS)
        }
    }
}
