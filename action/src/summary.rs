//! What a build looks like on the run's summary page: the ladder of stages with a mark each,
//! where this run resumed, the attempt, and links to the runs that did the work and to the
//! dashboard. Pure: a [`Build`] and its history in, Markdown out.

use buildstate_domain::resumes::Resume;
use buildstate_domain::wire::{Build, HistoryEntry};
use buildstate_domain::{BuildStatus, EventKind, StateCode};

/// The codes of the stages that are done (completed, or skipped by a pipeline that jumps past
/// them): every code below the build's state, and the state itself once the build completed.
pub fn completed_codes(build: &Build) -> Vec<u8> {
    StateCode::all()
        .filter(|code| build.has_completed(*code))
        .map(StateCode::value)
        .collect()
}

/// The codes of the stages still to do, the build's current one included unless it completed.
pub fn pending_codes(build: &Build) -> Vec<u8> {
    let done = completed_codes(build);
    StateCode::all()
        .map(StateCode::value)
        .filter(|code| !done.contains(code))
        .collect()
}

/// The attempt the build's current stage is on: one more than its failures.
pub fn attempt(build: &Build) -> u32 {
    build.failures + 1
}

/// The history entry that finished `stage` (completed it, or recorded it skipped by a jump),
/// the newest one if a reset made it run twice; `None` when no entry did.
pub fn finished_by(history: &[HistoryEntry], stage: StateCode) -> Option<&HistoryEntry> {
    history.iter().rev().find(|entry| {
        entry.state == stage && matches!(entry.kind, EventKind::Completed | EventKind::Skipped)
    })
}

/// The stage this run started working at: the state of the first history entry it recorded
/// (`source` is the run's own, attempt included).
pub fn resumed_at(history: &[HistoryEntry], source: Option<&str>) -> Option<StateCode> {
    let source = source?;
    history
        .iter()
        .find(|entry| entry.source.as_deref() == Some(source) && entry.kind != EventKind::Started)
        .map(|entry| entry.state)
}

/// The build's latest resume when this run (`source`, attempt included) made it: the report
/// that resumed (`seq`) is this run's. The numbers are the server's record.
pub fn resume_by<'b>(
    build: &'b Build,
    history: &[HistoryEntry],
    source: Option<&str>,
) -> Option<&'b Resume> {
    let resume = build.last_resume.as_ref()?;
    let source = source?;
    history
        .iter()
        .any(|entry| entry.seq == resume.seq && entry.source.as_deref() == Some(source))
        .then_some(resume)
}

/// Whether this run (`source`, attempt included) started the build: it recorded the build's
/// `started` entry. The creation also completes stage 0 under the same source, which is no
/// resumption.
pub fn started_by(history: &[HistoryEntry], source: Option<&str>) -> bool {
    source.is_some_and(|source| {
        history.iter().any(|entry| {
            entry.kind == EventKind::Started && entry.source.as_deref() == Some(source)
        })
    })
}

/// A source as Markdown: a GitHub run URL as "run N, attempt M" linked, another URL linked,
/// anything else as code.
pub fn source_link(source: &str) -> String {
    if !(source.starts_with("https://") || source.starts_with("http://")) {
        return format!("`{}`", cell(source).replace('`', "'"));
    }
    let label = match source.split_once("/actions/runs/") {
        Some((_, rest)) => {
            let mut parts = rest.split('/');
            let run = parts.next().unwrap_or_default();
            match (parts.next(), parts.next()) {
                (Some("attempts"), Some(attempt)) => format!("run {run}, attempt {attempt}"),
                _ => format!("run {run}"),
            }
        }
        None => source.to_owned(),
    };
    format!(
        "[{}]({})",
        cell(&label),
        source.replace(' ', "%20").replace(')', "%29")
    )
}

/// Text safe inside a table cell: one line, no unescaped `|`.
fn cell(text: &str) -> String {
    text.replace(['\r', '\n'], " ").replace('|', "\\|")
}

/// Facts around the ladder that the build does not hold.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Where to see the build: the dashboard or the API's page for it.
    pub dashboard_url: Option<String>,
    /// This run's source, attempt included, to find where it resumed.
    pub source: Option<String>,
    /// `GITHUB_RUN_ATTEMPT`.
    pub run_attempt: Option<String>,
    /// From `start`: whether an unfinished build was resumed.
    pub resumed: Option<bool>,
}

/// The mark and words for one stage.
fn stage_mark(build: &Build, history: &[HistoryEntry], code: StateCode) -> (&'static str, String) {
    if build.has_completed(code) {
        return match finished_by(history, code) {
            Some(entry) if entry.kind == EventKind::Skipped => {
                ("⏭️", "not used (jumped past)".into())
            }
            _ => ("✅", "completed".into()),
        };
    }
    if code > build.state {
        return ("⬜", "pending".into());
    }
    let failures = build.failures;
    match build.status {
        BuildStatus::Running if failures > 0 => (
            "🔁",
            format!("next, attempt {} after {failures} failure(s)", failures + 1),
        ),
        BuildStatus::Running => ("▶️", "next".into()),
        BuildStatus::InProgress => ("⏳", format!("in progress, attempt {}", failures + 1)),
        BuildStatus::Failed => ("❌", format!("failed {failures} time(s), will be retried")),
        BuildStatus::Blocked => ("⛔", format!("blocked after {failures} failure(s)")),
        BuildStatus::Cancelled => ("🚫", "cancelled".into()),
        BuildStatus::Completed => ("✅", "completed".into()),
    }
}

