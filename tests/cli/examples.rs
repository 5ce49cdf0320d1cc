//! The examples a newcomer runs first: `pipelines/shell/resume-demo.sh` finds a built `bldst`
//! (or says how to get one), and the Ansible example declares the collections it uses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's root (where Cargo.toml is).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A checkout of its own holding only the demo script, so what it finds under `target/` is
/// what the test put there.
fn demo_checkout() -> tempfile::TempDir {
    let checkout = tempfile::tempdir().expect("temporary checkout");
    let shell = checkout.path().join("pipelines/shell");
    std::fs::create_dir_all(&shell).expect("pipelines/shell");
    std::fs::copy(
        repo().join("pipelines/shell/resume-demo.sh"),
        shell.join("resume-demo.sh"),
    )
    .expect("copy the demo script");
    checkout
}

/// The directories of `PATH` without any that holds a `bldst`, so the script cannot find one
/// there.
fn path_without_bldst() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kept: Vec<PathBuf> = std::env::split_paths(&path)
        .filter(|dir| !dir.join("bldst").exists())
        .collect();
    std::env::join_paths(kept)
        .expect("PATH")
        .to_string_lossy()
        .into_owned()
}

fn run_demo(checkout: &Path, port: u16) -> Output {
    Command::new("bash")
        .arg(checkout.join("pipelines/shell/resume-demo.sh"))
        .env_clear()
        .env("PATH", path_without_bldst())
        .env("HOME", checkout)
        .env("PORT", port.to_string())
        .env("NO_COLOR", "1")
        .output()
        .expect("run the demo script")
}

/// A port nothing listens on right now, for the demo's own server.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn the_demo_script_says_how_to_get_bldst_when_it_finds_none() {
    let checkout = demo_checkout();

    let output = run_demo(checkout.path(), free_port());

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(127), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing on stdout");
    assert!(
        stderr.starts_with("error: no `bldst` binary found"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cargo install --path . --locked"),
        "{stderr}"
    );
}

#[test]
fn the_demo_script_finds_a_debug_build_and_resumes_the_failed_stage() {
    let checkout = demo_checkout();
    let debug = checkout.path().join("target/debug");
    std::fs::create_dir_all(&debug).expect("target/debug");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_bldst"), debug.join("bldst"))
        .expect("link the built bldst");

    let output = run_demo(checkout.path(), free_port());

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let using = format!("using {}\n", debug.join("bldst").display());
    assert!(stderr.starts_with(&using), "{stderr}");
    assert!(
        stdout.contains("the pipeline exited with code 1"),
        "{stdout}"
    );
    // Stage 15 failed once, then completed on the re-run; stage 20 failed once and was retried
    // by itself.
    let stage = |code: &str| -> Vec<&str> {
        stdout
            .lines()
            .filter_map(|line| {
                let columns: Vec<&str> = line.split_whitespace().collect();
                let history_row = columns
                    .first()
                    .is_some_and(|seq| seq.parse::<u32>().is_ok());
                (history_row && columns.get(1) == Some(&code)).then(|| columns[2])
            })
            .collect()
    };
    // (The server may make stage 15's retry due before the re-run starts it, or not: the
    // re-run does not wait for it.)
    let stage_15: Vec<&str> = stage("15")
        .into_iter()
        .filter(|kind| *kind != "retry_due")
        .collect();
    assert_eq!(
        stage_15,
        ["in_progress", "failed", "in_progress", "completed"],
        "{stdout}"
    );
    assert_eq!(
        stage("20"),
        [
            "in_progress",
            "failed",
            "retry_due",
            "in_progress",
            "completed"
        ],
        "{stdout}"
    );
    // It ends by saying what resuming did, not with a gate's "stop" that reads like an error,
    // then what it saved as the server recorded it: the re-run's resume at 15 (0, 5, 10 not
    // re-run) and the automatic retry's at 20 (0 to 15).
    let last: Vec<&str> = stdout.lines().rev().take(2).collect();
    assert_eq!(
        last.get(1).copied(),
        Some(
            "the re-run skipped stages 0, 5, 10 (completed by the first run), ran stage 15 \
             again after 1 failure(s), and published the image (stage 100)"
        ),
        "{stdout}"
    );
    let saved = last.first().copied().unwrap_or_default();
    assert!(
        saved.starts_with("resuming saved ")
            && saved.ends_with(" in the last day, 7 stages not re-run"),
        "{stdout}"
    );
}

#[test]
fn the_ansible_requirements_name_every_collection_the_playbooks_use() {
    let requirements = std::fs::read_to_string(repo().join("pipelines/ansible/requirements.yml"))
        .expect("pipelines/ansible/requirements.yml");
    let mut used = std::collections::BTreeSet::new();
    let playbooks = repo().join("pipelines/ansible/playbooks");
    for entry in std::fs::read_dir(&playbooks).expect("playbooks") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("playbook");
        for line in text.lines() {
            // A task's module by its full name, e.g. `community.general.timezone:`.
            let Some(key) = line.trim().trim_start_matches("- ").strip_suffix(':') else {
                continue;
            };
            let parts: Vec<&str> = key.split('.').collect();
            if parts.len() == 3 && parts[..2] != ["ansible", "builtin"] {
                used.insert(format!("{}.{}", parts[0], parts[1]));
            }
        }
    }
    assert!(
        used.contains("community.general") && used.contains("ansible.posix"),
        "the playbooks' collections: {used:?}"
    );
    for collection in &used {
        assert!(
            requirements.contains(&format!("- name: {collection}\n")),
            "{collection} is missing from requirements.yml"
        );
    }
}
