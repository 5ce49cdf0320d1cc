//! What needs no server: `--help` with an example for every command and the exit codes,
//! shell completions, the `bldst_cli` name, and request logging that never shows the token.

use std::process::Command;

use crate::helpers::Bldst;
use crate::support::TestApp;

fn bldst(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bldst"))
        .args(args)
        // Help shows the values of the variables flags default to: none set here.
        .env_clear()
        .env("NO_COLOR", "1")
        // Help wraps at the terminal's width: fix it, so snapshots do not depend on the runner.
        .env("COLUMNS", "100")
        .output()
        .expect("run bldst")
}

fn stdout(args: &[&str]) -> String {
    let output = bldst(args);
    assert!(output.status.success(), "{args:?}: {output:?}");
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn the_help_pages_a_newcomer_reads_first() {
    for (name, args) in [
        ("help_top", &["--help"][..]),
        ("help_build", &["build", "--help"]),
        ("help_build_update", &["build", "update", "--help"]),
        ("help_server", &["server", "--help"]),
        ("help_server_bootstrap", &["server", "bootstrap", "--help"]),
    ] {
        crate::assert_cli_snapshot!(name, stdout(args));
    }
}

#[test]
fn server_commands_list_the_servers_flags_and_client_commands_the_clients() {
    for args in [
        &["server", "--help"][..],
        &["server", "bootstrap", "--help"],
    ] {
        let help = stdout(args);
        assert!(help.contains("--database-url"), "{args:?}:\n{help}");
        for client_flag in ["--api-url", "--token <", "--output"] {
            assert!(!help.contains(client_flag), "{args:?} lists {client_flag}");
        }
    }
    for args in [
        &["build", "list", "--help"][..],
        &["token", "create", "--help"],
    ] {
        let help = stdout(args);
        assert!(help.contains("--api-url"), "{args:?}:\n{help}");
        assert!(
            !help.contains("--database-url"),
            "{args:?} lists --database-url"
        );
    }
}

#[test]
fn completions_offer_the_values_the_command_line_knows() {
    let bash = stdout(&["completions", "bash"]);
    let states: Vec<String> = (0..=100).step_by(5).map(|code| code.to_string()).collect();
    for (flag, values) in [
        ("--status", "in_progress completed failed".to_owned()),
        (
            "--status",
            "running in_progress failed blocked completed cancelled".to_owned(),
        ),
        ("--scope", "read write admin".to_owned()),
        ("--role", "member admin".to_owned()),
        ("--state", states.join(" ")),
        ("--output", "table json".to_owned()),
    ] {
        let offered = format!("{flag})\n                    COMPREPLY=($(compgen -W \"{values}\"");
        assert!(
            bash.contains(&offered),
            "bash does not offer {flag}: {values}"
        );
    }
    let fish = stdout(&["completions", "fish"]);
    assert!(
        fish.contains("-l state -d 'The stage reported on' -r -f -a \"0\\t'triggered'"),
        "fish offers the stage codes with their names"
    );
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
