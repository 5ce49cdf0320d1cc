//! Bad input, table-driven: each case gets one clear `error:` line on stderr, nothing on
//! stdout, and its documented exit code. The whole table is one snapshot.

use std::fmt::Write as _;

use crate::assert_cli_snapshot;
use crate::helpers::Bldst;
use crate::support::TestApp;

/// Which `bldst` a case runs.
#[derive(Clone, Copy)]
enum Caller {
    Admin,
    /// A `read` token.
    Reader,
    NoToken,
    UnknownToken,
    /// An address where nothing listens.
    NoServer,
}

async fn every_bad_input_gets_one_line_and_its_exit_code(app: TestApp) {
    // Arrange: a build at stage 5, and an address nothing listens on
    let admin = Bldst::admin(&app);
    let id = admin.create_build(&[]).await;
    admin.report(&id, 0, "completed").await;
    let id = id.as_str();
    let cancelled = admin.create_build(&[]).await;
    admin
        .run(&[
            "build",
            "cancel",
            cancelled.as_str(),
            "--reason",
            "superseded",
        ])
        .await
        .ok();
    let cancelled = cancelled.as_str();
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let no_server = Bldst::admin(&app).env(
        "BUILDSTATE_API_URL",
        &format!("http://127.0.0.1:{closed_port}"),
    );
    let read_token = admin
        .run(&[
            "token",
            "create",
            "--scope",
            "read",
            "--description",
            "reader",
        ])
        .await
        .ok()
        .stdout;
    let reader = Bldst::with_token(&app, Some(read_token.trim()));
    let no_token = Bldst::with_token(&app, None);
    let unknown_token = Bldst::with_token(&app, Some("bst_not_a_real_token"));
    let cases: Vec<(&str, Caller, Vec<&str>, i32)> = vec![
        (
            "a missing flag",
            Caller::Admin,
            vec!["build", "update", id, "--status", "completed"],
            2,
        ),
        (
            "a state off the grid",
            Caller::Admin,
            vec![
                "build",
                "update",
                id,
                "--state",
                "7",
                "--status",
                "completed",
            ],
            2,
        ),
        (
            "a state that is not a number",
            Caller::Admin,
            vec!["build", "gate", id, "--state", "abc"],
            2,
        ),
        (
            "a state past 100",
            Caller::Admin,
            vec!["build", "gate", id, "--state", "105"],
            2,
        ),
        (
            "an unknown status",
            Caller::Admin,
            vec!["build", "update", id, "--state", "5", "--status", "done"],
            2,
        ),
        (
            "a negative state after a space",
            Caller::Admin,
            vec!["build", "gate", id, "--state", "-5"],
            2,
        ),
        (
            "a negative retry count after a space",
            Caller::Admin,
            vec![
                "build",
                "create",
                "--platform",
                "aws",
                "--image-type",
                "rhel8",
                "--max-retries",
                "-1",
            ],
            2,
        ),
        (
            "a client flag on a server command",
            Caller::Admin,
            vec![
                "server",
                "bootstrap",
                "--api-url",
                "http://127.0.0.1:1",
                "--username",
                "a",
                "--email",
                "a@example.com",
            ],
            2,
        ),
        (
            "a misspelt flag",
            Caller::Admin,
            vec!["build", "update", id, "--stat", "5"],
            2,
        ),
        (
            "an unknown command",
            Caller::Admin,
            vec!["build", "gat", id],
            2,
        ),
        (
            "an uppercase platform",
            Caller::Admin,
            vec![
                "build",
                "create",
                "--platform",
                "AWS",
                "--image-type",
                "rhel8",
            ],
            2,
        ),
        (
            "a label without a value",
            Caller::Admin,
            vec![
                "build",
                "create",
                "--platform",
                "aws",
                "--image-type",
                "rhel8",
                "--label",
                "git_sha",
            ],
            2,
        ),
        (
            "a bad duration",
            Caller::Admin,
            vec![
                "token",
                "create",
                "--username",
                "admin",
                "--description",
                "x",
                "--expires-in",
                "1w",
            ],
            2,
        ),
        (
            "message and message file",
            Caller::Admin,
            vec![
                "build",
                "update",
                id,
                "--state",
                "5",
                "--status",
                "failed",
                "--message",
                "x",
                "--message-file",
                "y",
            ],
            2,
        ),
        (
            "a message file that does not exist",
            Caller::Admin,
            vec![
                "build",
                "update",
                id,
                "--state",
                "5",
                "--status",
                "failed",
                "--message-file",
                "/nonexistent/log",
            ],
            2,
        ),
        (
            "a run without --",
            Caller::Admin,
            vec!["build", "run", id, "--state", "5", "true"],
            2,
        ),
        (
            "an empty token description",
            Caller::Admin,
            vec![
                "token",
                "create",
                "--username",
                "admin",
                "--description",
                " ",
            ],
            2,
        ),
        (
            "an unknown build",
            Caller::Admin,
            vec!["build", "get", "b_00000000000000000000"],
            3,
        ),
        (
            "an unknown token",
            Caller::Admin,
            vec!["token", "revoke", "t_0000000000000000"],
            3,
        ),
        (
            "a token for an unknown user",
            Caller::Admin,
            vec![
                "token",
                "create",
                "--username",
                "nobody",
                "--description",
                "x",
            ],
            3,
        ),
        (
            "a stage already completed",
            Caller::Admin,
            vec![
                "build",
                "update",
                id,
                "--state",
                "0",
                "--status",
                "in_progress",
            ],
            4,
        ),
        (
            "a report on a cancelled build",
            Caller::Admin,
            vec![
                "build",
                "update",
                cancelled,
                "--state",
                "0",
                "--status",
                "completed",
            ],
            4,
        ),
        (
            "a retry of a running build",
            Caller::Admin,
            vec!["build", "retry", id, "--reason", "why not"],
            4,
        ),
        (
            "a retry count past the limit",
            Caller::Admin,
            vec![
                "build",
                "create",
                "--platform",
                "aws",
                "--image-type",
                "rhel8",
                "--max-retries",
                "200",
            ],
            2,
        ),
        (
            "a read token writing",
            Caller::Reader,
            vec![
                "build",
                "create",
                "--platform",
                "aws",
                "--image-type",
                "rhel8",
            ],
            5,
        ),
        ("no token", Caller::NoToken, vec!["build", "list"], 5),
        (
            "an unknown token",
            Caller::UnknownToken,
            vec!["build", "get", id],
            5,
        ),
        (
            "an unreachable server",
            Caller::NoServer,
            vec!["build", "list"],
            6,
        ),
        (
            "a URL that is not http",
            Caller::Admin,
            vec!["--api-url", "ftp://example.com", "build", "list"],
            2,
        ),
    ];

    // Act
    let mut table = String::new();
    for (name, caller, args, expected) in cases {
        let bldst = match caller {
            Caller::Admin => &admin,
            Caller::Reader => &reader,
            Caller::NoToken => &no_token,
            Caller::UnknownToken => &unknown_token,
            Caller::NoServer => &no_server,
        };
        let outcome = bldst.run(&args).await;

        // Assert
        assert_eq!(outcome.code, expected, "{name}: {}", outcome.stderr);
        outcome.expect_one_error_line();
        let stderr = outcome
            .stderr
            .trim_end()
            .replace(&closed_port.to_string(), "[port]");
        writeln!(table, "{name} -> {expected}\n  {stderr}").expect("write");
    }
    assert_cli_snapshot!("bad_input_table", table);
}

