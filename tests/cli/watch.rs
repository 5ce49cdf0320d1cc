//! `bldst build watch` against the real server: one line per transition until the build
//! settles (exit 0 completed, 12 blocked), JSON lines with `-o json`, a replay with
//! `--after`, and a connection cut mid-stream resumed with `Last-Event-ID` (through a local
//! proxy that drops the first stream after its first event).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use buildstate_domain::wire::BuildEvent;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStderr};

use crate::assert_cli_snapshot;
use crate::helpers::{json, Bldst, Outcome};
use crate::support::TestApp;

crate::on_both_backends!(
    watch_prints_each_transition_until_the_build_completes,
    watch_prints_json_lines_and_exits_12_when_the_build_is_blocked,
    watch_of_a_settled_build_ends_at_once_or_replays_it_with_after,
    watch_resumes_a_dropped_stream_with_last_event_id_missing_and_repeating_nothing,
);

/// How long a watch may take before the test calls it hung (never reached when it works).
const HANG: Duration = Duration::from_secs(60);

/// Starts `bldst ARGS` and waits until it says it is following, so what the test reports next
/// reaches it live.
async fn start_watch(bldst: &Bldst, args: &[&str]) -> (Child, BufReader<ChildStderr>, String) {
    let mut child = bldst.spawn(args);
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    tokio::time::timeout(HANG, stderr.read_line(&mut first))
        .await
        .expect("bldst build watch says what it follows")
        .expect("read stderr");
    assert!(first.starts_with("following build `b_"), "{first}");
    (child, stderr, first)
}

/// Waits for the watch to end and gathers what it printed.
async fn finish_watch(child: Child, mut stderr: BufReader<ChildStderr>, first: String) -> Outcome {
    let output = tokio::time::timeout(HANG, child.wait_with_output())
        .await
        .expect("bldst build watch ends when the build settles")
        .expect("bldst ran");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).await.expect("read stderr");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
        stderr: first + &rest,
    }
}

async fn watch_prints_each_transition_until_the_build_completes(app: TestApp) {
    // Arrange
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    let (child, stderr, first) = start_watch(&bldst, &["build", "watch", id.as_str()]).await;

    // Act
    bldst
        .run(&[
            "build",
            "update",
            id.as_str(),
            "--state",
            "0",
            "--status",
            "completed",
            "--message",
            "pipeline triggered",
        ])
        .await
        .ok();
    bldst.report(&id, 10, "in_progress").await;
    bldst
        .run(&[
            "build",
            "update",
            id.as_str(),
            "--state",
            "10",
            "--status",
            "failed",
            "--message",
            "`packer` exited with code 1 after 3s; the end of its stderr:\n==> amazon-ebs: waiting for SSH\nBuild 'amazon-ebs' errored: mirror timed out",
        ])
        .await
        .ok();
    bldst.report(&id, 10, "completed").await;
    bldst.report(&id, 100, "completed").await;
    let watched = finish_watch(child, stderr, first).await.ok();

    // Assert
    assert_cli_snapshot!("build_watch_lines", watched.stdout);
    let history = bldst
        .run(&["build", "history", id.as_str(), "-o", "json"])
        .await
        .ok();
    let page: buildstate_domain::wire::HistoryPage = json(&history.stdout);
    let started_seq = page.entries[0].seq;
    let expected: Vec<String> = page
        .entries
        .iter()
        .filter(|entry| entry.seq > started_seq)
        .map(|entry| format!("#{}", entry.seq))
        .collect();
    // A message's further lines are indented under its transition.
    let printed: Vec<String> = watched
        .stdout
        .lines()
        .filter(|line| !line.starts_with(' '))
        .map(|line| line.split("  ").nth(1).expect("a seq column").to_owned())
        .collect();
    assert_eq!(
        printed, expected,
        "every entry after the start, once, in order"
    );
}

async fn watch_prints_json_lines_and_exits_12_when_the_build_is_blocked(app: TestApp) {
    // Arrange
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&["--max-retries", "0"]).await;
    let (child, stderr, first) =
        start_watch(&bldst, &["build", "watch", id.as_str(), "--output", "json"]).await;

    // Act
    bldst.report(&id, 10, "in_progress").await;
    bldst.report(&id, 10, "failed").await;
    let watched = finish_watch(child, stderr, first).await.expect_code(12);

    // Assert
    let events: Vec<BuildEvent> = watched.stdout.lines().map(json).collect();
    let seen: Vec<(u8, &str, &str)> = events
        .iter()
        .map(|event| {
            (
                event.entry.state.value(),
                event.entry.kind.as_str(),
                event.build.status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            // One report, three entries: each carries the build as the report left it.
            (0, "completed", "in_progress"),
            (5, "skipped", "in_progress"),
            (10, "in_progress", "in_progress"),
            (10, "failed", "blocked"),
        ]
    );
}

