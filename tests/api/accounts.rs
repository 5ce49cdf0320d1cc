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
    a_read_token_can_neither_create_nor_revoke_tokens,
    a_write_token_manages_only_its_own_users_tokens_up_to_its_own_scope,
    a_created_token_never_outlives_its_creator,
    revoking_a_token_revokes_the_tokens_it_created_transitively,
    the_last_live_admin_token_cannot_be_revoked_through_the_api,
    an_out_of_band_token_is_a_root_that_outlives_other_revocations,
    a_token_made_with_another_key_does_not_count_as_a_live_admin_token,
);

/// A `CreateToken` for `username`.
fn token_request(username: &str, scope: Scope, expires_in_seconds: Option<u64>) -> CreateToken {
    CreateToken {
        username: username.parse().expect("username"),
        description: format!("{scope} token for tests"),
        scope,
        expires_in_seconds,
    }
}

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

async fn a_read_token_can_neither_create_nor_revoke_tokens(app: TestApp) {
    let reader = app.client_with(Some(new_token(&app, "ci", Role::Member, Scope::Read).await));
    let me = reader.whoami().await.expect("whoami");
    let create = reader
        .create_token(&token_request("ci", Scope::Read, None))
        .await
        .expect_err("read cannot create");
    assert_eq!(
        (create.status(), create.code()),
        (Some(403), Some(&ErrorCode::InsufficientScope))
    );
    assert!(create.to_string().contains("`write`"), "{create}");
    let revoke = reader
        .revoke_token(&me.token_id)
        .await
        .expect_err("read cannot revoke, not even itself");
    assert_eq!(
        (revoke.status(), revoke.code()),
        (Some(403), Some(&ErrorCode::InsufficientScope))
    );
    let tokens = app.client().list_tokens(Some("ci")).await.expect("list");
    assert_eq!(tokens.len(), 1, "nothing created");
    assert!(tokens[0].revoked_at.is_none(), "nothing revoked");
}

async fn a_write_token_manages_only_its_own_users_tokens_up_to_its_own_scope(app: TestApp) {
    let writer = app.client_with(Some(
        new_token(&app, "ci", Role::Member, Scope::Write).await,
    ));
    new_token(&app, "other", Role::Member, Scope::Write).await;
    let foreign = writer
        .create_token(&token_request("other", Scope::Read, None))
        .await
        .expect_err("another user's token needs admin");
    assert_eq!(
        (foreign.status(), foreign.code()),
        (Some(403), Some(&ErrorCode::InsufficientScope))
    );
    assert!(foreign.to_string().contains("`admin`"), "{foreign}");
    let others = app.client().list_tokens(Some("other")).await.expect("list");
    let hidden = writer
        .revoke_token(&others[0].id)
        .await
        .expect_err("another user's token");
    assert_eq!(hidden.status(), Some(404), "not told it exists");

    // The admin user's write token may not revoke that user's admin token.
    let admin_writer = app.client_with(Some(
        app.client()
            .create_token(&token_request("admin", Scope::Write, None))
            .await
            .expect("write token for admin")
            .secret,
    ));
    let admin_token = app.client().whoami().await.expect("whoami").token_id;
    let wider = admin_writer
        .revoke_token(&admin_token)
        .await
        .expect_err("a wider token");
    assert_eq!(
        (wider.status(), wider.code()),
        (Some(403), Some(&ErrorCode::Forbidden))
    );
    assert!(
        wider.to_string().contains("cannot revoke a `admin` token"),
        "{wider}"
    );
    // Its own user's narrower or equal tokens it may.
    let own = writer
        .create_token(&token_request("ci", Scope::Read, None))
        .await
        .expect("own read token");
    let revoked = writer
        .revoke_token(&own.token.id)
        .await
        .expect("revoke own");
    assert!(revoked.revoked_at.is_some());
}

async fn a_created_token_never_outlives_its_creator(app: TestApp) {
    let hour = app
        .client()
        .create_token(&token_request("ci", Scope::Write, Some(3600)))
        .await;
    // The user does not exist yet: create it, then the hour-long token.
    assert_eq!(hour.expect_err("no user yet").status(), Some(404));
    new_token(&app, "ci", Role::Member, Scope::Read).await;
    let hour = app
        .client()
        .create_token(&token_request("ci", Scope::Write, Some(3600)))
        .await
        .expect("an hour-long token");
    let limit = hour.token.expires_at.expect("expires");
    let short = app.client_with(Some(hour.secret));

    let inherited = short
        .create_token(&token_request("ci", Scope::Read, None))
        .await
        .expect("no expiry asked");
    assert_eq!(
        inherited.token.expires_at,
        Some(limit),
        "a token made by an expiring token gets its creator's expiry"
    );
    let shorter = short
        .create_token(&token_request("ci", Scope::Read, Some(60)))
        .await
        .expect("a shorter one");
    assert!(shorter.token.expires_at.expect("expires") < limit);
    let longer = short
        .create_token(&token_request("ci", Scope::Read, Some(7200)))
        .await
        .expect_err("outlives the creator");
    assert_eq!(
        (longer.status(), longer.code()),
        (Some(422), Some(&ErrorCode::InvalidField))
    );
    assert!(
        longer.to_string().contains("cannot outlive its creator"),
        "{longer}"
    );
}

