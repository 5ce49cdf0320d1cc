//! The workflow run a step belongs to, from the variables the runner sets (`GITHUB_*`): where
//! reports come from, the idempotency key that makes a retried report count once, and the
//! default build key that makes "Re-run failed jobs" resume the same build.

use buildstate_client::ci;
use buildstate_client::env::EnvMap;
use buildstate_domain::{BuildId, BuildKey, ImageType, Platform, ReportStatus, StateCode};

use buildstate_domain::limits::MAX_IDEMPOTENCY_KEY_LEN;

/// The run, job and step this process is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Run {
    /// `GITHUB_SERVER_URL`, e.g. `https://github.com`.
    pub server_url: Option<String>,
    /// `GITHUB_API_URL`, e.g. `https://api.github.com` (GitHub Enterprise: `https://HOST/api/v3`).
    pub api_url: Option<String>,
    /// `GITHUB_REPOSITORY`: `owner/name`.
    pub repository: Option<String>,
    /// `GITHUB_RUN_ID`: the same across re-runs of the workflow run.
    pub run_id: Option<String>,
    /// `GITHUB_RUN_ATTEMPT`: 1, then one more for each re-run.
    pub run_attempt: Option<String>,
    /// `GITHUB_JOB`: the job's id.
    pub job: Option<String>,
    /// `GITHUB_ACTION`: the step's id (or a name the runner made up for a step without one).
    pub step: Option<String>,
    /// `GITHUB_SHA`: the commit the run is for.
    pub sha: Option<String>,
}

impl Run {
    pub fn from_env(env: &EnvMap) -> Self {
        Run {
            server_url: env.get("GITHUB_SERVER_URL"),
            api_url: env.get("GITHUB_API_URL"),
            repository: env.get("GITHUB_REPOSITORY"),
            run_id: env.get("GITHUB_RUN_ID"),
            run_attempt: env.get("GITHUB_RUN_ATTEMPT"),
            job: env.get("GITHUB_JOB"),
            step: env.get("GITHUB_ACTION"),
            sha: env.get("GITHUB_SHA"),
        }
    }

    /// Where a report comes from, for the build's history: this run attempt's page
    /// (`.../actions/runs/ID/attempts/N`), so a skipped stage can link the attempt that did it.
    /// Outside a GitHub run: `BUILDSTATE_SOURCE` or another CI system's run.
    pub fn source(&self, env: &EnvMap) -> Option<String> {
        if let (Some(server), Some(repository), Some(run_id)) =
            (&self.server_url, &self.repository, &self.run_id)
        {
            let run = format!(
                "{}/{repository}/actions/runs/{run_id}",
                server.trim_end_matches('/')
            );
            return Some(match &self.run_attempt {
                Some(attempt) => format!("{run}/attempts/{attempt}"),
                None => run,
            });
        }
        ci::report_source(None, &|name| env.get(name))
    }

    /// The idempotency key of a report from this step: the same when the step's request is
    /// retried (by the client, or by the step being run again in the same attempt), different
    /// in the next run attempt, so a re-run's new failure still counts. `None` outside a run.
    pub fn idempotency_key(
        &self,
        build: &BuildId,
        state: StateCode,
        status: ReportStatus,
    ) -> Option<String> {
        let run_id = self.run_id.as_deref()?;
        let key = format!(
            "gha-{run_id}-{}-{}-{}-{build}-{state}-{status}",
            self.run_attempt.as_deref().unwrap_or("1"),
            self.job.as_deref().unwrap_or("job"),
            self.step.as_deref().unwrap_or("step"),
        );
        // The server takes 1 to 255 visible ASCII characters.
        Some(
            key.chars()
                .map(|c| if c.is_ascii_graphic() { c } else { '_' })
                .take(MAX_IDEMPOTENCY_KEY_LEN)
                .collect(),
        )
    }

    /// The build key when the workflow gives none: `REPOSITORY/RUN_ID/PLATFORM/IMAGE_TYPE`, the
    /// same in every attempt of the run, so a re-run resumes the build the first attempt started.
    pub fn default_key(&self, platform: &Platform, image_type: &ImageType) -> Option<BuildKey> {
        let (repository, run_id) = (self.repository.as_deref()?, self.run_id.as_deref()?);
        format!("{repository}/{run_id}/{platform}/{image_type}")
            .parse()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Run {
        let env: EnvMap = [
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "org/images"),
            ("GITHUB_RUN_ID", "1234"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            ("GITHUB_JOB", "build"),
            ("GITHUB_ACTION", "report_kickstart"),
        ]
        .into_iter()
        .collect();
        Run::from_env(&env)
    }

    #[test]
    fn the_source_is_the_run_attempts_page() {
        assert_eq!(
            run().source(&EnvMap::default()).as_deref(),
            Some("https://github.com/org/images/actions/runs/1234/attempts/2")
        );
        let elsewhere: EnvMap = [("BUILDSTATE_SOURCE", "laptop")].into_iter().collect();
        assert_eq!(Run::default().source(&elsewhere).as_deref(), Some("laptop"));
    }

    #[test]
    fn the_idempotency_key_names_run_attempt_job_step_and_report() {
        let id: BuildId = "b_1".parse().expect("id");
        let stage = StateCode::new(5).expect("code");
        let key = run()
            .idempotency_key(&id, stage, ReportStatus::Completed)
            .expect("key");
        assert_eq!(key, "gha-1234-2-build-report_kickstart-b_1-5-completed");
        let next_attempt = Run {
            run_attempt: Some("3".into()),
            ..run()
        };
        assert_ne!(
            next_attempt.idempotency_key(&id, stage, ReportStatus::Completed),
            Some(key)
        );
        let odd = Run {
            step: Some("é step ".repeat(100)),
            ..run()
        };
        let long = odd
            .idempotency_key(&id, stage, ReportStatus::Failed)
            .expect("key");
        assert!(
            long.len() <= MAX_IDEMPOTENCY_KEY_LEN && long.chars().all(|c| c.is_ascii_graphic())
        );
        assert_eq!(
            Run::default().idempotency_key(&id, stage, ReportStatus::Failed),
            None
        );
    }

    #[test]
    fn the_default_key_is_the_same_in_every_attempt_of_a_run() {
        let platform: Platform = "aws".parse().expect("platform");
        let image_type: ImageType = "rhel8".parse().expect("type");
        assert_eq!(
            run()
                .default_key(&platform, &image_type)
                .map(|key| key.to_string()),
            Some("org/images/1234/aws/rhel8".to_owned())
        );
        assert_eq!(Run::default().default_key(&platform, &image_type), None);
    }
}
