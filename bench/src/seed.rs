//! Seeds a buildstate database with a large, realistic-looking history for the reports
//! benchmark: builds on several platforms and image types, created over the last 90 days, each
//! walking the 21 stages as a pipeline would (stages its pipeline does not use are skipped,
//! some stages are reported `in_progress` first, failures are retried after a backoff and block
//! the build after `max_retries`), some cancelled, some abandoned mid-stage (stuck), the newest
//! still running. Each run after a failure is a resume, with what it saved (`build_resumes`).
//!
//! Rows go straight into the tables, bypassing the API (which would take hours for 2 million
//! transitions): PostgreSQL with `COPY ... FROM STDIN`, SQLite with multi-row `INSERT`s in
//! large transactions. The schema is the server's own: the caller starts `bldst server` on the
//! database first, which applies the migrations; the rows are the store's own
//! (`buildstate_server::db::{NewBuildRow, HistoryRow}`, with their column lists), so a column the
//! store starts writing is one the seeder must fill. Generation is deterministic (a fixed seed).

use std::borrow::Cow;

use anyhow::Context as _;
use buildstate_domain::reports::completion_durations;
use buildstate_domain::resumes::{saved_before, PassEntry, PreviousEntry, Saved};
use buildstate_domain::{EventKind, StateCode};
use buildstate_server::db::{
    ColumnValue, HistoryRow, NewBuildRow, ResumeRow, HISTORY_ROW_WIDTH, NEW_BUILD_ROW_WIDTH,
    RESUME_ROW_WIDTH,
};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use sqlx::postgres::PgPoolCopyExt as _;

/// How many builds are generated and written at a time (bounds memory).
const CHUNK_BUILDS: usize = 5_000;
/// Bound values per multi-row `INSERT` on SQLite, at most (its limit is 32 766 variables).
const SQLITE_VALUES_PER_INSERT: usize = 15_000;

const DAY_MS: i64 = 86_400_000;

/// (name, weight, how much more often its builds fail)
const PLATFORMS: [(&str, u32, f64); 4] = [
    ("aws", 45, 1.0),
    ("azure", 25, 1.2),
    ("gcp", 20, 0.9),
    ("vsphere", 10, 1.8),
];
const IMAGE_TYPES: [(&str, u32, f64); 6] = [
    ("rhel8", 25, 1.0),
    ("rhel9", 25, 0.9),
    ("ubuntu-22.04", 20, 1.0),
    ("ubuntu-24.04", 15, 1.1),
    ("windows-2022", 10, 1.6),
    ("debian-12", 5, 0.8),
];

/// One history row.
struct Entry {
    seq: i64,
    state: i64,
    kind: &'static str,
    message: Option<&'static str>,
    attempt: Option<i64>,
    recorded_at: i64,
    /// The stage's duration on a completion, as the server stores it (migration 0008).
    duration_ms: Option<i64>,
}

/// One build row and its history.
struct SeededBuild {
    id: String,
    key: String,
    platform: &'static str,
    image_type: &'static str,
    labels: String,
    state: i64,
    status: &'static str,
    failures: i64,
    next_attempt_at: Option<i64>,
    last_message: Option<&'static str>,
    created_at: i64,
    updated_at: i64,
    history: Vec<Entry>,
    /// When the last entry that was not a skipped stage was recorded.
    last_record_at: Option<i64>,
    /// Each time the pipeline ran again after a failure: what that resume saved, as the server
    /// records it (`build_resumes`, migration 0014).
    resumes: Vec<SeededResume>,
}

/// One `build_resumes` row.
struct SeededResume {
    seq: i64,
    at: i64,
    stage: i64,
    saved: Saved,
}

/// What was written.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Seeded {
    pub builds: u64,
    pub transitions: u64,
    pub completed: u64,
    pub blocked: u64,
    pub cancelled: u64,
    pub unfinished: u64,
    pub resumes: u64,
}

/// How a stage usually goes: mean duration in seconds and chance of failing per attempt.
fn stage_profile(code: i64) -> (f64, f64) {
    match code {
        10 => (900.0, 0.05), // the green image (Packer)
        15 => (600.0, 0.04), // base configuration
        30 | 35 => (300.0, 0.02),
        55 => (1200.0, 0.08), // tests
        100 => (30.0, 0.005),
        _ => (180.0, 0.01),
    }
}

