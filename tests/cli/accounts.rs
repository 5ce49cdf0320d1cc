//! `bldst user`, `bldst token` and `bldst auth` against the real server: tokens that work until
//! revoked or expired, and a login kept in a file only its owner can read.

use buildstate_domain::wire::{TokenInfo, User, Whoami};
use serde_json::Value;

use crate::assert_cli_snapshot;
use crate::helpers::{json, Bldst};
use crate::support::TestApp;

async fn an_admin_creates_a_user_whose_token_works_until_revoked(app: TestApp) {
    // Arrange
    let admin = Bldst::admin(&app);
    let user = admin
        .run(&[
            "user",
            "create",
            "--username",
            "builder",
            "--email",
            "builder@example.com",
        ])
        .await
        .ok();
    assert_cli_snapshot!("user_create_table", user.stdout);

    // Act
    let created = admin
        .run(&[
            "token",
            "create",
            "--username",
            "builder",
            "--description",
            "Build pipeline token",
            "--expires-in",
            "30d",
        ])
        .await
        .ok();
    let secret = created.stdout.trim().to_owned();
    let builder = Bldst::with_token(&app, Some(&secret));
    let used = builder.run(&["build", "list"]).await;
    let tokens: Vec<TokenInfo> = json(
        &admin
            .run(&["token", "list", "--username", "builder", "-o", "json"])
            .await
            .ok()
            .stdout,
    );
    let revoked = admin.run(&["token", "revoke", &tokens[0].id]).await.ok();
    let refused = builder.run(&["build", "list"]).await;

    // Assert
    assert_eq!(
        created.stdout.lines().count(),
        1,
        "only the secret on stdout"
    );
    assert!(secret.starts_with("bst_"), "{secret}");
    assert_cli_snapshot!("token_create_note", created.stderr);
    used.ok();
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].expires_at.is_some());
    assert_cli_snapshot!("token_revoke", revoked.stdout);
    let refused = refused.expect_code(5);
    refused.expect_one_error_line();
    let listed = admin.run(&["token", "list"]).await.ok();
    assert_cli_snapshot!("token_list_table", listed.stdout);
    let users: Vec<User> = json(&admin.run(&["user", "list", "-o", "json"]).await.ok().stdout);
    let names: Vec<&str> = users.iter().map(|user| user.username.as_str()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"builder"), "{names:?}");
    let table = admin.run(&["user", "list"]).await.ok();
    assert!(table.stdout.starts_with("ID"), "{}", table.stdout);
}

async fn a_member_token_may_not_create_users(app: TestApp) {
    // Arrange
    let admin = Bldst::admin(&app);
    admin
        .run(&[
            "user",
            "create",
            "--username",
            "builder",
            "--email",
            "b@example.com",
        ])
        .await
        .ok();
    let secret = admin
        .run(&[
            "token",
            "create",
            "--username",
            "builder",
            "--description",
            "ci",
            "--scope",
            "write",
        ])
        .await
        .ok()
        .stdout;
    let builder = Bldst::with_token(&app, Some(secret.trim()));

    // Act
    let refused = builder
        .run(&[
            "user",
            "create",
            "--username",
            "other",
            "--email",
            "o@example.com",
        ])
        .await;
    let own = builder
        .run(&[
            "token",
            "create",
            "--username",
            "builder",
            "--description",
            "mine",
            "--scope",
            "read",
            "-o",
            "json",
        ])
        .await;

    // Assert
    let refused = refused.expect_code(5);
    refused.expect_one_error_line();
    assert!(
        refused.stderr.contains("`admin` scope"),
        "{}",
        refused.stderr
    );
    let own: Value = json(&own.ok().stdout);
    assert_eq!(own["token"]["scope"], "read");
    assert!(own["secret"]
        .as_str()
        .is_some_and(|secret| secret.starts_with("bst_")));
}

async fn an_expired_token_is_refused_with_the_auth_exit_code(app: TestApp) {
    // Arrange
    let admin = Bldst::admin(&app);
    let secret = admin
        .run(&[
            "token",
            "create",
            "--username",
            "admin",
            "--description",
            "short",
            "--expires-in",
            "1s",
        ])
        .await
        .ok()
        .stdout;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    // Act
    let expired = Bldst::with_token(&app, Some(secret.trim()))
        .run(&["build", "list"])
        .await;

    // Assert
    let expired = expired.expect_code(5);
    expired.expect_one_error_line();
    assert_cli_snapshot!("expired_token", expired.stderr);
}

