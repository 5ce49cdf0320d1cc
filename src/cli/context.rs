//! What every command gets: the flags every command takes, and the [`Context`] built from them
//! (the resolved server and token, the printer, the environment and the standard streams).

use std::time::Duration;

use buildstate_client::api::{Client, ClientConfig};
use buildstate_client::failure::exit;
use clap::Args;

use super::config::{self, EnvLookup, Settings};
use super::error::CliError;
use super::output::{OutputFormat, Printer};
use super::streams::{Input, Streams};

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
        let printer = self.printer.clone();
        config.on_retry = Some(std::sync::Arc::new(move |line: &str| {
            printer.note(&format!("note: {line}"));
        }));
        Ok(Client::new(config)?)
    }

    fn client_config(&self, token: Option<String>) -> ClientConfig {
        let mut config = ClientConfig::new(&self.settings.api_url, token);
        config.timeout = Duration::from_secs(30);
        config.allow_insecure = self.allow_insecure;
        config
    }
}

/// The context for a command run with `global`'s flags, `env` and `streams`: reads the
/// saved login and resolves the server and token.
pub fn context<'a>(
    global: &GlobalArgs,
    printer: Printer,
    env: EnvLookup<'a>,
    streams: Streams,
) -> Result<Context<'a>, CliError> {
    let path = config::config_path(env);
    let file = match &path {
        Some(path) => config::load(path, &|line| printer.note(line)).map_err(CliError::failure)?,
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
