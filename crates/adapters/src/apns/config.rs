//! APNs configuration: the signing key, its ids, the topic and the endpoints, each
//! parsed at start-up with an error that names the variable it came from.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::EncodingKey;
use p256::pkcs8::der::pem::LineEnding;
use p256::pkcs8::{
    DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, ObjectIdentifier,
    PrivateKeyInfo, SecretDocument,
};
use webex_push_domain::{ApnsEnvironment, BundleId};

/// `id-ecPublicKey`: the algorithm of every EC key in PKCS#8.
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `prime256v1` (P-256): the only curve APNs signs with (ES256).
const PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// What is wrong with the APNs configuration. Every message names the environment
/// variable to fix.
#[derive(Debug, thiserror::Error)]
pub enum ApnsConfigError {
    #[error("{variable}: cannot read the key file {path}: {source}")]
    KeyFileUnreadable {
        variable: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{variable}: {problem}")]
    Key {
        variable: &'static str,
        problem: KeyProblem,
    },
    #[error(
        "{variable} must be exactly 10 ASCII letters or digits (as Apple shows it), got {length} characters"
    )]
    BadId {
        variable: &'static str,
        length: usize,
    },
    #[error("APNS_ENDPOINT: {0:?} is not an http(s) URL without path, query or fragment")]
    BadEndpoint(String),
    #[error("APNS_TOPIC: {0:?} cannot be sent as an HTTP header")]
    BadTopic(String),
    #[error("APNS_CA_FILE: not a PEM certificate: {0}")]
    BadCaCertificate(String),
    #[error("max in flight must be at least 1")]
    NoInFlight,
    #[error("cannot set up TLS for APNs: {0}")]
    Tls(#[source] rustls::Error),
    #[error("cannot sign a provider token with this key: {0}")]
    Signing(#[source] jsonwebtoken::errors::Error),
}

/// Why a key was refused. Says what was found, so a wrong file is recognisable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    #[error("is empty")]
    Empty,
    #[error(
        "is not a PEM key (expected the .p8 file's text, starting with -----BEGIN PRIVATE KEY-----, or that text base64-encoded)"
    )]
    NotPem,
    #[error(
        "is a PEM {0:?} block, not the PKCS#8 \"PRIVATE KEY\" Apple issues (.p8); download the APNs auth key again"
    )]
    WrongPemLabel(String),
    #[error("is not a valid PKCS#8 private key: {0}")]
    NotPkcs8(String),
    #[error("is not an elliptic-curve key (algorithm {0}); APNs keys are P-256 (ES256)")]
    NotEc(String),
    #[error("is an elliptic-curve key on curve {0}, not P-256; APNs keys are P-256 (ES256)")]
    WrongCurve(String),
    #[error("holds an invalid P-256 private key: {0}")]
    InvalidKey(String),
}

/// The APNs auth key (`.p8`): a PKCS#8 P-256 private key. Secret: `Debug` shows
/// nothing of it, and it is never logged.
#[derive(Clone)]
pub struct ApnsKey {
    signing: EncodingKey,
    public_pem: String,
}

impl ApnsKey {
    /// Parses the `.p8` file's text.
    pub fn from_pem(text: &str) -> Result<Self, ApnsConfigError> {
        Self::parse(text).map_err(|problem| ApnsConfigError::Key {
            variable: "APNS_KEY",
            problem,
        })
    }

    /// Reads and parses a `.p8` file (`APNS_KEY_FILE`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ApnsConfigError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ApnsConfigError::KeyFileUnreadable {
            variable: "APNS_KEY_FILE",
            path: path.display().to_string(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| ApnsConfigError::Key {
            variable: "APNS_KEY_FILE",
            problem: KeyProblem::NotPem,
        })?;
        Self::parse(&text).map_err(|problem| ApnsConfigError::Key {
            variable: "APNS_KEY_FILE",
            problem,
        })
    }

    /// Parses `APNS_KEY`: the PEM text itself (with real newlines or `\n` escapes, as
    /// some config UIs store it), or that text base64-encoded (as Heroku config vars and
    /// the Webex portal hold it).
    pub fn from_env_text(text: &str) -> Result<Self, ApnsConfigError> {
        let err = |problem| ApnsConfigError::Key {
            variable: "APNS_KEY",
            problem,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(err(KeyProblem::Empty));
        }
        if trimmed.starts_with("-----BEGIN") {
            return Self::parse(&trimmed.replace("\\n", "\n")).map_err(err);
        }
        let compact: String = trimmed.chars().filter(|c| !c.is_whitespace()).collect();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .or_else(|_| {
                base64::engine::general_purpose::STANDARD_NO_PAD.decode(compact.as_bytes())
            })
            .map_err(|_| err(KeyProblem::NotPem))?;
        let pem = String::from_utf8(decoded).map_err(|_| err(KeyProblem::NotPem))?;
        Self::parse(&pem).map_err(err)
    }

    /// The public half as a SPKI PEM (`-----BEGIN PUBLIC KEY-----`), what a verifier
    /// such as the local stand-in needs.
    pub fn public_key_pem(&self) -> String {
        self.public_pem.clone()
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.signing
    }

    fn parse(text: &str) -> Result<Self, KeyProblem> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyProblem::Empty);
        }
        if !text.starts_with("-----BEGIN") {
            return Err(KeyProblem::NotPem);
        }
        let (label, document) = SecretDocument::from_pem(text)
            .map_err(|_| pem_label(text).map_or(KeyProblem::NotPem, KeyProblem::WrongPemLabel))?;
        if label != "PRIVATE KEY" {
            return Err(KeyProblem::WrongPemLabel(label.to_owned()));
        }
        let info = PrivateKeyInfo::try_from(document.as_bytes())
            .map_err(|e| KeyProblem::NotPkcs8(e.to_string()))?;
        if info.algorithm.oid != EC_PUBLIC_KEY {
            return Err(KeyProblem::NotEc(algorithm_name(info.algorithm.oid)));
        }
        match info.algorithm.parameters_oid() {
            Ok(curve) if curve == PRIME256V1 => {}
            Ok(curve) => return Err(KeyProblem::WrongCurve(curve_name(curve))),
            Err(e) => return Err(KeyProblem::NotPkcs8(e.to_string())),
        }
        let secret = p256::SecretKey::from_pkcs8_der(document.as_bytes())
            .map_err(|e| KeyProblem::InvalidKey(e.to_string()))?;
        // Re-encoded by p256 so the document always carries the public key, which the
        // signer (ring) requires and some hand-made `.p8` files omit.
        let der = secret
            .to_pkcs8_der()
            .map_err(|e| KeyProblem::InvalidKey(e.to_string()))?;
        let public_pem = secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyProblem::InvalidKey(e.to_string()))?;
        Ok(Self {
            signing: EncodingKey::from_ec_der(der.as_bytes()),
            public_pem,
        })
    }
}

