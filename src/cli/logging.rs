//! Logging for the command line and the server it can run: `--verbose`/`BUILDSTATE_DEBUG`,
//! `RUST_LOG`, and JSON lines for log shippers.

use std::io::IsTerminal as _;

/// `--verbose` or `BUILDSTATE_DEBUG=1` turn on request logging; `RUST_LOG` overrides both.
pub fn init_logging(verbose: bool) {
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
