//! The APNs HTTP/2 client: one warm connection per environment (see
//! [`super::connection`]), one shared provider token, a bound on requests in flight,
//! every answer classified.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use tokio::sync::Semaphore;
use webex_push_domain::{
    ApnsEnvironment, Channel, Push, PushGateway, PushOutcome, PushProvider, TestAnswer,
    TestPushGateway,
};

use super::classify::{ErrorBody, classify, parse_retry_after};
use super::config::{ApnsConfig, ApnsConfigError};
use super::connection::{Answer, Gateway, tls_config};
use super::payload::Prepared;
use super::prepared::PreparedCache;
use super::token::{Clock, ProviderToken, ProviderTokens};

/// Apple's production gateway.
pub const PRODUCTION_ENDPOINT: &str = "https://api.push.apple.com";
/// Apple's development gateway.
pub const SANDBOX_ENDPOINT: &str = "https://api.sandbox.push.apple.com";

/// Room for our eight headers.
const HEADER_CAPACITY: usize = 8;

static APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
static APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
static APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
static APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
static APNS_ID: HeaderName = HeaderName::from_static("apns-id");
static APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");

/// Everything APNs said about one push, for the CLI and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsAnswer {
    /// `None` when no answer came (connection error, timeout).
    pub status: Option<u16>,
    /// Apple's reason, or what went wrong on our side when no answer came.
    pub reason: Option<String>,
    /// The `apns-id` APNs echoed, else the one we sent.
    pub apns_id: String,
    /// Where the last attempt went.
    pub environment: ApnsEnvironment,
    pub outcome: PushOutcome,
    /// From the first byte sent to the classified answer, fallback included.
    pub latency: Duration,
}

/// Why warming up failed.
#[derive(Debug, thiserror::Error)]
pub enum ApnsWarmUpError {
    #[error("cannot reach APNs ({environment}): {reason}")]
    Unreachable {
        environment: ApnsEnvironment,
        reason: String,
    },
    #[error("APNs ({environment}) refused our credentials or topic: {status} {reason}")]
    Refused {
        environment: ApnsEnvironment,
        status: u16,
        reason: String,
    },
}

/// The APNs client. Cheap to clone: every clone shares the connections, the token and
/// the in-flight bound.
#[derive(Clone)]
pub struct ApnsClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// `[production, sandbox]`; both the same gateway when `endpoint` overrides them.
    gateways: [Arc<Gateway>; 2],
    tokens: ProviderTokens,
    default_environment: ApnsEnvironment,
    alert_topic: HeaderValue,
    voip_topic: HeaderValue,
    in_flight: Semaphore,
    /// From sending a push to its whole answer, resends included.
    request_timeout: Duration,
    clock: Clock,
    /// Each event's payload, built by its first push.
    prepared: PreparedCache,
}

/// The raw result of one HTTP exchange.
struct Exchange {
    status: Option<u16>,
    reason: Option<String>,
    timestamp_ms: Option<i64>,
    retry_after: Option<Duration>,
    apns_id: Option<String>,
}

impl ApnsClient {
    pub fn new(config: ApnsConfig) -> Result<Self, ApnsConfigError> {
        Self::with_clock(config, Arc::new(SystemTime::now))
    }

