//! The command line's one failure type: the exit code it maps to, the line for stderr, and the
//! server's error code when the failure is the server's answer; with the CLI's hints on what
//! to do next.

use buildstate_client::api::ClientError;
use buildstate_client::failure::{self, exit, exit_code};
use buildstate_domain::wire::ErrorCode;

/// A failure with the exit code it maps to and one line for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    pub code: u8,
    pub message: String,
    /// The server's error code (`build_not_found`, …) when the failure is the server's answer.
    pub api_code: Option<ErrorCode>,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            api_code: None,
        }
    }

    /// The error as one JSON object, for `--output json`: `{"error": {"code", "message",
    /// "exit_code"}}`, the API's envelope plus the exit code. `code` is the server's code when
    /// the server refused, else the kind of the exit code (`usage`, `unreachable`, …).
    pub fn to_json(&self) -> String {
        let code = self
            .api_code
            .as_ref()
            .map_or_else(|| exit_kind(self.code), ErrorCode::as_str);
        serde_json::json!({
            "error": { "code": code, "message": self.message, "exit_code": self.code }
        })
        .to_string()
    }

    /// A bad value or combination of flags: exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::new(exit::USAGE, message)
    }

    /// Adds `; hint` when the server answered `code`: for hints only the command knows, such
    /// as which list names the user or token that was not found.
    pub fn with_hint_for(mut self, code: &ErrorCode, hint: &str) -> Self {
        if self.api_code.as_ref() == Some(code) {
            self.message = format!("{}; {hint}", self.message);
        }
        self
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
        let api_code = match &error {
            ClientError::Api { code, .. } => Some(code.clone()),
            _ => None,
        };
        CliError {
            api_code,
            ..CliError::new(exit_code(&error), describe(&error))
        }
    }
}

/// The name of an exit code's kind, the `code` of a JSON error that is not the server's.
pub fn exit_kind(code: u8) -> &'static str {
    match code {
        exit::USAGE => "usage",
        exit::NOT_FOUND => "not_found",
        exit::CONFLICT => "conflict",
        exit::AUTH => "authentication",
        exit::UNREACHABLE => "unreachable",
        exit::RATE_LIMITED => "rate_limited",
        exit::GATE_SKIP => "skip",
        exit::GATE_WAIT => "wait",
        exit::GATE_STOP => "stop",
        _ => "failure",
    }
}

/// How the CLI's messages say to fix the URL or the token.
const HINTS: failure::Hints<'static> = failure::Hints {
    no_token: "run `bldst auth login`, or set BUILDSTATE_API_TOKEN",
    bad_token: "log in again with `bldst auth login`, or set BUILDSTATE_API_TOKEN",
    api_url: "--api-url or BUILDSTATE_API_URL",
};

/// The server's sentence, with a hint on what to do next where the server cannot know it:
/// which command lists what was not found, how to go on when a build takes no more reports.
fn describe(error: &ClientError) -> String {
    let sentence = failure::describe(error, &HINTS);
    let ClientError::Api { code, details, .. } = error else {
        return sentence;
    };
    let finished_as = details
        .as_ref()
        .and_then(|details| details.get("status"))
        .and_then(|status| status.as_str());
    match (code, finished_as) {
        (ErrorCode::BuildNotFound, _) => {
            format!(
                "{sentence}; `bldst build list` lists the builds (`--key KEY` finds one by key)"
            )
        }
        (ErrorCode::BuildFinished, Some("cancelled")) => format!(
            "{sentence}; to build again, start a new build for its key: \
             `bldst build create --key KEY ...` (`bldst build get ID` shows the key)"
        ),
        (ErrorCode::BuildFinished, Some("completed")) => format!(
            "{sentence}; to build again, start a new build: `bldst build create --key KEY ...`"
        ),
        _ => sentence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
