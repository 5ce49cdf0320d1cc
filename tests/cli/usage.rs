//! What needs no server: `--help` with an example for every command and the exit codes,
//! shell completions, the `bldst_cli` name, and request logging that never shows the token.

use std::process::Command;

use crate::helpers::Bldst;
use crate::support::TestApp;

fn bldst(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bldst"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run bldst")
}

#[test]
fn every_command_has_help_with_an_example() {
    let commands: &[&[&str]] = &[
        &["user", "create"],
        &["user", "list"],
        &["token", "create"],
        &["token", "list"],
        &["token", "revoke"],
        &["auth", "login"],
        &["auth", "status"],
        &["auth", "logout"],
        &["build", "create"],
        &["build", "update"],
        &["build", "get"],
        &["build", "list"],
        &["build", "history"],
        &["build", "gate"],
        &["build", "run"],
        &["build", "retry"],
        &["build", "reset"],
        &["build", "cancel"],
        &["completions"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let output = bldst(&args);
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{command:?}");
        assert!(
            help.contains("Examples:"),
            "{command:?} has no example:\n{help}"
        );
    }
}

#[test]
fn the_top_level_help_documents_the_exit_codes() {
    let output = bldst(&["--help"]);
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for line in [
        "  3  not found",
        "  6  the server was unreachable",
        " 10  build gate: skip",
        " 12  build gate: stop",
    ] {
        assert!(help.contains(line), "missing {line:?} in:\n{help}");
    }
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let output = bldst(&["completions", shell]);
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{shell}");
        assert!(script.contains("bldst"), "{shell}");
        assert!(
            script.contains("gate"),
            "{shell}: subcommands are completed"
        );
    }
    let output = bldst(&["completions", "powershell-ish"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn bldst_cli_is_the_same_program() {
    let output = Command::new(env!("CARGO_BIN_EXE_bldst_cli"))
        .args(["build", "gate", "--help"])
        .output()
        .expect("run bldst_cli");
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("exits 0, 10, 11 or 12"));
}

async fn verbose_logs_each_request_but_never_the_token(app: TestApp) {
    for (flag, debug) in [("--verbose", None), ("--output=table", Some("1"))] {
        // Arrange
        let mut bldst = Bldst::admin(&app);
        if let Some(debug) = debug {
            bldst = bldst.env("BUILDSTATE_DEBUG", debug);
        }

        // Act
        let listed = bldst.run(&[flag, "build", "list"]).await.ok();

        // Assert
        assert!(listed.stderr.contains("GET"), "{flag}: {}", listed.stderr);
        assert!(
            listed.stderr.contains("/builds"),
            "{flag}: {}",
            listed.stderr
        );
        assert!(
            !listed.stderr.contains(&app.admin_token),
            "{flag}: the token leaked"
        );
        assert!(
            listed.stdout.starts_with("ID"),
            "{flag}: the table is still on stdout"
        );
    }
    let quiet = Bldst::admin(&app).run(&["build", "list"]).await.ok();
    assert_eq!(quiet.stderr, "", "no logging without --verbose");
}

crate::on_both_backends!(verbose_logs_each_request_but_never_the_token);
