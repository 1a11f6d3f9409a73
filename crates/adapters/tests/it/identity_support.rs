//! The local stand-in of Webex's `/v1/people/me` and the helpers the identity tests share.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use chrono::DateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use webex_push_adapters::identity::{WebexIdentity, WebexIdentityConfig};
use webex_push_domain::{AccessToken, IdentityError, IdentityPort, ManualClock, PersonId};

pub const ADA: &str = "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
pub const BOB: &str = "0f1e2d3c-4b5a-4968-8776-655443322110";
pub const ADA_TOKEN: &str = "ZDI3MGEyYzQtNmFlNS00NDNhLWFlNzAtZGVjMjE2YzEyOGM0_PF84_ada";
pub const BOB_TOKEN: &str = "NzFmYjVkZTAtYzU0Ny00YjM5LWE0ZjYtMzMwZTBiNDQ1MjJh_PF84_bob";
pub const UNKNOWN_TOKEN: &str = "bm90LWEtdG9rZW4tYW55b25lLWtub3dz_PF84_nobody";

/// How long a test waits for something before it fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Ada's id as Webex spells it: base64 of a regional cluster URI.
pub fn webex_id(uuid: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("ciscospark://urn:TEAM:us-east-2_a/PEOPLE/{uuid}"))
}

pub fn token(value: &str) -> AccessToken {
    AccessToken::parse(value).unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
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
pub struct Seen {
    pub request_line: String,
    pub headers: HashMap<String, String>,
}

pub struct State {
    people: HashMap<&'static str, String>,
    mode: Mutex<Mode>,
    requests: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

/// A plain HTTP/1.1 stand-in for `webexapis.com`, on a port of its own.
pub struct WebexStandIn {
    addr: SocketAddr,
    state: Arc<State>,
}

impl WebexStandIn {
    pub async fn start() -> Self {
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

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

pub async fn serve(mut stream: TcpStream, state: Arc<State>) {
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

pub fn start_time() -> DateTime<chrono::Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

pub fn config(base_url: String) -> WebexIdentityConfig {
    WebexIdentityConfig {
        base_url,
        timeout: Duration::from_secs(5),
        cache_ttl: Duration::from_secs(300),
        rejection_ttl: Duration::from_secs(30),
        cache_capacity: 100,
    }
}

pub fn identity(config: WebexIdentityConfig, clock: &ManualClock) -> WebexIdentity {
    WebexIdentity::with_clock(config, Arc::new(clock.clone())).unwrap()
}

pub async fn ask(identity: &WebexIdentity, value: &str) -> Result<PersonId, IdentityError> {
    tokio::time::timeout(PATIENCE, identity.person_for_token(&token(value)))
        .await
        .expect("the identity adapter hung")
}
