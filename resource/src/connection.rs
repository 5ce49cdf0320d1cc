//! How a command reaches the server: the client for the resource's `source` (URL, token,
//! timeout, CA certificates, proxies, retries told to the log), failures as one sentence with
//! the resource's hints, and the Concourse build a command reports under.

use std::sync::Arc;
use std::time::Duration;

use buildstate_client::api::{Client, ClientConfig, ClientError, Proxies};
use buildstate_client::env::EnvMap;
use buildstate_client::failure::{self, Hints};

use crate::log::Log;
use crate::schema::Source;

/// The identity this Concourse build reports under, for stage leases: an `in_progress` put
/// claims the stage for it, and every later put (and `in`'s gate answers) of the same build
/// speaks as it, so the build's own reports are accepted without carrying the lease's fence
/// from step to step. It is the build's page, which is unique per build and which a person can
/// open from the holder named in a refusal: `ATC_EXTERNAL_URL/builds/BUILD_ID`; without
/// `ATC_EXTERNAL_URL`, `concourse-build:BUILD_ID`; without `BUILD_ID`, the job build's page
/// (`ATC_EXTERNAL_URL/teams/T/pipelines/P/jobs/J/builds/N`). Outside a Concourse build
/// (none of these set), `None`: the put claims no lease, as a report without a run identity.
pub fn concourse_run(env: &EnvMap) -> Option<String> {
    let atc = env
        .get("ATC_EXTERNAL_URL")
        .map(|url| url.trim_end_matches('/').to_owned());
    match (env.get("BUILD_ID"), atc) {
        (Some(id), Some(atc)) => Some(format!("{atc}/builds/{id}")),
        (Some(id), None) => Some(format!("concourse-build:{id}")),
        (None, _) => buildstate_client::ci::concourse_build_url(&|name| env.get(name)),
    }
}

/// How the resource's messages say to fix the URL or the token.
const HINTS: Hints<'static> = Hints {
    no_token: "set `token` in the resource's `source`",
    bad_token: "set a valid `token` in the resource's `source`",
    api_url: "`api_url` in the resource's `source`",
};

/// A client error as one sentence.
pub(crate) fn describe(error: &ClientError) -> String {
    failure::describe(error, &HINTS)
}

/// A client for `source`: its URL, token, timeout, CA certificates, the proxies of `env`,
/// and retries logged through `log`.
pub(crate) fn client_for(source: &Source, env: &EnvMap, log: &Log) -> Result<Client, String> {
    let mut config = ClientConfig::new(&source.api_url, Some(source.token.expose().to_owned()));
    if let Some(seconds) = source.timeout_seconds {
        config.timeout = Duration::from_secs(seconds);
    }
    if let Some(attempts) = source.max_attempts {
        config.max_attempts = attempts;
    }
    config.extra_root_pem = source.ca_certs.as_ref().map(|pem| pem.as_bytes().to_vec());
    config.proxies = Some(Proxies::from_env(&|name| env.get(name)));
    let retries = log.clone();
    config.on_retry = Some(Arc::new(move |line: &str| {
        retries.line(format!("retrying: {line}"));
    }));
    if source.debug {
        log.line(format!(
            "debug: API {} (token redacted), timeout {}s, at most {} attempts",
            source.api_url,
            config.timeout.as_secs(),
            config.max_attempts
        ));
    }
    Client::new(config).map_err(|error| describe(&error))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pairs<'a> = Vec<(&'a str, &'a str)>;

    fn env(pairs: &[(&str, &str)]) -> EnvMap {
        pairs.iter().copied().collect()
    }

    #[test]
    fn the_run_identity_is_the_concourse_builds_page() {
        let job = [
            ("BUILD_TEAM_NAME", "main"),
            ("BUILD_PIPELINE_NAME", "images"),
            ("BUILD_JOB_NAME", "rhel8"),
            ("BUILD_NAME", "7"),
        ];
        let cases: Vec<(&str, Pairs, Option<&str>)> = vec![
            (
                "build id and ATC",
                [
                    &job[..],
                    &[("BUILD_ID", "1234"), ("ATC_EXTERNAL_URL", "https://ci/")],
                ]
                .concat(),
                Some("https://ci/builds/1234"),
            ),
            (
                "build id without ATC",
                vec![("BUILD_ID", "1234")],
                Some("concourse-build:1234"),
            ),
            (
                "a job build without its id",
                [&job[..], &[("ATC_EXTERNAL_URL", "https://ci")]].concat(),
                Some("https://ci/teams/main/pipelines/images/jobs/rhel8/builds/7"),
            ),
            ("outside Concourse", Vec::new(), None),
        ];
        for (name, pairs, expected) in cases {
            assert_eq!(concourse_run(&env(&pairs)).as_deref(), expected, "{name}");
        }
    }
}
