//! The Webex identity adapter against a local stand-in of `GET /v1/people/me`.

// clippy.toml allows these in `#[test]` functions only; the stand-in and fixtures are
// plain helpers, so the allowance is spelled out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::{DateTime, TimeDelta};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use webex_push_adapters::identity::{WebexIdentity, WebexIdentityConfig};
use webex_push_domain::{AccessToken, IdentityError, IdentityPort, ManualClock, PersonId};

const ADA: &str = "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const BOB: &str = "0f1e2d3c-4b5a-4968-8776-655443322110";
const ADA_TOKEN: &str = "ZDI3MGEyYzQtNmFlNS00NDNhLWFlNzAtZGVjMjE2YzEyOGM0_PF84_ada";
const BOB_TOKEN: &str = "NzFmYjVkZTAtYzU0Ny00YjM5LWE0ZjYtMzMwZTBiNDQ1MjJh_PF84_bob";
const UNKNOWN_TOKEN: &str = "bm90LWEtdG9rZW4tYW55b25lLWtub3dz_PF84_nobody";

/// How long a test waits for something before it fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

/// Ada's id as Webex spells it: base64 of a regional cluster URI.
fn webex_id(uuid: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("ciscospark://urn:TEAM:us-east-2_a/PEOPLE/{uuid}"))
}

fn token(value: &str) -> AccessToken {
    AccessToken::parse(value).unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Answers as Webex does: the person for a known token, 401 otherwise.
    Webex,
    /// Answers every request with this status and a Webex-like error body.
    Status(u16),
    /// Answers 200 with this body whatever the token.
    Body(&'static str),
    /// Reads the request and never answers.
    Hang,
}

/// What the stand-in saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    headers: HashMap<String, String>,
}

struct State {
    people: HashMap<&'static str, String>,
    mode: Mutex<Mode>,
    requests: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

/// A plain HTTP/1.1 stand-in for `webexapis.com`, on a port of its own.
struct WebexStandIn {
    addr: SocketAddr,
    state: Arc<State>,
}

impl WebexStandIn {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            people: HashMap::from([(ADA_TOKEN, webex_id(ADA)), (BOB_TOKEN, webex_id(BOB))]),
            mode: Mutex::new(Mode::Webex),
            requests: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let server_state = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, server_state.clone()));
            }
        });
        Self { addr, state }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    state.requests.fetch_add(1, Ordering::SeqCst);
    state.seen.lock().unwrap().push(Seen {
        request_line: request_line.clone(),
        headers: headers.clone(),
    });

    let mode = *state.mode.lock().unwrap();
    let (status, body) = match mode {
        Mode::Hang => return std::future::pending().await,
        Mode::Status(status) => (
            status,
            r#"{"message":"Service Unavailable","trackingId":"ROUTER_standin"}"#.to_owned(),
        ),
        Mode::Body(body) => (200, body.to_owned()),
        Mode::Webex => {
            let bearer = headers
                .get("authorization")
                .and_then(|value| value.strip_prefix("Bearer "));
            match bearer.and_then(|token| state.people.get(token)) {
                Some(id) if request_line == "GET /v1/people/me HTTP/1.1" => (
                    200,
                    serde_json::json!({
                        "id": id,
                        "emails": ["someone@example.com"],
                        "displayName": "Someone",
                        "orgId": "Y2lzY29zcGFyazovL3VzL09SR0FOSVpBVElPTi9vcmc",
                        "type": "person",
                    })
                    .to_string(),
                ),
                Some(_) => (404, r#"{"message":"not found"}"#.to_owned()),
                None => (
                    401,
                    r#"{"message":"The request requires a valid access token set in the Authorization request header.","trackingId":"ROUTER_standin"}"#
                        .to_owned(),
                ),
            }
        }
    };
    let response = format!(
        "HTTP/1.1 {status} Stand-in\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn start_time() -> DateTime<chrono::Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn config(base_url: String) -> WebexIdentityConfig {
    WebexIdentityConfig {
        base_url,
        timeout: Duration::from_secs(5),
        cache_ttl: Duration::from_secs(300),
        rejection_ttl: Duration::from_secs(30),
        cache_capacity: 100,
    }
}

fn identity(config: WebexIdentityConfig, clock: &ManualClock) -> WebexIdentity {
    WebexIdentity::with_clock(config, Arc::new(clock.clone())).unwrap()
}

async fn ask(identity: &WebexIdentity, value: &str) -> Result<PersonId, IdentityError> {
    tokio::time::timeout(PATIENCE, identity.person_for_token(&token(value)))
        .await
        .expect("the identity adapter hung")
}

#[tokio::test]
async fn a_valid_token_names_its_person_as_webex_says() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);

    let ada = ask(&identity, ADA_TOKEN).await.unwrap();
    assert_eq!(ada, PersonId::parse(ADA).unwrap());
    let bob = ask(&identity, BOB_TOKEN).await.unwrap();
    assert_eq!(bob, PersonId::parse(BOB).unwrap());

    let seen = webex.seen();
    assert_eq!(seen[0].request_line, "GET /v1/people/me HTTP/1.1");
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some(format!("Bearer {ADA_TOKEN}").as_str())
    );
    assert_eq!(
        seen[0].headers.get("accept").map(String::as_str),
        Some("application/json")
    );
}