    /// Like [`ApnsClient::new`], with the clock that dates provider tokens and
    /// expirations, so tests can age a token without waiting an hour.
    pub fn with_clock(config: ApnsConfig, clock: Clock) -> Result<Self, ApnsConfigError> {
        if config.max_in_flight == 0 {
            return Err(ApnsConfigError::NoInFlight);
        }
        let tls = tls_config(config.extra_ca_pem.as_deref())?;
        let build = |base: String| -> Result<Arc<Gateway>, ApnsConfigError> {
            let url = reqwest::Url::parse(&base).map_err(|_| ApnsConfigError::BadEndpoint(base))?;
            Ok(Arc::new(Gateway::new(&url, &tls, config.connect_timeout)?))
        };
        let gateways = match &config.endpoint {
            Some(endpoint) => {
                let shared = build(parse_endpoint(endpoint)?)?;
                [Arc::clone(&shared), shared]
            }
            None => [
                build(PRODUCTION_ENDPOINT.to_owned())?,
                build(SANDBOX_ENDPOINT.to_owned())?,
            ],
        };
        let topic_header = |channel| {
            HeaderValue::try_from(config.topic.topic(channel))
                .map_err(|_| ApnsConfigError::BadTopic(config.topic.to_string()))
        };
        let tokens = ProviderTokens::new(
            config.key.clone(),
            config.key_id.clone(),
            config.team_id.clone(),
            Arc::clone(&clock),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                gateways,
                tokens,
                default_environment: config.default_environment,
                alert_topic: topic_header(Channel::Alert)?,
                voip_topic: topic_header(Channel::Voip)?,
                in_flight: Semaphore::new(config.max_in_flight),
                request_timeout: config.request_timeout,
                clock,
                prepared: PreparedCache::default(),
            }),
        })
    }

    /// How many provider tokens this client minted so far (one per 50 minutes, plus
    /// one per `ExpiredProviderToken` at most every 20 minutes).
    pub fn provider_tokens_minted(&self) -> u64 {
        self.inner.tokens.minted()
    }

    /// Opens the connection to the default environment before traffic, and checks
    /// that APNs accepts our provider token and topic: sends one background push to
    /// an all-zero token, which Apple answers `BadDeviceToken` once the credentials
    /// pass. A burst that follows then shares this one warm connection.
    pub async fn warm_up(&self) -> Result<(), ApnsWarmUpError> {
        let environment = self.inner.default_environment;
        let prepared = Prepared {
            body: bytes::Bytes::from_static(b"{\"aps\":{\"content-available\":1}}"),
            channel: Channel::Alert,
            push_type: "background",
            priority: "5",
            expiration: 0,
            collapse_id: None,
        };
        let apns_id = new_apns_id();
        let token = self.inner.tokens.current();
        let gateway = self.inner.gateway(environment);
        let exchange = self
            .inner
            .exchange(
                gateway,
                &"0".repeat(64),
                self.inner.alert_topic.clone(),
                &prepared,
                &apns_id,
                &token,
            )
            .await;
        match exchange.status {
            None => Err(ApnsWarmUpError::Unreachable {
                environment,
                reason: exchange.reason.unwrap_or_default(),
            }),
            Some(status) => {
                let reason = exchange.reason.unwrap_or_default();
                match (status, reason.as_str()) {
                    (200, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Ok(()),
                    _ => Err(ApnsWarmUpError::Refused {
                        environment,
                        status,
                        reason,
                    }),
                }
            }
        }
    }

    /// Sends `push` (to the other environment too when it has none and the first says
    /// `BadDeviceToken`) and returns everything APNs answered.
    pub async fn send_detailed(&self, push: &Push) -> ApnsAnswer {
        let started = Instant::now();
        let inner = &self.inner;
        let rejected = |reason: &str| ApnsAnswer {
            status: None,
            reason: Some(reason.to_owned()),
            apns_id: String::new(),
            environment: push.environment.unwrap_or(inner.default_environment),
            outcome: PushOutcome::Rejected {
                reason: reason.to_owned(),
            },
            latency: started.elapsed(),
        };
        let prepared = match inner
            .prepared
            .get(&push.content, push.flavour, (inner.clock)())
        {
            Ok(prepared) => prepared,
            Err(unsendable) => return rejected(unsendable.reason()),
        };
        if prepared.channel != push.channel {
            // The domain routes each event to the token its app reads it on; a payload
            // for the other token (a VoIP push KitchenSink cannot report) is never sent.
            tracing::error!(
                token = %push.token,
                channel = %push.channel,
                payload_for = %prepared.channel,
                flavour = %push.flavour,
                "push for a token of the wrong channel; not sent"
            );
            return rejected("ChannelMismatch");
        }
        let topic = match &push.bundle_id {
            None => match push.channel {
                Channel::Voip => inner.voip_topic.clone(),
                Channel::Alert => inner.alert_topic.clone(),
            },
            Some(bundle) => match HeaderValue::try_from(bundle.topic(push.channel)) {
                Ok(topic) => topic,
                Err(_) => return rejected("BadTopic"),
            },
        };
        let first = push.environment.unwrap_or(inner.default_environment);
        let mut answer = inner.attempt(push, first, &topic, &prepared).await;
        if push.environment.is_none() && answer.reason.as_deref() == Some("BadDeviceToken") {
            tracing::debug!(
                token = %push.token,
                from = %first,
                "BadDeviceToken for a token without environment; trying the other"
            );
            answer = inner.attempt(push, first.other(), &topic, &prepared).await;
        }
        answer.latency = started.elapsed();
        answer
    }
}

