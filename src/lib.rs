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
}

impl FrontEnd {
    /// The front end for a program started as `argv0`: its file name decides, whatever the
    /// directory.
    pub fn for_program(argv0: &OsStr) -> FrontEnd {
        let _name = Path::new(argv0).file_name().and_then(OsStr::to_str);
        FrontEnd::Cli
    }
}