const FAILURE_MESSAGES: [&str; 6] = [
    "packer: timeout waiting for SSH",
    "ansible: unreachable host after 3 attempts",
    "yum: mirror returned 503",
    "tests: 2 of 148 checks failed (cis-1.1.2, cis-5.2.4)",
    "terraform: quota exceeded for resource instances",
    "winrm: connection refused",
];

struct Generator {
    rng: StdRng,
    now_ms: i64,
    max_retries: i64,
    in_progress_chance: f64,
}

impl Generator {
    fn pick<T: Copy>(&mut self, choices: &[(T, u32, f64)]) -> (T, f64) {
        let total: u32 = choices.iter().map(|(_, weight, _)| weight).sum();
        let mut roll = self.rng.gen_range(0..total);
        for (value, weight, factor) in choices {
            if roll < *weight {
                return (*value, *factor);
            }
            roll -= weight;
        }
        let (value, _, factor) = choices[0];
        (value, factor)
    }

    fn id(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut id = String::from("b_");
        for _ in 0..20 {
            id.push(ALPHABET[self.rng.gen_range(0..ALPHABET.len())] as char);
        }
        id
    }

    /// A duration around `mean` seconds (0.5× to 2×), in milliseconds.
    fn duration_ms(&mut self, mean: f64) -> i64 {
        (mean * self.rng.gen_range(0.5..2.0) * 1000.0) as i64
    }

    fn build(&mut self, number: usize) -> SeededBuild {
        let (platform, platform_factor) = self.pick(&PLATFORMS);
        let (image_type, image_factor) = self.pick(&IMAGE_TYPES);
        let fail_factor = platform_factor * image_factor;
        let created_at = self.now_ms - self.rng.gen_range(0..90 * DAY_MS);
        let sha: u32 = self.rng.gen();
        // Which stages this pipeline uses (0, 10 and 100 always).
        let uses = |code: i64, rng: &mut StdRng| matches!(code, 10 | 100) || rng.gen_bool(0.45);
        // At a random stage: 2% are abandoned mid-stage (stuck), 2% cancelled, 3% break.
        let fate: f64 = self.rng.gen();
        let fate_stage = self.rng.gen_range(1..20) * 5;
        let mut build = SeededBuild {
            id: self.id(),
            key: format!("{platform}/{image_type}/{sha:08x}{number}"),
            platform,
            image_type,
            labels: format!("{{\"git_sha\":\"{sha:08x}\"}}"),
            state: 5,
            status: "running",
            failures: 0,
            next_attempt_at: None,
            last_message: None,
            created_at,
            updated_at: created_at,
            history: Vec::with_capacity(32),
            last_record_at: None,
            resumes: Vec::new(),
        };
        let mut t = created_at;
        build.push(0, "started", None, None, t);
        build.push(
            0,
            "completed",
            Some("triggered when the build was created"),
            None,
            t,
        );
        let mut skipped: Vec<i64> = Vec::new();
        for code in (5..=100).step_by(5) {
            if !uses(code, &mut self.rng) {
                skipped.push(code);
                continue;
            }
            let (mean, fail_chance) = stage_profile(code);
            t += self.rng.gen_range(5_000..120_000);
            if t > self.now_ms {
                return build; // still running: the next stage has not been reported yet
            }
            // The report on `code` records the skipped stages before it first.
            for skipped_code in skipped.drain(..) {
                build.push(
                    skipped_code,
                    "skipped",
                    Some("not used by this pipeline: skipped by a later report"),
                    None,
                    t,
                );
            }
            build.state = code;
            let mut attempt = 1;
            loop {
                let abandoned = fate < 0.02 && code == fate_stage;
                if abandoned || self.rng.gen_bool(self.in_progress_chance) {
                    build.push(code, "in_progress", None, Some(attempt), t);
                    build.status = "in_progress";
                    if abandoned {
                        return build;
                    }
                }
                t += self.duration_ms(mean);
                if t > self.now_ms {
                    return build;
                }
                if (0.02..0.04).contains(&fate) && code == fate_stage {
                    build.push(
                        code,
                        "cancelled",
                        Some("superseded by a newer commit"),
                        None,
                        t,
                    );
                    build.status = "cancelled";
                    return build;
                }
                // 3% meet a lasting problem at one stage (a broken mirror, a bad base image):
                // they fail there again and again, and most end up blocked.
                let broken = (0.04..0.07).contains(&fate) && code == fate_stage;
                let chance = if broken {
                    0.85
                } else {
                    fail_chance * fail_factor
                };
                if self.rng.gen_bool(chance.min(0.9)) {
                    let message = FAILURE_MESSAGES[self.rng.gen_range(0..FAILURE_MESSAGES.len())];
                    build.push(code, "failed", Some(message), Some(attempt), t);
                    build.failures += 1;
                    if build.failures > self.max_retries {
                        build.status = "blocked";
                        return build;
                    }
                    build.status = "failed";
                    // Backoff (30 s × 2^(n-1)), then whenever the pipeline runs again.
                    let backoff = 30_000 * (1 << (build.failures - 1));
                    build.next_attempt_at = Some(t + backoff);
                    t += backoff + self.rng.gen_range(60_000..4 * 3_600_000);
                    if t > self.now_ms {
                        return build;
                    }
                    build.next_attempt_at = None;
                    // The pipeline runs again: it resumes at the failed stage.
                    build.resume_at(code, t);
                    attempt += 1;
                    continue;
                }
                build.push(code, "completed", None, Some(attempt), t);
                build.failures = 0;
                build.status = if code == 100 { "completed" } else { "running" };
                if code < 100 {
                    build.state = code + 5;
                }
                break;
            }
        }
        build
    }
}