async fn revoking_a_token_revokes_the_tokens_it_created_transitively(app: TestApp) {
    new_token(&app, "ci", Role::Member, Scope::Read).await;
    let admin = app.client();
    let admin_token = admin.whoami().await.expect("whoami").token_id;
    let parent = admin
        .create_token(&token_request("ci", Scope::Write, None))
        .await
        .expect("parent");
    let child = app
        .client_with(Some(parent.secret.clone()))
        .create_token(&token_request("ci", Scope::Write, None))
        .await
        .expect("child");
    let grandchild = app
        .client_with(Some(child.secret.clone()))
        .create_token(&token_request("ci", Scope::Read, None))
        .await
        .expect("grandchild");
    let sibling = admin
        .create_token(&token_request("ci", Scope::Write, None))
        .await
        .expect("sibling");
    assert_eq!(
        parent.token.created_by.as_deref(),
        Some(admin_token.as_str())
    );
    assert_eq!(
        child.token.created_by.as_deref(),
        Some(parent.token.id.as_str())
    );
    assert_eq!(
        grandchild.token.created_by.as_deref(),
        Some(child.token.id.as_str())
    );

    admin
        .revoke_token(&parent.token.id)
        .await
        .expect("revoke parent");

    let listed = admin.list_tokens(Some("ci")).await.expect("list");
    let revoked = |id: &str| {
        listed
            .iter()
            .find(|token| token.id == id)
            .expect("listed")
            .revoked_at
            .is_some()
    };
    assert!(revoked(&parent.token.id) && revoked(&child.token.id) && revoked(&grandchild.token.id));
    assert!(!revoked(&sibling.token.id), "a sibling is not a descendant");
    let refused = app
        .client_with(Some(grandchild.secret))
        .whoami()
        .await
        .expect_err("revoked with its ancestor");
    assert_eq!(refused.code(), Some(&ErrorCode::InvalidToken));
    assert!(app.client_with(Some(sibling.secret)).whoami().await.is_ok());
    let bootstrap = admin.list_tokens(Some("admin")).await.expect("list");
    assert_eq!(
        bootstrap[0].created_by, None,
        "the bootstrap token is a root"
    );
}

async fn the_last_live_admin_token_cannot_be_revoked_through_the_api(app: TestApp) {
    let admin = app.client();
    let first = admin.whoami().await.expect("whoami").token_id;
    let refused = admin
        .revoke_token(&first)
        .await
        .expect_err("the last admin token");
    assert_eq!(
        (refused.status(), refused.code()),
        (Some(409), Some(&ErrorCode::LastAdminToken))
    );
    let message = refused.to_string();
    assert!(message.contains("bldst token create"), "{message}");
    assert!(admin.whoami().await.is_ok(), "still live");

    // A second admin token made by the first hangs off it: revoking the first still leaves
    // none, so it is refused; the second itself may go.
    let second = admin
        .create_token(&token_request("admin", Scope::Admin, None))
        .await
        .expect("second admin token");
    let refused = admin
        .revoke_token(&first)
        .await
        .expect_err("its child would go too");
    assert_eq!(refused.code(), Some(&ErrorCode::LastAdminToken));
    let gone = admin
        .revoke_token(&second.token.id)
        .await
        .expect("not the last");
    assert!(gone.revoked_at.is_some());
    assert!(admin.whoami().await.is_ok());
}

async fn an_out_of_band_token_is_a_root_that_outlives_other_revocations(app: TestApp) {
    let admin = app.client();
    let first = admin.whoami().await.expect("whoami").token_id;
    let recovery = buildstate_server::create_token_out_of_band(
        &app.state,
        &"admin".parse().expect("username"),
        Scope::Admin,
        "recovery",
        None,
    )
    .await
    .expect("out of band");
    assert_eq!(recovery.token.created_by, None);
    let recovered = app.client_with(Some(recovery.secret));
    let revoked = recovered
        .revoke_token(&first)
        .await
        .expect("no longer the last");
    assert!(revoked.revoked_at.is_some());
    let refused = recovered
        .revoke_token(&recovery.token.id)
        .await
        .expect_err("now the last");
    assert_eq!(refused.code(), Some(&ErrorCode::LastAdminToken));
    let member = buildstate_server::create_token_out_of_band(
        &app.state,
        &"nobody".parse().expect("username"),
        Scope::Read,
        "recovery",
        None,
    )
    .await
    .expect_err("unknown user");
    assert!(
        member.to_string().contains("`nobody` not found"),
        "{member}"
    );
}

/// A token hashed with another `SECRET_KEY` (as `bldst server token create` with a wrong key
/// once minted) cannot work, so it does not count as a live admin token: revoking the last
/// admin token that works is refused even while it stands in the database.
async fn a_token_made_with_another_key_does_not_count_as_a_live_admin_token(app: TestApp) {
    let admin = app.client();
    let bootstrap = admin.whoami().await.expect("whoami").token_id;
    let working = admin
        .create_token(&token_request("admin", Scope::Admin, None))
        .await
        .expect("a second admin token");
    app.execute_sql(&format!(
        "UPDATE api_tokens SET key_check = 'a-check-of-another-key' WHERE id = '{bootstrap}'"
    ))
    .await;

    let error = admin
        .revoke_token(&working.token.id)
        .await
        .expect_err("the last admin token that can work");
    assert_eq!(error.code(), Some(&ErrorCode::LastAdminToken), "{error}");
}
