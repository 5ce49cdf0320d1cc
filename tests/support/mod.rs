//! Test support shared by the integration suites: a real server on 127.0.0.1:0 over a fresh
//! database per test — a temporary SQLite file, or a scratch PostgreSQL database created from
//! `BUILDSTATE_TEST_POSTGRES_URL` and dropped afterwards.
//!
//! The PostgreSQL half takes a bounded share of the database's connections, so a full run
//! stays green on a server with the default `max_connections` of 100 that others use too:
//! each test server's pool holds at most [`TEST_POOL_SIZE`] connections, and at most
//! [`POSTGRES_SERVERS_AT_ONCE`] tests hold a PostgreSQL server at a time, whatever the number
//! of test threads. The measured peak is in BENCHMARKS.md (`scripts/pg-peak.sh`).
#![allow(dead_code)]

pub mod image;
pub mod process;
pub mod redis;

use std::future::Future;
use std::time::Duration;

use buildstate::client::{Client, ClientConfig};
use buildstate_server::AppState;
use buildstate_server::ServerConfig;
use sqlx::Connection;
use tokio::sync::{oneshot, Semaphore, SemaphorePermit};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The environment variable naming a PostgreSQL server the tests may create databases on.
pub const POSTGRES_URL_VAR: &str = "BUILDSTATE_TEST_POSTGRES_URL";

/// The most connections one test server (and each of its peers) opens to PostgreSQL. The
/// racing tests send 64 reports at once: they queue for these, as they would for any pool.
pub const TEST_POOL_SIZE: u32 = 4;

/// How many tests may hold a PostgreSQL test server at once. With a peer each and the
/// connection that creates or drops the scratch database, that bounds the suite to
/// 4 × (4 + 4 + 1) = 36 connections.
pub const POSTGRES_SERVERS_AT_ONCE: usize = 4;

/// The permits for [`POSTGRES_SERVERS_AT_ONCE`]; a tokio semaphore works across the test
/// threads' separate runtimes.
static POSTGRES_SERVERS: Semaphore = Semaphore::const_new(POSTGRES_SERVERS_AT_ONCE);

/// A running server and an admin token for it.
pub struct TestApp {
    pub backend: Backend,
    pub base_url: String,
    pub admin_token: String,
    pub state: AppState,
    pub database_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _sqlite_dir: Option<tempfile::TempDir>,
    /// Dropped after the server stops (PostgreSQL only).
    _scratch_database: Option<ScratchDatabase>,
}

/// A scratch PostgreSQL database on `BUILDSTATE_TEST_POSTGRES_URL`'s server, dropped with this
/// value; it holds one of the [`POSTGRES_SERVERS_AT_ONCE`] turns meanwhile.
pub struct ScratchDatabase {
    /// The database's URL.
    pub url: String,
    admin_url: String,
    name: String,
    _turn: SemaphorePermit<'static>,
}

impl ScratchDatabase {
    /// Creates one, or `None` (saying so) when the PostgreSQL URL is not set.
    pub async fn create() -> Option<ScratchDatabase> {
        let Ok(admin_url) = std::env::var(POSTGRES_URL_VAR) else {
            eprintln!("skipped: set {POSTGRES_URL_VAR} to run the PostgreSQL variant");
            return None;
        };
        let turn = POSTGRES_SERVERS
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let (url, name) = create_scratch_database(&admin_url).await;
        Some(ScratchDatabase {
            url,
            admin_url,
            name,
            _turn: turn,
        })
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside async context: use a thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(drop_scratch_database(&admin_url, &name));
        })
        .join();
    }
}