async fn login_keeps_the_token_in_a_file_only_its_owner_can_read(app: TestApp) {
    // Arrange: no token in the environment; it comes from stdin
    let bldst = Bldst::with_token(&app, None);
    let before = bldst.run(&["build", "list"]).await.expect_code(5);
    before.expect_one_error_line();

    // Act
    let login = bldst
        .run_with_stdin(&["auth", "login"], &format!("{}\n", app.admin_token))
        .await
        .ok();

    // Assert
    assert_cli_snapshot!("auth_login", login.stdout);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(bldst.config_path())
            .expect("config file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let saved = std::fs::read_to_string(bldst.config_path()).expect("config file");
    assert!(saved.contains(&app.admin_token));
    bldst.run(&["build", "list"]).await.ok();
    let status = bldst.run(&["auth", "status"]).await.ok();
    assert_cli_snapshot!("auth_status", status.stdout);
    assert!(!status.stdout.contains(&app.admin_token), "never the token");
    let whoami: Value = json(
        &bldst
            .run(&["auth", "status", "-o", "json"])
            .await
            .ok()
            .stdout,
    );
    assert_eq!(whoami["token_source"], "config_file");
    assert_eq!(whoami["whoami"]["username"], "admin");
    let logout = bldst.run(&["auth", "logout"]).await.ok();
    assert!(logout.stdout.starts_with("logged out"), "{}", logout.stdout);
    assert!(!bldst.config_path().exists());
    bldst
        .run(&["auth", "status"])
        .await
        .expect_code(5)
        .expect_one_error_line();
}

async fn login_reads_the_token_from_stdin_with_token_dash_and_refuses_a_bad_one(app: TestApp) {
    // Arrange
    let bldst = Bldst::with_token(&app, None);

    // Act: a token the server does not know
    let bad = bldst
        .run_with_stdin(&["auth", "login", "--token", "-"], "bst_wrong\n")
        .await;

    // Assert: refused, and nothing saved
    let bad = bad.expect_code(5);
    bad.expect_one_error_line();
    assert!(
        !bldst.config_path().exists(),
        "a refused token is not saved"
    );

    // Act: the right one (not the bootstrap token: the last admin token cannot be revoked)
    let token = create_token(
        &Bldst::admin(&app),
        &["--username", "admin", "--scope", "write"],
    )
    .await;
    let good = bldst
        .run_with_stdin(&["auth", "login", "--token", "-", "-o", "json"], &token)
        .await;

    // Assert: saved; logging out with --revoke revokes it on the server
    let whoami: Whoami = json(&good.ok().stdout);
    assert_eq!(whoami.username.as_str(), "admin");
    bldst.run(&["auth", "logout", "--revoke"]).await.ok();
    let revoked = Bldst::with_token(&app, Some(&token))
        .run(&["build", "list"])
        .await;
    revoked.expect_code(5);
}

crate::on_both_backends!(
    an_admin_creates_a_user_whose_token_works_until_revoked,
    a_member_token_may_not_create_users,
    an_expired_token_is_refused_with_the_auth_exit_code,
    login_keeps_the_token_in_a_file_only_its_owner_can_read,
    login_reads_the_token_from_stdin_with_token_dash_and_refuses_a_bad_one,
    token_powers_hold_through_the_cli,
    revoking_through_the_cli_takes_the_tokens_it_created_and_spares_the_last_admin,
);

/// Who `bldst`'s token belongs to, as `auth status -o json` says.
async fn whoami(bldst: &Bldst) -> Whoami {
    let status: Value = json(
        &bldst
            .run(&["auth", "status", "-o", "json"])
            .await
            .ok()
            .stdout,
    );
    serde_json::from_value(status["whoami"].clone()).expect("whoami")
}

/// `bldst token create` as `bldst`, printing only the secret.
async fn create_token(bldst: &Bldst, args: &[&str]) -> String {
    let mut all = vec!["token", "create", "--description", "made by a test"];
    all.extend_from_slice(args);
    bldst.run(&all).await.ok().stdout.trim().to_owned()
}

async fn token_powers_hold_through_the_cli(app: TestApp) {
    // Arrange: a member with a read token and a one-hour write token
    let admin = Bldst::admin(&app);
    admin
        .run(&[
            "user",
            "create",
            "--username",
            "ci",
            "--email",
            "ci@example.com",
        ])
        .await
        .ok();
    let read = create_token(&admin, &["--username", "ci", "--scope", "read"]).await;
    let hour = create_token(
        &admin,
        &["--username", "ci", "--scope", "write", "--expires-in", "1h"],
    )
    .await;
    let reader = Bldst::with_token(&app, Some(&read));
    let writer = Bldst::with_token(&app, Some(&hour));

    // Act
    let by_reader = reader
        .run(&[
            "token",
            "create",
            "--username",
            "ci",
            "--description",
            "x",
            "--scope",
            "read",
        ])
        .await;
    let wider = writer
        .run(&[
            "token",
            "create",
            "--username",
            "ci",
            "--description",
            "x",
            "--scope",
            "admin",
        ])
        .await;
    let longer = writer
        .run(&[
            "token",
            "create",
            "--username",
            "ci",
            "--description",
            "x",
            "--scope",
            "read",
            "--expires-in",
            "2h",
        ])
        .await;
    let foreign = writer
        .run(&[
            "token",
            "create",
            "--username",
            "admin",
            "--description",
            "x",
            "--scope",
            "read",
        ])
        .await;
    let inherited = create_token(&writer, &["--username", "ci", "--scope", "read"]).await;

    // Assert: 403s exit 5, the expiry past the creator's is a rejected value (exit 2)
    let by_reader = by_reader.expect_code(5);
    by_reader.expect_one_error_line();
    assert!(by_reader.stderr.contains("`write`"), "{}", by_reader.stderr);
    let wider = wider.expect_code(5);
    assert!(
        wider.stderr.contains("cannot create a `admin` token"),
        "{}",
        wider.stderr
    );
    let longer = longer.expect_code(2);
    longer.expect_one_error_line();
    assert!(
        longer.stderr.contains("cannot outlive its creator"),
        "{}",
        longer.stderr
    );
    let foreign = foreign.expect_code(5);
    assert!(foreign.stderr.contains("`admin`"), "{}", foreign.stderr);
    let me = whoami(&Bldst::with_token(&app, Some(&inherited))).await;
    let parent = whoami(&writer).await;
    assert_eq!(
        me.expires_at, parent.expires_at,
        "the creator's expiry, inherited"
    );
    assert!(me.expires_at.is_some());
}

async fn revoking_through_the_cli_takes_the_tokens_it_created_and_spares_the_last_admin(
    app: TestApp,
) {
    // Arrange: admin -> parent (write) -> child (read)
    let admin = Bldst::admin(&app);
    admin
        .run(&[
            "user",
            "create",
            "--username",
            "ci",
            "--email",
            "ci@example.com",
        ])
        .await
        .ok();
    let parent = create_token(&admin, &["--username", "ci", "--scope", "write"]).await;
    let parent_bldst = Bldst::with_token(&app, Some(&parent));
    let child = create_token(&parent_bldst, &["--username", "ci", "--scope", "read"]).await;
    let listed: Vec<TokenInfo> = json(
        &admin
            .run(&["token", "list", "--username", "ci", "-o", "json"])
            .await
            .ok()
            .stdout,
    );
    let parent_info = listed
        .iter()
        .find(|token| token.scope.as_str() == "write")
        .expect("parent");
    let child_info = listed
        .iter()
        .find(|token| token.scope.as_str() == "read")
        .expect("child");
    assert_eq!(
        child_info.created_by.as_deref(),
        Some(parent_info.id.as_str())
    );

    // Act
    admin.run(&["token", "revoke", &parent_info.id]).await.ok();
    let child_used = Bldst::with_token(&app, Some(&child))
        .run(&["build", "list"])
        .await;
    let admin_token = whoami(&admin).await;
    let last = admin.run(&["token", "revoke", &admin_token.token_id]).await;

    // Assert
    child_used.expect_code(5);
    let last = last.expect_code(4);
    last.expect_one_error_line();
    assert!(last.stderr.contains("last one"), "{}", last.stderr);
    assert!(
        last.stderr.contains("bldst token create"),
        "{}",
        last.stderr
    );
    admin.run(&["build", "list"]).await.ok();
}
