//! buildstate's REST service. Each module provides one concern; this file only declares them
//! and re-exports what `bldst server` and the tests call:
//!
//! - [`config`]: the settings (`ServerConfig`), each a flag with its default;
//! - [`startup`]: the state assembled from them, [`serve`] and [`run`];
//! - [`admin`]: the operations beside the API (bootstrap, out-of-band tokens);
//! - [`state`]: what every handler shares; [`api`] and [`dashboard`]: the routes;
//! - [`db`]: the store; [`events`], [`peers`], [`webhooks`], [`metrics`]: what follows a change;
//! - [`retries`]: the scheduler that records each due retry;
//! - [`serving`], [`ratelimit`], [`secrets`], [`names`], [`token_cache`]: the parts they use.

pub mod admin;
pub mod api;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod events;
pub mod metrics;
pub mod names;
pub mod peers;
pub mod ratelimit;
pub mod retries;
pub mod secrets;
pub mod serving;
pub mod startup;
pub mod state;
pub mod token_cache;
pub mod webhooks;

pub use admin::{bootstrap_admin, create_token_out_of_band};
pub use config::{ServerConfig, DEFAULT_DATABASE_MAX_CONNECTIONS};
pub use startup::{run, serve};
pub use state::AppState;
