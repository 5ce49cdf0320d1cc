//! `bldst`: the one client binary of buildstate — the command line for people and scripts,
//! and (with the default `server` feature) the REST server itself.
//!
//! The rules live in `buildstate-domain`; this crate only talks to the server through
//! [`client::Client`] and presents the answers.

pub mod cli;
pub mod client;
