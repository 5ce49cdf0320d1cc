//! For the tests that run the example pipelines' stage scripts with their commands failing
//! (tests/resource/failing_examples.rs, tests/action/failing_examples.rs): the failing
//! stand-ins, and the example files.

use std::path::{Path, PathBuf};

/// What every failing stand-in prints before it fails: quotes, a backslash and a tab, which a
/// report built by hand-escaping JSON in shell would mangle.
pub const FAILURE_LINE: &str = "error: mirror \"rhel-8\" unreachable\\retry\tlater";
/// The stand-ins' exit status, so a test sees it is the command's own that fails the step.
pub const FAILURE_CODE: i32 = 3;
/// Programs the example steps call that a CI worker's base image does not have.
pub const TOOLS: [&str; 3] = ["packer", "ansible-playbook", "ansible-galaxy"];

/// Writes a failing stand-in for a program at `path`: it prints [`FAILURE_LINE`] and exits
/// [`FAILURE_CODE`].
pub fn failing_program(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(path.parent().expect("parent")).expect("directory");
    std::fs::write(
        path,
        format!("#!/bin/sh\nprintf '%s\\n' '{FAILURE_LINE}'\nexit {FAILURE_CODE}\n"),
    )
    .expect("write the stand-in");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A directory of failing stand-ins for [`TOOLS`], to put first on `PATH`.
pub fn failing_tools() -> tempfile::TempDir {
    let tools = tempfile::tempdir().expect("tools");
    for tool in TOOLS {
        failing_program(&tools.path().join(tool));
    }
    tools
}

/// `PATH` with the failing tools first.
pub fn path_with(tools: &Path) -> String {
    format!("{}:/usr/local/bin:/usr/bin:/bin", tools.display())
}

/// The `.yml` files of `pipelines/<dir>`, by file name, parsed, sorted.
pub fn example_pipelines(dir: &str) -> Vec<(String, serde_norway::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pipelines")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read");
            let value = serde_norway::from_str(&text)
                .unwrap_or_else(|error| panic!("{} is not YAML: {error}", path.display()));
            let file = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (file, value)
        })
        .collect()
}

/// Asserts that build `id` is `failed` at `stage` and, with `with_output`, that the failing
/// command's output reached its message: what a stage that fails must lead to.
pub async fn assert_failed_at(
    app: &super::TestApp,
    id: &buildstate_domain::BuildId,
    stage: i64,
    with_output: bool,
    what: &str,
) {
    let build = app.client().get_build(id).await.expect("the build");
    assert_eq!(
        (build.status, i64::from(build.state.value())),
        (buildstate_domain::BuildStatus::Failed, stage),
        "{what}: the failure was reported"
    );
    let message = build.last_message.unwrap_or_default();
    assert!(
        !with_output || message.contains(FAILURE_LINE),
        "{what}: the failure's output is the message: {message:?}"
    );
}
