//! Failed API calls as the documented exit codes and as one sentence that says what to do,
//! shared by every front end. The hints name the front end's own way of setting the URL and
//! token (flags for the CLI, `source` keys for the resource, inputs for the action).

use buildstate_domain::wire::ErrorCode;
use buildstate_domain::GateDecision;

use crate::api::ClientError;

/// Exit codes, documented in `docs/cli.md` and `bldst --help`.
pub mod exit {
    pub const SUCCESS: u8 = 0;
    /// Something failed that has no code of its own (including a server 5xx).
    pub const FAILURE: u8 = 1;
    /// The command line was wrong, or the server rejected a value (400/422).
    pub const USAGE: u8 = 2;
    /// The build, token or user does not exist (404).
    pub const NOT_FOUND: u8 = 3;
    /// The build refused the change: stage already completed, build blocked or finished, stale
    /// expected state, backoff not elapsed (409).
    pub const CONFLICT: u8 = 4;
    /// No token, or an unknown, revoked, expired or too narrow one (401/403).
    pub const AUTH: u8 = 5;
    /// The server did not answer, after retries.
    pub const UNREACHABLE: u8 = 6;
    /// The token's write limit still refused after the retries (429 `rate_limited`): wait,
    /// or spread the work over more tokens.
    pub const RATE_LIMITED: u8 = 7;
    /// `build gate`: run the stage.
    pub const GATE_RUN: u8 = 0;
    /// `build gate`: skip the stage, it already completed.
    pub const GATE_SKIP: u8 = 10;
    /// `build gate`: wait, the stage is backing off after a failure or another run holds it.
    /// `build run`: the backoff or the other run's lease was not waited out (`--no-wait`, or
    /// longer than `--max-wait`).
    pub const GATE_WAIT: u8 = 11;
    /// `build gate`: stop, the build is blocked, cancelled or completed, or the stage comes
    /// after one that failed. `build run`: the command was not run for that reason.
    pub const GATE_STOP: u8 = 12;
}

/// The exit code for a failed API call: the one place that maps client errors to codes.
pub fn exit_code(error: &ClientError) -> u8 {
    match error {
        ClientError::Api {
            status, details, ..
        } => match status {
            // Cooling down after failed authentications: the token is what to fix.
            429 if limit_of(details.as_ref()) == Some("failed_authentications") => exit::AUTH,
            429 => exit::RATE_LIMITED,
            401 | 403 => exit::AUTH,
            404 => exit::NOT_FOUND,
            409 => exit::CONFLICT,
            400 | 413 | 415 | 422 => exit::USAGE,
            _ => exit::FAILURE,
        },
        ClientError::Unreachable { .. } => exit::UNREACHABLE,
        ClientError::Protocol { .. } => exit::FAILURE,
        ClientError::Config(_) | ClientError::Insecure { .. } => exit::USAGE,
    }
}

/// Which limit a 429 names (`details.limit`).
fn limit_of(details: Option<&serde_json::Value>) -> Option<&str> {
    details?.get("limit")?.as_str()
}

/// The exit code of a gate decision (`bldst build gate`).
pub fn gate_exit_code(decision: GateDecision) -> u8 {
    match decision {
        GateDecision::Run => exit::GATE_RUN,
        GateDecision::Skip => exit::GATE_SKIP,
        GateDecision::Wait => exit::GATE_WAIT,
        GateDecision::Stop => exit::GATE_STOP,
    }
}

/// How a front end tells its user to fix the URL or the token.
#[derive(Debug, Clone, Copy)]
pub struct Hints<'a> {
    /// How to supply a token, e.g. "run `bldst auth login`, or set BUILDSTATE_API_TOKEN".
    pub no_token: &'a str,
    /// How to replace a rejected token.
    pub bad_token: &'a str,
    /// Where the API URL is set, e.g. "--api-url or BUILDSTATE_API_URL".
    pub api_url: &'a str,
    /// How to send a token over plain `http://` to another host, in words the front end's user
    /// can act on (a flag, a `source` key, an input).
    pub allow_insecure: &'a str,
    /// The front end's name for a request field the server refused (`max_retries` is
    /// `--max-retries` on the command line), so that a bare "must be 0 to 100" says where.
    pub field: fn(&str) -> String,
}

/// A request field as the API names it, quoted: for front ends whose user writes the API's
/// names (the resource's `source` and `params` keys).
pub fn api_field(field: &str) -> String {
    format!("`{field}`")
}

