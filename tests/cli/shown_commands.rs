//! Every `bldst` command the documentation and the dashboard show a reader — in README.md,
//! docs/*.md, resource/README.md, action/README.md and the dashboard's HTML and JavaScript — is
//! one the command line accepts: each is parsed by the binary's own clap definition, and the
//! ones that talk to a server (accounts and builds) are run by the real binary against a real
//! server with an admin token, where none may end in a usage error.
//!
//! What counts as shown: every `bldst …` line of a fenced code block (a `\` continues it), and
//! every inline code span or dashboard `<code>` that gives flags (a bare `bldst build history`
//! in a sentence names a command; it is not one to copy). A synopsis line (`[--flag X]`,
//! `a|b`) is read as its shortest form: optional parts dropped, the first alternative taken,
//! placeholders (`ID`, `N`, `TEXT`, …) filled in.

use std::path::{Path, PathBuf};

use crate::helpers::Bldst;
use crate::on_both_backends;
use crate::support::TestApp;

/// Where a command was shown, and its words after `bldst`.
#[derive(Debug, Clone)]
struct Shown {
    at: String,
    words: Vec<String>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The documents a reader sees, relative to the repository.
fn documents() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["README.md", "resource/README.md", "action/README.md"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| path.strip_prefix(repo()).expect("inside").to_path_buf())
        .collect();
    docs.sort();
    files.extend(docs);
    files.push("crates/server/src/dashboard/index.html".into());
    files.push("crates/server/src/dashboard/app.js".into());
    files
}

/// The text of a command from `bldst ` up to where the shell or the prose ends it.
fn command_text(text: &str) -> &str {
    let mut end = text.len();
    for stop in [" #", ";", " | ", " || ", "&&", " >", " 2>", ")", "`", "<"] {
        if let Some(at) = text.find(stop) {
            end = end.min(at);
        }
    }
    text[..end].trim()
}

/// Removes `[...]` groups (nested ones included).
fn without_optional_parts(text: &str) -> String {
    let mut depth = 0;
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// A placeholder's stand-in: real values where the server will look them up.
fn filled(word: &str, build_id: &str) -> String {
    let word = word.trim_matches('"');
    match word {
        "ID" | "$BUILD_ID" | "$BUILDSTATE_BUILD_ID" | "b_…" => build_id.to_owned(),
        "N" => "15".to_owned(),
        "TEXT" => "shown in the docs".to_owned(),
        "NAME" => "admin".to_owned(),
        "ADDR" => "admin@example.com".to_owned(),
        "SHELL" => "bash".to_owned(),
        "PATH" => "backup.db".to_owned(),
        "URL" => "https://ci.example/run/1".to_owned(),
        "KEY" => "ami_id".to_owned(),
        "SEQ" => "0".to_owned(),
        "COMMAND" => "true".to_owned(),
        _ => word
            .replace("$GIT_SHA", "0a1b2c3")
            .replace("${GIT_SHA}", "0a1b2c3"),
    }
}

/// The words of one shown command, synopsis notation resolved.
fn words(text: &str, build_id: &str) -> Vec<String> {
    let text = without_optional_parts(text)
        .replace("...", "")
        .replace('…', "");
    // A command cut where the shell ends it may leave a quoted argument open (`sh -c 'a &&
    // b'` cut at `&&`): drop words from the end until the rest is whole.
    let mut whole = text.as_str();
    let split = loop {
        if let Some(words) = shlex::split(whole) {
            break words;
        }
        let cut = whole
            .trim_end()
            .rfind(char::is_whitespace)
            .unwrap_or_else(|| panic!("shell words: {text}"));
        whole = &whole[..cut];
    };
    split
        .iter()
        .skip(1) // `bldst`
        .map(|word| {
            // `a|b|c` is a choice: the first.
            let word = if !word.contains(' ') && word.contains('|') && !word.starts_with('-') {
                word.split('|').next().unwrap_or_default()
            } else {
                word.as_str()
            };
            filled(word, build_id)
        })
        .filter(|word| !word.is_empty())
        .collect()
}

/// `build run` takes its build from BUILDSTATE_BUILD_ID when no id is given (the setup action
/// exports it); parsing in process has no such variable, so the id is written in.
fn with_build_id_from_env(mut words: Vec<String>, build_id: &str) -> Vec<String> {
    if words.len() > 2 && words[0] == "build" && words[1] == "run" && words[2].starts_with('-') {
        words.insert(2, build_id.to_owned());
    }
    words
}

/// Every command shown in `file`.
fn shown_in(file: &Path, build_id: &str) -> Vec<Shown> {
    let text = std::fs::read_to_string(repo().join(file)).expect("read");
    let is_markdown = file.extension().is_some_and(|ext| ext == "md");
    let mut found = Vec::new();
    let mut in_fence = false;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((index, line)) = lines.next() {
        let at = format!("{}:{}", file.display(), index + 1);
        if is_markdown && line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            let Some(start) = line.find("bldst ") else {
                continue;
            };
            // A command starts a line, or follows `$(`, `=` or `run: ` (not prose in a comment).
            let before = line[..start].trim_end();
            let starts_a_command = before.is_empty()
                || ["$(", "run:", "&&", ";", "||", "then", "server-1"]
                    .iter()
                    .any(|end| before.ends_with(end));
            if line.trim_start().starts_with('#') || !starts_a_command {
                continue;
            }
            let mut command = line[start..].to_owned();
            while command.trim_end().ends_with('\\') {
                let Some((_, next)) = lines.next() else { break };
                command = format!(
                    "{} {}",
                    command.trim_end().trim_end_matches('\\'),
                    next.trim()
                );
            }
            let command = command_text(&command).to_owned();
            found.push(Shown {
                at,
                words: with_build_id_from_env(words(&command, build_id), build_id),
            });
            continue;
        }
        // Inline: `bldst ...` in Markdown, <code>bldst ...</code> in HTML, strings in JS.
        let mut rest = line;
        while let Some(start) = rest.find("bldst ") {
            let opener = rest[..start].chars().last();
            let tail = &rest[start..];
            rest = &rest[start + "bldst ".len()..];
            let closer = match opener {
                Some('`') => '`',
                Some('>') => '<',
                Some(quote @ ('"' | '\'')) => quote,
                _ => continue,
            };
            let tail = tail.split(closer).next().unwrap_or_default();
            let command = command_text(tail);
            if !command.contains(" -") {
                continue;
            }
            found.push(Shown {
                at: at.clone(),
                words: with_build_id_from_env(words(command, build_id), build_id),
            });
        }
    }
    found
}

