//! Integration tests of the GitHub Action: the real `bldst` binary started as `bldst-action`
//! with the environment a runner gives a Docker action, against a real server on 127.0.0.1:0
//! (a fresh SQLite file, and a scratch PostgreSQL database when `BUILDSTATE_TEST_POSTGRES_URL`
//! is set), with a local fake of GitHub's API (wiremock) for the commit status.

#[path = "../support/mod.rs"]
mod support;

mod bad_input;
mod commit_status;
mod helpers;
mod image;
mod retries;
mod steps;