async fn watch_of_a_settled_build_ends_at_once_or_replays_it_with_after(app: TestApp) {
    // Arrange
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    bldst.report(&id, 100, "completed").await;

    // Act
    let now = bldst.run(&["build", "watch", id.as_str()]).await.ok();
    let replayed = bldst
        .run(&["build", "watch", id.as_str(), "--after", "0"])
        .await
        .ok();

    // Assert
    assert_eq!(now.stdout, "");
    assert!(
        now.stderr.contains("is completed at stage 100 (")
            && now.stderr.contains("nothing more will happen"),
        "{}",
        now.stderr
    );
    assert_cli_snapshot!("build_watch_replay", replayed.stdout);
}

/// A TCP proxy to `upstream` that cuts the first event stream right after its first event
/// and keeps every request it forwarded, to see the reconnection's `Last-Event-ID`.
struct CuttingProxy {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    cut: Arc<AtomicBool>,
}

impl CuttingProxy {
    async fn start(upstream: &str) -> CuttingProxy {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let cut = Arc::new(AtomicBool::new(false));
        let (kept, cut_flag) = (requests.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let kept = kept.clone();
                let cut_flag = cut_flag.clone();
                let upward = tokio::spawn(async move {
                    let mut buffer = [0u8; 8192];
                    while let Ok(read) = client_read.read(&mut buffer).await {
                        if read == 0 {
                            break;
                        }
                        let text = String::from_utf8_lossy(&buffer[..read]).to_lowercase();
                        kept.lock().expect("requests").push(text);
                        if server_write.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buffer = [0u8; 8192];
                    let mut seen = Vec::new();
                    while let Ok(read) = server_read.read(&mut buffer).await {
                        if read == 0 {
                            break;
                        }
                        let chunk = &buffer[..read];
                        if !cut_flag.load(Ordering::SeqCst) {
                            let start = seen.len();
                            seen.extend_from_slice(chunk);
                            let text = String::from_utf8_lossy(&seen).into_owned();
                            if let Some(at) = text.find("event: transition") {
                                if let Some(end) = text[at..].find("\n\n") {
                                    // Forward up to the end of the first event, then hang up.
                                    let upto = (at + end + 2).saturating_sub(start);
                                    let _ = client_write.write_all(&chunk[..upto.min(read)]).await;
                                    cut_flag.store(true, Ordering::SeqCst);
                                    break;
                                }
                            }
                        }
                        if client_write.write_all(chunk).await.is_err() {
                            break;
                        }
                    }
                    upward.abort();
                    let _ = client_write.shutdown().await;
                });
            }
        });
        CuttingProxy { url, requests, cut }
    }

    /// The `Last-Event-ID` values of the event-stream requests, in order (`None`: absent).
    fn last_event_ids(&self) -> Vec<Option<i64>> {
        self.requests
            .lock()
            .expect("requests")
            .iter()
            .filter(|request| request.contains("/events http/1.1"))
            .map(|request| {
                request
                    .lines()
                    .find_map(|line| line.strip_prefix("last-event-id:"))
                    .map(|value| value.trim().parse().expect("a sequence number"))
            })
            .collect()
    }
}

async fn watch_resumes_a_dropped_stream_with_last_event_id_missing_and_repeating_nothing(
    app: TestApp,
) {
    // Arrange
    let bldst = Bldst::admin(&app);
    let id = bldst.create_build(&[]).await;
    let proxy = CuttingProxy::start(&app.base_url).await;
    let mut through_proxy = Bldst::admin(&app);
    through_proxy.base_url = proxy.url.clone();
    let (child, stderr, first) =
        start_watch(&through_proxy, &["build", "watch", id.as_str()]).await;
    let start = bldst
        .run(&["build", "get", id.as_str(), "-o", "json"])
        .await
        .ok();
    let start_seq = json::<buildstate_domain::wire::Build>(&start.stdout).last_seq;

    // Act: the first report's event goes through, then the stream is cut; the rest is
    // reported while the watch reconnects.
    bldst.report(&id, 0, "completed").await;
    for state in [10, 15, 20] {
        bldst.report(&id, state, "completed").await;
    }
    bldst.report(&id, 100, "completed").await;
    let watched = finish_watch(child, stderr, first).await.ok();

    // Assert
    assert!(proxy.cut.load(Ordering::SeqCst), "the proxy cut a stream");
    assert!(
        watched.stderr.contains("reconnecting after entry"),
        "{}",
        watched.stderr
    );
    let ids = proxy.last_event_ids();
    assert_eq!(ids.first(), Some(&Some(start_seq)), "{ids:?}");
    assert_eq!(
        ids.get(1),
        Some(&Some(start_seq + 1)),
        "resumed after the one event seen: {ids:?}"
    );
    let printed: Vec<i64> = watched
        .stdout
        .lines()
        .map(|line| {
            line.split("  ").nth(1).expect("seq")[1..]
                .parse()
                .expect("a number")
        })
        .collect();
    let history = bldst
        .run(&["build", "history", id.as_str(), "-o", "json"])
        .await
        .ok();
    let page: buildstate_domain::wire::HistoryPage = json(&history.stdout);
    let expected: Vec<i64> = page
        .entries
        .iter()
        .map(|entry| entry.seq)
        .filter(|seq| *seq > start_seq)
        .collect();
    assert_eq!(printed, expected);
}