impl TestApp {
    /// Spawns a server on `backend`, or `None` for PostgreSQL when its URL is not set.
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Like [`TestApp::spawn`], letting the test adjust the server's configuration.
    /// Backoff is zero unless the test sets it, so retries need no waiting.
    pub async fn spawn_with(
        backend: Backend,
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> Option<TestApp> {
        let mut sqlite_dir = None;
        let mut scratch_database = None;
        let database_url = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("buildstate.db").display());
                sqlite_dir = Some(dir);
                url
            }
            Backend::Postgres => {
                let database = ScratchDatabase::create().await?;
                let url = database.url.clone();
                scratch_database = Some(database);
                url
            }
        };
        let mut config = test_config(&database_url);
        adjust(&mut config);
        let state = config.app_state().await.expect("server state");
        let admin_token = buildstate_server::bootstrap_admin(
            &state,
            &"admin".parse().expect("username"),
            &"admin@example.com".parse().expect("email"),
        )
        .await
        .expect("bootstrap admin");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let base_url = format!("http://{}", listener.local_addr().expect("address"));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(buildstate_server::serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        Some(TestApp {
            backend,
            base_url,
            admin_token,
            state,
            database_url,
            shutdown: Some(shutdown),
            server: Some(server),
            _sqlite_dir: sqlite_dir,
            _scratch_database: scratch_database,
        })
    }

    /// A client with the admin token.
    pub fn client(&self) -> Client {
        self.client_with(Some(self.admin_token.clone()))
    }

    /// A client with `token` (or none).
    pub fn client_with(&self, token: Option<String>) -> Client {
        let mut config = ClientConfig::new(&self.base_url, token);
        config.timeout = Duration::from_secs(20);
        config.retry_base = Duration::from_millis(20);
        Client::new(config).expect("client")
    }

    /// A raw HTTP client for requests the typed client would never send.
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Runs one statement on the test's database directly and returns the first column of its
    /// first row, if it gives any: for a state the API cannot make, such as a row as an older
    /// release left it.
    pub async fn execute_sql(&self, sql: &str) -> Option<String> {
        sqlx::any::install_default_drivers();
        let mut connection = sqlx::AnyConnection::connect(&self.database_url)
            .await
            .expect("connect to the test database");
        let row = sqlx::query(sql)
            .fetch_optional(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
        row.and_then(|row| sqlx::Row::try_get::<Option<String>, _>(&row, 0).expect("a text column"))
    }

    /// Another server on this app's database, with its own pools and caches: what a deployment
    /// of several server processes sharing one PostgreSQL looks like. It stops when dropped.
    pub async fn spawn_peer(&self, adjust: impl FnOnce(&mut ServerConfig)) -> Peer {
        let mut config = test_config(&self.database_url);
        adjust(&mut config);
        let state = config.app_state().await.expect("peer server state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let base_url = format!("http://{}", listener.local_addr().expect("address"));
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(buildstate_server::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Peer {
            base_url,
            _shutdown: shutdown,
        }
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        self.stop_server().await;
    }

    async fn stop_server(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The scratch database (a field) is dropped after this, once the server is told to stop.
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A second server on a [`TestApp`]'s database.
pub struct Peer {
    pub base_url: String,
    /// Dropping it stops the peer.
    _shutdown: oneshot::Sender<()>,
}

impl Peer {
    /// A client of this peer with `token`.
    pub fn client_with(&self, token: String) -> Client {
        Client::new(ClientConfig::new(&self.base_url, Some(token))).expect("client")
    }
}

/// A test server's configuration: a fixed key, no backoff, the small pool, and no retry
/// scheduler: with no backoff every failure would be due at once, and a `retry_due` entry
/// appearing beside a test's own reports would make its history depend on timing. Tests of
/// automatic retries turn it on (`retry_check_millis`).
fn test_config(database_url: &str) -> ServerConfig {
    let mut config = ServerConfig::for_database(database_url);
    config.secret_key = Some("test-secret-key".into());
    config.backoff_base_secs = 0;
    config.database_max_connections = TEST_POOL_SIZE;
    config.retry_check_millis = 0;
    config
}

async fn create_scratch_database(admin_url: &str) -> (String, String) {
    let name = format!("bst_test_{}", buildstate_server::secrets::random_id(12));
    let mut connection = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("connect to BUILDSTATE_TEST_POSTGRES_URL");
    // The name is ours (letters and digits), never user input; identifiers cannot be bound.
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut connection)
        .await
        .expect("create scratch database");
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url, |(base, _)| base);
    (format!("{base}/{name}"), name)
}

async fn drop_scratch_database(admin_url: &str, name: &str) {
    if let Ok(mut connection) = sqlx::PgConnection::connect(admin_url).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut connection)
            .await;
    }
}

/// Runs `scenario` on `backend`, unless that backend is not configured.
pub async fn on<F, Fut>(backend: Backend, scenario: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Some(app) = TestApp::spawn(backend).await {
        scenario(app).await;
    }
}

/// Declares `mod NAME { sqlite(), postgres() }` tests for each `async fn NAME(app: TestApp)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::support::on($crate::support::Backend::Sqlite, super::$scenario).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::support::on($crate::support::Backend::Postgres, super::$scenario).await;
                }
            }
        )+
    };
}

/// Runs `scenario` on `backend` with the server's configuration changed by `adjust`, unless
/// that backend is not configured.
pub async fn on_with<F, Fut>(backend: Backend, adjust: impl FnOnce(&mut ServerConfig), scenario: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Some(app) = TestApp::spawn_with(backend, adjust).await {
        scenario(app).await;
    }
}

/// [`on_both_backends!`] on servers configured by `adjust` (an `fn(&mut ServerConfig)` beside
/// the scenarios): `on_both_backends_with!(adjust => scenario, ...)`.
#[macro_export]
macro_rules! on_both_backends_with {
    ($adjust:ident => $($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::support::on_with(
                        $crate::support::Backend::Sqlite,
                        super::$adjust,
                        super::$scenario,
                    )
                    .await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::support::on_with(
                        $crate::support::Backend::Postgres,
                        super::$adjust,
                        super::$scenario,
                    )
                    .await;
                }
            }
        )+
    };
}
