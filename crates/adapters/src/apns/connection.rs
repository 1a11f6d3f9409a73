//! The HTTP/2 connections to one APNs gateway, driven with `h2` directly.
//!
//! One connection carries every push while it has room; another opens only when each
//! is at the stream limit Apple announced. A new connection, reconnects included,
//! carries one stream until its first answer (Apple's rule for token auth). A push
//! refused before Apple processed it (`REFUSED_STREAM`, or above a `GOAWAY`'s last
//! stream) is sent again on a fresh connection. A connection that leaves a push
//! unanswered or fails one gets no new pushes, and one that stops answering PINGs is
//! closed, failing what it still carries, within seconds rather than minutes.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{Ping, PingPong, Reason};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Request, StatusCode, Uri};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::config::ApnsConfigError;

/// At most this many connections to one gateway; past it, pushes wait for room on the
/// least loaded one (h2 queues them).
const MAX_CONNECTIONS: usize = 4;
/// How many times one push refused unprocessed is sent again.
const MAX_RESENDS: usize = 3;
/// While pushes are on a connection, it is pinged this often...
const BUSY_PING_INTERVAL: Duration = Duration::from_secs(1);
/// ...and a PING unanswered this long means the path is gone: the connection is closed
/// and what it carried fails at once, to be retried on a new one.
const BUSY_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// An idle connection is pinged this often, so NATs keep the flow open and a dead one
/// is noticed before a push needs it.
const IDLE_PING_INTERVAL: Duration = Duration::from_secs(60);
const IDLE_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// How long sent bytes may stay unacknowledged before the kernel gives the socket up
/// (instead of retransmitting for up to 15 minutes).
#[cfg(target_os = "linux")]
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);
/// Apple's error bodies are a few dozen bytes; anything longer is cut here.
const MAX_ERROR_BODY: usize = 4096;

/// What Apple answered.
pub(super) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// Empty for `200`.
    pub body: Bytes,
}

/// Why no answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// No connection could be opened (DNS, TCP, TLS or the HTTP/2 preface).
    ConnectFailed,
    /// The push was sent and the connection failed before the answer.
    ConnectionError,
    /// No answer within the request timeout.
    Timeout,
}

impl Failure {
    /// The reason reported in outcomes and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ConnectFailed => "ConnectFailed",
            Self::ConnectionError => "ConnectionError",
            Self::Timeout => "Timeout",
        }
    }
}

/// One gateway (`https://host:port`) and its connections.
pub(super) struct Gateway {
    scheme: Scheme,
    authority: Authority,
    host: String,
    port: u16,
    /// `None` for `http://` endpoints (HTTP/2 with prior knowledge, tests only).
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    connections: Mutex<Vec<Arc<Connection>>>,
    /// Held while a connection is opened, so a burst opens one, not one per push.
    connecting: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
}

