//! `bldst server healthcheck`, the container health check of the server image (which has no
//! curl or shell): the real binary asking the real server's `/ready`, plain and over TLS.

use std::process::{Command, Output};

use crate::support::process::ServerProcess;

/// Runs `bldst server healthcheck ARGS…` with nothing from the test's environment.
fn healthcheck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bldst"))
        .args(["server", "healthcheck"])
        .args(args)
        .env_clear()
        .output()
        .expect("bldst runs")
}

fn port(server: &ServerProcess) -> &str {
    server.address.rsplit(':').next().expect("a port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_exits_zero_while_the_server_is_ready_and_one_once_it_is_gone() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let database_url = format!("sqlite://{}", dir.path().join("buildstate.db").display());
    let mut server = ServerProcess::start(&database_url, &[], &[]).await;
    // As in the image: the server listens on every address, the check asks the loopback one.
    let listen = format!("0.0.0.0:{}", port(&server));

    let ready = healthcheck(&["--listen", &listen]);
    assert_eq!(
        ready.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );
    assert!(ready.stdout.is_empty() && ready.stderr.is_empty());

    let wrong = healthcheck(&["--url", &server.url("/no-such-page")]);
    assert_eq!(wrong.status.code(), Some(1));
    let message = String::from_utf8_lossy(&wrong.stderr);
    assert!(message.contains("answered 404"), "{message}");

    server.terminate();
    assert!(server.exited().await.success());
    let gone = healthcheck(&["--listen", &listen]);
    assert_eq!(gone.status.code(), Some(1));
    let message = String::from_utf8_lossy(&gone.stderr);
    assert!(
        message.starts_with("not ready:") && message.contains("Connection refused"),
        "{message}"
    );
    assert!(gone.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_asks_its_own_tls_listener_over_https() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .expect("a self-signed certificate");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, made.cert.pem()).expect("write certificate");
    std::fs::write(&key_path, made.key_pair.serialize_pem()).expect("write key");
    let (cert, key) = (
        cert_path.to_str().expect("utf-8 path"),
        key_path.to_str().expect("utf-8 path"),
    );
    let database_url = format!("sqlite://{}", dir.path().join("buildstate.db").display());
    let server =
        ServerProcess::start(&database_url, &["--tls-cert", cert, "--tls-key", key], &[]).await;
    let listen = format!("0.0.0.0:{}", port(&server));

    // The server's own configuration: https to the loopback address, certificate not verified.
    let own = healthcheck(&["--listen", &listen, "--tls-cert", cert, "--tls-key", key]);
    assert_eq!(
        own.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    // Without the TLS flags it speaks plain HTTP, which the TLS port does not answer.
    let plain = healthcheck(&["--listen", &listen]);
    assert_eq!(plain.status.code(), Some(1));
    // A URL given explicitly is verified: the self-signed certificate is not trusted.
    let verified = healthcheck(&["--url", &format!("{}/ready", server.base_url)]);
    assert_eq!(verified.status.code(), Some(1));
    let message = String::from_utf8_lossy(&verified.stderr);
    assert!(message.starts_with("not ready:"), "{message}");
}
