//! HTTPS without a proxy: the real `bldst server` with `--tls-cert`/`--tls-key` (a self-signed
//! certificate made for the test), and the client that refuses to send a token over plain
//! http:// to another host.

use std::process::Command;

use buildstate::client::{Client, ClientConfig};

use crate::support::process::ServerProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_speaks_https_with_the_certificate_it_is_given() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("a self-signed certificate");
    let certificate = made.cert.pem();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, &certificate).expect("write certificate");
    std::fs::write(&key_path, made.key_pair.serialize_pem()).expect("write key");
    let database_url = format!("sqlite://{}", dir.path().join("buildstate.db").display());
    let token = ServerProcess::bootstrap(&database_url);
    let (cert, key) = (
        cert_path.to_str().expect("utf-8 path"),
        key_path.to_str().expect("utf-8 path"),
    );
    let server =
        ServerProcess::start(&database_url, &["--tls-cert", cert, "--tls-key", key], &[]).await;
    assert!(
        server.base_url.starts_with("https://"),
        "{}",
        server.base_url
    );

    // The typed client every front end uses, trusting the test's certificate.
    let mut config = ClientConfig::new(&server.base_url, Some(token.clone()));
    config.extra_root_pem = Some(certificate.into_bytes());
    let whoami = Client::new(config)
        .expect("client")
        .whoami()
        .await
        .expect("whoami over https");
    assert_eq!(whoami.username.as_str(), "admin");

    // Without that trust the handshake fails; plain HTTP gets no answer at all.
    let mut untrusting = ClientConfig::new(&server.base_url, Some(token));
    untrusting.max_attempts = 1;
    let refused = Client::new(untrusting).expect("client").whoami().await;
    assert!(refused.is_err(), "an unknown certificate is not trusted");
    let plain = reqwest::get(format!("http://{}/health", server.address)).await;
    assert!(plain.is_err(), "no plain HTTP on the TLS port: {plain:?}");
}

#[test]
fn the_cli_refuses_to_send_a_token_over_plain_http_to_another_host() {
    let home = tempfile::tempdir().expect("temporary directory");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bldst"))
            .args([
                "--api-url",
                "http://buildstate.example.com:8000",
                "build",
                "list",
            ])
            .args(extra)
            .env_clear()
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path())
            .env("BUILDSTATE_API_TOKEN", "bst_not_a_real_token")
            .output()
            .expect("bldst runs")
    };
    let refused = run(&[]);
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty(), "nothing on stdout");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains(
            "refusing to send the API token over plain http:// to `buildstate.example.com`"
        ),
        "{message}"
    );
    assert!(message.contains("--allow-insecure"), "{message}");
    assert!(
        !message.contains("bst_not_a_real_token"),
        "the token is never printed"
    );
}
