//! Hostile and careless clients against the real `bldst server` binary: slow headers, a huge
//! body, a body that never ends, idle connections, more connections than the cap — each
//! limit ends that client's turn while a normal request is still served. And SIGTERM under
//! load loses no acknowledged report.

use std::time::Duration;

use buildstate_domain::wire::StartBuild;
use buildstate_domain::ReportStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{report, start_request};
use crate::support::process::ServerProcess;
use crate::support::{Backend, TestApp};

/// A fresh SQLite file for one server process, kept while the test runs.
fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("buildstate.db").display())
}

async fn start(args: &[&str]) -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let server = ServerProcess::start(&sqlite_url(&dir), args, &[]).await;
    (dir, server)
}

/// The first admin's token, made by `bldst server bootstrap` on the server's database.
fn admin_token(dir: &tempfile::TempDir) -> String {
    ServerProcess::bootstrap(&sqlite_url(dir))
}

/// A normal request, answered.
async fn health_is_served(server: &ServerProcess) {
    let response = reqwest::get(server.url("/health")).await.expect("health");
    assert_eq!(response.status(), 200);
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    // A reset instead of a clean close is a close too.
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_headers_slowly_is_cut_off_while_others_are_served() {
    let (_dir, server) = start(&["--header-read-timeout-secs", "1"]).await;
    let mut slow = TcpStream::connect(&server.address).await.expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nhost: test\r\n")
        .await
        .expect("first bytes");
    // One header byte every 100 ms would take a minute; the server must not wait for it.
    let mut closed = false;
    for _ in 0..600 {
        if slow.write_all(b"x").await.is_err() {
            closed = true;
            break;
        }
        health_is_served(&server).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !closed {
        closed = read_to_close(&mut slow).await.is_empty();
    }
    assert!(closed, "the slow client's connection was closed");
    health_is_served(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_body_is_refused_with_413_naming_the_limit() {
    let (dir, server) = start(&["--max-body-bytes", "4096"]).await;
    let token = admin_token(&dir);
    let mut huge = TcpStream::connect(&server.address).await.expect("connect");
    let length = 100 * 1024 * 1024;
    huge.write_all(
        format!(
            "POST /builds HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("headers");
    // More than the limit, far less than announced: the server answers without waiting for
    // the other 100 MiB.
    huge.write_all(&vec![b' '; 64 * 1024]).await.expect("body");
    let answer = read_to_close(&mut huge).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"body_too_large""#), "{answer}");
    assert!(answer.contains("4096-byte limit"), "{answer}");
    health_is_served(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_ends_is_answered_503_after_the_request_timeout() {
    let (dir, server) = start(&["--request-timeout-secs", "1"]).await;
    let token = admin_token(&dir);
    let mut stalled = TcpStream::connect(&server.address).await.expect("connect");
    stalled
        .write_all(
            format!(
                "POST /builds HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {token}\r\n\
                 content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"platform\""
            )
            .as_bytes(),
        )
        .await
        .expect("half a request");
    health_is_served(&server).await;
    let mut answer = vec![0; 4096];
    let read = stalled.read(&mut answer).await.expect("an answer");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("1-second limit"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_a_normal_request_still_gets_through() {
    let (_dir, server) = start(&["--max-connections", "8", "--idle-timeout-secs", "1"]).await;
    // As many silent connections as the server takes at once, and one kept alive after an
    // answer.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(&server.address).await.expect("connect"));
    }
    // Served once the idle ones are dropped by the server.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let response = client
        .get(server.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(response.status(), 200);
    for connection in &mut idle {
        assert_eq!(read_to_close(connection).await, "", "closed without a word");
    }

    let mut kept_alive = TcpStream::connect(&server.address).await.expect("connect");
    kept_alive
        .write_all(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("request");
    let answer = read_to_close(&mut kept_alive).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "answered, then closed when idle: {answer}"
    );
}

/// A request that stays in flight: a body announced and never sent.
async fn busy_connection(server: &ServerProcess, token: &str) -> TcpStream {
    let mut busy = TcpStream::connect(&server.address).await.expect("connect");
    busy.write_all(
        format!(
            "POST /builds HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .expect("half a request");
    busy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_the_cap_waits_while_every_connection_is_busy() {
    let (dir, server) = start(&["--max-connections", "2", "--request-timeout-secs", "600"]).await;
    let token = admin_token(&dir);
    let first = busy_connection(&server, &token).await;
    let _second = busy_connection(&server, &token).await;
    // Until the server has read a connection's request head, that connection is not serving a
    // request and may be closed to make room: give it time to read both heads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut third = TcpStream::connect(&server.address)
        .await
        .expect("the kernel queues it");
    third
        .write_all(b"GET /health HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut answer = vec![0; 1024];
    let waited = tokio::time::timeout(Duration::from_millis(500), third.read(&mut answer)).await;
    assert!(
        waited.is_err(),
        "not answered while two requests are in progress"
    );
    drop(first);
    let answer = read_to_close(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Silent sockets (opened, never a byte sent) fill the connection cap: an authenticated
/// client is still served, by closing the oldest silent one to make room, and every silent one
/// is closed once the header timeout has passed, not kept for the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_neither_lock_out_clients_nor_outlast_the_header_timeout() {
    let (dir, server) = start(&[
        "--max-connections",
        "8",
        "--header-read-timeout-secs",
        "2",
        "--idle-timeout-secs",
        "600",
    ])
    .await;
    let token = admin_token(&dir);
    let mut silent = Vec::new();
    for _ in 0..24 {
        silent.push(TcpStream::connect(&server.address).await.expect("connect"));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    for _ in 0..3 {
        let answer = client
            .get(server.url("/builds?limit=1"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("answered while silent sockets fill the cap");
        assert_eq!(answer.status(), 200);
    }
    for connection in &mut silent {
        let closed = tokio::time::timeout(Duration::from_secs(20), read_to_close(connection)).await;
        assert_eq!(
            closed.expect("closed without waiting for the idle timeout"),
            "",
            "closed without a word"
        );
    }
}

/// Every report the server acknowledged before SIGTERM is in the database afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_report() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(app) = TestApp::spawn(backend).await else {
            continue;
        };
        let server = ServerProcess::start(
            &app.database_url,
            &[],
            &[("BUILDSTATE_BACKOFF_BASE_SECS", "0")],
        )
        .await;
        let mut builds = Vec::new();
        let start = StartBuild {
            max_retries: Some(100),
            ..start_request(None)
        };
        for _ in 0..8 {
            let started = app.client().start_build(&start).await.expect("start");
            builds.push(started.build.id);
        }
        // Eight pipelines, each reporting failure after failure of its first stage as fast as
        // it is answered, with no retry: a report counts as acknowledged only if its 200
        // arrived. Every accepted failure is counted on the build.
        let http = reqwest::Client::new();
        let pipelines = builds.iter().map(|id| {
            let (http, url, token) = (
                http.clone(),
                server.url(&format!("/builds/{id}/transitions")),
                app.admin_token.clone(),
            );
            tokio::spawn(async move {
                let mut acknowledged = 0;
                while acknowledged < 100 {
                    let report = report(0, ReportStatus::Failed);
                    let sent = http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&report)
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 200 => acknowledged += 1,
                        _ => break,
                    }
                }
                acknowledged
            })
        });
        let pipelines: Vec<_> = pipelines.collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut server = server;
        server.terminate();
        let status = server.exited().await;
        assert!(status.success(), "a clean exit after SIGTERM: {status}");

        let mut total = 0;
        for (pipeline, id) in pipelines.into_iter().zip(&builds) {
            let acknowledged = pipeline.await.expect("pipeline");
            total += acknowledged;
            let build = app.client().get_build(id).await.expect("get");
            assert_eq!(
                build.failures, acknowledged,
                "{backend:?}: build {id}: every acknowledged report is stored, nothing else"
            );
        }
        eprintln!("{backend:?}: {total} reports acknowledged before SIGTERM, all stored");
    }
}

/// Sends `head` (and no body) on a new connection; returns the start of the answer.
async fn answer_to(server: &ServerProcess, head: &str) -> String {
    let mut stream = TcpStream::connect(&server.address).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut answer))
        .await
        .expect("answered from the head alone, without waiting for a body")
        .expect("read");
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

/// What the head alone shows cannot be served is refused at once, with the JSON envelope:
/// HTTP/1.1 without `Host`, a body over the limit announced with `Expect: 100-continue` (413,
/// not `100 Continue`), a `Content-Encoding` the server does not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_server_cannot_serve_are_refused_from_their_head() {
    let (dir, server) = start(&["--max-body-bytes", "4096"]).await;
    let token = admin_token(&dir);

    let no_host = answer_to(&server, "GET /health HTTP/1.1\r\n\r\n").await;
    assert!(no_host.starts_with("HTTP/1.1 400"), "{no_host}");
    assert!(no_host.contains(r#""field":"Host""#), "{no_host}");

    let expecting = answer_to(
        &server,
        &format!(
            "POST /builds HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: 10485760\r\n\
             expect: 100-continue\r\n\r\n"
        ),
    )
    .await;
    assert!(expecting.starts_with("HTTP/1.1 413"), "{expecting}");
    assert!(
        expecting.contains(r#""code":"body_too_large""#),
        "{expecting}"
    );

    let body = r#"{"platform":"aws","image_type":"rhel8"}"#;
    let gzip = answer_to(
        &server,
        &format!(
            "POST /builds HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-encoding: gzip\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(gzip.starts_with("HTTP/1.1 415"), "{gzip}");
    assert!(gzip.contains("Content-Encoding: gzip"), "{gzip}");
    health_is_served(&server).await;
}
