//! Bad input: one `::error` annotation that says what to fix, a non-zero exit, and no network
//! call when the input alone is wrong; an unreachable API and the API's 4xx the same way.

use wiremock::MockServer;

use crate::helpers::{Action, Step, Workflow};
use crate::support::{Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_input_is_one_error_naming_it_and_no_request() {
    // Arrange: an "API" that records every request made to it.
    let server = MockServer::start().await;
    let action = Action::new(&server.uri(), "bst_secretTokenValue123");
    let workflow = Workflow::default();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "input `command`: required"),
        (
            &[("command", "deploy")],
            "input `command`: `deploy` is not one of",
        ),
        (
            &[("command", "start"), ("image-type", "rhel8")],
            "input `platform`: required for `command: start`",
        ),
        (
            &[
                ("command", "start"),
                ("platform", "aws"),
                ("image-type", "RHEL 8"),
            ],
            "input `image-type`: invalid image_type",
        ),
        (
            &[
                ("command", "start"),
                ("platform", "aws"),
                ("image-type", "rhel8"),
                ("retry-policy", "rules:\n  - {stages: 25, restart_from: 30}\n"),
            ],
            "input `retry-policy`: invalid retry policy: rule 1 (stages 25): `restart_from` 30 must be earlier than stage 25",
        ),
        (
            &[
                ("command", "start"),
                ("platform", "aws"),
                ("image-type", "rhel8"),
                ("retry-policy", "rules:\n  - {stages: 25, retries: 2}\n"),
            ],
            "input `retry-policy`: ",
        ),
        (
            &[("command", "gate"), ("build-id", "b_1")],
            "input `state`: required for `command: gate`",
        ),
        (
            &[("command", "gate"), ("state", "5")],
            "input `build-id`: required for `command: gate`",
        ),
        (
            &[("command", "gate"), ("build-id", "b_1"), ("state", "7")],
            "input `state`: ",
        ),
        (
            &[
                ("command", "report"),
                ("build-id", "b_1"),
                ("state", "105"),
                ("status", "completed"),
            ],
            "input `state`: ",
        ),
        (
            &[
                ("command", "report"),
                ("build-id", "b_1"),
                ("state", "5"),
                ("status", "done"),
            ],
            "input `status`: `done` is not a valid report status",
        ),
        (
            &[("command", "report"), ("build-id", "b_1"), ("state", "5")],
            "input `status`: required",
        ),
        (
            &[
                ("command", "report"),
                ("build-id", "b_1"),
                ("state", "5"),
                ("status", "failed"),
                ("message-file", "/nonexistent/build.log"),
            ],
            "input `message-file`: cannot read the message file `/nonexistent/build.log`",
        ),
        (
            &[
                ("command", "gate"),
                ("build-id", "b_1"),
                ("state", "5"),
                ("max-wait", "soon"),
            ],
            "input `max-wait`",
        ),
        (
            &[
                ("command", "get"),
                ("build-id", "b_1"),
                ("commit-status", "maybe"),
            ],
            "input `commit-status`",
        ),
        (
            &[
                ("command", "get"),
                ("build-id", "b_1"),
                ("api-url", "buildstate.example.com"),
            ],
            "input `api-url`: `buildstate.example.com` must start with http",
        ),
        (
            &[("command", "get"), ("build-id", "b_1"), ("api-token", "")],
            "input `api-token`: required",
        ),
        (
            &[("command", "get"), ("build-id", "b_1"), ("api-url", "")],
            "input `api-url`: required",
        ),
    ];
    for (inputs, expected) in cases {
        // Act
        let outcome = action.run(&workflow, &Step::new("bad", inputs)).await;

        // Assert
        let message = outcome.failed();
        assert!(message.starts_with(expected), "{inputs:?}: {message}");
        assert_eq!(outcome.code, 2, "{inputs:?}");
        assert!(
            outcome.outputs.is_empty(),
            "{inputs:?}: {:?}",
            outcome.outputs
        );
    }
    let requests = server.received_requests().await.expect("recording");
    assert!(
        requests.is_empty(),
        "no request for a wrong input: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_is_an_error_that_names_the_input() {
    // Port 9 (discard) on loopback: nothing listens there.
    let action = Action::new("http://127.0.0.1:9", "bst_secretTokenValue123");
    let step = Step::new("get", &[("command", "get"), ("build-id", "b_1")]);

    let outcome = action.run(&Workflow::default(), &step).await;

    let message = outcome.failed();
    assert_eq!(outcome.code, 6);
    assert!(
        message.starts_with(
            "cannot read build `b_1`: cannot reach the buildstate server at http://127.0.0.1:9"
        ),
        "{message}"
    );
    assert!(
        message.ends_with("is the server running? check the `api-url` input"),
        "{message}"
    );
}