impl fmt::Debug for ApnsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApnsKey(<redacted>)")
    }
}

/// The label of the first PEM block, to say what a wrong file is.
fn pem_label(text: &str) -> Option<String> {
    let rest = text.strip_prefix("-----BEGIN ")?;
    let end = rest.find("-----")?;
    let label = &rest[..end];
    (label != "PRIVATE KEY").then(|| label.to_owned())
}

fn algorithm_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => "RSA".to_owned(),
        "1.3.101.112" => "Ed25519".to_owned(),
        "1.3.101.113" => "Ed448".to_owned(),
        other => other.to_owned(),
    }
}

fn curve_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.3.132.0.34" => "P-384".to_owned(),
        "1.3.132.0.35" => "P-521".to_owned(),
        "1.3.132.0.10" => "secp256k1".to_owned(),
        other => other.to_owned(),
    }
}

/// Parses a 10-character Apple id (key id or team id).
fn parse_apple_id(variable: &'static str, input: &str) -> Result<String, ApnsConfigError> {
    let input = input.trim();
    if input.len() == 10 && input.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(input.to_owned())
    } else {
        Err(ApnsConfigError::BadId {
            variable,
            length: input.chars().count(),
        })
    }
}

/// The id of the APNs auth key (`kid` in the provider token): 10 letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn parse(input: &str) -> Result<Self, ApnsConfigError> {
        parse_apple_id("APNS_KEY_ID", input).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Apple developer team id (`iss` in the provider token): 10 letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TeamId(String);

impl TeamId {
    pub fn parse(input: &str) -> Result<Self, ApnsConfigError> {
        parse_apple_id("APNS_TEAM_ID", input).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TeamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything the APNs client needs.
#[derive(Debug, Clone)]
pub struct ApnsConfig {
    pub key: ApnsKey,
    pub key_id: KeyId,
    pub team_id: TeamId,
    /// The app's bundle id: the topic of pushes whose token registered none.
    pub topic: BundleId,
    /// Where tokens registered without an environment are pushed first.
    pub default_environment: ApnsEnvironment,
    /// Replaces the base URL of both environments (`APNS_ENDPOINT`): staging, tests,
    /// a local stand-in. Both environments then share one connection.
    pub endpoint: Option<String>,
    /// An extra trusted root certificate, PEM (`APNS_CA_FILE`'s text).
    pub extra_ca_pem: Option<String>,
    /// Requests in flight at once, over both environments. Apple allows 500 to 1500
    /// concurrent streams per connection; past that h2 queues them anyway.
    pub max_in_flight: usize,
    /// The whole request, from sending to the answer.
    pub request_timeout: Duration,
    /// TCP + TLS + HTTP/2 handshake.
    pub connect_timeout: Duration,
}

impl ApnsConfig {
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 1000;
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A configuration for Apple's own gateways with the defaults.
    pub fn new(key: ApnsKey, key_id: KeyId, team_id: TeamId, topic: BundleId) -> Self {
        Self {
            key,
            key_id,
            team_id,
            topic,
            default_environment: ApnsEnvironment::Production,
            endpoint: None,
            extra_ca_pem: None,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_ten_alphanumerics_and_errors_name_the_variable() {
        assert_eq!(KeyId::parse("ABC123DEFG").unwrap().as_str(), "ABC123DEFG");
        assert_eq!(
            TeamId::parse(" 0123456789 ").unwrap().as_str(),
            "0123456789"
        );
        let err = KeyId::parse("ABC").unwrap_err().to_string();
        assert!(
            err.contains("APNS_KEY_ID") && err.contains("3 characters"),
            "{err}"
        );
        let err = TeamId::parse("ABCDEFGHI!").unwrap_err().to_string();
        assert!(err.contains("APNS_TEAM_ID"), "{err}");
    }

    #[test]
    fn garbage_is_not_a_key() {
        let err = ApnsKey::from_env_text("not a key at all")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("APNS_KEY") && err.contains("not a PEM key"),
            "{err}"
        );
        let err = ApnsKey::from_pem("").unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let err =
            ApnsKey::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("CERTIFICATE"), "{err}");
    }

    #[test]
    fn debug_shows_nothing_of_the_key() {
        let secret = p256::SecretKey::random(&mut rand::thread_rng());
        let pem = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
        let key = ApnsKey::from_pem(&pem).unwrap();
        assert_eq!(format!("{key:?}"), "ApnsKey(<redacted>)");
    }
}
