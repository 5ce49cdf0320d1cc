//! `bldst build create --policy FILE`: the build's retry policy from a YAML or JSON file, shown
//! by `build get` with the reopened pass a failure starts; a bad or missing file exits 2 naming
//! the file and the rule, with nothing started; a resume with another policy warns.

use buildstate_domain::BuildRetryPolicy;

use crate::helpers::{build_of, Bldst};
use crate::support::TestApp;

crate::on_both_backends!(
    a_policy_file_sets_the_builds_retry_policy_and_get_shows_it,
    a_bad_policy_file_exits_2_naming_the_file_and_starts_nothing,
);

const POLICY_YAML: &str = "\
# kickstart waits on the cloud; the in-VM stages restart from the green image
rules:
  - stages: 5
    max_retries: 3
    backoff_base_secs: 600
  - stages: \"15-45\"
    max_retries: 2
    restart_from: 10
";

fn write(bldst: &Bldst, name: &str, text: &str) -> String {
    let path = bldst.home.path().join(name);
    std::fs::write(&path, text).expect("write the policy file");
    path.display().to_string()
}

async fn a_policy_file_sets_the_builds_retry_policy_and_get_shows_it(app: TestApp) {
    let bldst = Bldst::admin(&app);
    let file = write(&bldst, "policy.yaml", POLICY_YAML);
    let id = bldst
        .create_build(&["--key", "aws/rhel8/policy", "--policy", &file])
        .await;
    let expected: BuildRetryPolicy = serde_json::from_str(
        r#"{"rules": [{"stages": 5, "max_retries": 3, "backoff_base_secs": 600},
                      {"stages": "15-45", "max_retries": 2, "restart_from": 10}]}"#,
    )
    .expect("valid");
    assert_eq!(
        build_of(&bldst, id.as_str()).await.retry_policy,
        Some(expected)
    );

    // A failure at 25 reopens 10..25; `get` says so, and counts 25's allowance.
    for (state, status) in [
        (10, "completed"),
        (15, "completed"),
        (20, "completed"),
        (25, "failed"),
    ] {
        bldst.report(&id, state, status).await;
    }
    let shown = bldst.run(&["build", "get", id.as_str()]).await.ok().stdout;
    for words in [
        "stages 5: max_retries 3, backoff_base_secs 600",
        "stages 15-45: max_retries 2, restart_from 10",
        "retrying stage 25 from stage 10",
        "1 of 2 allowed",
    ] {
        assert!(shown.contains(words), "{words}:\n{shown}");
    }

    // Resumed with another policy: the build keeps its own, and stderr says so.
    let other = write(
        &bldst,
        "other.json",
        r#"{"rules": [{"stages": 25, "max_retries": 9}]}"#,
    );
    let resumed = bldst
        .run(&crate::helpers::create_args(&[
            "--key",
            "aws/rhel8/policy",
            "--policy",
            &other,
            "--quiet",
        ]))
        .await
        .ok();
    assert_eq!(resumed.stdout.trim(), id.as_str());
    assert!(
        resumed.stderr.contains("warning: build `") && resumed.stderr.contains("was not applied"),
        "{}",
        resumed.stderr
    );
}

async fn a_bad_policy_file_exits_2_naming_the_file_and_starts_nothing(app: TestApp) {
    let bldst = Bldst::admin(&app);
    let bad = write(
        &bldst,
        "bad.yaml",
        "rules:\n  - stages: 25\n    restart_from: 30\n",
    );
    let unknown = write(
        &bldst,
        "unknown.yaml",
        "rules:\n  - stages: 25\n    retries: 2\n",
    );
    let missing = bldst.home.path().join("missing.yaml").display().to_string();
    for (file, words) in [
        (
            &bad,
            "rule 1 (stages 25): `restart_from` 30 must be earlier than stage 25",
        ),
        (&unknown, "unknown field `retries`"),
        (&missing, "cannot read the retry policy"),
    ] {
        let outcome = bldst
            .run(&crate::helpers::create_args(&["--policy", file]))
            .await
            .expect_code(2);
        outcome.expect_one_error_line();
        assert!(
            outcome.stderr.contains(&format!("`{file}`")) && outcome.stderr.contains(words),
            "{}",
            outcome.stderr
        );
    }
    let listed = bldst.run(&["build", "list", "--quiet"]).await.ok();
    assert_eq!(listed.stdout, "", "nothing was started");
}
