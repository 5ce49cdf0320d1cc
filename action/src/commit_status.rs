//! The build as a commit status on the run's commit, through GitHub's REST API (octocrab):
//! one context per build line (`buildstate/PLATFORM/IMAGE_TYPE`), pending while the build is
//! on its way, success once published, failure when a stage failed or the build is blocked or
//! cancelled; the description says where it is, the link goes to the dashboard.
//!
//! `GITHUB_API_URL` is honoured, so GitHub Enterprise Server works. A 403 is the expected
//! answer for a pull request from a fork (its token is read-only): the caller turns it into a
//! warning, not a failure.

use buildstate_domain::wire::Build;
use buildstate_domain::BuildStatus;
use octocrab::models::StatusState;

use crate::github_api::{call_error, CallError};

/// GitHub's limit on a status description.
const MAX_DESCRIPTION_CHARS: usize = 140;

/// A commit status, as posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    pub state: StatusState,
    pub context: String,
    pub description: String,
    pub target_url: Option<String>,
}

/// The status a build shows on its commit.
pub fn for_build(build: &Build, target_url: Option<String>) -> CommitStatus {
    let state = match build.status {
        BuildStatus::Running | BuildStatus::InProgress => StatusState::Pending,
        BuildStatus::Completed => StatusState::Success,
        BuildStatus::Failed | BuildStatus::Blocked | BuildStatus::Cancelled => StatusState::Failure,
    };
    let description = format!(
        "state {}/100 {}: {}",
        build.state, build.status, build.state_name
    );
    CommitStatus {
        state,
        context: format!("buildstate/{}/{}", build.platform, build.image_type),
        description: description.chars().take(MAX_DESCRIPTION_CHARS).collect(),
        target_url,
    }
}

/// Where to post: the API, the repository, the commit and the token.
#[derive(Clone)]
pub struct Target {
    /// `GITHUB_API_URL`, `https://api.github.com` by default.
    pub api_url: String,
    /// `owner/name`.
    pub repository: String,
    pub sha: String,
    pub token: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("api_url", &self.api_url)
            .field("repository", &self.repository)
            .field("sha", &self.sha)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Why a status was not posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostError {
    /// GitHub refused the token's permission (403): read-only tokens of fork pull requests,
    /// or a workflow without `permissions: statuses: write`.
    Forbidden(String),
    /// Anything else, as a sentence.
    Failed(String),
}

/// Posts `status` on the target commit.
pub async fn post(target: &Target, status: &CommitStatus) -> Result<(), PostError> {
    let Some((owner, name)) = target.repository.split_once('/') else {
        return Err(PostError::Failed(format!(
            "GITHUB_REPOSITORY `{}` is not `owner/name`",
            target.repository
        )));
    };
    let octocrab =
        crate::github_api::client(&target.api_url, &target.token).map_err(PostError::Failed)?;
    let repository = octocrab.repos(owner, name);
    let mut request = repository
        .create_status(target.sha.clone(), status.state)
        .context(status.context.clone())
        .description(status.description.clone());
    if let Some(url) = &status.target_url {
        request = request.target(url.clone());
    }
    match request
        .send()
        .await
        .map_err(|error| call_error(error, &target.api_url))
    {
        Ok(_) => Ok(()),
        Err(CallError::Refused { status, message }) => {
            let message = format!("GitHub answered {status} to the commit status: {message}");
            if status == 403 {
                Err(PostError::Forbidden(message))
            } else {
                Err(PostError::Failed(message))
            }
        }
        Err(CallError::Failed(message)) => Err(PostError::Failed(message)),
    }
}
