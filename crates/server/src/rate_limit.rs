//! Registrations per client address: a GCRA (the leaky bucket as a virtual
//! scheduler), one theoretical arrival time per address, in bounded memory.
//!
//! The client address is the socket's peer, or, when that peer is a trusted proxy
//! (`TRUSTED_PROXIES`), the right-most address of `X-Forwarded-For` that is not one: a
//! client can put anything on the left of that header, but not past the proxies that
//! append to it. IPv6 clients are counted per /64, the smallest block a provider hands
//! out, so rotating addresses inside one's own prefix buys nothing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use ipnet::IpNet;

/// Addresses tracked at once. Past this, after forgetting addresses whose bucket is
/// empty again, newcomers share one bucket: a flood from many addresses is limited
/// as one client, and memory stays bounded.
const MAX_TRACKED: usize = 65_536;

/// How many registrations an address may make, and how fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Registrations per minute, sustained; also the burst an idle address may send at
    /// once.
    pub per_minute: u32,
}

/// The registrations rate limiter shared by every HTTP worker.
pub struct RegisterRateLimiter {
    /// `None`: unlimited.
    limit: Option<Gcra>,
    trusted: Vec<IpNet>,
    /// Theoretical arrival time per client (GCRA's TAT).
    clients: Mutex<HashMap<ClientKey, Instant>>,
}

#[derive(Debug, Clone, Copy)]
struct Gcra {
    /// Time one registration costs.
    interval: Duration,
    /// How far ahead of now the arrival time may run: the burst.
    tolerance: Duration,
}

/// Whom a request is counted against.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum ClientKey {
    Address(IpAddr),
    /// Everyone who arrived while [`MAX_TRACKED`] addresses were in use.
    Overflow,
}

impl RegisterRateLimiter {
    /// `limit` of `None` or zero per minute lets everything through; `X-Forwarded-For`
    /// is read only from a peer inside one of `trusted`.
    pub fn new(limit: Option<RateLimit>, trusted: Vec<IpNet>) -> Self {
        let limit = limit.filter(|l| l.per_minute > 0).map(|l| {
            let interval = Duration::from_secs(60) / l.per_minute;
            Gcra {
                interval,
                tolerance: interval * (l.per_minute - 1),
            }
        });
        Self {
            limit,
            trusted,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one registration of the request's client; `Err` holds how long it must
    /// wait before the next one is let through.
    pub fn check(&self, request: &HttpRequest) -> Result<(), Duration> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let Some(peer) = request.peer_addr().map(|a| a.ip()) else {
            return Ok(());
        };
        let forwarded = request
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok());
        let client = client_address(peer, forwarded, &self.trusted);
        self.check_at(
            limit,
            ClientKey::Address(per_subnet(client)),
            Instant::now(),
        )
    }

    fn check_at(&self, limit: Gcra, key: ClientKey, now: Instant) -> Result<(), Duration> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let key = if clients.len() >= MAX_TRACKED && !clients.contains_key(&key) {
            // A bucket whose arrival time has passed is as good as a new one.
            clients.retain(|_, tat| *tat > now);
            if clients.len() >= MAX_TRACKED {
                ClientKey::Overflow
            } else {
                key
            }
        } else {
            key
        };
        let tat = clients.get(&key).copied().unwrap_or(now).max(now);
        let allowed_from = tat.checked_sub(limit.tolerance).unwrap_or(now);
        if now < allowed_from {
            return Err(allowed_from - now);
        }
        clients.insert(key, tat + limit.interval);
        Ok(())
    }
}

