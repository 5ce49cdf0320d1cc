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
        document["components"]["schemas"]["StateCode"]["multipleOf"],
        5
    );
    // The whole document is part of the API contract: a change must be deliberate.
    let mut document = document;
    document["info"]["version"] = "[version]".into();
    insta::assert_json_snapshot!("openapi", document);
}