impl Gateway {
    /// `endpoint` is a checked `http(s)://host[:port]` URL.
    pub fn new(
        endpoint: &reqwest::Url,
        tls: &Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
    ) -> Result<Self, ApnsConfigError> {
        let bad = || ApnsConfigError::BadEndpoint(endpoint.to_string());
        let host = endpoint.host_str().ok_or_else(bad)?.to_owned();
        let port = endpoint.port_or_known_default().ok_or_else(bad)?;
        let authority = Authority::try_from(format!("{host}:{port}")).map_err(|_| bad())?;
        let (scheme, tls) = match endpoint.scheme() {
            "https" => {
                // IPv6 literals come bracketed in URLs, and bare in certificates.
                let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|_| bad())?;
                (
                    Scheme::HTTPS,
                    Some((TlsConnector::from(Arc::clone(tls)), name)),
                )
            }
            _ => (Scheme::HTTP, None),
        };
        Ok(Self {
            scheme,
            authority,
            host,
            port,
            tls,
            connect_timeout,
            connections: Mutex::new(Vec::new()),
            connecting: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
        })
    }

    /// `<endpoint><path>`, from parts parsed once: only the path is checked per push.
    pub fn uri(&self, path: String) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = PathAndQuery::from_maybe_shared(Bytes::from(path)).ok();
        Uri::from_parts(parts).unwrap_or_default()
    }

    /// Sends one request with `body` and waits up to `timeout` for the whole answer.
    /// `build` makes the request again when it is sent again on another connection.
    pub async fn send(
        &self,
        build: impl Fn() -> Request<()>,
        body: &Bytes,
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        // A push that outlives the timeout drops its lease unanswered, which takes its
        // connection out of service (see `Lease`).
        tokio::time::timeout(timeout, self.send_resending(build, body))
            .await
            .unwrap_or(Err(Failure::Timeout))
    }

    async fn send_resending(
        &self,
        build: impl Fn() -> Request<()>,
        body: &Bytes,
    ) -> Result<Answer, Failure> {
        for _ in 0..=MAX_RESENDS {
            let connection = self.checkout().await?;
            let mut lease = Lease::take(&connection);
            let turn = connection.wait_turn().await;
            if turn.is_some() && !connection.state.is_open() {
                // Retired while this push waited its turn: another connection takes it.
                lease.settled();
                continue;
            }
            let result = connection.exchange(&build, body).await;
            lease.settled();
            drop(turn);
            match result {
                Ok(answer) => {
                    if answer.status != StatusCode::FORBIDDEN {
                        // Apple took our provider token: the connection is open to many
                        // streams now.
                        connection.state.warm.store(true, Ordering::Release);
                    }
                    return Ok(answer);
                }
                Err(StreamError::Unprocessed(error)) => {
                    connection.retire("refused a push unprocessed");
                    tracing::debug!(
                        connection = connection.id,
                        %error,
                        "APNs did not process a push; sending it again on another connection"
                    );
                }
                Err(StreamError::Lost(error)) => {
                    connection.retire("failed a push");
                    tracing::debug!(connection = connection.id, %error, "APNs push lost");
                    return Err(Failure::ConnectionError);
                }
            }
        }
        Err(Failure::ConnectionError)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Connection>>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection for the next push: a warm one with room, else a new one still
    /// waiting for its first answer (the push waits its turn there), else, once
    /// [`MAX_CONNECTIONS`] are open, the least loaded; `None` means "open another".
    fn pick(&self) -> Option<Arc<Connection>> {
        let mut connections = self.lock();
        connections.retain(|c| c.state.is_open());
        let mut cold = None;
        let mut least: Option<&Arc<Connection>> = None;
        for connection in connections.iter() {
            if !connection.state.warm.load(Ordering::Acquire) {
                cold.get_or_insert(connection);
                continue;
            }
            let load = connection.state.in_flight.load(Ordering::Acquire);
            if load < connection.send.current_max_send_streams() {
                return Some(Arc::clone(connection));
            }
            if least.is_none_or(|l| l.state.in_flight.load(Ordering::Acquire) > load) {
                least = Some(connection);
            }
        }
        cold.or(least.filter(|_| connections.len() >= MAX_CONNECTIONS))
            .cloned()
    }

    async fn checkout(&self) -> Result<Arc<Connection>, Failure> {
        match self.pick() {
            Some(connection) => Ok(connection),
            // Rare, and its state large (TCP, TLS and HTTP/2 handshakes): boxed, so the
            // state of every push in flight has no room for it.
            None => Box::pin(self.open_connection()).await,
        }
    }

    async fn open_connection(&self) -> Result<Arc<Connection>, Failure> {
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.pick() {
            return Ok(connection);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = match tokio::time::timeout(self.connect_timeout, self.connect(id)).await {
            Ok(Ok(connection)) => Arc::new(connection),
            Ok(Err(error)) => {
                tracing::warn!(gateway = %self.authority, %error, "cannot connect to APNs");
                return Err(Failure::ConnectFailed);
            }
            Err(_) => {
                tracing::warn!(gateway = %self.authority, "connecting to APNs timed out");
                return Err(Failure::ConnectFailed);
            }
        };
        tracing::info!(gateway = %self.authority, connection = id, "APNs connection opened");
        self.lock().push(Arc::clone(&connection));
        Ok(connection)
    }

    async fn connect(&self, id: u64) -> Result<Connection, ConnectError> {
        let tcp = TcpStream::connect((self.host.trim_matches(['[', ']']), self.port)).await?;
        // Nagle's algorithm would hold small frames back for ~40 ms.
        tcp.set_nodelay(true)?;
        #[cfg(target_os = "linux")]
        socket2::SockRef::from(&tcp).set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))?;
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                if tls.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
                    return Err(ConnectError::NoHttp2);
                }
                Connection::handshake(id, Coalescing(tls)).await
            }
            None => Connection::handshake(id, Coalescing(tcp)).await,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("the server did not agree to HTTP/2 (ALPN h2)")]
    NoHttp2,
    #[error("HTTP/2 handshake failed: {0}")]
    Handshake(#[from] h2::Error),
}

