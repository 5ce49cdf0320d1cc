//! The per-process cache of authenticated tokens ([`RecentTokens`]): filled by authentication
//! (`api::extract`), emptied by revocations, here and, on PostgreSQL, elsewhere
//! ([`crate::peers`]).

use std::time::Duration;

use crate::db::Actor;

/// A per-process cache of authenticated tokens, kept for a short time (a second by default).
///
/// Every request needs its token checked; looking it up in the database each time costs a
/// fifth of a report's database work. Revoking through this process forgets every entry at
/// once; on PostgreSQL a revocation through another process does too, as soon as its
/// notification arrives ([`crate::peers`]); the window bounds how long a token revoked
/// elsewhere can work here should that notification be missed. Expiry is checked on every
/// request.
#[derive(Clone)]
pub struct RecentTokens(Option<moka::sync::Cache<String, Actor>>);

impl std::fmt::Debug for RecentTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are token hashes: nothing to show.
        f.write_str("RecentTokens")
    }
}

impl RecentTokens {
    /// Keeps each token for `ttl`; zero turns the cache off.
    pub fn new(ttl: Duration) -> Self {
        RecentTokens((!ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build()
        }))
    }

    pub fn get(&self, secret_hash: &str) -> Option<Actor> {
        self.0.as_ref()?.get(secret_hash)
    }

    pub fn remember(&self, secret_hash: String, actor: &Actor) {
        if let Some(cache) = &self.0 {
            cache.insert(secret_hash, actor.clone());
        }
    }

    /// After a revocation: no cached token may outlive it here.
    pub fn forget_all(&self) {
        if let Some(cache) = &self.0 {
            cache.invalidate_all();
        }
    }
}
