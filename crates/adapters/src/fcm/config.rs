//! FCM configuration: the service account (its project, client e-mail, RSA key and
//! token endpoint) and where to send, each parsed at start-up with an error that names
//! the variable it came from.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::EncodingKey;

/// Google's FCM endpoint; `FCM_ENDPOINT` replaces it (a stand-in).
pub const FCM_ENDPOINT: &str = "https://fcm.googleapis.com";

/// What is wrong with the FCM configuration. Every message names the variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum FcmConfigError {
    #[error("{variable}: cannot read {path}: {source}")]
    FileUnreadable {
        variable: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{variable}: not a service-account JSON (nor one base64-encoded): {reason}; download the key from the Firebase console (Project settings, Service accounts)"
    )]
    NotJson {
        variable: &'static str,
        reason: String,
    },
    #[error("{variable}: the JSON is of type {found:?}, not a \"service_account\" key")]
    NotServiceAccount {
        variable: &'static str,
        found: String,
    },
    #[error("{variable}: the service account has no {field:?}")]
    MissingField {
        variable: &'static str,
        field: &'static str,
    },
    #[error("{variable}: private_key is not an RSA private key in PEM: {reason}")]
    Key {
        variable: &'static str,
        reason: String,
    },
    #[error("{variable}: token_uri {uri:?} is not an https URL")]
    BadTokenUri { variable: &'static str, uri: String },
    #[error("FCM_ENDPOINT: {0:?} is not an http(s) URL without path, query or fragment")]
    BadEndpoint(String),
    #[error("FCM_CA_FILE: not a PEM certificate: {0}")]
    BadCaCertificate(#[source] reqwest::Error),
    #[error("cannot build the HTTP/2 client: {0}")]
    Http(#[source] reqwest::Error),
}

/// A Google service account that may send FCM messages. Secret: `Debug` shows only
/// its project and e-mail, never the key.
#[derive(Clone)]
pub struct ServiceAccount {
    project_id: String,
    client_email: String,
    token_uri: String,
    signing: EncodingKey,
}

#[derive(serde::Deserialize)]
struct AccountJson {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    token_uri: Option<String>,
}

impl ServiceAccount {
    /// Parses the JSON the Firebase console downloads.
    pub fn from_json(text: &str, variable: &'static str) -> Result<Self, FcmConfigError> {
        let json: AccountJson =
            serde_json::from_str(text).map_err(|e| FcmConfigError::NotJson {
                variable,
                reason: e.to_string(),
            })?;
        if let Some(kind) = json.kind.filter(|kind| kind != "service_account") {
            return Err(FcmConfigError::NotServiceAccount {
                variable,
                found: kind,
            });
        }
        let required = |value: Option<String>, field| {
            value
                .filter(|v| !v.trim().is_empty())
                .ok_or(FcmConfigError::MissingField { variable, field })
        };
        let project_id = required(json.project_id, "project_id")?;
        let client_email = required(json.client_email, "client_email")?;
        let private_key = required(json.private_key, "private_key")?;
        let token_uri = required(json.token_uri, "token_uri")?;
        if !token_uri.starts_with("https://") {
            return Err(FcmConfigError::BadTokenUri {
                variable,
                uri: token_uri,
            });
        }
        let signing =
            EncodingKey::from_rsa_pem(private_key.as_bytes()).map_err(|e| FcmConfigError::Key {
                variable,
                reason: e.to_string(),
            })?;
        let account = Self {
            project_id,
            client_email,
            token_uri,
            signing,
        };
        // The PEM is only decoded above: signing once proves the key is a usable RSA key.
        account.assertion(0).map_err(|e| FcmConfigError::Key {
            variable,
            reason: e.to_string(),
        })?;
        Ok(account)
    }

    /// Reads `FCM_SERVICE_ACCOUNT_FILE`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, FcmConfigError> {
        const VARIABLE: &str = "FCM_SERVICE_ACCOUNT_FILE";
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| FcmConfigError::FileUnreadable {
                variable: VARIABLE,
                path: path.display().to_string(),
                source,
            })?;
        Self::from_json(&text, VARIABLE)
    }

    /// Parses `FCM_SERVICE_ACCOUNT`: the JSON itself, or it base64-encoded (as config
    /// UIs that take one line hold it).
    pub fn from_env_text(text: &str) -> Result<Self, FcmConfigError> {
        const VARIABLE: &str = "FCM_SERVICE_ACCOUNT";
        let text = text.trim();
        if text.starts_with('{') {
            return Self::from_json(text, VARIABLE);
        }
        let compact: String = text.split_whitespace().collect();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| FcmConfigError::NotJson {
                variable: VARIABLE,
                reason: "neither JSON nor base64".into(),
            })?;
        Self::from_json(&decoded, VARIABLE)
    }

    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The RS256 assertion exchanged for an access token, issued at `iat` (Unix
    /// seconds), valid for the hour Google allows at most.
    pub(crate) fn assertion(&self, iat: u64) -> Result<String, jsonwebtoken::errors::Error> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &Claims {
                iss: &self.client_email,
                scope: FCM_SCOPE,
                aud: &self.token_uri,
                iat,
                exp: iat + 3600,
            },
            &self.signing,
        )
    }
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// The OAuth scope FCM's v1 API needs.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// Everything the FCM client needs.
#[derive(Debug, Clone)]
pub struct FcmConfig {
    pub account: ServiceAccount,
    /// `None`: Google ([`FCM_ENDPOINT`]).
    pub endpoint: Option<String>,
    /// One more root to trust (a stand-in's CA), for the endpoint and the token URI.
    pub extra_ca_pem: Option<String>,
    /// One request (a send, or fetching an access token) gives up after this.
    pub request_timeout: Duration,
}

impl FcmConfig {
    pub fn new(account: ServiceAccount) -> Self {
        Self {
            account,
            endpoint: None,
            extra_ca_pem: None,
            request_timeout: Duration::from_secs(10),
        }
    }

    /// Sets `FCM_ENDPOINT`, checked: an http(s) origin, no path.
    pub fn with_endpoint(mut self, endpoint: &str) -> Result<Self, FcmConfigError> {
        let trimmed = endpoint.trim().trim_end_matches('/');
        let rest = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"));
        match rest {
            Some(host) if !host.is_empty() && !host.contains(['/', '?', '#']) => {
                self.endpoint = Some(trimmed.to_owned());
                Ok(self)
            }
            _ => Err(FcmConfigError::BadEndpoint(endpoint.to_owned())),
        }
    }

    /// The URL messages are POSTed to.
    pub fn send_url(&self) -> String {
        format!(
            "{}/v1/projects/{}/messages:send",
            self.endpoint.as_deref().unwrap_or(FCM_ENDPOINT),
            self.account.project_id
        )
    }
}
