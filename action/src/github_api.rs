//! GitHub's REST API through octocrab, as the action's GitHub calls (the commit status, the
//! `retry` command's re-run) share it: `GITHUB_API_URL` honoured (GitHub Enterprise Server),
//! bounded timeouts, and GitHub's refusals told apart from failures to reach it.

use std::time::Duration;

use octocrab::Octocrab;

/// A client for the API at `api_url` with `token`, or why there is none.
pub fn client(api_url: &str, token: &str) -> Result<Octocrab, String> {
    Octocrab::builder()
        .base_uri(api_url.trim_end_matches('/'))
        .map_err(|error| format!("GITHUB_API_URL `{api_url}` is not a URL: {error}"))?
        .personal_token(token.to_owned())
        .set_connect_timeout(Some(Duration::from_secs(10)))
        .set_read_timeout(Some(Duration::from_secs(30)))
        .build()
        .map_err(|error| format!("cannot set up the GitHub client: {error}"))
}

/// A failed GitHub call: GitHub's own answer (status and message), or no answer at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// GitHub answered `status` with `message`.
    Refused { status: u16, message: String },
    /// The call did not get an answer, as a sentence.
    Failed(String),
}

/// Sorts an octocrab error into GitHub's answer or a failure to get one (`api_url` names
/// where it was sent).
pub fn call_error(error: octocrab::Error, api_url: &str) -> CallError {
    match error {
        octocrab::Error::GitHub { source, .. } => CallError::Refused {
            status: source.status_code.as_u16(),
            message: source.message,
        },
        error => CallError::Failed(format!(
            "cannot reach the GitHub API at {api_url}: {}",
            error_chain(&error)
        )),
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
