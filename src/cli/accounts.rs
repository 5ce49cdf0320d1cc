//! `bldst user`, `bldst token` and `bldst auth`: who may call the API, and the login this CLI
//! keeps in its per-user config file.

use std::path::Path;
use std::time::Duration;

use buildstate_domain::wire::{CreateToken, CreateUser, ErrorCode, Whoami};
use buildstate_domain::{Email, Role, Scope, Username};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::config::{self, ConfigFile, Source};
use super::context::{Context, GlobalArgs};
use super::error::CliError;
use super::output::time;
use super::values::{self, parse_duration};
use buildstate_client::failure::exit;

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user (needs an admin token).
    #[command(after_help = "Examples:
  bldst user create --username builder --email builder@example.com
  bldst user create --username ops --email ops@example.com --role admin")]
    Create {
        /// Lowercase letters, digits, `.`, `_` and `-`.
        #[arg(long)]
        username: Username,
        /// The user's email address, e.g. builder@example.com.
        #[arg(long)]
        email: Email,
        /// `member` (read and write tokens) or `admin` (also admin tokens).
        #[arg(long, default_value = "member", value_parser = values::role(), hide_possible_values = true)]
        role: Role,
    },
    /// List users (needs an admin token).
    #[command(after_help = "Examples:
  bldst user list
  bldst user list --output json")]
    List,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print its secret on stdout, the only time it is shown.
    ///
    /// An admin token may create tokens for anyone; other tokens only for their own user, with
    /// at most their own scope.
    #[command(after_help = "Examples:
  bldst token create --username builder --description \"Build pipeline token\"
  TOKEN=$(bldst token create --username builder --description \"concourse aws-rhel8\" --scope write --expires-in 90d)")]
    Create {
        /// The user who will hold the token (yourself, unless your token is an admin token).
        #[arg(long)]
        username: Username,
        /// What the token is for, e.g. \"concourse aws-rhel8 pipeline\".
        #[arg(long)]
        description: String,
        /// `read`, `write` (start builds, report) or `admin` (users, tokens, operator actions).
        #[arg(long, default_value = "write", value_parser = values::scope(), hide_possible_values = true)]
        scope: Scope,
        /// Lifetime such as 3600, 12h or 90d; the token never expires without it.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: Option<Duration>,
    },
    /// List tokens (never their secrets): your own, or anyone's with an admin token.
    #[command(after_help = "Examples:
  bldst token list
  bldst token list --username builder --output json")]
    List {
        /// Only this user's tokens (admin tokens only).
        #[arg(long)]
        username: Option<Username>,
    },
    /// Revoke a token; it stops working at once.
    #[command(after_help = "Examples:
  bldst token revoke t_0123456789abcdefghij")]
    Revoke {
        /// The token's id (`bldst token list` shows it), not its secret.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Debug, Subcommand)]
enum AuthCommand {
    /// Check a token against the server, then save the URL and token for later commands.
    ///
    /// The token comes from `--token` (`--token -` reads stdin), else from stdin when it is not
    /// a terminal, else from BUILDSTATE_API_TOKEN, else from a prompt that does not echo. The
    /// file is readable only by you; its token is only sent to the URL saved with it.
    #[command(after_help = "Examples:
  bldst auth login --api-url https://buildstate.example.com        # prompts for the token
  bldst auth login --api-url http://127.0.0.1:8000 < token.txt
  printf '%s' \"$TOKEN\" | bldst auth login --api-url http://127.0.0.1:8000 --token -")]
    Login,
    /// Show which server and token the CLI uses, and who the token belongs to.
    #[command(after_help = "Examples:
  bldst auth status
  bldst auth status --output json")]
    Status,
    /// Forget the saved login (and, with --revoke, revoke its token on the server first).
    #[command(after_help = "Examples:
  bldst auth logout
  bldst auth logout --revoke")]
    Logout {
        /// Also revoke the saved token on the server.
        #[arg(long)]
        revoke: bool,
    },
}

/// Runs `bldst user ...`.
pub async fn run_user(args: UserArgs, context: &Context<'_>) -> Result<u8, CliError> {
    let client = context.client()?;
    let printer = &context.printer;
    match args.command {
        UserCommand::Create {
            username,
            email,
            role,
        } => {
            let user = client
                .create_user(&CreateUser {
                    username,
                    email,
                    role,
                })
                .await?;
            if printer.is_json() {
                printer.json(&user)?;
            } else {
                printer.users(std::slice::from_ref(&user))?;
            }
        }
        UserCommand::List => {
            let users = client.list_users().await?;
            if printer.is_json() {
                printer.json(&users)?;
            } else {
                printer.users(&users)?;
            }
        }
    }
    Ok(exit::SUCCESS)
}