/// One HTTP/2 connection.
struct Connection {
    id: u64,
    send: SendRequest<Bytes>,
    state: Arc<State>,
    /// One push at a time until the first answer.
    turn: tokio::sync::Mutex<()>,
}

/// What the connection's handles and its driver task share.
#[derive(Default)]
struct State {
    /// Cleared when the connection may take no new push: it failed or left one
    /// unanswered, Apple sent `GOAWAY`, or it closed.
    open: AtomicBool,
    /// Set by the first answer that was not a 403: Apple allows many streams now.
    warm: AtomicBool,
    /// Pushes on it now.
    in_flight: AtomicUsize,
    /// Pushes it ever took, so the keep-alive sees short-lived traffic between ticks.
    taken: AtomicU64,
}

impl State {
    fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

/// A result of one stream that is not an answer.
enum StreamError {
    /// Apple never processed the push: safe to send again.
    Unprocessed(h2::Error),
    /// The push may have reached Apple.
    Lost(h2::Error),
}

impl Connection {
    async fn handshake<T>(id: u64, io: T) -> Result<Self, ConnectError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, mut connection) = h2::client::Builder::new()
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await?;
        let state = Arc::new(State {
            open: AtomicBool::new(true),
            ..State::default()
        });
        let ping_pong = connection.ping_pong();
        let driver_state = Arc::clone(&state);
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => match ended {
                    Ok(()) => tracing::debug!(connection = id, "APNs connection closed"),
                    Err(error) => tracing::info!(connection = id, %error, "APNs connection ended"),
                },
                () = keep_alive(ping_pong, &driver_state) => tracing::warn!(
                    connection = id,
                    "APNs connection stopped answering PINGs: closed, and what it carried is retried on a new one"
                ),
            }
            // Dropping the connection fails the streams it still carried.
            driver_state.open.store(false, Ordering::Release);
        });
        Ok(Self {
            id,
            send,
            state,
            turn: tokio::sync::Mutex::new(()),
        })
    }

    /// Until the first answer, one push at a time: the guard is held while it is out.
    async fn wait_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if self.state.warm.load(Ordering::Acquire) {
            return None;
        }
        let turn = self.turn.lock().await;
        (!self.state.warm.load(Ordering::Acquire)).then_some(turn)
    }

    /// Takes the connection out of service: pushes on it finish, new ones go elsewhere.
    fn retire(&self, why: &str) {
        if self.state.open.swap(false, Ordering::AcqRel) {
            tracing::info!(
                connection = self.id,
                why,
                "APNs connection retired: later pushes go to another"
            );
        }
    }

    /// One stream: the request `build` makes, then `body`. The request is built once
    /// the stream may open, so the state of a push waiting for room does not hold it.
    async fn exchange(
        &self,
        build: &impl Fn() -> Request<()>,
        body: &Bytes,
    ) -> Result<Answer, StreamError> {
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(StreamError::Unprocessed)?;
        let (response, mut stream) = send
            .send_request(build(), false)
            .map_err(StreamError::Unprocessed)?;
        stream
            .send_data(body.clone(), true)
            .map_err(classify_error)?;
        let response = response.await.map_err(classify_error)?;
        if response.status() == StatusCode::OK {
            let (head, _) = response.into_parts();
            return Ok(Answer {
                status: head.status,
                headers: head.headers,
                body: Bytes::new(),
            });
        }
        // Rare: boxed, so the state of every push in flight has no room for it.
        Box::pin(error_answer(response))
            .await
            .map_err(classify_error)
    }
}

