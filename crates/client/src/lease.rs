//! Holding a stage while a command runs: heartbeats in the background, and the outputs a
//! command leaves behind, read and printed the same way by every front end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use buildstate_domain::wire::LeaseRequest;
use buildstate_domain::{BuildId, Lease, Outputs, StageOutput};
use tokio::task::JoinHandle;

use crate::api::{Client, ClientError};

/// Heartbeats running in the background for one leased stage; stop them with
/// [`Heartbeats::stop`].
#[derive(Debug)]
pub struct Heartbeats {
    task: JoinHandle<()>,
    lost: Arc<Mutex<Option<ClientError>>>,
}

impl Heartbeats {
    /// Starts heartbeating `lease` every `interval`. A refusal (the lease was lost to another
    /// run) stops the heartbeats and is kept for [`Heartbeats::stop`]; a failed call (server
    /// unreachable) is retried at the next tick.
    pub fn start(client: Client, id: BuildId, lease: &Lease, interval: Duration) -> Self {
        let request = LeaseRequest {
            state: lease.stage,
            run: Some(lease.holder.clone()),
            fence: Some(lease.fence),
        };
        let lost = Arc::new(Mutex::new(None));
        let kept = Arc::clone(&lost);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await; // the first tick is immediate; the claim was just made
            loop {
                ticks.tick().await;
                match client.heartbeat(&id, &request).await {
                    Ok(_) => {}
                    Err(error @ ClientError::Api { status: 409, .. }) => {
                        if let Ok(mut lost) = kept.lock() {
                            *lost = Some(error);
                        }
                        return;
                    }
                    Err(error) => tracing::debug!("heartbeat failed, retrying: {error}"),
                }
            }
        });
        Heartbeats { task, lost }
    }

    /// Stops the heartbeats; returns the refusal that ended them early, if one did.
    pub fn stop(self) -> Option<ClientError> {
        self.task.abort();
        self.lost.lock().ok().and_then(|mut lost| lost.take())
    }
}

/// Why an outputs file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OutputsFileError {
    #[error("cannot read outputs file `{path}`: {cause}")]
    Unreadable { path: String, cause: String },
    #[error("outputs file `{path}` is not a JSON object of strings (e.g. {{\"ami_id\": \"ami-0abc\"}}): {cause}")]
    NotAnObject { path: String, cause: String },
    #[error("outputs file `{path}`: {cause}")]
    Invalid { path: String, cause: String },
}

/// Reads the outputs a command wrote: a JSON object of string values, or `KEY=value` lines
/// (blank lines and `#` comments skipped). A missing or empty file is no outputs.
pub fn read_outputs_file(path: &std::path::Path) -> Result<Outputs, OutputsFileError> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => {
            return Err(OutputsFileError::Unreadable {
                path: shown,
                cause: error.to_string(),
            })
        }
    };
    parse_outputs(&text).map_err(|error| match error {
        ParseError::Json(cause) => OutputsFileError::NotAnObject { path: shown, cause },
        ParseError::Rule(cause) => OutputsFileError::Invalid { path: shown, cause },
    })
}

enum ParseError {
    Json(String),
    Rule(String),
}

fn parse_outputs(text: &str) -> Result<Outputs, ParseError> {
    let trimmed = text.trim();
    let map: BTreeMap<String, String> = if trimmed.is_empty() {
        BTreeMap::new()
    } else if trimmed.starts_with('{') {
        serde_json::from_str(trimmed).map_err(|error| ParseError::Json(error.to_string()))?
    } else {
        let mut map = BTreeMap::new();
        for line in trimmed.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = parse_assignment(line).map_err(ParseError::Rule)?;
            map.insert(key, value);
        }
        map
    };
    Outputs::try_from(map).map_err(|error| ParseError::Rule(error.to_string()))
}

/// `KEY=value` (as `--set` takes it): the key up to the first `=`, the rest as the value.
pub fn parse_assignment(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) => Ok((key.trim().to_owned(), value.to_owned())),
        None => Err(format!("`{text}` is not KEY=value")),
    }
}

/// The outputs as `KEY=value` lines for `eval` and `$GITHUB_ENV`: a value made only of
/// characters no shell treats specially is printed as is (GitHub reads it literally too);
/// any other value is single-quoted for the shell.
pub fn env_lines(outputs: &BTreeMap<String, StageOutput>) -> String {
    outputs
        .iter()
        .map(|(key, output)| format!("{key}={}\n", shell_quoted(&output.value)))
        .collect()
}

fn shell_quoted(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.,:/@%+=".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(pairs: &[(&str, &str)]) -> BTreeMap<String, StageOutput> {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    StageOutput {
                        value: (*v).to_owned(),
                        stage: buildstate_domain::StateCode::new(10).expect("valid"),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn env_lines_quote_only_what_a_shell_would_misread() {
        let lines = env_lines(&merged(&[
            ("ami_id", "ami-0abc123"),
            ("url", "https://x.example/a?b=1&c=2"),
            ("name", "it's $HOME `x`"),
        ]));
        assert_eq!(
            lines,
            "ami_id=ami-0abc123\nname='it'\\''s $HOME `x`'\nurl='https://x.example/a?b=1&c=2'\n"
        );
    }

    #[test]
    fn outputs_files_are_json_objects_or_key_value_lines() {
        let json = parse_outputs(r#"{"ami_id": "ami-1", "ip": "10.0.0.1"}"#)
            .ok()
            .expect("json");
        assert_eq!(json.len(), 2);
        let lines = parse_outputs("# from packer\nami_id=ami-1\n\nsnapshot=snap=9\n")
            .ok()
            .expect("lines");
        assert_eq!(
            lines.as_map().get("snapshot").map(String::as_str),
            Some("snap=9"),
            "the value keeps later `=`"
        );
        assert!(parse_outputs("").ok().expect("empty").is_empty());
        assert!(matches!(
            parse_outputs("[1]"),
            Err(ParseError::Rule(_)) | Err(ParseError::Json(_))
        ));
        assert!(matches!(
            parse_outputs("ami id=1"),
            Err(ParseError::Rule(_))
        ));
        assert!(matches!(
            parse_outputs("no equals"),
            Err(ParseError::Rule(_))
        ));
        assert!(matches!(
            parse_outputs(r#"{"k": 1}"#),
            Err(ParseError::Json(_))
        ));
    }
}