/// The hints for a user or token that was not found: where to find the right one.
const USER_LIST: &str = "`bldst user list` lists the users";
const TOKEN_LIST: &str = "`bldst token list` lists the tokens";

/// Runs `bldst token ...`.
pub async fn run_token(args: TokenArgs, context: &Context<'_>) -> Result<u8, CliError> {
    let client = context.client()?;
    let printer = &context.printer;
    match args.command {
        TokenCommand::Create {
            username,
            description,
            scope,
            expires_in,
        } => {
            let created = client
                .create_token(&CreateToken {
                    username,
                    description,
                    scope,
                    expires_in_seconds: expires_in.map(|lifetime| lifetime.as_secs()),
                })
                .await
                .map_err(|error| {
                    CliError::from(error).with_hint_for(&ErrorCode::NotFound, USER_LIST)
                })?;
            if printer.is_json() {
                printer.json(&created)?;
            } else {
                let token = &created.token;
                let expiry = token.expires_at.as_ref().map_or_else(
                    || "never expires".to_owned(),
                    |at| format!("expires {}", time(at)),
                );
                // The note goes to stderr so that `TOKEN=$(bldst token create ...)` captures
                // exactly the secret.
                printer.note(&format!(
                    "created token `{}` for `{}` ({} scope, {expiry}); its secret follows (shown only this once):",
                    token.id, token.username, token.scope
                ));
                printer.line(&created.secret)?;
            }
        }
        TokenCommand::List { username } => {
            let tokens = client
                .list_tokens(username.as_ref().map(Username::as_str))
                .await?;
            if printer.is_json() {
                printer.json(&tokens)?;
            } else {
                printer.tokens(&tokens)?;
            }
        }
        TokenCommand::Revoke { id } => {
            let token = client.revoke_token(&id).await.map_err(|error| {
                CliError::from(error).with_hint_for(&ErrorCode::NotFound, TOKEN_LIST)
            })?;
            if printer.is_json() {
                printer.json(&token)?;
            } else {
                printer.line(&format!(
                    "revoked token `{}` of `{}` ({})",
                    token.id, token.username, token.description
                ))?;
            }
        }
    }
    Ok(exit::SUCCESS)
}

/// What `bldst auth status --output json` prints.
#[derive(Debug, Serialize)]
struct AuthStatus<'a> {
    api_url: &'a str,
    api_url_source: Source,
    token_source: Option<Source>,
    config_file: Option<String>,
    whoami: &'a Whoami,
}

/// Runs `bldst auth ...`.
pub async fn run_auth(
    args: AuthArgs,
    global: &GlobalArgs,
    context: &Context<'_>,
) -> Result<u8, CliError> {
    match args.command {
        AuthCommand::Login => login(global, context).await,
        AuthCommand::Status => status(context).await,
        AuthCommand::Logout { revoke } => logout(revoke, context).await,
    }
}

async fn login(global: &GlobalArgs, context: &Context<'_>) -> Result<u8, CliError> {
    let path = config_path(context)?;
    let token = login_token(global, context)?;
    let client = context.client_with(Some(token.clone()))?;
    let whoami = client.whoami().await?;
    let saved = ConfigFile {
        api_url: Some(context.settings.api_url.clone()),
        token: Some(token),
    };
    config::save(path, &saved).map_err(CliError::failure)?;
    let printer = &context.printer;
    if printer.is_json() {
        printer.json(&whoami)?;
    } else {
        printer.line(&format!(
            "logged in to {} as `{}` ({} token `{}`); saved to {}",
            context.settings.api_url,
            whoami.username,
            whoami.scope,
            whoami.token_id,
            path.display()
        ))?;
    }
    Ok(exit::SUCCESS)
}

