//! Integration tests of the `bldst` binary: the real executable, run as a pipeline would run
//! it, against a real server on 127.0.0.1:0 over a fresh SQLite file, and over a scratch
//! PostgreSQL database when `BUILDSTATE_TEST_POSTGRES_URL` is set.

#[path = "../support/mod.rs"]
mod support;

mod accounts;
mod bad_input;
mod builds;
mod examples;
mod helpers;
mod outputs;
mod policies;
mod rate_limits;
mod reports;
mod retries;
mod run;
mod shown_commands;
mod streams;
mod usage;
mod watch;