#[async_trait]
impl PushGateway for ApnsClient {
    async fn send(&self, push: &Push) -> PushOutcome {
        self.send_detailed(push).await.outcome
    }
}

/// APNs' whole answer, as the domain shows operators a test push's.
impl From<ApnsAnswer> for TestAnswer {
    fn from(answer: ApnsAnswer) -> Self {
        Self {
            provider: PushProvider::Apns,
            status: answer.status,
            reason: answer.reason,
            id: answer.apns_id,
            environment: Some(answer.environment),
            outcome: answer.outcome,
            latency: answer.latency,
        }
    }
}

#[async_trait]
impl TestPushGateway for ApnsClient {
    async fn send_detailed(&self, push: &Push) -> TestAnswer {
        ApnsClient::send_detailed(self, push).await.into()
    }
}

impl Inner {
    fn gateway(&self, environment: ApnsEnvironment) -> &Gateway {
        match environment {
            ApnsEnvironment::Production => &self.gateways[0],
            ApnsEnvironment::Sandbox => &self.gateways[1],
        }
    }

    /// One push to one environment: re-minted and retried once on
    /// `ExpiredProviderToken`, classified.
    async fn attempt(
        &self,
        push: &Push,
        environment: ApnsEnvironment,
        topic: &HeaderValue,
        prepared: &Prepared,
    ) -> ApnsAnswer {
        let started = Instant::now();
        let apns_id = new_apns_id();
        let Ok(_permit) = self.in_flight.acquire().await else {
            return answer_without_response(apns_id, environment, "ClientClosed", started);
        };
        let gateway = self.gateway(environment);
        let mut token = self.tokens.current();
        let mut reminted = false;
        loop {
            let sent_at: DateTime<Utc> = (self.clock)().into();
            let send = || {
                self.exchange(
                    gateway,
                    push.token.as_str(),
                    topic.clone(),
                    prepared,
                    &apns_id,
                    &token,
                )
            };
            let exchange = send().await;
            tracing::debug!(
                apns_id,
                token = %push.token,
                %environment,
                kind = push.content.event_kind().as_str(),
                status = exchange.status,
                reason = exchange.reason.as_deref(),
                "APNs answered"
            );
            if exchange.status == Some(403)
                && exchange.reason.as_deref() == Some("ExpiredProviderToken")
            {
                match (reminted, self.tokens.expired(&token)) {
                    (false, Some(fresh)) => {
                        token = fresh;
                        reminted = true;
                        continue;
                    }
                    // A fresh token expired too: our clock is wrong, no retry fixes it.
                    _ => {
                        return ApnsAnswer {
                            status: exchange.status,
                            reason: exchange.reason.clone(),
                            apns_id: exchange.apns_id.unwrap_or(apns_id),
                            environment,
                            outcome: PushOutcome::Rejected {
                                reason: "ExpiredProviderToken".into(),
                            },
                            latency: started.elapsed(),
                        };
                    }
                }
            }
            let echoed = exchange.apns_id.unwrap_or(apns_id);
            let outcome = match exchange.status {
                Some(status) => classify(
                    status,
                    exchange.reason.as_deref(),
                    exchange.timestamp_ms,
                    exchange.retry_after,
                    sent_at,
                    &echoed,
                    environment,
                ),
                None => PushOutcome::Retry {
                    reason: exchange
                        .reason
                        .clone()
                        .unwrap_or_else(|| "ConnectionError".into()),
                    after: None,
                },
            };
            return ApnsAnswer {
                status: exchange.status,
                reason: exchange.reason,
                apns_id: echoed,
                environment,
                outcome,
                latency: started.elapsed(),
            };
        }
    }

