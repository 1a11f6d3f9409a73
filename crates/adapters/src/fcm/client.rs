//! The FCM HTTP v1 client: one warm HTTP/2 connection (reqwest keeps it; a new one
//! after a request got no answer on it), one shared access token, one classification
//! table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use http::header;
use webex_push_domain::{
    Push, PushGateway, PushOutcome, PushProvider, TestAnswer, TestPushGateway,
};

use super::classify::{ErrorBody, classify};
use super::config::{FcmConfig, FcmConfigError};
use super::payload;
use super::token::{AccessTokens, TokenError, error_chain};
use crate::apns::parse_retry_after;

/// Everything FCM said about one push, for operators (`webex-push push`, the admin test
/// push): the status, Google's status name and FCM error code, and the outcome.
#[derive(Debug, Clone)]
pub struct FcmAnswer {
    /// `None` when no answer came (connection failed, timed out, no access token).
    pub status: Option<u16>,
    /// FCM's error code, else Google's status name, else what went wrong locally.
    pub reason: Option<String>,
    /// Google's message, when it sent one (no secret in it).
    pub message: Option<String>,
    /// The message name (`projects/<p>/messages/<id>`) on success.
    pub name: Option<String>,
    pub outcome: PushOutcome,
}

/// Why [`FcmClient::warm_up`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FcmWarmUpError {
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// The PushGateway for FCM tokens. Cheap to clone: clones share the connection and the
/// access token.
#[derive(Clone)]
pub struct FcmClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The client (its one connection to FCM) and its generation; replaced when a
    /// request on it got no answer (see [`Inner::abandon`]).
    http: std::sync::RwLock<(u64, reqwest::Client)>,
    /// Builds a client with a connection of its own.
    connect: Box<dyn Fn() -> Result<reqwest::Client, FcmConfigError> + Send + Sync>,
    tokens: AccessTokens,
    send_url: String,
    project_id: String,
}

impl FcmClient {
    pub fn new(config: FcmConfig) -> Result<Self, FcmConfigError> {
        let certificate = config
            .extra_ca_pem
            .as_deref()
            .map(|pem| {
                reqwest::Certificate::from_pem(pem.as_bytes())
                    .map_err(FcmConfigError::BadCaCertificate)
            })
            .transpose()?;
        let timeout = config.request_timeout;
        let connect = move || http_client(timeout, certificate.clone());
        let http = connect()?;
        Ok(Self {
            inner: Arc::new(Inner {
                // The token endpoint keeps the first client: a fetch that fails is
                // retried by the next push.
                tokens: AccessTokens::new(config.account.clone(), http.clone()),
                send_url: config.send_url(),
                project_id: config.account.project_id().to_owned(),
                http: std::sync::RwLock::new((0, http)),
                connect: Box::new(connect),
            }),
        })
    }

    pub fn project_id(&self) -> &str {
        &self.inner.project_id
    }

    /// Access tokens fetched since start (one an hour, whatever the load).
    pub fn access_tokens_minted(&self) -> u64 {
        self.inner.tokens.minted()
    }

    /// Fetches the access token before the first push needs it, which also opens the
    /// connection to the token endpoint (and, when it is the stand-in, to FCM).
    pub async fn warm_up(&self) -> Result<(), FcmWarmUpError> {
        self.inner.tokens.get().await?;
        Ok(())
    }

    /// Sends `push` and returns FCM's whole answer. An expired access token (`401`) is
    /// replaced and the push sent once more; a second `401` is a configuration error.
    #[tracing::instrument(name = "fcm_send", skip_all, fields(token = %push.token))]
    pub async fn send_detailed(&self, push: &Push) -> FcmAnswer {
        if push.token.provider() != PushProvider::Fcm {
            return local(PushOutcome::Rejected {
                reason: "NotAnFcmToken".into(),
            });
        }
        let sent_at = Utc::now();
        let body = match payload::prepare(push, sent_at) {
            Ok(body) => body,
            Err(unsendable) => {
                tracing::warn!(reason = unsendable.reason(), "push not sent: {unsendable}");
                return local(PushOutcome::Rejected {
                    reason: unsendable.reason().into(),
                });
            }
        };
        let mut answer = self.try_once(&body, sent_at).await;
        if answer.refresh_token {
            tracing::info!("FCM refused the access token; fetching a new one");
            answer = self.try_once(&body, sent_at).await;
            if answer.refresh_token {
                answer.answer.outcome = PushOutcome::Rejected {
                    reason: "UNAUTHENTICATED".into(),
                };
            }
        }
        answer.answer
    }

