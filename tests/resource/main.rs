//! Integration tests of the `state-store` Concourse resource: the real `bldst` binary run as
//! `/opt/resource/check`, `in` and `out` (by name, as the image installs it), with an empty
//! environment plus what Concourse would set, against a real server on 127.0.0.1:0 over a
//! fresh SQLite file, and over a scratch PostgreSQL database when
//! `BUILDSTATE_TEST_POSTGRES_URL` is set. The example pipelines are validated here too.

#[path = "../support/mod.rs"]
mod support;

mod check;
mod failing_examples;
mod get;
mod helpers;
mod image;
mod outputs;
mod pipelines;
mod policies;
mod put;
mod rate_limits;
mod retries;