impl SeededBuild {
    /// Records the resume at `stage` of a run whose first report comes at `at`, with what the
    /// domain's rule says it saved from the history so far.
    fn resume_at(&mut self, stage: i64, at: i64) {
        let time =
            |millis: i64| chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default();
        let code = |code: i64| StateCode::new(code).unwrap_or(StateCode::TRIGGERED);
        let attempt = |attempt: Option<i64>| attempt.and_then(|n| u32::try_from(n).ok());
        let kind = |kind: &str| kind.parse::<EventKind>().unwrap_or(EventKind::Started);
        let entries = self
            .history
            .iter()
            .enumerate()
            .filter(|(_, entry)| matches!(entry.kind, "completed" | "skipped"))
            .map(|(index, entry)| PassEntry {
                seq: entry.seq,
                state: code(entry.state),
                kind: kind(entry.kind),
                attempt: attempt(entry.attempt),
                at: time(entry.recorded_at),
                previous: index.checked_sub(1).map(|before| {
                    let before = &self.history[before];
                    PreviousEntry {
                        state: code(before.state),
                        kind: kind(before.kind),
                        attempt: attempt(before.attempt),
                        at: time(before.recorded_at),
                    }
                }),
            });
        let saved = saved_before(code(stage), entries);
        if saved.stages_not_rerun > 0 {
            self.resumes.push(SeededResume {
                seq: self.history.len() as i64 + 1,
                at,
                stage,
                saved,
            });
        }
    }

    fn push(
        &mut self,
        state: i64,
        kind: &'static str,
        message: Option<&'static str>,
        attempt: Option<i64>,
        at: i64,
    ) {
        let seq = self.history.len() as i64 + 1;
        let millis = chrono::DateTime::from_timestamp_millis;
        let duration_ms = kind
            .parse::<EventKind>()
            .ok()
            .and_then(|kind| {
                let previous = self.last_record_at.and_then(millis);
                completion_durations(previous, [(kind, millis(at)?)]).pop()
            })
            .flatten();
        if kind != "skipped" {
            self.last_record_at = Some(at);
        }
        self.history.push(Entry {
            seq,
            state,
            kind,
            message,
            attempt,
            recorded_at: at,
            duration_ms,
        });
        if message.is_some() || kind != "skipped" {
            self.last_message = message;
        }
        self.updated_at = at;
    }
}

/// Writes `builds` builds to the database at `url` (migrated already), `seed` fixing the
/// randomness; `in_progress_chance` is how often a stage is reported in progress first.
pub async fn seed(
    url: &str,
    builds: usize,
    in_progress_chance: f64,
    seed: u64,
) -> anyhow::Result<Seeded> {
    let mut generator = Generator {
        rng: StdRng::seed_from_u64(seed),
        now_ms: chrono::Utc::now().timestamp_millis(),
        max_retries: 3,
        in_progress_chance,
    };
    let mut store = Store::open(url).await?;
    let mut seeded = Seeded::default();
    let mut number = 0;
    while number < builds {
        let chunk: Vec<SeededBuild> = (number..(number + CHUNK_BUILDS).min(builds))
            .map(|n| generator.build(n))
            .collect();
        number += chunk.len();
        for build in &chunk {
            seeded.builds += 1;
            seeded.transitions += build.history.len() as u64;
            seeded.resumes += build.resumes.len() as u64;
            match build.status {
                "completed" => seeded.completed += 1,
                "blocked" => seeded.blocked += 1,
                "cancelled" => seeded.cancelled += 1,
                _ => seeded.unfinished += 1,
            }
        }
        store.write(&chunk).await?;
    }
    store.finish().await?;
    Ok(seeded)
}

