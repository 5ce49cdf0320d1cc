//! Integration tests of the REST API: the real server on 127.0.0.1:0 over a fresh SQLite file,
//! and over a scratch PostgreSQL database when `BUILDSTATE_TEST_POSTGRES_URL` is set.

#[path = "../support/mod.rs"]
mod support;

mod accounts;
mod bad_input;
mod binary;
mod builds;
mod client;
mod concurrency;
mod crash;
mod health;
mod healthcheck;
mod helpers;
mod leases;
mod limits;
mod logs;
mod outputs;
mod policies;
mod rate_limits;
mod replicas;
mod reports;
mod retention;
mod retries;
mod savings;
mod server_image;
mod streams;
mod text_rules;
mod tls;
mod unavailable;