#[tokio::test]
async fn a_second_ask_within_the_ttl_is_answered_from_the_cache() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);

    ask(&identity, ADA_TOKEN).await.unwrap();
    clock.advance(TimeDelta::seconds(299));
    let again = ask(&identity, ADA_TOKEN).await.unwrap();
    assert_eq!(again, PersonId::parse(ADA).unwrap());
    assert_eq!(webex.requests(), 1);
}

#[tokio::test]
async fn after_the_ttl_webex_is_asked_again() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);

    ask(&identity, ADA_TOKEN).await.unwrap();
    clock.advance(TimeDelta::seconds(300));
    ask(&identity, ADA_TOKEN).await.unwrap();
    assert_eq!(webex.requests(), 2);
}

#[tokio::test]
async fn a_clock_set_back_does_not_stretch_a_cached_answer() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);

    ask(&identity, ADA_TOKEN).await.unwrap();
    clock.advance(TimeDelta::seconds(-60));
    ask(&identity, ADA_TOKEN).await.unwrap();
    assert_eq!(webex.requests(), 2);
}

#[tokio::test]
async fn a_token_webex_refuses_is_rejected_and_remembered_briefly() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);

    let refused = ask(&identity, UNKNOWN_TOKEN).await;
    assert!(
        matches!(refused, Err(IdentityError::Rejected)),
        "{refused:?}"
    );
    clock.advance(TimeDelta::seconds(29));
    let refused = ask(&identity, UNKNOWN_TOKEN).await;
    assert!(
        matches!(refused, Err(IdentityError::Rejected)),
        "{refused:?}"
    );
    assert_eq!(webex.requests(), 1);

    clock.advance(TimeDelta::seconds(1));
    let refused = ask(&identity, UNKNOWN_TOKEN).await;
    assert!(
        matches!(refused, Err(IdentityError::Rejected)),
        "{refused:?}"
    );
    assert_eq!(webex.requests(), 2);
}

#[tokio::test]
async fn a_403_is_a_rejection_too() {
    let webex = WebexStandIn::start().await;
    webex.set_mode(Mode::Status(403));
    let identity = identity(config(webex.base_url()), &ManualClock::new(start_time()));
    let refused = ask(&identity, ADA_TOKEN).await;
    assert!(
        matches!(refused, Err(IdentityError::Rejected)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn rejections_are_not_remembered_when_their_ttl_is_zero() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(
        WebexIdentityConfig {
            rejection_ttl: Duration::ZERO,
            ..config(webex.base_url())
        },
        &clock,
    );
    for _ in 0..2 {
        let refused = ask(&identity, UNKNOWN_TOKEN).await;
        assert!(
            matches!(refused, Err(IdentityError::Rejected)),
            "{refused:?}"
        );
    }
    assert_eq!(webex.requests(), 2);
}

#[tokio::test]
async fn webex_failing_is_unavailable_and_not_remembered() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);

    for status in [503, 500, 502, 429] {
        webex.set_mode(Mode::Status(status));
        let answer = ask(&identity, ADA_TOKEN).await;
        assert!(
            matches!(answer, Err(IdentityError::Unavailable(_))),
            "{status}: {answer:?}"
        );
    }
    webex.set_mode(Mode::Webex);
    assert_eq!(
        ask(&identity, ADA_TOKEN).await.unwrap(),
        PersonId::parse(ADA).unwrap()
    );
    assert_eq!(webex.requests(), 5);
}

