//! `bldst`: the one client binary of buildstate — the command line for people and scripts,
//! and (with the default `server` feature) the REST server itself.
//!
//! The rules live in `buildstate-domain`; the typed client and the layer every front end
//! shares live in `buildstate-client`; this crate is the command line that presents them.

pub mod cli;
/// The typed REST client, re-exported under the name the CLI and its tests have always used.
pub use buildstate_client::api as client;

use std::ffi::OsStr;
use std::path::Path;

/// The front ends this one binary can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    /// `check`, `in` or `out`: the Concourse resource (`/opt/resource/...` in the image).
    Resource(buildstate_resource::Command),
    /// `bldst`, `bldst_cli` or any other name.
    Cli,
    /// `bldst-action`: the GitHub Action's entrypoint in the image.
    Action,
}

impl FrontEnd {
    /// The front end for a program started as `argv0`: its file name decides, whatever the
    /// directory.
    pub fn for_program(argv0: &OsStr) -> FrontEnd {
        let name = Path::new(argv0).file_name().and_then(OsStr::to_str);
        if name == Some(buildstate_action::PROGRAM_NAME) {
            return FrontEnd::Action;
        }
        match name.and_then(buildstate_resource::Command::from_program_name) {
            Some(command) => FrontEnd::Resource(command),
            None => FrontEnd::Cli,
        }
    }
}

/// Runs the Concourse resource's `command` on the process's stdin, stdout, stderr, arguments
/// and environment.
pub fn resource_main(command: buildstate_resource::Command) -> std::process::ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let env = buildstate_client::env::EnvMap::from_process();
    let code = buildstate_resource::run(
        command,
        &args,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
        &env,
    );
    std::process::ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_name_chooses_the_front_end() {
        use buildstate_resource::Command;
        let of = |name: &str| FrontEnd::for_program(OsStr::new(name));
        assert_eq!(
            of("/opt/resource/check"),
            FrontEnd::Resource(Command::Check)
        );
        assert_eq!(of("/opt/resource/in"), FrontEnd::Resource(Command::In));
        assert_eq!(of("out"), FrontEnd::Resource(Command::Out));
        assert_eq!(of("/usr/local/bin/bldst"), FrontEnd::Cli);
        assert_eq!(of("bldst_cli"), FrontEnd::Cli);
        assert_eq!(of("/opt/resource/checker"), FrontEnd::Cli);
        assert_eq!(of("/usr/local/bin/bldst-action"), FrontEnd::Action);
        assert_eq!(of("bldst-action"), FrontEnd::Action);
        assert_eq!(of("bldst-action-old"), FrontEnd::Cli);
    }
}
