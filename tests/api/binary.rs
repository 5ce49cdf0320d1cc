//! The real `bldst server` binary: the README's quick start, on its SQLite default.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::process::{bootstrap_output, BootstrapDatabase, TEST_SECRET_KEY};

/// Kills the child if the test fails half-way.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn bldst_server_creates_its_sqlite_file_serves_and_bootstraps_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let bldst = env!("CARGO_BIN_EXE_bldst");
    let child = Command::new(bldst)
        .args(["server", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env("SECRET_KEY", TEST_SECRET_KEY)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bldst server starts");
    let mut server = Running(child);
    let stderr = server.0.stderr.take().expect("stderr");
    // Keep draining the log after the address line, so the server never writes to a closed pipe.
    let (found, address) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut found = Some(found);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let address = line
                .split("address=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next());
            if let (Some(address), Some(sender)) = (address, found.take()) {
                let _ = sender.send(address.to_owned());
            }
        }
    });
    let address = tokio::time::timeout(Duration::from_secs(30), address)
        .await
        .expect("the server starts within 30 s")
        .expect("the server logs the address it listens on");
    assert!(
        dir.path().join("buildstate.db").exists(),
        "the default SQLite file is created"
    );

    let ready = reqwest::get(format!("http://{address}/ready"))
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);

    let first = bootstrap_output(BootstrapDatabase::DefaultFileIn(dir.path()));
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let database = dir
        .path()
        .canonicalize()
        .expect("canonical")
        .join("buildstate.db");
    assert_eq!(
        String::from_utf8_lossy(&first.stderr).trim(),
        format!(
            "created admin user `admin` in the SQLite database `{}`; its admin token follows \
             (shown only this once):",
            database.display()
        ),
        "it names the database it used"
    );
    let token = String::from_utf8(first.stdout).expect("utf-8");
    let token = token.trim();
    assert!(token.starts_with("bst_"), "only the token on stdout");
    let whoami = reqwest::Client::new()
        .get(format!("http://{address}/auth/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .expect("whoami");
    assert_eq!(
        whoami.status(),
        200,
        "the printed token works against the running server"
    );

    let second = bootstrap_output(BootstrapDatabase::DefaultFileIn(dir.path()));
    assert!(!second.status.success());
    assert!(second.stdout.is_empty(), "nothing on stdout on failure");
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(
        message.contains("an admin user already exists"),
        "{message}"
    );

    #[cfg(unix)]
    {
        // SIGTERM: the server drains and exits cleanly.
        let pid = server.0.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
        let mut waited = Duration::ZERO;
        while server.0.try_wait().expect("wait").is_none() && waited < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += Duration::from_millis(50);
        }
        let status = server
            .0
            .try_wait()
            .expect("wait")
            .expect("exited after SIGTERM");
        assert!(status.success(), "{status}");
    }
}

/// `bldst server bootstrap` run where the server's SQLite file is not: it says the database
/// it made is new and how to reach the server's, instead of printing a token that the running
/// server would reject without a word.
#[test]
fn bootstrap_away_from_the_servers_database_says_it_created_a_new_one() {
    let elsewhere = tempfile::tempdir().expect("another directory");
    let output = bootstrap_output(BootstrapDatabase::DefaultFileIn(elsewhere.path()));
    assert!(output.status.success());
    let created = elsewhere
        .path()
        .canonicalize()
        .expect("canonical")
        .join("buildstate.db");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        format!(
            "created admin user `admin` in a new SQLite database `{}`: it did not exist, so a \
             server started elsewhere does not know this token; to bootstrap that server's \
             database, run this where the server runs or pass its `--database-url \
             sqlite://PATH` (or DATABASE_URL); its admin token follows (shown only this once):",
            created.display()
        )
    );
    assert!(created.exists());
}

/// `bldst server token create`: the way back in when every admin token is lost, through the
/// real binary, on the server's database and key, while the server runs.
async fn bldst_server_token_create_recovers_a_locked_out_install(app: crate::support::TestApp) {
    let bldst = env!("CARGO_BIN_EXE_bldst");
    let create = |secret_key: Option<&str>, username: &str| {
        let mut command = Command::new(bldst);
        command
            .args([
                "server", "token", "create", "--user", username, "--scope", "admin",
            ])
            .env("DATABASE_URL", &app.database_url)
            .env("NO_COLOR", "1")
            .env_remove("SECRET_KEY");
        if let Some(key) = secret_key {
            command.env("SECRET_KEY", key);
        }
        command.output().expect("bldst runs")
    };

    // Without the server's key: refused, nothing printed but the reason.
    let keyless = create(None, "admin");
    assert!(!keyless.status.success());
    assert!(keyless.stdout.is_empty(), "nothing on stdout on failure");
    let message = String::from_utf8_lossy(&keyless.stderr);
    assert!(message.contains("SECRET_KEY is not set"), "{message}");

    // Another key (long enough): refused with a sentence, no token minted that the server
    // would refuse while it counted as a live admin token.
    let wrong = create(Some("another-key-of-32-bytes-or-more-than-that"), "admin");
    assert!(!wrong.status.success());
    assert!(wrong.stdout.is_empty());
    let message = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        message.contains("SECRET_KEY is not the key the server hashes tokens with"),
        "{message}"
    );
    // A key too short to key the hashes: refused, saying how to make one.
    let short = create(Some("short-key"), "admin");
    assert!(!short.status.success());
    let message = String::from_utf8_lossy(&short.stderr);
    assert!(message.contains("openssl rand -hex 32"), "{message}");

    // An unknown user: refused, naming it.
    let nobody = create(Some(TEST_SECRET_KEY), "nobody");
    assert!(!nobody.status.success());
    assert!(nobody.stdout.is_empty());
    let message = String::from_utf8_lossy(&nobody.stderr);
    assert!(message.contains("`nobody` not found"), "{message}");

    // With it: one admin token on stdout, which the running server accepts.
    let created = create(Some(TEST_SECRET_KEY), "admin");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let secret = String::from_utf8(created.stdout).expect("utf-8");
    assert_eq!(secret.lines().count(), 1, "only the token on stdout");
    let recovered = app.client_with(Some(secret.trim().to_owned()));
    let me = recovered.whoami().await.expect("the new token works");
    assert_eq!(
        (me.username.as_str(), me.scope.as_str()),
        ("admin", "admin")
    );
    // It hangs off nothing, so the bootstrap token may now go without locking anyone out.
    let bootstrap = app.client().whoami().await.expect("whoami").token_id;
    recovered
        .revoke_token(&bootstrap)
        .await
        .expect("no longer the last admin token");
    assert!(recovered.whoami().await.is_ok());
}