    /// One HTTP/2 request and its answer; a transport failure is an `Exchange` without
    /// status whose reason says what failed.
    async fn exchange(
        &self,
        gateway: &Gateway,
        device_token: &str,
        topic: HeaderValue,
        prepared: &Prepared,
        apns_id: &str,
        token: &ProviderToken,
    ) -> Exchange {
        let build = || {
            request(
                gateway,
                device_token,
                topic.clone(),
                prepared,
                apns_id,
                token,
            )
        };
        match gateway
            .send(build, &prepared.body, self.request_timeout)
            .await
        {
            Ok(answer) => exchange_from(answer, apns_id),
            Err(failure) => {
                tracing::debug!(
                    reason = failure.reason(),
                    "APNs request failed without an answer"
                );
                Exchange {
                    status: None,
                    reason: Some(failure.reason().to_owned()),
                    timestamp_ms: None,
                    retry_after: None,
                    apns_id: None,
                }
            }
        }
    }
}

/// The `Exchange` for an answer: for errors, Apple's reason and timestamp from the
/// body, and `Retry-After`.
fn exchange_from(answer: Answer, apns_id: &str) -> Exchange {
    // APNs echoes the id we sent: only a different one is copied.
    let echoed = answer
        .headers
        .get(&APNS_ID)
        .filter(|v| v.as_bytes() != apns_id.as_bytes())
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if answer.status == StatusCode::OK {
        return Exchange {
            status: Some(200),
            reason: None,
            timestamp_ms: None,
            retry_after: None,
            apns_id: echoed,
        };
    }
    let retry_after = answer
        .headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, Utc::now()));
    // A body that is not Apple's JSON leaves the reason unknown: a dead token is never
    // removed on a guess.
    let body = serde_json::from_slice::<ErrorBody>(&answer.body).unwrap_or_default();
    Exchange {
        status: Some(answer.status.as_u16()),
        reason: body.reason,
        timestamp_ms: body.timestamp,
        retry_after,
        apns_id: echoed,
    }
}

/// The POST for one push: `<endpoint>/3/device/<token>`, Apple's headers, the payload.
fn request(
    gateway: &Gateway,
    device_token: &str,
    topic: HeaderValue,
    prepared: &Prepared,
    apns_id: &str,
    token: &ProviderToken,
) -> Request<()> {
    // The endpoint is parsed once: only the path (a hex token, nothing to escape) is
    // checked per push.
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = gateway.uri(format!("/3/device/{device_token}"));
    // Sized for every header, so the map never grows; the constant values are static.
    let headers = request.headers_mut();
    headers.reserve(HEADER_CAPACITY);
    headers.insert(http::header::AUTHORIZATION, token.header.clone());
    headers.insert(
        APNS_PUSH_TYPE.clone(),
        HeaderValue::from_static(prepared.push_type),
    );
    headers.insert(APNS_TOPIC.clone(), topic);
    headers.insert(
        APNS_PRIORITY.clone(),
        HeaderValue::from_static(prepared.priority),
    );
    headers.insert(
        APNS_EXPIRATION.clone(),
        HeaderValue::from(prepared.expiration),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(mut id) = HeaderValue::try_from(apns_id) {
        // Unique per request: "sensitive" keeps HPACK from inserting it into the
        // dynamic table, where each new id would evict the topic and the other
        // constant headers, which would then travel in full again.
        id.set_sensitive(true);
        headers.insert(APNS_ID.clone(), id);
    }
    if let Some(collapse) = prepared
        .collapse_id
        .as_deref()
        .and_then(|c| HeaderValue::try_from(c).ok())
    {
        headers.insert(APNS_COLLAPSE_ID.clone(), collapse);
    }
    request
}

fn answer_without_response(
    apns_id: String,
    environment: ApnsEnvironment,
    reason: &str,
    started: Instant,
) -> ApnsAnswer {
    ApnsAnswer {
        status: None,
        reason: Some(reason.to_owned()),
        apns_id,
        environment,
        outcome: PushOutcome::Retry {
            reason: reason.to_owned(),
            after: None,
        },
        latency: started.elapsed(),
    }
}

/// A new lowercase UUID v4 for `apns-id`, from the thread-local RNG (no system call
/// per push, unlike `Uuid::new_v4`), encoded on the stack rather than through
/// `Display`.
fn new_apns_id() -> String {
    let mut buffer = uuid::Uuid::encode_buffer();
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut buffer)
        .to_owned()
}

