//! Users, scoped tokens, expiry, revocation and `last_used_at`.

use buildstate_domain::wire::ErrorCode;
use buildstate_domain::wire::{CreateToken, CreateUser};
use buildstate_domain::{Role, Scope};
use reqwest::Method;

use crate::helpers::{raw, start_build, start_request};
use crate::on_both_backends;
use crate::support::TestApp;

on_both_backends!(
    tokens_are_scoped_read_write_admin,
    a_revoked_token_stops_working_at_once,
    an_expired_token_is_refused_with_a_hint,
    token_secrets_are_shown_once_and_never_listed,
    users_are_unique_and_members_cannot_hold_admin_tokens,
    the_first_admin_can_be_bootstrapped_only_once,
);

async fn new_token(app: &TestApp, username: &str, role: Role, scope: Scope) -> String {
    let admin = app.client();
    if admin
        .list_users()
        .await
        .expect("users")
        .iter()
        .all(|u| u.username.as_str() != username)
    {
        admin
            .create_user(&CreateUser {
                username: username.parse().expect("username"),
                email: format!("{username}@example.com").parse().expect("email"),
                role,
            })
            .await
            .expect("create user");
    }
    admin
        .create_token(&CreateToken {
            username: username.parse().expect("username"),
            description: format!("{scope} token for tests"),
            scope,
            expires_in_seconds: None,
        })
        .await
        .expect("create token")
        .secret
}

async fn tokens_are_scoped_read_write_admin(app: TestApp) {
    let reader = app.client_with(Some(new_token(&app, "ci", Role::Member, Scope::Read).await));
    let writer = app.client_with(Some(
        new_token(&app, "ci", Role::Member, Scope::Write).await,
    ));
    let id = start_build(&app.client()).await;

    assert!(reader.get_build(&id).await.is_ok());
    let denied = reader
        .start_build(&start_request(None))
        .await
        .expect_err("read cannot write");
    assert_eq!(
        (denied.status(), denied.code()),
        (Some(403), Some(&ErrorCode::InsufficientScope))
    );
    assert!(denied.to_string().contains("`write`"), "{denied}");

    assert!(writer.start_build(&start_request(None)).await.is_ok());
    let not_admin = writer
        .cancel_build(&id, "no")
        .await
        .expect_err("write cannot cancel");
    assert_eq!(not_admin.code(), Some(&ErrorCode::InsufficientScope));
    assert_eq!(
        writer.list_users().await.expect_err("admin only").status(),
        Some(403)
    );

    // A write token may make a narrower token for its own user, nothing wider or foreign.
    let own = writer
        .create_token(&CreateToken {
            username: "ci".parse().expect("username"),
            description: "read-only dashboard".into(),
            scope: Scope::Read,
            expires_in_seconds: None,
        })
        .await;
    assert!(own.is_ok());
    let wider = writer
        .create_token(&CreateToken {
            username: "ci".parse().expect("username"),
            description: "escalate".into(),
            scope: Scope::Admin,
            expires_in_seconds: None,
        })
        .await
        .expect_err("no escalation");
    assert_eq!(wider.status(), Some(403));
}

async fn a_revoked_token_stops_working_at_once(app: TestApp) {
    let secret = new_token(&app, "packer", Role::Member, Scope::Write).await;
    let client = app.client_with(Some(secret.clone()));
    let me = client.whoami().await.expect("whoami");
    assert_eq!(me.username.as_str(), "packer");
    let revoked = app
        .client()
        .revoke_token(&me.token_id)
        .await
        .expect("revoke");
    assert!(revoked.revoked_at.is_some());
    let refused = client.whoami().await.expect_err("revoked");
    assert_eq!(
        (refused.status(), refused.code()),
        (Some(401), Some(&ErrorCode::InvalidToken))
    );
    let unknown = app
        .client()
        .revoke_token("t_doesnotexist")
        .await
        .expect_err("unknown");
    assert_eq!(unknown.status(), Some(404));
}