/// With `--output json` a failure is one JSON object on stderr (the API's envelope plus the
/// exit code), nothing on stdout, and the same exit code as without it.
async fn with_output_json_an_error_is_one_json_object_on_stderr(app: TestApp) {
    let admin = Bldst::admin(&app);
    let no_token = Bldst::with_token(&app, None);
    let cases: Vec<(&str, &Bldst, Vec<&str>, i32)> = vec![
        (
            "a bad value",
            &admin,
            vec!["-o", "json", "build", "gate", "b_1", "--state", "7"],
            2,
        ),
        (
            "a missing flag, json asked for last",
            &admin,
            vec![
                "build",
                "update",
                "b_1",
                "--status",
                "completed",
                "--output=json",
            ],
            2,
        ),
        (
            "--quiet with json",
            &admin,
            vec!["build", "list", "--quiet", "-o", "json"],
            2,
        ),
        (
            "an unknown build",
            &admin,
            vec!["build", "get", "b_00000000000000000000", "-o", "json"],
            3,
        ),
        (
            "no token",
            &no_token,
            vec!["build", "list", "-o", "json"],
            5,
        ),
    ];
    let mut table = String::new();
    for (name, bldst, args, expected) in cases {
        let outcome = bldst.run(&args).await;
        assert_eq!(outcome.code, expected, "{name}: {}", outcome.stderr);
        assert_eq!(outcome.stdout, "", "{name}: nothing on stdout");
        assert_eq!(outcome.stderr.lines().count(), 1, "{name}: one line");
        let error: serde_json::Value = serde_json::from_str(&outcome.stderr)
            .unwrap_or_else(|e| panic!("{name}: JSON on stderr ({e}): {}", outcome.stderr));
        assert_eq!(error["error"]["exit_code"], expected, "{name}");
        assert!(error["error"]["message"].is_string(), "{name}");
        writeln!(
            table,
            "{name} -> {expected}\n  {}",
            outcome.stderr.trim_end()
        )
        .expect("write");
    }
    assert_cli_snapshot!("json_errors", table);
}

crate::on_both_backends!(
    every_bad_input_gets_one_line_and_its_exit_code,
    with_output_json_an_error_is_one_json_object_on_stderr,
);

/// `--state -5` is the value -5, not an unknown flag: the same answer as `--state=-5`.
#[test]
fn a_negative_number_gets_the_same_answer_with_a_space_as_with_an_equals_sign() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["build", "gate", "b_1"], "--state", "-5"),
        (&["build", "list"], "--state", "-10"),
        (
            &["build", "update", "b_1", "--status", "completed"],
            "--state",
            "-5",
        ),
        (
            &[
                "build",
                "create",
                "--platform",
                "aws",
                "--image-type",
                "rhel8",
            ],
            "--max-retries",
            "-1",
        ),
        (&["build", "history", "b_1"], "--limit", "-3"),
        (&["build", "list"], "--offset", "-1"),
        (&["server"], "--max-retries", "-1"),
    ];
    for (command, flag, value) in cases {
        let run = |extra: &[&str]| {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_bldst"))
                .args(*command)
                .args(extra)
                .env("NO_COLOR", "1")
                .env_remove("BUILDSTATE_API_TOKEN")
                .output()
                .expect("run bldst");
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        };
        let spaced = run(&[flag, value]);
        let joined = run(&[&format!("{flag}={value}")]);
        assert_eq!(spaced, joined, "{command:?} {flag} {value}");
        assert_eq!(
            spaced.0,
            Some(2),
            "{command:?} {flag} {value}: {}",
            spaced.1
        );
        assert!(
            spaced.1.contains(&format!("invalid value '{value}'")),
            "{command:?} {flag} {value}: {}",
            spaced.1
        );
    }
}
