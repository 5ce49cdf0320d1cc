//! The command line run in-process with the streams it is handed: answers go to the given
//! stdout, notes to the given stderr, and piped input comes from the given stdin, never the
//! process's own.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use buildstate::cli::streams::{Input, Output, Streams};
use buildstate::cli::{parse, run};

use crate::on_both_backends;
use crate::support::TestApp;

/// A stdout the test reads back.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("buffer").clone()).expect("UTF-8")
    }
}

/// Runs `bldst <words>` against `app` with `stdin`, in an empty environment; returns the exit
/// code and what it printed on stdout.
async fn bldst(app: &TestApp, words: &[&str], stdin: &str) -> (u8, String) {
    let (code, stdout, _stderr) = bldst_with_notes(app, words, stdin).await;
    (code, stdout)
}

/// Like [`bldst`], returning what it wrote on stderr too.
async fn bldst_with_notes(app: &TestApp, words: &[&str], stdin: &str) -> (u8, String, String) {
    let mut arguments = vec![
        "bldst".to_owned(),
        "--api-url".to_owned(),
        app.base_url.clone(),
        "--token".to_owned(),
        app.admin_token.clone(),
    ];
    arguments.extend(words.iter().map(|word| (*word).to_owned()));
    let arguments: Vec<std::ffi::OsString> = arguments.into_iter().map(Into::into).collect();
    let cli = parse(&arguments).expect("valid arguments");
    let stdout = Buffer::default();
    let stderr = Buffer::default();
    let streams = Streams {
        stdin: Input::new(Cursor::new(stdin.as_bytes().to_vec())),
        stdout: Output::new(stdout.clone()),
        stderr: Output::new(stderr.clone()),
        stdin_is_terminal: false,
        stdout_is_terminal: false,
    };
    let code = run(cli, &|_| None, streams)
        .await
        .unwrap_or_else(|error| panic!("bldst {words:?}: {}", error.message));
    (code, stdout.text(), stderr.text())
}

async fn answers_go_to_the_given_stdout_and_piped_input_comes_from_the_given_stdin(app: TestApp) {
    let (code, printed) = bldst(
        &app,
        &[
            "build",
            "create",
            "--platform",
            "aws",
            "--image-type",
            "rhel8",
            "--quiet",
        ],
        "",
    )
    .await;
    assert_eq!(code, 0);
    let id = printed.trim().to_owned();
    assert!(
        id.starts_with("b_"),
        "the id on the given stdout: {printed:?}"
    );
    let (code, printed) = bldst(
        &app,
        &[
            "build",
            "update",
            &id,
            "--state",
            "5",
            "--status",
            "failed",
            "--message-file",
            "-",
        ],
        "kickstart: no route to mirror\n",
    )
    .await;
    assert_eq!(code, 0);
    assert!(printed.contains(&format!("build `{id}`")), "{printed}");
    let build = app
        .client()
        .get_build(&id.parse().expect("id"))
        .await
        .expect("build");
    assert_eq!(
        build.last_message.as_deref(),
        Some("kickstart: no route to mirror\n"),
        "the message came from the given stdin"
    );
    app.stop().await;
}

on_both_backends!(answers_go_to_the_given_stdout_and_piped_input_comes_from_the_given_stdin);

async fn notes_go_to_the_given_stderr_and_the_answer_alone_to_stdout(app: TestApp) {
    let create = [
        "build",
        "create",
        "--platform",
        "aws",
        "--image-type",
        "rhel8",
        "--key",
        "aws/rhel8/notes",
        "--quiet",
    ];
    let (code, stdout, stderr) = bldst_with_notes(&app, &create, "").await;
    assert_eq!(code, 0);
    let id = stdout.trim().to_owned();
    assert_eq!(stdout, format!("{id}\n"), "only the id on stdout");
    assert_eq!(stderr, format!("started build `{id}`\n"));

    let (code, stdout, stderr) = bldst_with_notes(&app, &create, "").await;
    assert_eq!(code, 0);
    assert_eq!(stdout, format!("{id}\n"), "the same build, resumed");
    assert!(
        stderr.starts_with(&format!(
            "resumed unfinished build `{id}` with key `aws/rhel8/notes`: stage 0"
        )),
        "{stderr}"
    );
    app.stop().await;
}

on_both_backends!(notes_go_to_the_given_stderr_and_the_answer_alone_to_stdout);