enum Store {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Store {
    async fn open(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
            // A scratch database: durability does not matter while seeding.
            let options = options
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Off);
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .with_context(|| format!("failed to open {url}"))?;
            Ok(Store::Sqlite(pool))
        } else {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .with_context(|| format!("failed to connect to {url}"))?;
            Ok(Store::Postgres(pool))
        }
    }

    async fn write(&mut self, builds: &[SeededBuild]) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(pool) => write_sqlite(pool, builds).await,
            Store::Postgres(pool) => write_postgres(pool, builds).await,
        }
    }

    /// Fresh planner statistics, as a database that grew over months would have.
    async fn finish(self) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(pool) => {
                sqlx::query("ANALYZE").execute(&pool).await?;
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&pool)
                    .await?;
                pool.close().await;
            }
            Store::Postgres(pool) => {
                // VACUUM too: autovacuum would have marked a months-old history all-visible,
                // which index-only scans (the durations report's) depend on.
                sqlx::query("VACUUM ANALYZE builds").execute(&pool).await?;
                sqlx::query("VACUUM ANALYZE build_history")
                    .execute(&pool)
                    .await?;
                sqlx::query("VACUUM ANALYZE build_resumes")
                    .execute(&pool)
                    .await?;
                pool.close().await;
            }
        }
        Ok(())
    }
}

impl SeededBuild {
    /// The build's row, as the store writes it.
    fn row(&self) -> NewBuildRow<'_> {
        NewBuildRow {
            id: &self.id,
            build_key: Some(&self.key),
            platform: self.platform,
            image_type: self.image_type,
            description: None,
            labels: &self.labels,
            state: self.state,
            status: self.status,
            failures: self.failures,
            max_retries: 3,
            next_attempt_at: self.next_attempt_at,
            last_message: self.last_message,
            last_seq: self.history.len() as i64,
            created_at: self.created_at,
            updated_at: self.updated_at,
            retry_policy: None,
        }
    }

    /// The history's rows, as the store writes them.
    fn history_rows<'a>(&'a self, source: &'a str) -> impl Iterator<Item = HistoryRow<'a>> + 'a {
        self.history.iter().map(move |entry| HistoryRow {
            build_id: &self.id,
            seq: entry.seq,
            state: entry.state,
            kind: entry.kind,
            message: entry.message,
            attempt: entry.attempt,
            reported_by: Some("ci-bot"),
            token_id: None,
            source: Some(source),
            recorded_at: entry.recorded_at,
            outputs: None,
            duration_ms: entry.duration_ms,
        })
    }

    /// The resumes' rows, as the store keeps them for the savings report.
    fn resume_rows(&self) -> impl Iterator<Item = ResumeRow<'_>> + '_ {
        self.resumes.iter().map(move |resume| ResumeRow {
            build_id: &self.id,
            seq: resume.seq,
            resumed_at: resume.at,
            stage: resume.stage,
            platform: self.platform,
            image_type: self.image_type,
            stages_not_rerun: i64::from(resume.saved.stages_not_rerun),
            saved_ms: i64::try_from(resume.saved.saved_ms).unwrap_or(i64::MAX),
            unknown_durations: i64::from(resume.saved.unknown_durations),
        })
    }

    fn source(&self) -> String {
        format!(
            "https://ci.example.com/teams/images/pipelines/{}-{}",
            self.platform, self.image_type
        )
    }
}

