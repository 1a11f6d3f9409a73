//! The Webex webhooks API (`/v1/webhooks`) as the [`WebhookDirectory`] port, and the
//! secrets of the webhooks the server makes.
//!
//! Each webhook the server makes gets a secret of its own, derived from a key only the
//! server holds (an entry of `WEBHOOK_SECRET`), the webhook's owner and its resource:
//! nothing ships in an app, a webhook's owner who reads its secret back from Webex can
//! sign events only about themselves, and a delivery is checked with the secret of the
//! webhook it says it comes from ([`webhook_secret`]).

use async_trait::async_trait;
use hmac::{Hmac, Mac as _};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use webex_push_domain::{
    AccessToken, DirectoryError, PersonId, RemoteWebhook, WebhookDirectory, WebhookSecret,
    WebhookSpec,
};

/// The secret of the webhook of `resource` owned by `owner` (by UUID, so any spelling of
/// the id gives the same), keyed by `key`: 64 hex digits of HMAC-SHA256. Changing `key`
/// changes every secret, so rotating `WEBHOOK_SECRET` (new key first, old kept) keeps
/// deliveries under the old secrets verifying until the upkeep re-keys each webhook.
pub fn webhook_secret(key: &str, owner: &PersonId, resource: &str) -> WebhookSecret {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"webex-push webhook secret v1\0");
    mac.update(owner.uuid().hyphenated().to_string().as_bytes());
    mac.update(b"\0");
    mac.update(resource.as_bytes());
    WebhookSecret::new(hex::encode(mac.finalize().into_bytes()))
}

/// How to reach the Webex API.
#[derive(Debug, Clone)]
pub struct WebexWebhooksConfig {
    /// `WEBEX_API_URL`, without `/v1`.
    pub base_url: String,
    pub timeout: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WebexWebhooksConfigError {
    #[error("WEBEX_API_URL is not a URL: {0}")]
    BadUrl(String),
    #[error("cannot set up the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

/// The Webex webhooks API over HTTPS.
pub struct WebexWebhooks {
    http: reqwest::Client,
    webhooks_url: reqwest::Url,
}

impl WebexWebhooks {
    pub fn new(config: &WebexWebhooksConfig) -> Result<Self, WebexWebhooksConfigError> {
        let base = config.base_url.trim_end_matches('/');
        let webhooks_url = reqwest::Url::parse(&format!("{base}/v1/webhooks"))
            .map_err(|e| WebexWebhooksConfigError::BadUrl(e.to_string()))?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // A redirect would carry the token to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("webex-push/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(WebexWebhooksConfigError::Http)?;
        Ok(Self { http, webhooks_url })
    }

    fn url_of(&self, id: &str) -> Result<reqwest::Url, DirectoryError> {
        let mut url = self.webhooks_url.clone();
        url.path_segments_mut()
            .map_err(|()| DirectoryError::Unknown("the API URL cannot have a path".into()))?
            .push(id);
        Ok(url)
    }

    /// Sends `request` with `token`, classified; the body of a 2xx answer.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        token: &AccessToken,
    ) -> Result<Value, DirectoryError> {
        let mut authorization = HeaderValue::try_from(format!("Bearer {}", token.expose()))
            .map_err(|_| DirectoryError::Rejected)?;
        authorization.set_sensitive(true);
        let response = request
            .header(AUTHORIZATION, authorization)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| DirectoryError::Unavailable(error.without_url().into()))?;
        let status = response.status();
        let body: Value = if status == StatusCode::NO_CONTENT {
            Value::Null
        } else {
            response
                .json()
                .await
                .map_err(|error| DirectoryError::Unavailable(error.without_url().into()))?
        };
        match status {
            s if s.is_success() => Ok(body),
            StatusCode::UNAUTHORIZED => Err(DirectoryError::Rejected),
            StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
                // Webex's own words, e.g. "the user has no Webex Calling license".
                let why = body
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given")
                    .chars()
                    .take(200)
                    .collect::<String>();
                Err(DirectoryError::Refused(format!("{status}: {why}")))
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => Err(
                DirectoryError::Unavailable(format!("Webex answered {status}").into()),
            ),
            s if s.is_server_error() => Err(DirectoryError::Unavailable(
                format!("Webex answered {status}").into(),
            )),
            _ => Err(DirectoryError::Unknown(
                format!("Webex answered {status}").into(),
            )),
        }
    }
}