/// The server's sentence, with a hint on what to do next where the server cannot know it.
/// Never contains the token.
pub fn describe(error: &ClientError, hints: &Hints<'_>) -> String {
    match error {
        ClientError::Api { code, message, .. } => match code {
            ErrorCode::MissingToken => format!("no API token: {}", hints.no_token),
            ErrorCode::InvalidToken => format!("{message}: {}", hints.bad_token),
            ErrorCode::InsufficientScope => format!("{message}; then {}", hints.bad_token),
            ErrorCode::InvalidField => match error_field(error) {
                // The server names the field beside the message; a message that does not name
                // it itself would leave the reader guessing which value to change.
                Some(field)
                    if !message.contains(&format!("`{field}`"))
                        && !message.contains(&(hints.field)(field)) =>
                {
                    format!("{}: {message}", (hints.field)(field))
                }
                _ => message.clone(),
            },
            ErrorCode::RateLimited => format!(
                "{message} (the server still refused after every retry; it enforces \
                 BUILDSTATE_RATE_LIMIT_* limits)"
            ),
            _ => message.clone(),
        },
        ClientError::Unreachable { .. } => {
            format!("{error}; is the server running? check {}", hints.api_url)
        }
        ClientError::Protocol { .. } => {
            format!(
                "{error}; is this a buildstate server? check {}",
                hints.api_url
            )
        }
        ClientError::Config(message) => format!("{message}; check {}", hints.api_url),
        ClientError::Insecure { .. } => format!(
            "{error}; use an https:// URL ({}), or, on a network you trust, {}",
            hints.api_url, hints.allow_insecure
        ),
    }
}

/// The field an API error names, if any.
fn error_field(error: &ClientError) -> Option<&str> {
    match error {
        ClientError::Api { field, .. } => field.as_deref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HINTS: Hints<'static> = Hints {
        no_token: "set `token`",
        bad_token: "replace `token`",
        api_url: "`api_url`",
        allow_insecure: "set `allow_insecure: true`",
        field: |field| format!("--{}", field.replace('_', "-")),
    };

    fn api(status: u16, code: ErrorCode) -> ClientError {
        ClientError::Api {
            status,
            code,
            message: "the server's sentence".to_owned(),
            field: None,
            details: None,
        }
    }

    #[test]
    fn statuses_map_to_the_documented_exit_codes() {
        let cases = [
            (401, exit::AUTH),
            (403, exit::AUTH),
            (404, exit::NOT_FOUND),
            (409, exit::CONFLICT),
            (422, exit::USAGE),
            (500, exit::FAILURE),
            (429, exit::RATE_LIMITED),
        ];
        for (status, code) in cases {
            assert_eq!(
                exit_code(&api(status, ErrorCode::Conflict)),
                code,
                "{status}"
            );
        }
    }

    #[test]
    fn a_cool_down_after_failed_authentications_is_an_authentication_failure() {
        let error = ClientError::Api {
            status: 429,
            code: ErrorCode::RateLimited,
            message: "the server's sentence".to_owned(),
            field: None,
            details: Some(serde_json::json!({"limit": "failed_authentications"})),
        };
        assert_eq!(exit_code(&error), exit::AUTH);
    }

    #[test]
    fn token_errors_say_how_to_fix_them_in_the_front_ends_words() {
        assert_eq!(
            describe(&api(401, ErrorCode::MissingToken), &HINTS),
            "no API token: set `token`"
        );
        assert_eq!(
            describe(&api(401, ErrorCode::InvalidToken), &HINTS),
            "the server's sentence: replace `token`"
        );
        assert_eq!(
            describe(&api(409, ErrorCode::RetryTooSoon), &HINTS),
            "the server's sentence"
        );
    }

    #[test]
    fn a_refused_field_is_named_in_the_front_ends_words_unless_the_message_names_it() {
        let invalid = |field: &str, message: &str| ClientError::Api {
            status: 422,
            code: ErrorCode::InvalidField,
            message: message.to_owned(),
            field: Some(field.to_owned()),
            details: None,
        };
        let cases = [
            (
                invalid("max_retries", "must be 0 to 100: why"),
                "--max-retries: must be 0 to 100: why",
            ),
            (
                invalid("limit", "must be 1 to 200"),
                "--limit: must be 1 to 200",
            ),
            (
                invalid("state", "invalid `state`: valid codes are 0 to 100"),
                "invalid `state`: valid codes are 0 to 100",
            ),
            (
                api(403, ErrorCode::InsufficientScope),
                "the server's sentence; then replace `token`",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(describe(&error, &HINTS), expected, "{error:?}");
        }
    }

    #[test]
    fn a_plain_http_refusal_says_how_this_front_end_opts_in() {
        let error = ClientError::Insecure {
            host: "ci.internal".to_owned(),
        };
        assert_eq!(exit_code(&error), exit::USAGE);
        assert_eq!(
            describe(&error, &HINTS),
            "refusing to send the API token over plain http:// to `ci.internal`: anyone on the \
             network path could read it and act as you; use an https:// URL (`api_url`), or, on \
             a network you trust, set `allow_insecure: true`"
        );
    }
}