/// The address a request is counted against: the peer itself unless it is a trusted
/// proxy; then the right-most `X-Forwarded-For` entry that is not trusted (the left-most
/// when all are). An unreadable entry stops the walk at the last good address.
fn client_address<'a>(
    peer: IpAddr,
    forwarded: impl Iterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded.flat_map(|v| v.split(',')).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop.trim()) {
            Some(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`,
/// `[2001:db8::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(hop) {
        return Some(ip);
    }
    if let Ok(socket) = std::net::SocketAddr::from_str(hop) {
        return Some(socket.ip());
    }
    None
}

/// IPv6 addresses by their /64; IPv4 (and IPv4-mapped IPv6) as they are.
fn per_subnet(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Parses `TRUSTED_PROXIES`: comma-separated addresses or CIDR blocks.
pub fn parse_trusted_proxies(value: &str) -> Result<Vec<IpNet>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            IpNet::from_str(item)
                .or_else(|_| IpAddr::from_str(item).map(IpNet::from))
                .map_err(|_| format!("`{item}` is neither an IP address nor a CIDR block"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn limiter(per_minute: u32) -> (RegisterRateLimiter, Gcra) {
        let limiter = RegisterRateLimiter::new(Some(RateLimit { per_minute }), Vec::new());
        let gcra = limiter.limit.unwrap();
        (limiter, gcra)
    }

    #[test]
    fn a_burst_of_the_minute_passes_then_one_per_interval() {
        let (limiter, gcra) = limiter(60);
        let key = ClientKey::Address(ip("192.0.2.1"));
        let start = Instant::now();
        for _ in 0..60 {
            limiter.check_at(gcra, key, start).unwrap();
        }
        let wait = limiter.check_at(gcra, key, start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // Another address is not affected.
        limiter
            .check_at(gcra, ClientKey::Address(ip("192.0.2.2")), start)
            .unwrap();
        // One interval later exactly one more passes.
        let later = start + Duration::from_secs(1);
        limiter.check_at(gcra, key, later).unwrap();
        assert!(limiter.check_at(gcra, key, later).is_err());
        // A minute of quiet refills the whole burst.
        let much_later = later + Duration::from_secs(61);
        for _ in 0..60 {
            limiter.check_at(gcra, key, much_later).unwrap();
        }
        assert!(limiter.check_at(gcra, key, much_later).is_err());
    }

    #[test]
    fn zero_or_no_limit_lets_everything_through() {
        assert!(
            RegisterRateLimiter::new(Some(RateLimit { per_minute: 0 }), Vec::new())
                .limit
                .is_none()
        );
        assert!(RegisterRateLimiter::new(None, Vec::new()).limit.is_none());
    }

    #[test]
    fn memory_stays_bounded_and_newcomers_share_a_bucket_when_full() {
        let (limiter, gcra) = limiter(2);
        let now = Instant::now();
        for n in 0..MAX_TRACKED as u32 {
            let key = ClientKey::Address(IpAddr::V4(n.into()));
            limiter.check_at(gcra, key, now).unwrap();
        }
        let newcomer = |n: u32| ClientKey::Address(IpAddr::V4((u32::MAX - n).into()));
        limiter.check_at(gcra, newcomer(0), now).unwrap();
        limiter.check_at(gcra, newcomer(1), now).unwrap();
        assert!(limiter.check_at(gcra, newcomer(2), now).is_err());
        assert_eq!(limiter.clients.lock().unwrap().len(), MAX_TRACKED + 1);
        // Once the old buckets have drained, newcomers are tracked on their own again.
        let later = now + Duration::from_secs(61);
        limiter.check_at(gcra, newcomer(3), later).unwrap();
        assert!(limiter.clients.lock().unwrap().len() <= 2);
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies() {
        let trusted = parse_trusted_proxies("10.0.0.0/8, 192.0.2.7").unwrap();
        let header = ["198.51.100.9, 203.0.113.5", "10.1.2.3"];
        // From an untrusted peer the header is ignored.
        assert_eq!(
            client_address(ip("203.0.113.77"), header.into_iter(), &trusted),
            ip("203.0.113.77")
        );
        // From a trusted one: the right-most untrusted entry, not the spoofable left.
        assert_eq!(
            client_address(ip("192.0.2.7"), header.into_iter(), &trusted),
            ip("203.0.113.5")
        );
        // All trusted: the left-most; none: the peer; garbage stops the walk.
        assert_eq!(
            client_address(ip("10.0.0.1"), ["10.0.0.2, 10.0.0.3"].into_iter(), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), std::iter::empty(), &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), ["203.0.113.5, bogus"].into_iter(), &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), ["[2001:db8::1]:443"].into_iter(), &trusted),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        assert_eq!(
            per_subnet(ip("2001:db8:1:2:aaaa::1")),
            per_subnet(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            per_subnet(ip("2001:db8:1:2::1")),
            per_subnet(ip("2001:db8:1:3::1"))
        );
        assert_eq!(per_subnet(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn trusted_proxies_name_what_is_wrong() {
        assert_eq!(parse_trusted_proxies("").unwrap(), Vec::<IpNet>::new());
        let err = parse_trusted_proxies("10.0.0.0/8,nope").unwrap_err();
        assert!(err.contains("`nope`"), "{err}");
    }
}
