//! The HTTP listener: accepts connections under the configured [`Limits`] and drains them on
//! shutdown.
//!
//! axum's own `serve` offers none of the limits a service exposed to every CI worker needs, so
//! connections are served here with hyper directly: a semaphore caps how many are open at
//! once, each connection is closed when it sits idle or takes too long to send a request's
//! headers (a new one included: it must send a whole request head within the header timeout),
//! and shutdown lets every request already received finish and be answered before the process
//! exits. Request timeouts and body sizes are per request, in the router (`api::router`).
//!
//! At the cap, a new connection is not left waiting behind sockets that do nothing: the oldest
//! connection with no request in progress (one that never sent a request first, then one kept
//! alive between requests) is closed to make room, so a flood of silent sockets cannot lock
//! out the clients that send requests. Only when every connection is busy with a request does
//! a new one wait. An event stream gives its connection's place back once accepted
//! ([`ConnectionSlot`]): streams have limits of their own (`crate::streams`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::path::Path;

use anyhow::Context as _;
use axum::extract::ConnectInfo;
use axum::{BoxError, Router};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

/// What one client may take from the server. Every field is a `bldst server` flag.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
    /// From a request's first byte until its headers are complete.
    pub header_read_timeout: Duration,
    /// From a request's arrival until its answer is ready (reading the body included).
    pub request_timeout: Duration,
    /// Connections open at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long a connection may sit with no request before it is closed.
    pub idle_timeout: Duration,
}

/// The server's certificate and key, ready to accept TLS connections.
#[derive(Clone)]
pub struct Tls(TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Loads a PEM certificate chain and its PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("cannot read the TLS certificate `{}`", cert.display()))?;
        anyhow::ensure!(
            !chain.is_empty(),
            "the TLS certificate file `{}` holds no PEM certificate",
            cert.display()
        );
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("cannot read the TLS private key `{}`", key.display()))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("cannot set up TLS")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("the TLS certificate and private key do not make a pair")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls(TlsAcceptor::from(Arc::new(config))))
    }
}

/// Serves `app` on `listener` (over TLS if `tls` is set) until `shutdown` completes; then
/// stops accepting, lets the requests in progress finish (for at most the request timeout),
/// and returns.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let open = OpenConnections::default();
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // The header timeout is enforced by `Watched`, which (unlike hyper's own) does not start
    // counting while a kept-alive connection merely waits for its next request.
    http.timer(TokioTimer::new()).header_read_timeout(None);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: pause instead of spinning.
                    tracing::warn!(error = %error, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // At the cap: make room by closing a connection that is not serving a request,
                // if there is one; otherwise wait for one to close.
                open.close_one_idle();
                let slot = tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => slot,
                    () = &mut shutdown => break,
                };
                let Ok(slot) = slot else { break };
                slot
            }
        };
        let slot = ConnectionSlot::holding(slot);
        let requests = open.add();
        let (app, http, limits, tls) = (app.clone(), http.clone(), limits.clone(), tls.clone());
        let open = open.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let connection = Connection {
                peer,
                app,
                requests: Arc::clone(&requests),
                slot: slot.clone(),
            };
            let served = match tls {
                None => serve_one(stream, connection, &http, &limits, watcher).await,
                // The handshake happens here, not in the accept loop, so a slow client delays
                // only itself; it must finish within the header read timeout.
                Some(Tls(acceptor)) => {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            serve_one(stream, connection, &http, &limits, watcher).await
                        }
                        Ok(Err(error)) => Err(error.into()),
                        Err(_) => {
                            Err("the TLS handshake took longer than the header read timeout".into())
                        }
                    }
                }
            };
            if let Err(error) = served {
                tracing::debug!(peer = %peer, error = %error, "connection closed");
            }
            open.remove(&requests);
            slot.release();
        });
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        open,
        "stopped accepting; finishing the requests in progress"
    );
    if tokio::time::timeout(limits.request_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy after the request timeout; closing them");
    }
}

/// What serving one connection needs besides its stream.
struct Connection {
    peer: SocketAddr,
    app: Router,
    requests: Arc<Requests>,
    slot: ConnectionSlot,
}

/// Serves one connection's requests until it closes.
async fn serve_one<S>(
    stream: S,
    connection: Connection,
    http: &hyper::server::conn::http1::Builder,
    limits: &Limits,
    watcher: Watcher,
) -> Result<(), BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Connection {
        peer,
        app,
        requests,
        slot,
    } = connection;
    let io = TokioIo::new(Watched::new(stream, Arc::clone(&requests), limits));
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // The client's address, for the per-address limit on failed authentications.
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(slot.clone());
        let in_flight = InFlight::enter(&requests);
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await?;
            // In flight until the whole body is written (an event stream may last hours):
            // the guard lives in the body and is dropped with it.
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                axum::body::Body::new(body.map_frame(move |frame| {
                    let _in_flight = &in_flight;
                    frame
                }))
            }))
        }
    });
    watcher.watch(http.serve_connection(io, service)).await?;
    Ok(())
}

/// A connection's place under the connection cap, released when it closes — or earlier, by an
/// event stream, which has limits of its own. Handlers take it as an extractor.
#[derive(Debug, Clone, Default)]
pub struct ConnectionSlot(Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>);

impl ConnectionSlot {
    fn holding(permit: OwnedSemaphorePermit) -> Self {
        ConnectionSlot(Arc::new(std::sync::Mutex::new(Some(permit))))
    }

    /// Gives the place back to the listener (once; later calls do nothing).
    pub fn release(&self) {
        let permit = self.0.lock().map(|mut permit| permit.take());
        drop(permit);
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ConnectionSlot {
    type Rejection = std::convert::Infallible;

    /// The request's connection's slot; an empty one when served some other way.
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ConnectionSlot>()
            .cloned()
            .unwrap_or_default())
    }
}

