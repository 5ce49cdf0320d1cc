//! Text rules, decided once in the domain's field types: free text refuses NUL and the other
//! control characters (newline and tab are fine) with a 422 naming the field, and filters and
//! path ids that no stored value can match are a 4xx — on SQLite and PostgreSQL alike, which
//! before these rules answered a NUL byte with a 500.

use buildstate_domain::ReportStatus;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{raw, send, start_build};
use crate::on_both_backends;
use crate::support::TestApp;

on_both_backends!(
    control_characters_in_text_fields_are_a_422_naming_the_field,
    filters_and_ids_with_invalid_characters_are_a_4xx_never_a_500,
    newlines_and_tabs_in_free_text_are_kept,
);

async fn control_characters_in_text_fields_are_a_422_naming_the_field(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    send(&client, &id, 10, ReportStatus::Completed).await;
    let transitions = format!("/builds/{id}/transitions");
    let build = json!({"platform": "aws", "image_type": "rhel8"});
    let with = |base: &serde_json::Value, field: &str, value: serde_json::Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let report = json!({"state": 15, "status": "failed"});
    let cases = [
        (
            "/builds",
            with(&build, "description", json!("a\u{0}b")),
            "description",
        ),
        (
            "/builds",
            with(&build, "description", json!("bell \u{7}")),
            "description",
        ),
        (
            "/builds",
            with(&build, "labels", json!({"sha": "ab\u{0}"})),
            "labels",
        ),
        (
            "/builds",
            with(&build, "platform", json!("aws\u{0}")),
            "platform",
        ),
        (
            "/builds",
            with(&build, "image_type", json!("\u{0}")),
            "image_type",
        ),
        (
            "/builds",
            with(&build, "key", json!("aws/rhel8\u{0}")),
            "key",
        ),
        (
            transitions.as_str(),
            with(&report, "message", json!("disk\u{0}full")),
            "message",
        ),
        (
            transitions.as_str(),
            with(&report, "message", json!("\u{1b}[31mred")),
            "message",
        ),
        (
            transitions.as_str(),
            with(&report, "source", json!("ci\u{0}")),
            "source",
        ),
        (
            &format!("/builds/{id}/cancel"),
            json!({"reason": "no\u{0}"}),
            "reason",
        ),
        (
            &format!("/builds/{id}/retry"),
            json!({"reason": "\r"}),
            "reason",
        ),
        (
            &format!("/builds/{id}/reset"),
            json!({"state": 0, "reason": "x\u{0}"}),
            "reason",
        ),
        (
            "/tokens",
            json!({"username": "admin", "description": "ci\u{0}"}),
            "description",
        ),
        (
            "/users",
            json!({"username": "bob\u{0}", "email": "b@x.io"}),
            "username",
        ),
        (
            "/users",
            json!({"username": "bob", "email": "b\u{0}@x.io"}),
            "email",
        ),
    ];
    let before = client.get_build(&id).await.expect("build");
    let builds_before = client.status().await.expect("status").builds;
    for (path, body, field) in cases {
        let text = body.to_string();
        let (status, answer) = raw(
            &app,
            Method::POST,
            path,
            Some(&app.admin_token),
            Some(("application/json", &text)),
        )
        .await;
        assert_eq!(status, 422, "{path} {text}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{path} {text}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.chars().any(char::is_control),
            "the message shows the character escaped: {message:?}"
        );
    }
    assert_eq!(client.get_build(&id).await.expect("build"), before);
    assert_eq!(client.status().await.expect("status").builds, builds_before);
    assert_eq!(client.list_users().await.expect("users").len(), 1);
    assert_eq!(client.list_tokens(None).await.expect("tokens").len(), 1);
}

async fn filters_and_ids_with_invalid_characters_are_a_4xx_never_a_500(app: TestApp) {
    let id = start_build(&app.client()).await;
    let cases = [
        (
            Method::GET,
            "/builds?platform=aws%00".to_owned(),
            422,
            Some("platform"),
        ),
        (
            Method::GET,
            "/builds?image_type=%00".to_owned(),
            422,
            Some("image_type"),
        ),
        (
            Method::GET,
            "/builds?key=a%00b".to_owned(),
            422,
            Some("key"),
        ),
        (
            Method::GET,
            "/builds?key=%1B%5B31m".to_owned(),
            422,
            Some("key"),
        ),
        (
            Method::GET,
            "/builds?status=%00".to_owned(),
            422,
            Some("status"),
        ),
        (
            Method::GET,
            "/builds?state=%00".to_owned(),
            422,
            Some("state"),
        ),
        (
            Method::GET,
            "/tokens?username=%00".to_owned(),
            422,
            Some("username"),
        ),
        (
            Method::GET,
            format!("/builds/{id}/gate?state=1%000"),
            422,
            Some("state"),
        ),
        (Method::GET, "/builds/b_%00".to_owned(), 404, None),
        (Method::GET, "/builds/%00/history".to_owned(), 404, None),
        (
            Method::GET,
            "/builds/%00/gate?state=0".to_owned(),
            404,
            None,
        ),
        (Method::POST, "/builds/b%00/cancel".to_owned(), 404, None),
        (Method::DELETE, "/tokens/t_%00".to_owned(), 404, None),
        (Method::DELETE, "/tokens/%E2%9C%93".to_owned(), 404, None),
    ];
    for (method, path, expected, field) in cases {
        let body = (method == Method::POST).then_some(("application/json", r#"{"reason":"x"}"#));
        let (status, answer) = raw(&app, method.clone(), &path, Some(&app.admin_token), body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        assert_eq!(
            answer["error"]["field"].as_str(),
            field,
            "{method} {path}: {answer}"
        );
    }
    // A well-formed filter that matches nothing is an empty page, as before.
    let (status, page) = raw(
        &app,
        Method::GET,
        "/builds?platform=gcp",
        Some(&app.admin_token),
        None,
    )
    .await;
    assert_eq!(
        (status, page["builds"].as_array().map(Vec::len)),
        (200, Some(0))
    );
}

async fn newlines_and_tabs_in_free_text_are_kept(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    let message = "ansible failed:\n\tTASK [base : install] ✗";
    let body = json!({"state": 0, "status": "failed", "message": message}).to_string();
    let (status, answer) = raw(
        &app,
        Method::POST,
        &format!("/builds/{id}/transitions"),
        Some(&app.admin_token),
        Some(("application/json", &body)),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let build = client.get_build(&id).await.expect("build");
    assert_eq!(build.last_message.as_deref(), Some(message));
}
