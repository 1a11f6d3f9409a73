//! A TCP proxy in front of the stand-in (or any server a test talks to, such as
//! Postgres) that can silently stop forwarding the connections it carries, as a NAT or
//! load balancer does when it forgets a flow: the client's bytes are still read (its
//! kernel sees them acknowledged) and dropped, and nothing comes back. New connections
//! are forwarded as usual. It can also hold the server's replies back for a while, as
//! a congested network does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running proxy; dropping it stops accepting and forwarding.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct ProxyShared {
    /// One flag per connection carried: set, it forwards nothing any more.
    flows: Mutex<Vec<Weak<AtomicBool>>>,
    accepted: AtomicU64,
    /// How long each chunk the server sends is held back, in milliseconds (0: none).
    reply_delay_ms: AtomicU64,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(ProxyShared::default());
        let task = tokio::spawn(accept_loop(listener, target, Arc::clone(&shared)));
        Ok(Self { addr, shared, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:<port>`: the stand-in's certificate is valid for it.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Every connection open now stops forwarding, in both directions, without
    /// closing; returns how many there were. Later connections are not affected.
    pub fn blackhole_live(&self) -> usize {
        let mut flows = self
            .shared
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        flows.retain(|flow| flow.strong_count() > 0);
        for flow in flows.iter().filter_map(Weak::upgrade) {
            flow.store(true, Ordering::Release);
        }
        flows.len()
    }

    /// From now on, every chunk the server sends on any connection reaches the client
    /// `delay` later (`Duration::ZERO`: at once again). What the client sends is not
    /// held back, so the server acts on it at once: a commit whose answer is late.
    pub fn delay_replies(&self, delay: std::time::Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.reply_delay_ms.store(millis, Ordering::Release);
    }

    /// Connections accepted since start.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::Acquire)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<ProxyShared>) {
    // The flows die with the accept loop (the proxy dropped), not on their own.
    let mut flows = tokio::task::JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::AcqRel);
        let blackholed = Arc::new(AtomicBool::new(false));
        shared
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&blackholed));
        let shared = Arc::clone(&shared);
        flows.spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            // Either direction ending (a close, an error) ends the flow.
            tokio::select! {
                () = pipe(client_read, server_write, &blackholed, None) => {}
                () = pipe(server_read, client_write, &blackholed, Some(&shared)) => {}
            }
        });
        while flows.try_join_next().is_some() {}
    }
}

/// Copies `from` to `to` until either ends; while `blackholed`, reads and drops. The
/// server's side (`delays`) holds each chunk back by the proxy's reply delay.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    blackholed: &AtomicBool,
    delays: Option<&ProxyShared>,
) {
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if blackholed.load(Ordering::Acquire) {
            continue;
        }
        let delay = delays.map_or(0, |shared| shared.reply_delay_ms.load(Ordering::Acquire));
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