async fn the_apis_refusals_are_errors_with_what_to_do(app: TestApp) {
    let workflow = Workflow::default();
    let action = Action::new(&app.base_url, &app.admin_token);
    let missing = action
        .run(
            &workflow,
            &Step::new("get", &[("command", "get"), ("build-id", "b_doesnotexist")]),
        )
        .await;
    assert_eq!(missing.code, 3);
    assert!(
        missing.failed().contains("b_doesnotexist"),
        "{}",
        missing.stdout
    );

    let by_key = action
        .run(
            &workflow,
            &Step::new("get", &[("command", "get"), ("key", "no/such/key")]),
        )
        .await;
    assert_eq!(by_key.code, 3);
    assert!(by_key.failed().starts_with(
        "no build has the key `no/such/key`: run the action with `command: start` first"
    ));

    let stranger = Action::new(&app.base_url, "bst_notARealTokenAtAll0123456789");
    let refused = stranger
        .run(
            &workflow,
            &Step::new("get", &[("command", "get"), ("build-id", "b_x")]),
        )
        .await;
    assert_eq!(refused.code, 5);
    assert!(
        refused
            .failed()
            .contains("replace the secret given as `api-token`"),
        "{}",
        refused.stdout
    );

    // A 409: a stage that already completed cannot be reported in progress again.
    let started = action
        .run(
            &workflow,
            &Step::new(
                "start",
                &[
                    ("command", "start"),
                    ("platform", "gcp"),
                    ("image-type", "cos"),
                ],
            ),
        )
        .await
        .ok();
    let id = started.output("build-id").to_owned();
    let done = Step::new(
        "done",
        &[
            ("build-id", &id),
            ("command", "report"),
            ("state", "0"),
            ("status", "completed"),
        ],
    );
    action.run(&workflow, &done).await.ok();
    let again = Step::new(
        "again",
        &[
            ("build-id", &id),
            ("command", "report"),
            ("state", "0"),
            ("status", "in_progress"),
        ],
    );
    let conflict = action.run(&workflow, &again).await;
    assert_eq!(conflict.code, 4);
    assert!(
        conflict.failed().starts_with(&format!(
            "cannot report stage 0 `in_progress` on build `{id}`: "
        )),
        "{}",
        conflict.stdout
    );
}

crate::on_both_backends!(the_apis_refusals_are_errors_with_what_to_do);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_written_before_a_failure_stay_valid() {
    // `key` resolves the build (written as `build-id`), then the gate refuses: a stopped build.
    let app = TestApp::spawn(Backend::Sqlite).await.expect("server");
    let action = Action::new(&app.base_url, &app.admin_token);
    let workflow = Workflow::default();
    let started = action
        .run(
            &workflow,
            &Step::new(
                "start",
                &[
                    ("command", "start"),
                    ("platform", "aws"),
                    ("image-type", "rhel8"),
                    ("key", "aws/rhel8/abc"),
                ],
            ),
        )
        .await
        .ok();
    let id: buildstate_domain::BuildId = started.output("build-id").parse().expect("id");
    app.client()
        .cancel_build(&id, "superseded")
        .await
        .expect("cancel");

    let outcome = action
        .run(
            &workflow,
            &Step::new(
                "gate",
                &[
                    ("command", "gate"),
                    ("key", "aws/rhel8/abc"),
                    ("state", "5"),
                ],
            ),
        )
        .await;

    outcome.failed();
    assert_eq!(outcome.output("build-id"), id.as_str());
    assert_eq!(outcome.output("decision"), "stop");
    assert_eq!(outcome.output("status"), "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_another_host_is_refused_with_the_input_that_allows_it_and_warned_when_allowed(
) {
    let action = Action::new("http://buildstate.invalid:8000", "bst_secretTokenValue123");
    let workflow = Workflow::default();
    let gate = [("command", "gate"), ("build-id", "b_1"), ("state", "5")];

    let refused = action.run(&workflow, &Step::new("gate", &gate)).await;
    assert_eq!(
        refused.failed(),
        "refusing to send the API token over plain http:// to `buildstate.invalid`: anyone on \
         the network path could read it and act as you; use an https:// URL (the `api-url` \
         input), or, on a network you trust, set the input `allow-insecure: true`"
    );

    let mut allowed = gate.to_vec();
    allowed.push(("allow-insecure", "true"));
    let tried = action.run(&workflow, &Step::new("gate", &allowed)).await;
    assert!(
        tried.stdout.contains(
            "::warning title=buildstate::sending the token over plain http:// to \
             `buildstate.invalid` (`allow-insecure: true`)"
        ),
        "{}",
        tried.stdout
    );
    // Past the refusal: the request was attempted (the name does not resolve).
    assert!(tried.failed().contains("cannot reach"), "{}", tried.stdout);
}
