//! What an app registers: a person's two tokens, and where to push them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::{DeviceToken, PersonId, PushProvider};

/// Which of the app's tokens a push goes to. An iOS app has two; an Android app has
/// one, its `Alert` token (FCM), which takes every push as a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// The PushKit token: incoming calls only; iOS requires each push to reach CallKit.
    Voip,
    /// The app's normal token (APNs; FCM's registration token on Android): messages and
    /// call-ended notices, and on Android rings too.
    Alert,
}

/// Which APNs gateway a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    Production,
    Sandbox,
}

/// Which app registered a device, and so which payloads it reads. Apps in the field
/// speak one of two: the 2017 sample's (`{"email","voipToken","msgToken","personId"}`),
/// or that of Cisco's current sample apps (KitchenSink, SDK 3.x:
/// `{"voipToken","deviceToken","pushProvider","userId","prod"}`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AppFlavour {
    /// The 2017 sample: every ring is a VoIP push carrying our `webex` dictionary.
    #[default]
    Seed,
    /// KitchenSink 3.x: VoIP pushes only for `telephony_push` (its `apnsPayload`
    /// verbatim); other rings and messages are alerts carrying `webhookData`.
    KitchenSink,
}

impl AppFlavour {
    pub const ALL: [AppFlavour; 2] = [AppFlavour::Seed, AppFlavour::KitchenSink];

    pub fn as_str(self) -> &'static str {
        match self {
            AppFlavour::Seed => "seed",
            AppFlavour::KitchenSink => "kitchensink",
        }
    }
}

impl FromStr for AppFlavour {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "seed" => Ok(AppFlavour::Seed),
            "kitchensink" => Ok(AppFlavour::KitchenSink),
            _ => Err(ParseEnumError {
                value: s.to_owned(),
                expected: "seed, kitchensink",
            }),
        }
    }
}

impl fmt::Display for AppFlavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not one of: {expected}")]
pub struct ParseEnumError {
    pub value: String,
    pub expected: &'static str,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Voip, Channel::Alert];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Voip => "voip",
            Channel::Alert => "alert",
        }
    }
}

impl ApnsEnvironment {
    pub fn as_str(self) -> &'static str {
        match self {
            ApnsEnvironment::Production => "production",
            ApnsEnvironment::Sandbox => "sandbox",
        }
    }

    /// The other gateway: where a token without a known environment is tried next.
    pub fn other(self) -> Self {
        match self {
            ApnsEnvironment::Production => ApnsEnvironment::Sandbox,
            ApnsEnvironment::Sandbox => ApnsEnvironment::Production,
        }
    }
}

impl FromStr for Channel {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "voip" => Ok(Channel::Voip),
            "alert" => Ok(Channel::Alert),
            _ => Err(ParseEnumError {
                value: s.to_owned(),
                expected: "voip, alert",
            }),
        }
    }
}

impl FromStr for ApnsEnvironment {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "production" => Ok(ApnsEnvironment::Production),
            "sandbox" | "development" => Ok(ApnsEnvironment::Sandbox),
            _ => Err(ParseEnumError {
                value: s.to_owned(),
                expected: "production, sandbox",
            }),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ApnsEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An e-mail address as the app sent it. Checked loosely (Webex owns the real
/// validation); `Debug` hides it because e-mails must not reach logs.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("e-mail is empty")]
    Empty,
    #[error("e-mail is too long ({0} bytes, at most 320)")]
    TooLong(usize),
    #[error("e-mail must look like local@domain")]
    Malformed,
}

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(EmailError::Empty);
        }
        if input.len() > 320 {
            return Err(EmailError::TooLong(input.len()));
        }
        match input.split_once('@') {
            Some((local, domain))
                if !local.is_empty()
                    && !domain.is_empty()
                    && !input.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                Ok(Self(input.to_owned()))
            }
            _ => Err(EmailError::Malformed),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EmailAddress(<redacted>)")
    }
}

/// The app's bundle id, e.g. `com.example.Phone`; the APNs topic (plus `.voip` for PushKit).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BundleId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleIdError {
    #[error("bundle id is empty")]
    Empty,
    #[error("bundle id is too long ({0} bytes, at most 155)")]
    TooLong(usize),
    #[error("bundle id may hold only letters, digits, '-' and '.'; found {0:?}")]
    BadCharacter(char),
    #[error("bundle id must not end in .voip; give the app's own bundle id")]
    VoipSuffix,
}