/// Checks an `APNS_ENDPOINT` value and drops a trailing slash.
fn parse_endpoint(endpoint: &str) -> Result<String, ApnsConfigError> {
    let bad = || ApnsConfigError::BadEndpoint(endpoint.to_owned());
    let url = reqwest::Url::parse(endpoint.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "https" | "http")
        || url.host_str().is_none()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(bad());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_bare_urls() {
        assert_eq!(
            parse_endpoint("https://127.0.0.1:8443/").unwrap(),
            "https://127.0.0.1:8443"
        );
        assert_eq!(
            parse_endpoint("https://localhost:1").unwrap(),
            "https://localhost:1"
        );
        assert!(parse_endpoint("ftp://x").is_err());
        assert!(parse_endpoint("https://x/3/device").is_err());
        assert!(parse_endpoint("not a url").is_err());
    }

    /// Every push in flight holds this future (boxed by `async_trait`), and at 1,000 in
    /// flight their total decides how much of it stays in the CPU caches. It is the
    /// whole of a push's state now, the HTTP/2 exchange and its timeout included (1,384
    /// bytes with rustc 1.95): the request is built only once its stream may open, and
    /// the rare paths (opening a connection, reading an error body) are boxed apart.
    /// With reqwest it was 816 bytes plus reqwest's boxed pipeline of several KB.
    #[tokio::test]
    async fn the_state_of_a_push_in_flight_stays_small() {
        use p256::pkcs8::EncodePrivateKey as _;
        use webex_push_domain::{BundleId, DeviceToken, NewMessage, PersonId, PushContent};

        let secret = p256::SecretKey::random(&mut rand::thread_rng());
        let pem = secret
            .to_pkcs8_pem(p256::pkcs8::der::pem::LineEnding::LF)
            .unwrap();
        let mut config = ApnsConfig::new(
            super::super::ApnsKey::from_pem(&pem).unwrap(),
            super::super::KeyId::parse("KEY1234567").unwrap(),
            super::super::TeamId::parse("TEAM123456").unwrap(),
            BundleId::parse("com.example.app").unwrap(),
        );
        config.endpoint = Some("https://127.0.0.1:1".into());
        let client = ApnsClient::new(config).unwrap();
        let person = PersonId::parse("9f3a6b2c-1d4e-4f5a-8b6c-7d8e9f0a1b2c").unwrap();
        let content = PushContent::Message(Arc::new(NewMessage {
            message_id: "m".into(),
            room_id: "r".into(),
            room_type: None,
            recipient: person.clone(),
            sender: Some(person),
            sender_email: None,
            occurred_at: Utc::now(),
            webhook: None,
        }));
        let push = Push {
            token: DeviceToken::parse(&"a".repeat(64)).unwrap(),
            channel: Channel::Alert,
            environment: None,
            bundle_id: None,
            flavour: webex_push_domain::AppFlavour::Seed,
            content,
            deliver_by: None,
        };
        let size = std::mem::size_of_val(&client.send_detailed(&push));
        assert!(size <= 1_536, "{size} bytes");
    }
}