/// The open connections, oldest first, so one doing nothing can be closed to make room.
#[derive(Debug, Clone, Default)]
struct OpenConnections(Arc<std::sync::Mutex<OpenList>>);

#[derive(Debug, Default)]
struct OpenList {
    next: u64,
    /// By the order they were accepted in.
    connections: std::collections::BTreeMap<u64, Arc<Requests>>,
}

impl OpenConnections {
    fn add(&self) -> Arc<Requests> {
        let mut list = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        list.next += 1;
        let requests = Arc::new(Requests {
            number: list.next,
            ..Requests::default()
        });
        let number = list.next;
        list.connections.insert(number, Arc::clone(&requests));
        requests
    }

    fn remove(&self, requests: &Requests) {
        let mut list = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        list.connections.remove(&requests.number);
    }

    /// Closes the oldest connection that has never sent a request, else the oldest kept alive
    /// between requests; none if every connection is busy. Returns whether it closed one.
    fn close_one_idle(&self) -> bool {
        let list = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let idle = |requests: &&Arc<Requests>| {
            requests.in_flight.load(Ordering::SeqCst) == 0
                && !requests.closing.load(Ordering::SeqCst)
        };
        let silent = list
            .connections
            .values()
            .filter(idle)
            .find(|requests| requests.arrived.load(Ordering::SeqCst) == 0);
        let Some(victim) = silent.or_else(|| list.connections.values().find(idle)) else {
            return false;
        };
        victim.closing.store(true, Ordering::SeqCst);
        let parked = victim.parked_reader.lock().map(|mut parked| parked.take());
        if let Ok(Some(reader)) = parked {
            reader.wake();
        }
        true
    }
}

/// A connection's requests: how many arrived, and how many are between arrival and answer.
#[derive(Debug, Default)]
struct Requests {
    /// The connection's place in [`OpenConnections`].
    number: u64,
    arrived: AtomicUsize,
    in_flight: AtomicUsize,
    /// Set to close the connection to make room for another (it is doing nothing).
    closing: AtomicBool,
    /// The connection's reader, parked waiting for bytes. hyper reads again only when the
    /// socket wakes it, so the idle clock (after a request) and a closing (to make room) must
    /// wake it here.
    parked_reader: std::sync::Mutex<Option<std::task::Waker>>,
}

/// Marks one request in flight until dropped (answered, or abandoned).
struct InFlight(Arc<Requests>);

impl InFlight {
    fn enter(requests: &Arc<Requests>) -> Self {
        requests.arrived.fetch_add(1, Ordering::SeqCst);
        requests.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(requests))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let parked = self.0.parked_reader.lock().map(|mut parked| parked.take());
            if let Ok(Some(reader)) = parked {
                reader.wake();
            }
        }
    }
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request: closed after the idle timeout.
    Idle,
    /// A request's first bytes arrived: its headers must follow within the header timeout.
    Head,
    /// A request is being handled: the request timeout applies instead.
    Busy,
}

/// A connection that fails its reads when it sits idle too long or sends headers too slowly.
/// (The same split as Go's `IdleTimeout` and `ReadHeaderTimeout`.)
struct Watched<S> {
    inner: S,
    requests: Arc<Requests>,
    /// `requests.arrived` when this connection last looked.
    arrived: usize,
    idle_timeout: Duration,
    header_read_timeout: Duration,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Watched<S> {
    fn new(inner: S, requests: Arc<Requests>, limits: &Limits) -> Self {
        // A new connection owes a whole request head within the header timeout (or the idle
        // timeout, if shorter): one that sends nothing is not kept for the idle timeout.
        let first_request = limits.header_read_timeout.min(limits.idle_timeout);
        Watched {
            inner,
            requests,
            arrived: 0,
            idle_timeout: limits.idle_timeout,
            header_read_timeout: limits.header_read_timeout,
            phase: Phase::Head,
            deadline: Box::pin(tokio::time::sleep(first_request)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let arrived = this.requests.arrived.load(Ordering::SeqCst);
        let in_flight = this.requests.in_flight.load(Ordering::SeqCst);
        if in_flight == 0 && this.requests.closing.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for a new connection: it had no request in progress",
            )));
        }
        if in_flight > 0 {
            this.phase = Phase::Busy;
            this.arrived = arrived;
        } else if this.phase == Phase::Busy || this.arrived != arrived {
            // A request came and was answered (perhaps between two reads): idle again.
            this.arrived = arrived;
            this.phase = Phase::Idle;
            let deadline = Instant::now() + this.idle_timeout;
            this.deadline.as_mut().reset(deadline);
        }
        let filled = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.phase == Phase::Idle && buf.filled().len() > filled {
                    this.phase = Phase::Head;
                    let deadline = Instant::now() + this.header_read_timeout;
                    this.deadline.as_mut().reset(deadline);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.phase != Phase::Busy => {
                if let Ok(mut parked) = this.requests.parked_reader.lock() {
                    *parked = Some(cx.waker().clone());
                }
                // Chosen to make room meanwhile: the wake-up above may have been missed.
                if this.requests.closing.load(Ordering::SeqCst) {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if this.deadline.as_mut().poll(cx).is_ready() {
                    let why = match this.phase {
                        Phase::Head => {
                            "the request's headers took longer than the header read timeout"
                        }
                        _ => "the connection sat idle longer than the idle timeout",
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
                }
                Poll::Pending
            }
            Poll::Pending => {
                if let Ok(mut parked) = this.requests.parked_reader.lock() {
                    *parked = Some(cx.waker().clone());
                }
                // Answered meanwhile: the wake-up above may have been missed.
                if this.requests.in_flight.load(Ordering::SeqCst) == 0 {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