impl BundleId {
    pub fn parse(input: &str) -> Result<Self, BundleIdError> {
        if input.is_empty() {
            return Err(BundleIdError::Empty);
        }
        // 155 leaves room for ".voip" within Apple's limits on topics.
        if input.len() > 155 {
            return Err(BundleIdError::TooLong(input.len()));
        }
        if let Some(bad) = input
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
        {
            return Err(BundleIdError::BadCharacter(bad));
        }
        if input.ends_with(".voip") {
            return Err(BundleIdError::VoipSuffix);
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The APNs topic for a push on `channel`.
    pub fn topic(&self, channel: Channel) -> String {
        match channel {
            Channel::Voip => format!("{}.voip", self.0),
            Channel::Alert => self.0.clone(),
        }
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One app install's registration, exactly what the app sends to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub person: PersonId,
    /// `None` for apps that send none (KitchenSink).
    pub email: Option<EmailAddress>,
    /// The PushKit token of an iOS app; `None` for an Android app (FCM has one token).
    pub voip_token: Option<DeviceToken>,
    /// The app's normal token: APNs, or FCM's registration token.
    pub alert_token: DeviceToken,
    /// `None`: unknown; pushes try the configured default first, then the other.
    pub environment: Option<ApnsEnvironment>,
    /// `None`: the configured `APNS_TOPIC`.
    pub bundle_id: Option<BundleId>,
    /// Which payloads the app reads.
    pub flavour: AppFlavour,
}

impl Registration {
    /// The registration's tokens with the channel each serves (VoIP first).
    pub fn tokens(&self) -> Vec<(&DeviceToken, Channel)> {
        self.voip_token
            .iter()
            .map(|token| (token, Channel::Voip))
            .chain([(&self.alert_token, Channel::Alert)])
            .collect()
    }

    /// The push service of the app's tokens (its normal token's: both are one's).
    pub fn provider(&self) -> PushProvider {
        self.alert_token.provider()
    }
}

/// A stored device: one token and what is known about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub token: DeviceToken,
    pub channel: Channel,
    pub person: PersonId,
    pub environment: Option<ApnsEnvironment>,
    pub bundle_id: Option<BundleId>,
    /// Which payloads the app that registered it reads.
    pub flavour: AppFlavour,
    pub registered_at: DateTime<Utc>,
    /// The outcome of the last push to this token (`delivered`, or an APNs reason).
    pub last_outcome: Option<String>,
    pub last_outcome_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_and_environments_parse_case_insensitively() {
        assert_eq!("VoIP".parse::<Channel>().unwrap(), Channel::Voip);
        assert_eq!("alert".parse::<Channel>().unwrap(), Channel::Alert);
        assert_eq!(
            "Sandbox".parse::<ApnsEnvironment>().unwrap(),
            ApnsEnvironment::Sandbox
        );
        assert!("push".parse::<Channel>().is_err());
        assert!("staging".parse::<ApnsEnvironment>().is_err());
    }

    #[test]
    fn voip_topic_adds_the_suffix() {
        let bundle = BundleId::parse("com.example.Phone").unwrap();
        assert_eq!(bundle.topic(Channel::Voip), "com.example.Phone.voip");
        assert_eq!(bundle.topic(Channel::Alert), "com.example.Phone");
        assert_eq!(
            BundleId::parse("com.example.voip").unwrap_err(),
            BundleIdError::VoipSuffix
        );
        assert_eq!(
            BundleId::parse("com/x").unwrap_err(),
            BundleIdError::BadCharacter('/')
        );
    }

    #[test]
    fn emails_are_checked_loosely_and_never_debug_printed() {
        let email = EmailAddress::parse(" ada@example.com ").unwrap();
        assert_eq!(email.as_str(), "ada@example.com");
        assert!(!format!("{email:?}").contains("ada"));
        assert_eq!(EmailAddress::parse("").unwrap_err(), EmailError::Empty);
        assert_eq!(
            EmailAddress::parse("ada").unwrap_err(),
            EmailError::Malformed
        );
        assert_eq!(
            EmailAddress::parse("@x").unwrap_err(),
            EmailError::Malformed
        );
        assert_eq!(
            EmailAddress::parse("a b@x").unwrap_err(),
            EmailError::Malformed
        );
    }
}
