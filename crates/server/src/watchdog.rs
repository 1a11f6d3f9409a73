//! The webhook watchdog: every `WEBHOOK_WATCHDOG_INTERVAL_SECS` it looks at the
//! org-wide webhooks pointing at `PUBLIC_URL` that `WEBEX_SERVICE_TOKEN` can see (the
//! `telephony_push` firehose an admin made) and re-activates those Webex disabled
//! (see [`WebhookUpkeep::sync_org`]). What it last saw is in `/readyz` and `/metrics`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use webex_push_domain::{AccessToken, RemoteWebhook, WebhookUpkeep};

use crate::metrics::Metrics;

/// What the last look found.
#[derive(Debug, Clone, Default)]
pub struct WatchdogStatus {
    pub checked_at: Option<DateTime<Utc>>,
    pub webhooks: Vec<RemoteWebhook>,
    /// Why the last look failed (Webex unreachable, the token refused).
    pub error: Option<String>,
}

impl WatchdogStatus {
    /// For `/readyz`: counts and each webhook's resource and state, never a secret.
    pub fn to_json(&self) -> Value {
        let active = self.webhooks.iter().filter(|w| w.active).count();
        json!({
            "checked_at": self
                .checked_at
                .map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true)),
            "active": active,
            "inactive": self.webhooks.len() - active,
            "webhooks": self
                .webhooks
                .iter()
                .map(|w| json!({
                    "resource": w.resource,
                    "event": w.event,
                    "status": if w.active { "active" } else { "inactive" },
                }))
                .collect::<Vec<_>>(),
            "error": self.error,
        })
    }
}

pub type SharedStatus = Arc<Mutex<WatchdogStatus>>;

/// Looks once: re-activates what it may, records what it saw.
pub async fn look(
    upkeep: &WebhookUpkeep,
    token: &AccessToken,
    status: &SharedStatus,
    metrics: &Metrics,
) {
    let seen = upkeep.sync_org(token).await;
    let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
    status.checked_at = Some(Utc::now());
    match seen {
        Ok((webhooks, report)) => {
            metrics.count_webhooks_reactivated(report.repaired);
            metrics.set_watched_webhooks(&webhooks);
            tracing::info!(
                webhooks = webhooks.len(),
                reactivated = report.repaired,
                backing_off = report.backing_off,
                "org-wide webhooks checked"
            );
            status.webhooks = webhooks;
            status.error = None;
        }
        Err(error) => {
            tracing::warn!(error = %error, "org-wide webhooks not checked");
            status.error = Some(error.to_string());
        }
    }
}

/// Looks now, then every `interval`, until aborted.
pub fn spawn(
    upkeep: Arc<WebhookUpkeep>,
    token: AccessToken,
    interval: Duration,
    status: SharedStatus,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            look(&upkeep, &token, &status, &metrics).await;
        }
    })
}