/// The token to log in with, from the least visible place it was given.
fn login_token(global: &GlobalArgs, context: &Context<'_>) -> Result<String, CliError> {
    let from_stdin = || -> Result<String, CliError> {
        let mut text = String::new();
        context
            .stdin
            .lock()
            .read_to_string(&mut text)
            .map_err(|error| {
                CliError::failure(format!("cannot read the token from stdin: {error}"))
            })?;
        Ok(text.trim().to_owned())
    };
    let token = match global.token.as_deref() {
        Some("-") => from_stdin()?,
        Some(token) => token.to_owned(),
        None if !context.stdin_is_terminal => {
            let piped = from_stdin()?;
            match (piped.is_empty(), (context.env)(config::API_TOKEN_VAR)) {
                (true, Some(token)) => token,
                _ => piped,
            }
        }
        None => match (context.env)(config::API_TOKEN_VAR) {
            Some(token) => token,
            None => rpassword::prompt_password("API token: ")
                .map_err(|error| CliError::failure(format!("cannot read the token: {error}")))?
                .trim()
                .to_owned(),
        },
    };
    if token.is_empty() {
        return Err(CliError::usage(
            "no token given: pipe it in (`bldst auth login < token.txt`), or create one with `bldst token create`",
        ));
    }
    Ok(token)
}

async fn status(context: &Context<'_>) -> Result<u8, CliError> {
    let settings = &context.settings;
    let whoami = context.client()?.whoami().await?;
    let printer = &context.printer;
    let config_file = settings
        .config_path
        .as_ref()
        .map(|path| path.display().to_string());
    if printer.is_json() {
        return printer
            .json(&AuthStatus {
                api_url: &settings.api_url,
                api_url_source: settings.api_url_from,
                token_source: settings.token_from,
                config_file,
                whoami: &whoami,
            })
            .map(|()| exit::SUCCESS);
    }
    let mut table = printer.table(&[]);
    let source = |from: Option<Source>| from.map_or_else(|| "-".to_owned(), |s| s.to_string());
    table.add_row(vec![
        "server".to_owned(),
        format!("{} (from {})", settings.api_url, settings.api_url_from),
    ]);
    table.add_row(vec![
        "token".to_owned(),
        format!(
            "`{}` (from {})",
            whoami.token_id,
            source(settings.token_from)
        ),
    ]);
    table.add_row(vec!["user".to_owned(), whoami.username.to_string()]);
    table.add_row(vec!["role".to_owned(), whoami.role.to_string()]);
    table.add_row(vec!["scope".to_owned(), whoami.scope.to_string()]);
    table.add_row(vec![
        "expires".to_owned(),
        whoami
            .expires_at
            .as_ref()
            .map_or_else(|| "never".to_owned(), time),
    ]);
    table.add_row(vec![
        "config file".to_owned(),
        config_file.unwrap_or_else(|| "-".to_owned()),
    ]);
    printer.print_table(table)?;
    Ok(exit::SUCCESS)
}

async fn logout(revoke: bool, context: &Context<'_>) -> Result<u8, CliError> {
    let path = config_path(context)?;
    let saved =
        config::load(path, &|line| context.printer.note(line)).map_err(CliError::failure)?;
    if revoke {
        match saved.as_ref().and_then(|saved| saved.token.clone()) {
            Some(token) => {
                let url = saved
                    .as_ref()
                    .and_then(|saved| saved.api_url.clone())
                    .unwrap_or_else(|| config::DEFAULT_API_URL.to_owned());
                let mut config = buildstate_client::api::ClientConfig::new(url, Some(token));
                config.timeout = Duration::from_secs(30);
                config.allow_insecure = context.allow_insecure;
                let client = buildstate_client::api::Client::new(config)?;
                let whoami = client.whoami().await?;
                client
                    .revoke_token(&whoami.token_id)
                    .await
                    .map_err(|error| {
                        CliError::from(error).with_hint_for(&ErrorCode::NotFound, TOKEN_LIST)
                    })?;
                context
                    .printer
                    .note(&format!("revoked token `{}`", whoami.token_id));
            }
            None => context.printer.note("no saved token to revoke"),
        }
    }
    let removed = config::remove(path).map_err(CliError::failure)?;
    let message = if removed {
        format!("logged out: removed {}", path.display())
    } else {
        format!("not logged in: there is no {}", path.display())
    };
    if context.printer.is_json() {
        context
            .printer
            .json(&serde_json::json!({ "logged_out": removed, "config_file": path }))?;
    } else {
        context.printer.line(&message)?;
    }
    Ok(exit::SUCCESS)
}

fn config_path<'a>(context: &'a Context<'_>) -> Result<&'a Path, CliError> {
    context.settings.config_path.as_deref().ok_or_else(|| {
        CliError::usage("cannot tell where to keep the login: set HOME or BUILDSTATE_CONFIG")
    })
}