#[tokio::test]
async fn webex_hanging_is_unavailable_within_the_timeout() {
    let webex = WebexStandIn::start().await;
    webex.set_mode(Mode::Hang);
    let identity = identity(
        WebexIdentityConfig {
            timeout: Duration::from_millis(300),
            ..config(webex.base_url())
        },
        &ManualClock::new(start_time()),
    );
    let started = Instant::now();
    let answer = ask(&identity, ADA_TOKEN).await;
    assert!(
        matches!(answer, Err(IdentityError::Unavailable(_))),
        "{answer:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(webex.requests(), 1);
}

#[tokio::test]
async fn webex_unreachable_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let identity = identity(
        config(format!("http://{addr}")),
        &ManualClock::new(start_time()),
    );
    let answer = ask(&identity, ADA_TOKEN).await;
    assert!(
        matches!(answer, Err(IdentityError::Unavailable(_))),
        "{answer:?}"
    );
}

#[tokio::test]
async fn an_answer_that_is_not_a_person_is_unknown_and_not_remembered() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);
    let room =
        base64::engine::general_purpose::STANDARD.encode(format!("ciscospark://us/ROOM/{ADA}"));
    let room_body: &'static str = format!(r#"{{"id":"{room}"}}"#).leak();
    for body in ["<html>maintenance</html>", r#"{"emails":[]}"#, room_body] {
        webex.set_mode(Mode::Body(body));
        let answer = ask(&identity, ADA_TOKEN).await;
        assert!(
            matches!(answer, Err(IdentityError::Unknown(_))),
            "{body}: {answer:?}"
        );
    }
    webex.set_mode(Mode::Status(404));
    let answer = ask(&identity, ADA_TOKEN).await;
    assert!(
        matches!(answer, Err(IdentityError::Unknown(_))),
        "{answer:?}"
    );
    assert_eq!(identity.cached_answers(), 0);
}

#[tokio::test]
async fn the_cache_never_holds_more_than_its_capacity() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(
        WebexIdentityConfig {
            cache_capacity: 2,
            ..config(webex.base_url())
        },
        &clock,
    );
    ask(&identity, ADA_TOKEN).await.unwrap();
    clock.advance(TimeDelta::seconds(1));
    ask(&identity, BOB_TOKEN).await.unwrap();
    clock.advance(TimeDelta::seconds(1));
    let _ = ask(&identity, UNKNOWN_TOKEN).await;
    assert_eq!(identity.cached_answers(), 2);
    // Ada's answer expired first, so it made room; Bob's is still cached.
    ask(&identity, BOB_TOKEN).await.unwrap();
    assert_eq!(webex.requests(), 3);
    ask(&identity, ADA_TOKEN).await.unwrap();
    assert_eq!(webex.requests(), 4);
}

/// Collects everything the adapter logs, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_token_never_reaches_the_logs_or_the_errors() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);
    let mut shown = Vec::new();
    ask(&identity, ADA_TOKEN).await.unwrap();
    ask(&identity, ADA_TOKEN).await.unwrap();
    shown.push(format!("{:?}", ask(&identity, UNKNOWN_TOKEN).await));
    for status in [503, 404] {
        webex.set_mode(Mode::Status(status));
        let error = ask(&identity, BOB_TOKEN).await.unwrap_err();
        shown.push(format!(
            "{error:?} {error} {:?}",
            std::error::Error::source(&error)
        ));
    }

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("webex_person_for_token"),
        "nothing was logged: {logs}"
    );
    for secret in [ADA_TOKEN, BOB_TOKEN, UNKNOWN_TOKEN] {
        let part = &secret[..16];
        assert!(!logs.contains(part), "a token is in the logs:\n{logs}");
        for text in &shown {
            assert!(!text.contains(part), "a token is in an error: {text}");
        }
    }
}
