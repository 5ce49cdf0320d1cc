//! `check`: the transitions of the tracked build as versions, oldest first.
//!
//! No version given: the latest transition only. A version of the tracked build: it and every
//! later one (at most [`CHECK_CAP`] per check; the next check goes on from the newest). A
//! version of an earlier build of the line: the tracked build's transitions (the newest
//! [`CHECK_CAP`]). A version this resource did not emit, or that the build's history does not
//! have: the latest. Nothing tracked yet: no versions.

use buildstate_client::api::{Client, ClientError};
use buildstate_domain::limits::HISTORY_PAGE_MAX;
use buildstate_domain::wire::{Build, BuildQuery, HistoryEntry, HistoryQuery};
use buildstate_domain::BuildId;
use serde_json::Value;

use crate::connection::describe;
use crate::log::Log;
use crate::schema::{CheckRequest, Filter, GivenVersion, Source, Version};

/// The most versions one check emits.
pub const CHECK_CAP: usize = 100;

/// Runs `check`.
pub async fn check(client: &Client, request: &CheckRequest, log: &Log) -> Result<Value, String> {
    let source = &request.source;
    source.validate()?;
    log.set_debug(source.debug);
    let filter = source.filter.clone().unwrap_or_default();
    let Some(build) = tracked_build(client, source, log).await? else {
        log.debug(|| "no build tracked yet".to_owned());
        return Ok(Value::Array(Vec::new()));
    };
    let id = &build.id;
    let versions = match &request.version {
        Some(GivenVersion::Known(version)) if version.build_id == id.as_str() => {
            match from_version(client, id, version, &filter).await? {
                Some(entries) => entries,
                None => {
                    log.debug(|| format!("version seq {} not in the history; latest", version.seq));
                    latest(client, &build, &filter).await?
                }
            }
        }
        Some(GivenVersion::Known(version)) => {
            log.debug(|| {
                format!(
                    "version of build `{}`; now tracking `{id}`",
                    version.build_id
                )
            });
            newest(client, id, &filter).await?
        }
        Some(GivenVersion::Unknown(_)) | None => latest(client, &build, &filter).await?,
    };
    let versions: Vec<Version> = versions
        .iter()
        .map(|entry| Version::of(id, entry))
        .collect();
    serde_json::to_value(versions).map_err(|error| format!("cannot encode the versions: {error}"))
}

/// The build `source` tracks: its `build_id`, else the newest build of its line.
pub async fn tracked_build(
    client: &Client,
    source: &Source,
    log: &Log,
) -> Result<Option<Build>, String> {
    if let Some(id) = &source.build_id {
        log.debug(|| format!("tracking build `{id}`"));
        return client
            .get_build(id)
            .await
            .map(Some)
            .map_err(|error| describe(&error));
    }
    let query = BuildQuery {
        platform: source.platform.as_ref().map(ToString::to_string),
        image_type: source.image_type.as_ref().map(ToString::to_string),
        key: source.key.as_ref().map(ToString::to_string),
        limit: Some(1),
        ..BuildQuery::default()
    };
    log.debug(|| format!("tracking the newest build of {query:?}"));
    let page = client
        .list_builds(&query)
        .await
        .map_err(|error| describe(&error))?;
    Ok(page.builds.into_iter().next())
}

async fn page(
    client: &Client,
    id: &BuildId,
    after: i64,
    limit: u32,
) -> Result<(Vec<HistoryEntry>, Option<i64>), String> {
    let query = HistoryQuery {
        after: Some(after),
        limit: Some(limit),
    };
    client
        .history_page(id, &query)
        .await
        .map(|page| (page.entries, page.next_after))
        .map_err(|error: ClientError| describe(&error))
}

/// The given version and the matching transitions after it, or `None` when the history has no
/// such entry.
async fn from_version(
    client: &Client,
    id: &BuildId,
    version: &Version,
    filter: &Filter,
) -> Result<Option<Vec<HistoryEntry>>, String> {
    let seq = version.seq();
    let limit = u32::try_from(CHECK_CAP).unwrap_or(HISTORY_PAGE_MAX);
    let (entries, mut next) = page(client, id, seq - 1, limit).await?;
    let mut entries = entries.into_iter();
    let Some(given) = entries.next().filter(|entry| {
        entry.seq == seq
            && entry.state.to_string() == version.state
            && entry.kind.as_str() == version.event
    }) else {
        return Ok(None);
    };
    let mut found = vec![given];
    found.extend(entries.filter(|entry| filter.matches(entry)));
    // A filter may drop a whole page: read on until something matches, so that the next check
    // does not start from the same version again.
    while found.len() == 1 {
        let Some(after) = next else { break };
        let (more, after_more) = page(client, id, after, HISTORY_PAGE_MAX).await?;
        found.extend(more.into_iter().filter(|entry| filter.matches(entry)));
        next = after_more;
    }
    found.truncate(CHECK_CAP);
    Ok(Some(found))
}

/// The latest transition that passes `filter`, if any.
async fn latest(
    client: &Client,
    build: &Build,
    filter: &Filter,
) -> Result<Vec<HistoryEntry>, String> {
    if filter.events.is_empty() && filter.states.is_empty() {
        let (entries, _) = page(client, &build.id, build.last_seq - 1, 1).await?;
        return Ok(entries);
    }
    let mut newest = newest(client, &build.id, filter).await?;
    Ok(newest.pop().into_iter().collect())
}

/// The newest [`CHECK_CAP`] transitions that pass `filter`, oldest first.
async fn newest(
    client: &Client,
    id: &BuildId,
    filter: &Filter,
) -> Result<Vec<HistoryEntry>, String> {
    let mut kept: Vec<HistoryEntry> = Vec::new();
    let mut after = 0;
    loop {
        let (entries, next) = page(client, id, after, HISTORY_PAGE_MAX).await?;
        kept.extend(entries.into_iter().filter(|entry| filter.matches(entry)));
        let excess = kept.len().saturating_sub(CHECK_CAP);
        kept.drain(..excess);
        match next {
            Some(next) => after = next,
            None => return Ok(kept),
        }
    }
}
