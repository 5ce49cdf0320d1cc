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

    // Act: the right one
    let good = bldst
        .run_with_stdin(
            &["auth", "login", "--token", "-", "-o", "json"],
            &app.admin_token,
        )
        .await;

    // Assert: saved; logging out with --revoke revokes it on the server
    let whoami: Whoami = json(&good.ok().stdout);
    assert_eq!(whoami.username.as_str(), "admin");
    bldst.run(&["auth", "logout", "--revoke"]).await.ok();
    let revoked = Bldst::admin(&app).run(&["build", "list"]).await;
    revoked.expect_code(5);
}

crate::on_both_backends!(
    an_admin_creates_a_user_whose_token_works_until_revoked,
    a_member_token_may_not_create_users,
    an_expired_token_is_refused_with_the_auth_exit_code,
    login_keeps_the_token_in_a_file_only_its_owner_can_read,
    login_reads_the_token_from_stdin_with_token_dash_and_refuses_a_bad_one,
);
