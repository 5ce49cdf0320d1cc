//! Bad input, as a table: each request gets its 4xx with a JSON error naming what was wrong,
//! and changes nothing. The table of answers is snapshot-tested.

use std::fmt::Write as _;

use buildstate_domain::ReportStatus;
use reqwest::Method;

use crate::helpers::{raw, send, start_build};
use crate::on_both_backends;
use crate::support::TestApp;

on_both_backends!(every_bad_request_gets_a_named_4xx_and_changes_nothing);

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    token: Token,
    content_type: &'static str,
    body: Option<String>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

#[derive(Clone, Copy)]
enum Token {
    Admin,
    Missing,
    Garbage,
}

fn case(
    name: &'static str,
    method: Method,
    path: impl Into<String>,
    body: Option<String>,
    expected: (u16, &'static str, Option<&'static str>),
) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        token: Token::Admin,
        content_type: "application/json",
        body,
        status: expected.0,
        code: expected.1,
        field: expected.2,
    }
}

async fn every_bad_request_gets_a_named_4xx_and_changes_nothing(app: TestApp) {
    let client = app.client();
    let id = start_build(&client).await;
    send(&client, &id, 10, ReportStatus::Completed).await;
    let done = start_build(&client).await;
    send(&client, &done, 100, ReportStatus::Completed).await;

    let transitions = format!("/builds/{id}/transitions");
    let body = |json: &str| Some(json.to_owned());
    let huge_message = format!(
        r#"{{"state":15,"status":"failed","message":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let long_message = format!(
        r#"{{"state":15,"status":"failed","message":"{}"}}"#,
        "x".repeat(17 * 1024)
    );
    let mut cases = vec![
        case(
            "a state off the step of 5",
            Method::POST,
            &transitions,
            body(r#"{"state":7,"status":"completed"}"#),
            (422, "invalid_field", Some("state")),
        ),
        case(
            "a state above 100",
            Method::POST,
            &transitions,
            body(r#"{"state":105,"status":"completed"}"#),
            (422, "invalid_field", Some("state")),
        ),
        case(
            "a negative state",
            Method::POST,
            &transitions,
            body(r#"{"state":-5,"status":"completed"}"#),
            (422, "invalid_field", Some("state")),
        ),
        case(
            "a state that is not a number",
            Method::POST,
            &transitions,
            body(r#"{"state":"abc","status":"completed"}"#),
            (422, "invalid_field", Some("state")),
        ),
        case(
            "an unknown status",
            Method::POST,
            &transitions,
            body(r#"{"state":15,"status":"done"}"#),
            (422, "invalid_field", Some("status")),
        ),
        case(
            "a missing status",
            Method::POST,
            &transitions,
            body(r#"{"state":15}"#),
            (422, "invalid_field", Some("status")),
        ),
        case(
            "an unknown field",
            Method::POST,
            &transitions,
            body(r#"{"state":15,"status":"failed","stat":1}"#),
            (422, "invalid_field", Some("stat")),
        ),
        case(
            "malformed JSON",
            Method::POST,
            &transitions,
            body(r#"{"state": 15,"#),
            (400, "malformed_json", None),
        ),
        case(
            "a body over the size limit",
            Method::POST,
            &transitions,
            Some(huge_message),
            (413, "body_too_large", None),
        ),
        case(
            "a message over 16 KiB",
            Method::POST,
            &transitions,
            Some(long_message),
            (422, "invalid_field", Some("message")),
        ),
        case(
            "an unknown build id",
            Method::POST,
            "/builds/b_nosuchbuild000000000/transitions",
            body(r#"{"state":15,"status":"completed"}"#),
            (404, "build_not_found", None),
        ),
        case(
            "a malformed build id",
            Method::GET,
            "/builds/..%2Fetc",
            None,
            (404, "build_not_found", None),
        ),
        case(
            "a report on a completed build",
            Method::POST,
            format!("/builds/{done}/transitions"),
            body(r#"{"state":100,"status":"failed"}"#),
            (409, "build_finished", None),
        ),
        case(
            "failing a stage that already completed",
            Method::POST,
            &transitions,
            body(r#"{"state":5,"status":"failed"}"#),
            (409, "stage_already_completed", None),
        ),
        case(
            "an uppercase platform",
            Method::POST,
            "/builds",
            body(r#"{"platform":"AWS","image_type":"rhel8"}"#),
            (422, "invalid_field", Some("platform")),
        ),
        case(
            "a missing platform",
            Method::POST,
            "/builds",
            body(r#"{"image_type":"rhel8"}"#),
            (422, "invalid_field", Some("platform")),
        ),
        case(
            "a label key with a space",
            Method::POST,
            "/builds",
            body(r#"{"platform":"aws","image_type":"rhel8","labels":{"git sha":"1"}}"#),
            (422, "invalid_field", Some("labels")),
        ),
        case(
            "max_retries above the limit",
            Method::POST,
            "/builds",
            body(r#"{"platform":"aws","image_type":"rhel8","max_retries":1000}"#),
            (422, "invalid_field", Some("max_retries")),
        ),
        case(
            "an unknown status filter",
            Method::GET,
            "/builds?status=done",
            None,
            (422, "invalid_field", Some("status")),
        ),
        case(
            "a zero page size",
            Method::GET,
            "/builds?limit=0",
            None,
            (422, "invalid_field", Some("limit")),
        ),
        case(
            "an unknown query parameter",
            Method::GET,
            "/builds?colour=red",
            None,
            (400, "invalid_query", None),
        ),
        case(
            "a gate on an invalid state",
            Method::GET,
            format!("/builds/{id}/gate?state=7"),
            None,
            (422, "invalid_field", Some("state")),
        ),
        case(
            "a gate without a state",
            Method::GET,
            format!("/builds/{id}/gate"),
            None,
            (422, "invalid_field", Some("state")),
        ),
        case(
            "an email without @",
            Method::POST,
            "/users",
            body(r#"{"username":"bob","email":"bob"}"#),
            (422, "invalid_field", Some("email")),
        ),
        case(
            "an unknown role",
            Method::POST,
            "/users",
            body(r#"{"username":"bob","email":"b@x.io","role":"root"}"#),
            (422, "invalid_field", Some("role")),
        ),
        case(
            "an unknown route",
            Method::GET,
            "/nope",
            None,
            (404, "route_not_found", None),
        ),
        Case {
            content_type: "text/plain",
            ..case(
                "a body that is not JSON",
                Method::POST,
                &transitions,
                body("state=15"),
                (415, "unsupported_media_type", None),
            )
        },
        Case {
            token: Token::Missing,
            ..case(
                "no token",
                Method::GET,
                format!("/builds/{id}"),
                None,
                (401, "missing_token", None),
            )
        },
        Case {
            token: Token::Garbage,
            ..case(
                "an unknown token",
                Method::POST,
                &transitions,
                body(r#"{"state":15,"status":"completed"}"#),
                (401, "invalid_token", None),
            )
        },
    ];
    let before = client.get_build(&id).await.expect("build");
    let builds_before = client.status().await.expect("status").builds;

    let mut answers = String::new();
    for case in cases.drain(..) {
        let token = match case.token {
            Token::Admin => Some(app.admin_token.as_str()),
            Token::Missing => None,
            Token::Garbage => Some("bst_notarealtoken"),
        };
        let body = case.body.as_deref().map(|body| (case.content_type, body));
        let (status, json) = raw(&app, case.method.clone(), &case.path, token, body).await;
        let error = &json["error"];
        assert_eq!(status, case.status, "{}: {json}", case.name);
        assert_eq!(error["code"], case.code, "{}: {json}", case.name);
        assert_eq!(error["field"].as_str(), case.field, "{}: {json}", case.name);
        let message = error["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty() && !message.ends_with('.'),
            "{}: {message}",
            case.name
        );
        writeln!(
            answers,
            "{}: {status} {} {}",
            case.name, error["code"], message
        )
        .expect("write");
    }

    let after = client.get_build(&id).await.expect("build");
    assert_eq!(after, before, "nothing changed on the build");
    assert_eq!(
        client.status().await.expect("status").builds,
        builds_before,
        "no build created"
    );
    insta::with_settings!({filters => vec![(r"b_[a-z0-9]{20}", "[build-id]")]}, {
        insta::assert_snapshot!("bad_input_answers", answers);
    });
}

on_both_backends!(every_route_with_an_id_answers_a_malformed_id_as_not_found);

/// Every operation the OpenAPI document lists with an `{id}` in its path, asked with ids no
/// resource can have: each answers 404 with the resource's not-found code, as the document
/// promises, before looking at a body or a query (one extractor reads every id).
async fn every_route_with_an_id_answers_a_malformed_id_as_not_found(app: TestApp) {
    // Arrange
    let (_, document) = raw(&app, Method::GET, "/openapi.json", None, None).await;
    let operations: Vec<(Method, String)> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(path, _)| path.contains("{id}"))
        .flat_map(|(path, item)| {
            let methods = item.as_object().expect("path item").keys();
            methods.map(move |method| {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                (method, path.clone())
            })
        })
        .collect();
    assert_eq!(
        operations.len(),
        11,
        "the build routes and DELETE /tokens/{{id}}: {operations:?}"
    );
    // Ids are URL-safe (letters, digits, `_`, `-`) and at most 64 characters.
    let too_long = "b".repeat(65);
    let malformed = [
        "..%2Fetc",
        "%FF",
        "b_%00aaaaaaaaaaaaaaaaaaa",
        "two%20words",
        &too_long,
    ];

    for (method, path) in &operations {
        for id in malformed {
            // Act
            let url = path.replace("{id}", id);
            let (status, json) =
                raw(&app, method.clone(), &url, Some(&app.admin_token), None).await;

            // Assert
            let expected = if path.starts_with("/builds/") {
                "build_not_found"
            } else {
                "not_found"
            };
            let name = format!("{method} {url}");
            assert_eq!(status, 404, "{name}: {json}");
            assert_eq!(json["error"]["code"], expected, "{name}: {json}");
            let message = json["error"]["message"].as_str().unwrap_or_default();
            assert!(message.ends_with("not found"), "{name}: {message}");
        }
    }
}