async fn an_expired_token_is_refused_with_a_hint(app: TestApp) {
    let created = app
        .client()
        .create_token(&CreateToken {
            username: "admin".parse().expect("username"),
            description: "short-lived".into(),
            scope: Scope::Read,
            expires_in_seconds: Some(1),
        })
        .await
        .expect("token");
    assert!(created.token.expires_at.is_some());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let error = app
        .client_with(Some(created.secret))
        .whoami()
        .await
        .expect_err("expired");
    assert_eq!(
        (error.status(), error.code()),
        (Some(401), Some(&ErrorCode::TokenExpired))
    );
    assert!(error.to_string().contains("bldst token create"), "{error}");
}

async fn token_secrets_are_shown_once_and_never_listed(app: TestApp) {
    let secret = new_token(&app, "gha", Role::Member, Scope::Write).await;
    assert!(secret.starts_with("bst_"));
    let client = app.client_with(Some(secret.clone()));
    client.whoami().await.expect("used once");
    let (status, listing) = raw(&app, Method::GET, "/tokens", Some(&app.admin_token), None).await;
    assert_eq!(status, 200);
    let text = listing.to_string();
    assert!(
        !text.contains(&secret) && !text.contains(&app.admin_token),
        "no secret in listings"
    );
    let gha = app.client().list_tokens(Some("gha")).await.expect("list");
    assert_eq!(gha.len(), 1);
    assert!(gha[0].last_used_at.is_some(), "last_used_at is recorded");
    // A member's listing shows only their own tokens.
    let own = client.list_tokens(None).await.expect("own");
    assert!(own.iter().all(|t| t.username.as_str() == "gha"));
}

async fn users_are_unique_and_members_cannot_hold_admin_tokens(app: TestApp) {
    let admin = app.client();
    let user = CreateUser {
        username: "jenkins".parse().expect("username"),
        email: "jenkins@example.com".parse().expect("email"),
        role: Role::Member,
    };
    let created = admin.create_user(&user).await.expect("create");
    assert_eq!(created.role, Role::Member);
    let duplicate = admin.create_user(&user).await.expect_err("duplicate");
    assert_eq!(duplicate.status(), Some(409));
    assert!(duplicate.to_string().contains("`jenkins`"), "{duplicate}");
    let too_wide = admin
        .create_token(&CreateToken {
            username: "jenkins".parse().expect("username"),
            description: "admin for a member".into(),
            scope: Scope::Admin,
            expires_in_seconds: None,
        })
        .await
        .expect_err("members hold no admin tokens");
    assert_eq!(
        (too_wide.status(), too_wide.code()),
        (Some(422), Some(&ErrorCode::InvalidField))
    );
    let nobody = admin
        .create_token(&CreateToken {
            username: "nobody".parse().expect("username"),
            description: "for whom?".into(),
            scope: Scope::Read,
            expires_in_seconds: None,
        })
        .await
        .expect_err("unknown user");
    assert_eq!(nobody.status(), Some(404));
    let names: Vec<_> = admin
        .list_users()
        .await
        .expect("users")
        .into_iter()
        .map(|u| u.username.to_string())
        .collect();
    assert_eq!(names, ["admin", "jenkins"]);
}

async fn the_first_admin_can_be_bootstrapped_only_once(app: TestApp) {
    let again = buildstate_server::bootstrap_admin(
        &app.state,
        &"root".parse().expect("username"),
        &"root@example.com".parse().expect("email"),
    )
    .await
    .expect_err("an admin exists");
    assert!(again.to_string().contains("already exists"), "{again}");
    assert_eq!(app.client().list_users().await.expect("users").len(), 1);
}

/// The token cache's documented price: a token revoked through another server process works
/// on this one until its cache entry expires — and no longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_through_another_server_stops_working_after_the_cache_ttl() {
    let Some(first) = TestApp::spawn(crate::support::Backend::Postgres).await else {
        return;
    };
    let second = first
        .spawn_peer(|config| config.token_cache_millis = 300)
        .await;

    let secret = new_token(&first, "packer", Role::Member, Scope::Write).await;
    let on_second = second.client_with(secret);
    let me = on_second
        .whoami()
        .await
        .expect("cached on the second server");
    first
        .client()
        .revoke_token(&me.token_id)
        .await
        .expect("revoke on the first");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let refused = on_second
        .whoami()
        .await
        .expect_err("expired from the cache");
    assert_eq!(refused.code(), Some(&ErrorCode::InvalidToken));
}