    async fn try_once(&self, body: &[u8], sent_at: chrono::DateTime<Utc>) -> Attempt {
        let inner = &self.inner;
        let token = match inner.tokens.get().await {
            Ok(token) => token,
            Err(error) => {
                let outcome = match &error {
                    TokenError::Refused(_) => PushOutcome::Rejected {
                        reason: "ServiceAccountRefused".into(),
                    },
                    TokenError::Unavailable(_) => PushOutcome::Retry {
                        reason: "TokenEndpointUnavailable".into(),
                        after: None,
                    },
                };
                tracing::warn!(%error, "no FCM access token");
                return Attempt {
                    answer: FcmAnswer {
                        message: Some(error.to_string()),
                        ..local(outcome)
                    },
                    refresh_token: false,
                };
            }
        };
        let (generation, http) = inner.client();
        let sent = http
            .post(&inner.send_url)
            .header(header::AUTHORIZATION, token.bearer())
            .header(header::CONTENT_TYPE, "application/json; charset=UTF-8")
            .body(body.to_owned())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                if error.is_timeout() || !error.is_connect() {
                    // No answer on an open connection: it may be dead without knowing
                    // it (a NAT or proxy that forgot the flow), and HTTP/2 keep-alive
                    // would notice only after a minute or more.
                    inner.abandon(generation);
                }
                let reason = if error.is_timeout() {
                    "Timeout"
                } else {
                    "ConnectionFailed"
                };
                tracing::debug!(error = error_chain(&error), "FCM request failed");
                return Attempt {
                    answer: FcmAnswer {
                        message: Some(error_chain(&error)),
                        ..local(PushOutcome::Retry {
                            reason: reason.into(),
                            after: None,
                        })
                    },
                    refresh_token: false,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let bytes = response.bytes().await.unwrap_or_default();
        let (error, name) = if status == 200 {
            #[derive(serde::Deserialize)]
            struct Sent {
                name: Option<String>,
            }
            let name = serde_json::from_slice::<Sent>(&bytes)
                .ok()
                .and_then(|s| s.name)
                .unwrap_or_default();
            (ErrorBody::default(), name)
        } else {
            (
                serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_default(),
                String::new(),
            )
        };
        let outcome = classify(status, &error, retry_after, sent_at, &name);
        let refresh_token =
            matches!(&outcome, PushOutcome::Retry { reason, .. } if reason == "UNAUTHENTICATED");
        if refresh_token {
            inner.tokens.invalidate(&token);
        }
        Attempt {
            answer: FcmAnswer {
                status: Some(status),
                reason: error.reason().map(str::to_owned),
                message: error.error.message.clone(),
                name: (!name.is_empty()).then_some(name),
                outcome,
            },
            refresh_token,
        }
    }
}

impl Inner {
    fn client(&self) -> (u64, reqwest::Client) {
        let current = self.http.read().unwrap_or_else(|e| e.into_inner());
        (current.0, current.1.clone())
    }

    /// Leaves the connection of client `generation` to the requests already on it and
    /// sends every later one on a fresh connection; a no-op when another request
    /// replaced it first.
    fn abandon(&self, generation: u64) {
        let mut current = self.http.write().unwrap_or_else(|e| e.into_inner());
        if current.0 != generation {
            return;
        }
        match (self.connect)() {
            Ok(client) => {
                *current = (generation + 1, client);
                tracing::info!(
                    generation = generation + 1,
                    "FCM request got no answer: later pushes go to a new connection"
                );
            }
            Err(error) => tracing::warn!(%error, "FCM connection not replaced"),
        }
    }
}

/// The HTTP/2 client for FCM and the token endpoint, trusting `certificate` too.
fn http_client(
    timeout: Duration,
    certificate: Option<reqwest::Certificate>,
) -> Result<reqwest::Client, FcmConfigError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(None)
        .http2_keep_alive_interval(Duration::from_secs(60))
        .http2_keep_alive_while_idle(true);
    // Bytes Google has not acknowledged for this long mean the path is gone.
    #[cfg(target_os = "linux")]
    {
        builder = builder.tcp_user_timeout(Duration::from_secs(5));
    }
    if let Some(certificate) = certificate {
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().map_err(FcmConfigError::Http)
}

struct Attempt {
    answer: FcmAnswer,
    /// FCM refused the access token: try once more with a new one.
    refresh_token: bool,
}

/// An answer made here, without FCM.
fn local(outcome: PushOutcome) -> FcmAnswer {
    FcmAnswer {
        status: None,
        reason: Some(outcome.label().to_owned()),
        message: None,
        name: None,
        outcome,
    }
}

#[async_trait]
impl PushGateway for FcmClient {
    async fn send(&self, push: &Push) -> PushOutcome {
        self.send_detailed(push).await.outcome
    }
}

#[async_trait]
impl TestPushGateway for FcmClient {
    async fn send_detailed(&self, push: &Push) -> TestAnswer {
        let started = Instant::now();
        let answer = FcmClient::send_detailed(self, push).await;
        TestAnswer {
            provider: PushProvider::Fcm,
            status: answer.status,
            reason: answer.reason,
            id: answer.name.unwrap_or_default(),
            environment: None,
            outcome: answer.outcome,
            latency: started.elapsed(),
        }
    }
}