/// Inserts `rows` (each `WIDTH` values for `columns`) into `table`, as many per statement as
/// SQLite allows.
async fn insert_sqlite<const WIDTH: usize>(
    transaction: &mut sqlx::SqliteConnection,
    table: &str,
    columns: &str,
    rows: Vec<[ColumnValue<'_>; WIDTH]>,
) -> anyhow::Result<()> {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let batch = rows.by_ref().take(SQLITE_VALUES_PER_INSERT / WIDTH);
        let mut insert = sqlx::QueryBuilder::new(format!("INSERT INTO {table} ({columns}) "));
        insert.push_values(batch, |mut row, values| {
            for value in values {
                match value {
                    ColumnValue::Text(Some(Cow::Borrowed(text))) => row.push_bind(Some(text)),
                    ColumnValue::Text(Some(Cow::Owned(text))) => row.push_bind(Some(text)),
                    ColumnValue::Text(None) => row.push_bind(None::<&str>),
                    ColumnValue::Integer(number) => row.push_bind(number),
                };
            }
        });
        insert.build().execute(&mut *transaction).await?;
    }
    Ok(())
}

async fn write_sqlite(pool: &sqlx::SqlitePool, builds: &[SeededBuild]) -> anyhow::Result<()> {
    let mut transaction = pool.begin().await?;
    let rows: Vec<[ColumnValue<'_>; NEW_BUILD_ROW_WIDTH]> =
        builds.iter().map(|build| build.row().values()).collect();
    insert_sqlite(&mut transaction, "builds", NewBuildRow::COLUMNS, rows).await?;
    let sources: Vec<String> = builds.iter().map(SeededBuild::source).collect();
    let rows: Vec<[ColumnValue<'_>; HISTORY_ROW_WIDTH]> = builds
        .iter()
        .zip(&sources)
        .flat_map(|(build, source)| build.history_rows(source).map(HistoryRow::values))
        .collect();
    insert_sqlite(&mut transaction, "build_history", HistoryRow::COLUMNS, rows).await?;
    let rows: Vec<[ColumnValue<'_>; RESUME_ROW_WIDTH]> = builds
        .iter()
        .flat_map(|build| build.resume_rows().map(ResumeRow::values))
        .collect();
    insert_sqlite(&mut transaction, "build_resumes", ResumeRow::COLUMNS, rows).await?;
    transaction.commit().await?;
    Ok(())
}

/// A row of `COPY … WITH (FORMAT csv)`: an empty field is NULL, text is quoted with `"` doubled.
fn push_csv_row<'a>(out: &mut String, values: impl IntoIterator<Item = ColumnValue<'a>>) {
    for (n, value) in values.into_iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        match value {
            ColumnValue::Text(Some(text)) => {
                out.push('"');
                out.push_str(&text.replace('"', "\"\""));
                out.push('"');
            }
            ColumnValue::Integer(Some(number)) => out.push_str(&number.to_string()),
            ColumnValue::Text(None) | ColumnValue::Integer(None) => {}
        }
    }
    out.push('\n');
}

async fn copy_postgres(
    pool: &sqlx::PgPool,
    table: &str,
    columns: &str,
    rows: &str,
) -> anyhow::Result<()> {
    let mut copy = pool
        .copy_in_raw(&format!(
            "COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)"
        ))
        .await?;
    copy.send(rows.as_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

async fn write_postgres(pool: &sqlx::PgPool, builds: &[SeededBuild]) -> anyhow::Result<()> {
    let mut rows = String::with_capacity(builds.len() * 300);
    for build in builds {
        push_csv_row(&mut rows, build.row().values());
    }
    copy_postgres(pool, "builds", NewBuildRow::COLUMNS, &rows).await?;

    let mut rows = String::with_capacity(builds.len() * 25 * 120);
    for build in builds {
        let source = build.source();
        for row in build.history_rows(&source) {
            push_csv_row(&mut rows, row.values());
        }
    }
    copy_postgres(pool, "build_history", HistoryRow::COLUMNS, &rows).await?;

    let mut rows = String::new();
    for build in builds {
        for row in build.resume_rows() {
            push_csv_row(&mut rows, row.values());
        }
    }
    copy_postgres(pool, "build_resumes", ResumeRow::COLUMNS, &rows).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_row_quotes_text_and_leaves_nulls_empty() {
        let mut out = String::new();
        push_csv_row(
            &mut out,
            [
                ColumnValue::Text(Some(Cow::Borrowed("say \"hi\", twice"))),
                ColumnValue::Text(None),
                ColumnValue::Integer(Some(42)),
                ColumnValue::Integer(None),
            ],
        );
        assert_eq!(out, "\"say \"\"hi\"\", twice\",,42,\n");
    }
}