/// The build's ladder as Markdown: a heading, one line of facts, a table of every stage.
pub fn ladder(build: &Build, history: &[HistoryEntry], context: &Context) -> String {
    let name = build
        .key
        .as_ref()
        .map(|key| key.to_string())
        .unwrap_or_else(|| format!("{}/{}", build.platform, build.image_type));
    let mut text = format!(
        "### buildstate: `{}` (build `{}`)\n\n",
        cell(&name),
        build.id
    );
    let mut facts = vec![format!(
        "**{}** at stage {} ({})",
        build.status,
        build.state,
        cell(&build.state_name)
    )];
    let source = context.source.as_deref();
    let started_here = context.resumed == Some(false)
        || (context.resumed.is_none() && started_by(history, source));
    match (context.resumed, resumed_at(history, source)) {
        _ if started_here => facts.push("started by this run".into()),
        (_, Some(stage)) => facts.push(format!(
            "this run resumed at stage {stage} ({})",
            stage.default_name()
        )),
        (Some(true), None) => facts.push(format!("resumed at stage {}", build.state)),
        (Some(false) | None, None) => {}
    }
    facts.push(format!("stage attempt {}", attempt(build)));
    if let Some(run_attempt) = &context.run_attempt {
        facts.push(format!("workflow run attempt {}", cell(run_attempt)));
    }
    if let Some(url) = &context.dashboard_url {
        facts.push(format!("[dashboard]({url})"));
    }
    text.push_str(&facts.join(" · "));
    if let Some(resume) = resume_by(build, history, source) {
        text.push_str(&format!("\n\n⏩ **{}**", resume.describe()));
    }
    text.push_str("\n\n| | stage | | status | done in |\n|---|---:|---|---|---|\n");
    for code in StateCode::all() {
        let (mark, words) = stage_mark(build, history, code);
        let stage_name = if code == build.state {
            build.state_name.clone()
        } else {
            code.default_name().to_owned()
        };
        let done_in = if code <= build.state {
            finished_by(history, code)
                .and_then(|entry| entry.source.as_deref())
                .map(source_link)
                .unwrap_or_default()
        } else {
            String::new()
        };
        text.push_str(&format!(
            "| {mark} | {code} | {} | {words} | {done_in} |\n",
            cell(&stage_name)
        ));
    }
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone as _, Utc};

    fn build(state: u8, status: BuildStatus, failures: u32) -> Build {
        let at = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .expect("time");
        let state = StateCode::new(i64::from(state)).expect("code");
        Build {
            id: "b_1".parse().expect("id"),
            key: Some("aws/rhel8".parse().expect("key")),
            platform: "aws".parse().expect("platform"),
            image_type: "rhel8".parse().expect("type"),
            description: None,
            labels: Default::default(),
            state,
            state_name: state.default_name().to_owned(),
            phase: state.phase(),
            status,
            failures,
            max_retries: 3,
            next_attempt_at: None,
            last_message: None,
            last_seq: 1,
            retry_due_seq: None,
            created_at: at,
            updated_at: at,
            outputs: Default::default(),
            lease: None,
            last_resume: None,
            reopened_until: None,
            retry_policy: None,
        }
    }

    fn entry(seq: i64, state: u8, kind: EventKind, source: &str) -> HistoryEntry {
        HistoryEntry {
            seq,
            state: StateCode::new(i64::from(state)).expect("code"),
            kind,
            message: None,
            attempt: Some(1),
            reported_by: None,
            token_id: None,
            source: Some(source.to_owned()),
            recorded_at: Utc
                .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .expect("time"),
            outputs: None,
        }
    }

    const RUN1: &str = "https://github.com/org/images/actions/runs/7/attempts/1";
    const RUN2: &str = "https://github.com/org/images/actions/runs/7/attempts/2";

    #[test]
    fn completed_and_pending_codes_split_the_ladder_at_the_state() {
        let running = build(15, BuildStatus::Failed, 1);
        assert_eq!(completed_codes(&running), [0, 5, 10]);
        assert_eq!(pending_codes(&running).first(), Some(&15));
        assert_eq!(pending_codes(&running).len(), 18);
        let done = build(100, BuildStatus::Completed, 0);
        assert_eq!(completed_codes(&done).len(), 21);
        assert!(pending_codes(&done).is_empty());
    }

    #[test]
    fn a_stage_was_finished_by_its_newest_completing_entry() {
        let history = [
            entry(1, 0, EventKind::Started, RUN1),
            entry(2, 0, EventKind::Completed, RUN1),
            entry(3, 5, EventKind::Skipped, RUN1),
            entry(4, 10, EventKind::Failed, RUN1),
            entry(5, 10, EventKind::Completed, RUN2),
        ];
        let stage = |code| StateCode::new(code).expect("code");
        assert_eq!(finished_by(&history, stage(10)).map(|e| e.seq), Some(5));
        assert_eq!(
            finished_by(&history, stage(5)).map(|e| e.kind),
            Some(EventKind::Skipped)
        );
        assert_eq!(finished_by(&history, stage(15)), None);
        assert_eq!(resumed_at(&history, Some(RUN2)), Some(stage(10)));
        assert_eq!(resumed_at(&history, Some("elsewhere")), None);
        assert!(started_by(&history, Some(RUN1)));
        assert!(!started_by(&history, Some(RUN2)));
        assert!(!started_by(&history, None));
    }

    #[test]
    fn the_attempt_that_started_the_build_says_so_not_resumed_at_stage_0() {
        let history = [
            entry(1, 0, EventKind::Started, RUN1),
            entry(2, 0, EventKind::Completed, RUN1),
            entry(3, 5, EventKind::InProgress, RUN1),
        ];
        let context = Context {
            dashboard_url: None,
            source: Some(RUN1.into()),
            run_attempt: Some("1".into()),
            resumed: None,
        };
        let text = ladder(&build(5, BuildStatus::InProgress, 0), &history, &context);
        let facts = text.lines().nth(2).expect("the facts line");
        assert_eq!(
            facts,
            "**in_progress** at stage 5 (kickstart) · started by this run · stage attempt 1 · \
             workflow run attempt 1"
        );
    }

    #[test]
    fn a_run_that_resumed_says_what_it_saved_from_the_servers_record() {
        let history = [
            entry(1, 0, EventKind::Started, RUN1),
            entry(2, 0, EventKind::Completed, RUN1),
            entry(3, 5, EventKind::Failed, RUN1),
            entry(4, 5, EventKind::InProgress, RUN2),
        ];
        let mut resumed = build(5, BuildStatus::InProgress, 0);
        resumed.last_resume = Some(Resume {
            stage: StateCode::new(5).expect("code"),
            at: history[3].recorded_at,
            seq: 4,
            stages_not_rerun: 1,
            saved_ms: 133 * 60_000,
            unknown_durations: 0,
        });
        let context = |source: &str| Context {
            source: Some(source.into()),
            ..Context::default()
        };
        let text = ladder(&resumed, &history, &context(RUN2));
        assert_eq!(
            text.lines().nth(4),
            Some("⏩ **resumed at stage 5: 1 stage not re-run, about 2 h 13 min saved**")
        );
        // Another run's summary does not claim it.
        let other = ladder(&resumed, &history, &context(RUN1));
        assert!(!other.contains("not re-run"), "{other}");
    }

    #[test]
    fn sources_link_to_their_run() {
        assert_eq!(source_link(RUN2), format!("[run 7, attempt 2]({RUN2})"));
        assert_eq!(
            source_link("https://github.com/o/r/actions/runs/9"),
            "[run 9](https://github.com/o/r/actions/runs/9)"
        );
        assert_eq!(source_link("laptop | x"), "`laptop \\| x`");
    }

    #[test]
    fn the_ladder_marks_every_stage_and_links_the_run_that_did_it() {
        let history = [
            entry(1, 0, EventKind::Started, RUN1),
            entry(2, 0, EventKind::Completed, RUN1),
            entry(3, 5, EventKind::Skipped, RUN1),
            entry(4, 10, EventKind::Failed, RUN1),
            entry(5, 10, EventKind::Completed, RUN2),
            entry(6, 15, EventKind::InProgress, RUN2),
        ];
        let context = Context {
            dashboard_url: Some("https://bs.example/builds/b_1".into()),
            source: Some(RUN2.into()),
            run_attempt: Some("2".into()),
            resumed: None,
        };
        let text = ladder(&build(15, BuildStatus::InProgress, 0), &history, &context);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "### buildstate: `aws/rhel8` (build `b_1`)");
        assert_eq!(
            lines[2],
            "**in_progress** at stage 15 (base configuration) · this run resumed at stage 10 \
             (green image (bootable, SSH)) · stage attempt 1 · workflow run attempt 2 · \
             [dashboard](https://bs.example/builds/b_1)"
        );
        // heading, blank, facts, blank, table head (2), 21 stages, the closing blank line
        assert_eq!(lines.len(), 6 + 21 + 1);
        assert_eq!(
            lines[6],
            format!("| ✅ | 0 | triggered | completed | [run 7, attempt 1]({RUN1}) |")
        );
        assert!(lines[7].starts_with("| ⏭️ | 5 | kickstart | not used"));
        assert!(lines[8].ends_with(&format!("[run 7, attempt 2]({RUN2}) |")));
        assert_eq!(
            lines[9],
            "| ⏳ | 15 | base configuration | in progress, attempt 1 |  |"
        );
        assert_eq!(lines[10], "| ⬜ | 20 | cloud provider setup | pending |  |");
    }
}
