//! buildstate's client side, shared by every front end: the command line (`bldst`), the
//! Concourse resource and the GitHub Action. Each of those only parses its own protocol, calls
//! this crate and prints.
//!
//! - [`api`]: the typed REST client (timeouts, bounded retries, idempotent reports).
//! - [`events`]: following a build live over the event stream, resuming where it broke off.
//! - [`env`]: the environment as a lookup the caller passes in, never the process's directly.
//! - [`ci`]: which CI system and run a front end is running in.
//! - [`message`]: report messages read from files, keeping the tail of long logs.
//! - [`failure`]: client errors as documented exit codes and sentences that say what to do.
//! - [`gate_wait`]: ask the gate, waiting out a backoff, until a stage may run.
//! - [`lease`]: heartbeats while a command holds a stage, and the outputs it leaves behind.
//! - [`retry_wait`]: wait for the server to make a failed stage's retry due.
//! - [`policy`]: a build's retry policy read from YAML or JSON.
//!
//! Nothing here links the server (axum, sqlx); `.ci/run` checks that with `cargo tree`.

pub mod api;
pub mod ci;
pub mod env;
pub mod events;
pub mod failure;
pub mod gate_wait;
pub mod lease;
pub mod message;
pub mod policy;
pub mod retry_wait;

pub use api::{Client, ClientConfig, ClientError};
