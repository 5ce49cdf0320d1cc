//! The commit status, against a local fake of GitHub's REST API (wiremock) served under a
//! GitHub Enterprise path (`/api/v3`), so `GITHUB_API_URL` is shown to be honoured. The
//! requests it received are asserted; a 403 (a fork's read-only token) is a warning.

use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{Action, Step, Workflow, GITHUB_TOKEN};
use crate::support::{Backend, TestApp};

fn status_answer(state: &str) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(serde_json::json!({
        "id": 1,
        "state": state,
        "context": "buildstate/aws/rhel8",
        "description": "",
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_step_sets_the_builds_commit_status_through_the_enterprise_api_url() {
    // Arrange
    let app = TestApp::spawn(Backend::Sqlite).await.expect("server");
    let github = MockServer::start().await;
    let workflow = Workflow {
        api_url: format!("{}/api/v3", github.uri()),
        ..Workflow::default()
    };
    let statuses = format!("/api/v3/repos/org/images/statuses/{}", workflow.sha);
    Mock::given(method("POST"))
        .and(path(statuses.as_str()))
        .and(header(
            "authorization",
            format!("Bearer {GITHUB_TOKEN}").as_str(),
        ))
        .respond_with(status_answer("pending"))
        .expect(4)
        .mount(&github)
        .await;
    let action = Action::new(&app.base_url, &app.admin_token);
    let with_status = [
        ("commit-status", "true"),
        ("dashboard-url", "https://bs.example/ui/builds/{id}"),
    ];

    // Act: start, fail stage 0, complete it, publish.
    let mut start = vec![
        ("command", "start"),
        ("platform", "aws"),
        ("image-type", "rhel8"),
    ];
    start.extend_from_slice(&with_status);
    let started = action
        .run(&workflow, &Step::new("start", &start))
        .await
        .ok();
    let id = started.output("build-id").to_owned();
    assert_eq!(
        started.output("dashboard-url"),
        format!("https://bs.example/ui/builds/{id}")
    );
    for (state, status) in [("0", "failed"), ("0", "completed"), ("100", "completed")] {
        let mut report = vec![
            ("command", "report"),
            ("build-id", id.as_str()),
            ("state", state),
            ("status", status),
        ];
        report.extend_from_slice(&with_status);
        let outcome = action
            .run(&workflow, &Step::new("report", &report))
            .await
            .ok();
        assert!(
            outcome
                .stdout
                .contains("commit status `buildstate/aws/rhel8`"),
            "{}",
            outcome.stdout
        );
    }

    // Assert: what GitHub received, in order.
    let bodies: Vec<serde_json::Value> = github
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .map(|request| serde_json::from_slice(&request.body).expect("JSON body"))
        .collect();
    let target_url = format!("https://bs.example/ui/builds/{id}");
    assert_eq!(
        bodies,
        [
            serde_json::json!({"state": "pending", "context": "buildstate/aws/rhel8", "description": "state 0/100 running: triggered", "target_url": target_url}),
            serde_json::json!({"state": "failure", "context": "buildstate/aws/rhel8", "description": "state 0/100 failed: triggered", "target_url": target_url}),
            serde_json::json!({"state": "pending", "context": "buildstate/aws/rhel8", "description": "state 5/100 running: kickstart", "target_url": target_url}),
            serde_json::json!({"state": "success", "context": "buildstate/aws/rhel8", "description": "state 100/100 completed: published", "target_url": target_url}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_is_a_warning_and_the_step_succeeds() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("server");
    let github = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(403).set_body_json(serde_json::json!({
            "message": "Resource not accessible by integration",
            "documentation_url": "https://docs.github.com/rest/commits/statuses#create-a-commit-status",
        })))
        .expect(1)
        .mount(&github)
        .await;
    let workflow = Workflow {
        api_url: github.uri(),
        ..Workflow::default()
    };
    let action = Action::new(&app.base_url, &app.admin_token);
    let step = Step::new(
        "start",
        &[
            ("command", "start"),
            ("platform", "aws"),
            ("image-type", "rhel8"),
            ("commit-status", "true"),
        ],
    );

    let outcome = action.run(&workflow, &step).await.ok();

    let warnings: Vec<&str> = outcome
        .stdout
        .lines()
        .filter(|line| line.starts_with("::warning"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", outcome.stdout);
    assert!(
        warnings[0].starts_with("::warning title=buildstate::GitHub answered 403 to the commit status: Resource not accessible by integration; the commit status was not set"),
        "{}",
        warnings[0]
    );
    assert!(outcome.outputs.contains_key("build-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_github_refusal_fails_the_step_and_says_the_report_was_recorded() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("server");
    let github = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(serde_json::json!({"message": "Bad credentials"})),
        )
        .mount(&github)
        .await;
    let workflow = Workflow {
        api_url: github.uri(),
        ..Workflow::default()
    };
    let action = Action::new(&app.base_url, &app.admin_token);
    let step = Step::new(
        "start",
        &[
            ("command", "start"),
            ("platform", "aws"),
            ("image-type", "rhel8"),
            ("commit-status", "true"),
        ],
    );

    let outcome = action.run(&workflow, &step).await;

    let message = outcome.failed();
    assert_eq!(outcome.code, 1);
    assert!(message.starts_with("GitHub answered 401 to the commit status: Bad credentials (the buildstate change itself was recorded)"), "{message}");
}
