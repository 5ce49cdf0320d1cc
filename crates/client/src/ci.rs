//! Which CI system and run a front end is running in, from the environment: where a report
//! comes from (`source` in the history) and, for front ends that need it, the run's identity.

use crate::env::EnvLookup;

/// Says where reports come from when no explicit source is given.
pub const SOURCE_VAR: &str = "BUILDSTATE_SOURCE";

/// A CI system whose runs the front ends recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CiSystem {
    GitHubActions,
    GitLab,
    Jenkins,
    Concourse,
}

/// The CI run a process is part of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiRun {
    pub system: CiSystem,
    /// The run's page, for people following a history entry back to its run.
    pub url: String,
}

/// The CI run `env` describes, or `None` outside CI (or in a system not recognised).
///
/// GitHub Actions: `GITHUB_SERVER_URL`, `GITHUB_REPOSITORY`, `GITHUB_RUN_ID`. GitLab:
/// `CI_JOB_URL`. Jenkins: `BUILD_URL`. Concourse: `ATC_EXTERNAL_URL` with `BUILD_TEAM_NAME`,
/// `BUILD_PIPELINE_NAME`, `BUILD_JOB_NAME` and `BUILD_NAME` (a one-off build has none of the
/// last four and gets no URL).
pub fn detect(env: EnvLookup<'_>) -> Option<CiRun> {
    if let (Some(server), Some(repository), Some(run)) = (
        env("GITHUB_SERVER_URL"),
        env("GITHUB_REPOSITORY"),
        env("GITHUB_RUN_ID"),
    ) {
        return Some(CiRun {
            system: CiSystem::GitHubActions,
            url: format!("{server}/{repository}/actions/runs/{run}"),
        });
    }
    if let Some(url) = env("CI_JOB_URL") {
        return Some(CiRun {
            system: CiSystem::GitLab,
            url,
        });
    }
    if let Some(url) = env("BUILD_URL") {
        return Some(CiRun {
            system: CiSystem::Jenkins,
            url,
        });
    }
    if let Some(url) = concourse_build_url(env) {
        return Some(CiRun {
            system: CiSystem::Concourse,
            url,
        });
    }
    None
}

/// The page of the Concourse build `env` describes (the `BUILD_*` metadata Concourse gives
/// resources and tasks).
pub fn concourse_build_url(env: EnvLookup<'_>) -> Option<String> {
    let (Some(atc), Some(team), Some(pipeline), Some(job), Some(build)) = (
        env("ATC_EXTERNAL_URL"),
        env("BUILD_TEAM_NAME"),
        env("BUILD_PIPELINE_NAME"),
        env("BUILD_JOB_NAME"),
        env("BUILD_NAME"),
    ) else {
        return None;
    };
    Some(format!(
        "{}/teams/{team}/pipelines/{pipeline}/jobs/{job}/builds/{build}",
        atc.trim_end_matches('/')
    ))
}

/// Where a report comes from: `explicit` (a flag or input), else `BUILDSTATE_SOURCE`, else the
/// URL of the CI run (see [`detect`]), else nothing.
pub fn report_source(explicit: Option<&str>, env: EnvLookup<'_>) -> Option<String> {
    if let Some(source) = explicit.filter(|source| !source.is_empty()) {
        return Some(source.to_owned());
    }
    if let Some(source) = env(SOURCE_VAR) {
        return Some(source);
    }
    detect(env).map(|run| run.url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::EnvMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: EnvMap = pairs.iter().copied().collect();
        move |name| map.get(name)
    }

    #[test]
    fn the_report_source_is_detected_from_the_ci_system() {
        let github = env_of(&[
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "org/images"),
            ("GITHUB_RUN_ID", "42"),
        ]);
        assert_eq!(
            report_source(None, &github).as_deref(),
            Some("https://github.com/org/images/actions/runs/42")
        );
        let jenkins = env_of(&[("BUILD_URL", "https://ci/job/x/7/")]);
        assert_eq!(
            report_source(None, &jenkins).as_deref(),
            Some("https://ci/job/x/7/")
        );
        assert_eq!(
            report_source(Some("laptop"), &jenkins).as_deref(),
            Some("laptop")
        );
        assert_eq!(report_source(None, &env_of(&[])), None);
    }

    #[test]
    fn a_concourse_build_links_its_page() {
        let concourse = env_of(&[
            ("ATC_EXTERNAL_URL", "https://ci.example/"),
            ("BUILD_TEAM_NAME", "main"),
            ("BUILD_PIPELINE_NAME", "images"),
            ("BUILD_JOB_NAME", "rhel8"),
            ("BUILD_NAME", "7"),
        ]);
        assert_eq!(
            detect(&concourse),
            Some(CiRun {
                system: CiSystem::Concourse,
                url: "https://ci.example/teams/main/pipelines/images/jobs/rhel8/builds/7"
                    .to_owned()
            })
        );
    }
}