fn spec_body(spec: &WebhookSpec, activate: Option<bool>) -> Value {
    let mut body = Map::new();
    body.insert("name".into(), json!(spec.name));
    body.insert("targetUrl".into(), json!(spec.target_url));
    if activate.is_none() {
        body.insert("resource".into(), json!(spec.resource));
        body.insert("event".into(), json!(spec.event));
        if let Some(filter) = &spec.filter {
            body.insert("filter".into(), json!(filter));
        }
    }
    if let Some(secret) = &spec.secret {
        body.insert("secret".into(), json!(secret.expose()));
    }
    if activate == Some(true) {
        body.insert("status".into(), json!("active"));
    }
    Value::Object(body)
}

fn remote(value: &Value) -> Result<RemoteWebhook, DirectoryError> {
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    let required = |name: &str| {
        text(name).ok_or_else(|| {
            DirectoryError::Unknown(format!("a webhook without `{name}` in Webex's answer").into())
        })
    };
    Ok(RemoteWebhook {
        id: required("id")?,
        name: text("name").unwrap_or_default(),
        target_url: required("targetUrl")?,
        resource: required("resource")?,
        event: required("event")?,
        filter: text("filter").filter(|f| !f.is_empty()),
        secret: text("secret").map(WebhookSecret::new),
        org_wide: text("ownedBy").is_some_and(|owner| owner.eq_ignore_ascii_case("org")),
        active: text("status").is_none_or(|status| status.eq_ignore_ascii_case("active")),
    })
}

#[async_trait]
impl WebhookDirectory for WebexWebhooks {
    async fn list(
        &self,
        token: &AccessToken,
        org_wide: bool,
    ) -> Result<Vec<RemoteWebhook>, DirectoryError> {
        let mut request = self
            .http
            .get(self.webhooks_url.clone())
            .query(&[("max", "1000")]);
        if org_wide {
            request = request.query(&[("ownedBy", "org")]);
        }
        let body = self.send(request, token).await?;
        body.get("items")
            .and_then(Value::as_array)
            .ok_or_else(|| DirectoryError::Unknown("a list without `items`".into()))?
            .iter()
            .map(remote)
            .collect()
    }

    async fn create(
        &self,
        token: &AccessToken,
        spec: &WebhookSpec,
    ) -> Result<RemoteWebhook, DirectoryError> {
        let request = self
            .http
            .post(self.webhooks_url.clone())
            .json(&spec_body(spec, None));
        remote(&self.send(request, token).await?)
    }

    async fn update(
        &self,
        token: &AccessToken,
        id: &str,
        spec: &WebhookSpec,
        activate: bool,
    ) -> Result<RemoteWebhook, DirectoryError> {
        let request = self
            .http
            .put(self.url_of(id)?)
            .json(&spec_body(spec, Some(activate)));
        remote(&self.send(request, token).await?)
    }

    async fn delete(&self, token: &AccessToken, id: &str) -> Result<(), DirectoryError> {
        let request = self.http.delete(self.url_of(id)?);
        match self.send(request, token).await {
            Ok(_) => Ok(()),
            Err(DirectoryError::Refused(why)) if why.starts_with("404") => Ok(()),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_differ_by_owner_resource_and_key_and_not_by_spelling() {
        let ada = PersonId::parse("6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d").unwrap();
        let bob = PersonId::parse("0f1e2d3c-4b5a-4968-8776-655443322110").unwrap();
        let secret = webhook_secret("k", &ada, "messages");
        assert_eq!(secret.expose().len(), 64);
        assert_ne!(secret, webhook_secret("k", &bob, "messages"));
        assert_ne!(secret, webhook_secret("k", &ada, "callMemberships"));
        assert_ne!(secret, webhook_secret("k2", &ada, "messages"));
        let spelled = PersonId::parse(
            "Y2lzY29zcGFyazovL3VzL1BFT1BMRS82YTFiMmMzZC00ZTVmLTRhNmItOGM3ZC05ZTBmMWEyYjNjNGQ",
        )
        .unwrap();
        assert_eq!(secret, webhook_secret("k", &spelled, "messages"));
    }
}