fn every_shown_command(build_id: &str) -> Vec<Shown> {
    documents()
        .iter()
        .flat_map(|file| shown_in(file, build_id))
        .collect()
}

#[test]
fn every_command_the_docs_and_the_dashboard_show_parses() {
    let shown = every_shown_command("b_0123456789abcdefghij");
    assert!(shown.len() >= 60, "found the commands: {}", shown.len());
    assert!(
        shown
            .iter()
            .any(|command| command.at.starts_with("crates/server/src/dashboard/")),
        "found the dashboard's"
    );
    let mut refused = Vec::new();
    for command in &shown {
        let mut arguments: Vec<std::ffi::OsString> = vec!["bldst".into()];
        arguments.extend(command.words.iter().map(Into::into));
        let parsed = buildstate::cli::parse(&arguments)
            .map(drop)
            .or_else(|error| {
                // `--version` and `--help` end parsing with their page: accepted.
                match error.kind() {
                    clap::error::ErrorKind::DisplayVersion
                    | clap::error::ErrorKind::DisplayHelp => Ok(()),
                    _ => Err(error),
                }
            });
        if let Err(error) = parsed {
            let first = error.to_string();
            let first = first.lines().next().unwrap_or_default().to_owned();
            refused.push(format!(
                "{}: bldst {}: {first}",
                command.at,
                command.words.join(" ")
            ));
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}

/// The shown commands that only talk to the server, with an admin token, may be run as they
/// are: none may be a usage error, and every `token create` succeeds.
async fn the_shown_account_and_build_commands_run_against_a_server(app: TestApp) {
    let bldst = Bldst::admin(&app);
    // The user the docs' token examples are for.
    bldst
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
    let build_id = bldst.create_build(&["--key", "shown/commands"]).await;
    let mut ran = 0;
    let mut failed = Vec::new();
    for command in every_shown_command(build_id.as_str()) {
        let words: Vec<&str> = command.words.iter().map(String::as_str).collect();
        let runnable = matches!(
            words.as_slice(),
            ["token", "create" | "list", ..]
                | ["user", "list", ..]
                | [
                    "build",
                    "create" | "list" | "get" | "history" | "gate" | "outputs",
                    ..
                ]
                | [
                    "report",
                    "success" | "failures" | "durations" | "stuck" | "recovery" | "savings",
                    ..
                ]
        );
        if !runnable {
            continue;
        }
        let outcome = bldst.run(&words).await;
        ran += 1;
        let must_succeed = matches!(words.as_slice(), ["token" | "user", ..]);
        if outcome.code == 2 || outcome.code == 5 || (must_succeed && outcome.code != 0) {
            failed.push(format!(
                "{}: bldst {} exited {}: {}",
                command.at,
                words.join(" "),
                outcome.code,
                outcome.stderr.trim()
            ));
        }
    }
    assert!(ran >= 15, "ran the shown commands: {ran}");
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    app.stop().await;
}

on_both_backends!(the_shown_account_and_build_commands_run_against_a_server);

/// The README's server settings table has a row for every flag of `bldst server` that reads
/// the environment, naming both, and no row has come loose below the table.
#[test]
fn the_readme_server_table_lists_every_server_setting() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let table_start = readme
        .find("| flag | environment | default | |")
        .expect("the server settings table");
    let table: Vec<&str> = readme[table_start..]
        .lines()
        .take_while(|line| line.starts_with('|'))
        .collect();
    let command = buildstate::cli::command();
    let server = command
        .get_subcommands()
        .find(|sub| sub.get_name() == "server")
        .expect("bldst server");
    let mut missing = Vec::new();
    for arg in server.get_arguments() {
        let (Some(flag), Some(env)) = (arg.get_long(), arg.get_env()) else {
            continue;
        };
        let env = env.to_string_lossy();
        let row = table
            .iter()
            .find(|row| row.contains(&format!("`--{flag}`")) && row.contains(&format!("`{env}`")));
        if row.is_none() {
            missing.push(format!("--{flag} ({env})"));
        }
    }
    assert!(missing.is_empty(), "not in the README's table: {missing:?}");
    let after_table =
        &readme[table_start..][table.iter().map(|line| line.len() + 1).sum::<usize>()..];
    let loose = after_table
        .lines()
        .take_while(|line| !line.starts_with("## "))
        .find(|line| line.starts_with("| `--"));
    assert_eq!(loose, None, "a settings row below the table");
}