crate::on_both_backends!(bldst_server_token_create_recovers_a_locked_out_install);

/// A SQLite file serves one process: a second `bldst server` on it is refused at start with a
/// sentence pointing at PostgreSQL, while the first keeps serving; once the first has stopped,
/// a server starts on the file again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_one_sqlite_file_is_refused_naming_postgresql() {
    use crate::support::process::ServerProcess;

    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("buildstate.db").display());
    let mut first = ServerProcess::start(&url, &[], &[]).await;

    // `bldst server` that should refuse to start: its stderr.
    let refused = |database_url: String, secret_key: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_bldst"))
            .args(["server", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", database_url)
            .env("SECRET_KEY", secret_key)
            .env("NO_COLOR", "1")
            .output()
            .expect("bldst runs");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "{stderr}");
        stderr
    };

    // A SECRET_KEY too short is refused at start, saying how to make one.
    let other = format!("sqlite://{}", dir.path().join("other.db").display());
    let stderr = refused(other, "change-me");
    assert!(
        stderr.contains("SECRET_KEY is 9 bytes long") && stderr.contains("openssl rand -hex 32"),
        "{stderr}"
    );

    let stderr = refused(url.clone(), TEST_SECRET_KEY);
    assert!(
        stderr.contains("another `bldst server` already serves the SQLite database")
            && stderr.contains("PostgreSQL"),
        "{stderr}"
    );
    let health = reqwest::get(first.url("/health")).await.expect("health");
    assert_eq!(health.status(), 200, "the first server still serves");

    first.terminate();
    assert!(first.exited().await.success());
    let again = ServerProcess::start(&url, &[], &[]).await;
    let health = reqwest::get(again.url("/health")).await.expect("health");
    assert_eq!(health.status(), 200);
}

/// `bldst server token create` follows the API's token rules (domain `tokens`), with the
/// API's own sentences: a description that says nothing or breaks the free-text rules, a
/// scope the user's role cannot hold, an expiry that is zero or over a hundred years.
async fn bldst_server_token_create_refuses_what_the_api_refuses_in_its_words(
    app: crate::support::TestApp,
) {
    // Arrange: a member, who holds at most `write` tokens
    let admin = app.client();
    admin
        .create_user(&buildstate_domain::wire::CreateUser {
            username: "ci".parse().expect("username"),
            email: "ci@example.com".parse().expect("email"),
            role: buildstate_domain::Role::Member,
        })
        .await
        .expect("member created");
    let long = "x".repeat(buildstate_domain::limits::MAX_TOKEN_DESCRIPTION_CHARS + 1);
    // (username, scope, description, --expires-in, the API's expires_in_seconds)
    let cases = [
        ("admin", "admin", "   ", None, None::<u64>),
        ("admin", "admin", long.as_str(), None, None),
        ("admin", "admin", "ring \u{7} the bell", None, None),
        ("ci", "admin", "a pipeline", None, None),
        ("admin", "read", "a pipeline", Some("0s"), Some(0)),
        (
            "admin",
            "read",
            "a pipeline",
            Some("40000d"),
            Some(40_000 * 86_400),
        ),
    ];
    for (username, scope, description, expires_in, expires_in_seconds) in cases {
        let name = format!("{username} {scope} {description:?} {expires_in:?}");

        // Act: the API, then the command
        let mut body = serde_json::json!({
            "username": username,
            "scope": scope,
            "description": description,
        });
        if let Some(seconds) = expires_in_seconds {
            body["expires_in_seconds"] = seconds.into();
        }
        let (status, api) = crate::helpers::raw(
            &app,
            reqwest::Method::POST,
            "/tokens",
            Some(&app.admin_token),
            Some(("application/json", &body.to_string())),
        )
        .await;
        let mut command = Command::new(env!("CARGO_BIN_EXE_bldst"));
        command
            .args(["server", "token", "create", "--username", username])
            .args(["--scope", scope, "--description", description])
            .args(
                expires_in
                    .map(|expiry| ["--expires-in", expiry])
                    .into_iter()
                    .flatten(),
            )
            .env("DATABASE_URL", &app.database_url)
            .env("SECRET_KEY", TEST_SECRET_KEY)
            .env("NO_COLOR", "1");
        let refused = command.output().expect("bldst runs");

        // Assert: both refuse, with one sentence
        assert_eq!(status, 422, "{name}: {api}");
        let sentence = api["error"]["message"].as_str().expect("a message");
        assert!(!refused.status.success(), "{name}: the command refused too");
        assert!(refused.stdout.is_empty(), "{name}: no token printed");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains(sentence),
            "{name}: {stderr} lacks {sentence}"
        );
    }
}

crate::on_both_backends!(bldst_server_token_create_refuses_what_the_api_refuses_in_its_words);