/// Which stream errors mean Apple never processed the push: a `REFUSED_STREAM` reset,
/// or a graceful `GOAWAY` whose last stream is below ours.
fn classify_error(error: h2::Error) -> StreamError {
    let refused = error.is_reset() && error.reason() == Some(Reason::REFUSED_STREAM);
    let above_goaway =
        error.is_go_away() && error.is_remote() && error.reason() == Some(Reason::NO_ERROR);
    if refused || above_goaway {
        StreamError::Unprocessed(error)
    } else {
        StreamError::Lost(error)
    }
}

async fn error_answer(response: http::Response<h2::RecvStream>) -> Result<Answer, h2::Error> {
    let (head, mut recv) = response.into_parts();
    let mut body = BytesMut::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        let room = MAX_ERROR_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(Answer {
        status: head.status,
        headers: head.headers,
        body: body.freeze(),
    })
}

/// A push's place on a connection. Dropped before it settled (the request timed out),
/// it takes the connection out of service: it may be dead without knowing it (a NAT
/// or load balancer that forgot the flow).
struct Lease<'a> {
    connection: &'a Connection,
    settled: bool,
}

impl<'a> Lease<'a> {
    fn take(connection: &'a Connection) -> Self {
        connection.state.in_flight.fetch_add(1, Ordering::AcqRel);
        connection.state.taken.fetch_add(1, Ordering::Relaxed);
        Self {
            connection,
            settled: false,
        }
    }

    fn settled(&mut self) {
        self.settled = true;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.connection
            .state
            .in_flight
            .fetch_sub(1, Ordering::AcqRel);
        if !self.settled {
            self.connection.retire("left a push unanswered");
        }
    }
}

/// Pings the connection every second while it carries pushes (and every minute while
/// idle); returns when a PING goes unanswered, which closes the connection.
async fn keep_alive(ping_pong: Option<PingPong>, state: &State) {
    let Some(mut ping_pong) = ping_pong else {
        return std::future::pending().await;
    };
    let mut seen = 0;
    let mut idle = Duration::ZERO;
    loop {
        tokio::time::sleep(BUSY_PING_INTERVAL).await;
        let taken = state.taken.load(Ordering::Relaxed);
        let busy = taken != seen || state.in_flight.load(Ordering::Acquire) > 0;
        seen = taken;
        let timeout = if busy {
            idle = Duration::ZERO;
            BUSY_PING_TIMEOUT
        } else {
            idle += BUSY_PING_INTERVAL;
            if idle < IDLE_PING_INTERVAL {
                continue;
            }
            idle = Duration::ZERO;
            IDLE_PING_TIMEOUT
        };
        match tokio::time::timeout(timeout, ping_pong.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            // The connection closed: its driver notices by itself.
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
        }
    }
}

/// Hides vectored writes from h2, so that it copies frames of up to 1 KB into its
/// 16 KB write buffer instead of chaining each push's payload as a buffer of its own:
/// pushes in flight then leave in few large writes (one TLS record and one system call
/// for many pushes) rather than one each.
struct Coalescing<T>(T);

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The TLS settings for APNs: TLS 1.2 or 1.3, ALPN `h2`, and only the roots we name:
/// Mozilla's (which include Apple's issuers) plus `extra_ca_pem` (`APNS_CA_FILE`).
pub(super) fn tls_config(
    extra_ca_pem: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, ApnsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        let mut added = 0;
        for certificate in rustls_pemfile::certs(&mut pem.as_bytes()) {
            let certificate =
                certificate.map_err(|e| ApnsConfigError::BadCaCertificate(e.to_string()))?;
            roots
                .add(certificate)
                .map_err(|e| ApnsConfigError::BadCaCertificate(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(ApnsConfigError::BadCaCertificate(
                "no CERTIFICATE block found".into(),
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(ApnsConfigError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
