//! Health, readiness, the status overview and the OpenAPI document.

use buildstate_domain::wire::Health;
use reqwest::Method;

use crate::helpers::raw;
use crate::on_both_backends;
use crate::support::TestApp;

on_both_backends!(health_and_ready_need_no_token_and_name_the_database);

async fn health_and_ready_need_no_token_and_name_the_database(app: TestApp) {
    let (status, health) = raw(&app, Method::GET, "/health", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    let (status, ready) = raw(&app, Method::GET, "/ready", None, None).await;
    assert_eq!(status, 200);
    let ready: Health = serde_json::from_value(ready).expect("health body");
    let expected = match app.backend {
        crate::support::Backend::Sqlite => "sqlite",
        crate::support::Backend::Postgres => "postgres",
    };
    assert_eq!(ready.database.as_deref(), Some(expected));
    let (status, _) = raw(&app, Method::GET, "/status", None, None).await;
    assert_eq!(status, 401, "the overview needs a token");
}

#[tokio::test]
async fn ready_reports_unavailable_when_the_database_is_gone() {
    let app = TestApp::spawn(crate::support::Backend::Sqlite)
        .await
        .expect("sqlite");
    app.state.db.close().await;
    let (status, body) = raw(&app, Method::GET, "/ready", None, None).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unavailable");
    let (status, _) = raw(&app, Method::GET, "/health", None, None).await;
    assert_eq!(status, 200, "alive even when not ready");
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_the_error_envelope() {
    let app = TestApp::spawn(crate::support::Backend::Sqlite)
        .await
        .expect("sqlite");
    let (status, document) = raw(&app, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let paths: Vec<&String> = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .collect();
    for expected in [
        "/builds",
        "/builds/{id}/transitions",
        "/builds/{id}/gate",
        "/tokens/{id}",
        "/health",
        "/ready",
        "/status",
    ] {
        assert!(
            paths.iter().any(|p| *p == expected),
            "{expected} missing from {paths:?}"
        );
    }
    assert!(document["components"]["schemas"]["ErrorBody"].is_object());
    assert_eq!(
        document["components"]["schemas"]["StateCode"]["oneOf"][0]["multipleOf"],
        5
    );
    // The whole document is part of the API contract: a change must be deliberate.
    let mut document = document;
    document["info"]["version"] = "[version]".into();
    insta::assert_json_snapshot!("openapi", document);
}

/// The document matches the server: what a generated client or a fuzzer reads from it is what
/// the server does (scripts/schemathesis.sh checks the rest against the live server).
#[tokio::test]
async fn the_openapi_document_declares_query_parameters_errors_and_links_as_served() {
    let app = TestApp::spawn(crate::support::Backend::Sqlite)
        .await
        .expect("sqlite");
    let (_, document) = raw(&app, Method::GET, "/openapi.json", None, None).await;
    let operations: Vec<(String, &serde_json::Value)> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .iter()
                .map(move |(method, operation)| (format!("{method} {path}"), operation))
        })
        .collect();
    for (name, operation) in &operations {
        let responses = operation["responses"].as_object().expect("responses");
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            let expected = match parameter["name"].as_str().unwrap_or_default() {
                "id" => "path",
                "Idempotency-Key" | "Last-Event-ID" => "header",
                // Everything else is a filter, a page or a window: never a path segment.
                _ => "query",
            };
            assert_eq!(parameter["in"], expected, "{name}: {parameter}");
        }
        if operation.get("security").is_some() {
            assert!(responses.contains_key("401"), "{name} documents 401");
        }
        if operation.get("requestBody").is_some() {
            for status in ["400", "413", "415", "422"] {
                assert!(responses.contains_key(status), "{name} documents {status}");
            }
        }
    }
    let revoke = &document["paths"]["/tokens/{id}"]["delete"]["responses"];
    assert!(revoke["409"].is_object(), "the last admin token's 409");
    let links = &document["paths"]["/builds"]["post"]["responses"]["201"]["links"];
    for (link, operation) in [
        ("GetBuild", "get_build"),
        ("ReportTransition", "report_transition"),
        ("GetHistory", "get_history"),
    ] {
        assert_eq!(links[link]["operationId"], operation, "{links}");
        assert_eq!(links[link]["parameters"]["id"], "$response.body#/build/id");
    }
    let description = &document["components"]["schemas"]["StartBuild"]["properties"]["description"];
    assert_eq!(description["maxLength"], 1024, "{description}");
    assert!(description["pattern"].is_string(), "{description}");
    assert_eq!(
        document["components"]["schemas"]["Platform"]["pattern"],
        "^[a-z0-9._-]{1,64}$"
    );
}
