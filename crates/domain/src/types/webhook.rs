//! The Webex webhooks webex-push keeps for its people: what one should look like, and
//! what Webex says one is.

use std::fmt;

/// A webhook's secret: the key Webex signs its deliveries with. Only the server knows
/// the secrets of the webhooks it makes; `Debug` never shows one.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one adapter that hands it to Webex.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// What a webhook should be: one to make, or the fields an update sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSpec {
    pub name: String,
    pub target_url: String,
    pub resource: String,
    pub event: String,
    pub filter: Option<String>,
    /// `None` in an update: the secret stays as it is.
    pub secret: Option<WebhookSecret>,
}

/// A webhook as Webex lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteWebhook {
    pub id: String,
    pub name: String,
    pub target_url: String,
    pub resource: String,
    pub event: String,
    pub filter: Option<String>,
    /// When Webex shows it to the caller.
    pub secret: Option<WebhookSecret>,
    /// Owned by the org (made by an admin for everyone), not by its creator.
    pub org_wide: bool,
    /// `false`: Webex disabled it (too many failed deliveries) and sends nothing.
    pub active: bool,
}

impl RemoteWebhook {
    /// Whether it is a webhook of `spec`'s kind: the same resource, event and filter.
    pub fn is_like(&self, spec: &WebhookSpec) -> bool {
        self.resource == spec.resource && self.event == spec.event && self.filter == spec.filter
    }
}
