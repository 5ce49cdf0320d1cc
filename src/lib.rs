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
    /// `bldst`, `bldst_cli` or any other name.
    Cli,
    /// `bldst-action`: the GitHub Action's entrypoint in the image.
    Action,
}

impl FrontEnd {
    /// The front end for a program started as `argv0`: its file name decides, whatever the
    /// directory.
    pub fn for_program(argv0: &OsStr) -> FrontEnd {
        match Path::new(argv0).file_name().and_then(OsStr::to_str) {
            Some(buildstate_action::PROGRAM_NAME) => FrontEnd::Action,
            _ => FrontEnd::Cli,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_name_chooses_the_front_end_whatever_the_directory() {
        let front_end = |argv0: &str| FrontEnd::for_program(OsStr::new(argv0));
        assert_eq!(front_end("/usr/local/bin/bldst-action"), FrontEnd::Action);
        assert_eq!(front_end("bldst-action"), FrontEnd::Action);
        assert_eq!(front_end("/usr/local/bin/bldst"), FrontEnd::Cli);
        assert_eq!(front_end("bldst_cli"), FrontEnd::Cli);
        assert_eq!(front_end("bldst-action-old"), FrontEnd::Cli);
    }
}
