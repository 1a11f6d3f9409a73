//! Webhook upkeep: the server makes sure the Webex webhooks that feed it exist, point
//! at it, carry the secret only it knows, and are active. Webex disables a webhook
//! after 100 failed deliveries in 5 minutes and never re-enables it by itself, so one
//! bad deploy would otherwise silence a person's calls for good.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::ports::{DirectoryError, WebhookDirectory};
use crate::types::{AccessToken, PersonId, RemoteWebhook, WebhookSecret, WebhookSpec};

/// Webex disables a webhook re-activated less than this long ago at its next failure:
/// re-activating one that keeps failing sooner buys nothing.
pub const REACTIVATION_WINDOW: Duration = Duration::from_secs(300);

/// The webhooks each person needs: `(resource, event, filter)`. `callMemberships` rings
/// (only the person's own memberships being rung) and their changes (answered, declined,
/// left: the other phones stop ringing), new messages, and Webex Calling calls (made
/// only for people Webex lets have them).
pub const PERSONAL_WEBHOOKS: [(&str, &str, Option<&str>); 4] = [
    (
        "callMemberships",
        "created",
        Some("state=notified&personId=me"),
    ),
    ("callMemberships", "updated", Some("personId=me")),
    ("messages", "created", None),
    ("telephony_calls", "all", None),
];

/// The secret of the webhook of `resource` owned by `person`, as only the server can
/// make it (see the adapters' `webhook_secret`).
pub type SecretFor = Arc<dyn Fn(&PersonId, &str) -> WebhookSecret + Send + Sync>;

/// What one check did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpkeepReport {
    /// Checked recently: nothing was asked of Webex.
    pub cached: bool,
    pub created: usize,
    /// Disabled by Webex, or carrying another secret: set right (and active).
    pub repaired: usize,
    /// Duplicates pointing at this server, deleted.
    pub removed: usize,
    /// Already right.
    pub unchanged: usize,
    /// Webex would not let this person have them (e.g. `telephony_calls` without Webex
    /// Calling), by resource.
    pub refused: Vec<String>,
    /// Disabled by Webex, but re-activated within [`REACTIVATION_WINDOW`]: left for a
    /// later check (org-wide webhooks).
    pub backing_off: usize,
}

/// The webhook upkeep use case.
pub struct WebhookUpkeep {
    directory: Arc<dyn WebhookDirectory>,
    /// `PUBLIC_URL/webhook`: where every webhook made here points.
    target_url: String,
    /// `None`: personal webhooks are not kept (no key to derive their secrets).
    secret_for: Option<SecretFor>,
    /// How long a person's webhooks count as checked.
    interval: Duration,
    checked: Mutex<HashMap<Uuid, Check>>,
    /// When each org-wide webhook was last re-activated here.
    reactivated: Mutex<HashMap<String, Instant>>,
}

/// Past this many people the cache of checks is cleared (a check costs a list call).
const CHECKED_CAPACITY: usize = 100_000;

/// After a failed check (Webex unreachable), how long a person's next registrations
/// leave Webex alone (at most the check interval): an outage must not turn every
/// registration into another request.
const FAILED_CHECK_BACKOFF: Duration = Duration::from_secs(30);

/// Where a person's check stands.
#[derive(Debug, Clone, Copy)]
enum Check {
    Done(Instant),
    /// Another registration is checking now.
    Running,
    Failed(Instant),
}

/// Marks a check running; whatever ends it (done, failed, dropped) is recorded.
struct Running<'a> {
    upkeep: &'a WebhookUpkeep,
    person: Uuid,
    outcome: Option<Check>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut checked = self.upkeep.lock_checked();
        match self.outcome {
            Some(outcome) => {
                if checked.len() >= CHECKED_CAPACITY {
                    checked.clear();
                }
                checked.insert(self.person, outcome);
            }
            None => {
                checked.remove(&self.person);
            }
        }
    }
}

impl WebhookUpkeep {
    /// Keeps the webhooks pointing at `target_url`; people's own ones only once given
    /// their secrets ([`WebhookUpkeep::with_secrets`]).
    pub fn new(
        directory: Arc<dyn WebhookDirectory>,
        target_url: String,
        interval: Duration,
    ) -> Self {
        Self {
            directory,
            target_url,
            secret_for: None,
            interval,
            checked: Mutex::default(),
            reactivated: Mutex::default(),
        }
    }

    /// People's own webhooks are kept too, each with the secret `secret_for` makes.
    pub fn with_secrets(mut self, secret_for: SecretFor) -> Self {
        self.secret_for = Some(secret_for);
        self
    }

    /// Whether people's own webhooks are kept.
    pub fn keeps_personal_webhooks(&self) -> bool {
        self.secret_for.is_some()
    }

    pub fn target_url(&self) -> &str {
        &self.target_url
    }

    fn specs_for(&self, person: &PersonId, secret_for: &SecretFor) -> Vec<WebhookSpec> {
        PERSONAL_WEBHOOKS
            .iter()
            .map(|(resource, event, filter)| WebhookSpec {
                name: format!("webex-push {resource} {event}"),
                target_url: self.target_url.clone(),
                resource: (*resource).to_owned(),
                event: (*event).to_owned(),
                filter: filter.map(str::to_owned),
                secret: Some(secret_for(person, resource)),
            })
            .collect()
    }

    /// Makes sure `person`'s webhooks exist, point here, carry their secret and are
    /// active, using the person's own `token`: missing ones are created, disabled or
    /// mis-keyed ones set right, duplicates pointing here deleted. Webhooks pointing
    /// elsewhere are never touched. A person checked within the interval is not checked
    /// again (nothing is asked of Webex).
    #[tracing::instrument(name = "webhook_upkeep", skip_all, fields(person = %person))]
    pub async fn ensure_for(
        &self,
        token: &AccessToken,
        person: &PersonId,
    ) -> Result<UpkeepReport, DirectoryError> {
        let Some(secret_for) = &self.secret_for else {
            return Err(DirectoryError::Unknown(
                "personal webhooks are not kept: no key for their secrets".into(),
            ));
        };
        let now = Instant::now();
        let failure_backoff = FAILED_CHECK_BACKOFF.min(self.interval);
        {
            let mut checked = self.lock_checked();
            let skip = match checked.get(&person.uuid()) {
                Some(Check::Done(at)) => now.duration_since(*at) < self.interval,
                Some(Check::Running) => true,
                Some(Check::Failed(at)) => now.duration_since(*at) < failure_backoff,
                None => false,
            };
            if skip {
                tracing::debug!("webhooks checked recently; nothing asked of Webex");
                return Ok(UpkeepReport {
                    cached: true,
                    ..UpkeepReport::default()
                });
            }
            checked.insert(person.uuid(), Check::Running);
        }
        let mut running = Running {
            upkeep: self,
            person: person.uuid(),
            outcome: Some(Check::Failed(now)),
        };
        let listed = self.directory.list(token, false).await?;
        let ours: Vec<&RemoteWebhook> = listed
            .iter()
            .filter(|webhook| webhook.target_url == self.target_url && !webhook.org_wide)
            .collect();
        let mut report = UpkeepReport::default();
        for spec in self.specs_for(person, secret_for) {
            let mut like = ours.iter().filter(|webhook| webhook.is_like(&spec));
            let Some(keep) = like.next() else {
                match self.directory.create(token, &spec).await {
                    Ok(_) => report.created += 1,
                    Err(DirectoryError::Refused(why)) => {
                        tracing::debug!(resource = spec.resource, why, "webhook not allowed");
                        report.refused.push(spec.resource.clone());
                    }
                    Err(error) => return Err(error),
                }
                continue;
            };
            for duplicate in like {
                self.directory.delete(token, &duplicate.id).await?;
                report.removed += 1;
            }
            let mis_keyed = keep
                .secret
                .as_ref()
                .is_some_and(|secret| Some(secret) != spec.secret.as_ref());
            if !keep.active || mis_keyed {
                self.directory.update(token, &keep.id, &spec, true).await?;
                tracing::info!(
                    resource = spec.resource,
                    was_active = keep.active,
                    "webhook repaired"
                );
                report.repaired += 1;
            } else {
                report.unchanged += 1;
            }
        }
        running.outcome = Some(Check::Done(now));
        drop(running);
        tracing::info!(
            created = report.created,
            repaired = report.repaired,
            removed = report.removed,
            unchanged = report.unchanged,
            refused = report.refused.len(),
            "webhooks checked"
        );
        Ok(report)
    }

    /// The org-wide webhooks pointing here (the `telephony_push` firehose an admin
    /// made), as `service_token`'s holder sees them, with those Webex disabled
    /// re-activated, unless this server re-activated that one less than
    /// [`REACTIVATION_WINDOW`] ago (Webex would disable it again at once).
    #[tracing::instrument(name = "webhook_watchdog", skip_all)]
    pub async fn sync_org(
        &self,
        service_token: &AccessToken,
    ) -> Result<(Vec<RemoteWebhook>, UpkeepReport), DirectoryError> {
        let listed = self.directory.list(service_token, true).await?;
        let mut ours: Vec<RemoteWebhook> = listed
            .into_iter()
            .filter(|webhook| webhook.target_url == self.target_url)
            .collect();
        let mut report = UpkeepReport::default();
        for webhook in &mut ours {
            if webhook.active {
                report.unchanged += 1;
                continue;
            }
            let now = Instant::now();
            let recent = self
                .lock_reactivated()
                .get(&webhook.id)
                .is_some_and(|at| now.duration_since(*at) < REACTIVATION_WINDOW);
            if recent {
                tracing::warn!(
                    resource = webhook.resource,
                    "org-wide webhook disabled again soon after its re-activation; waiting"
                );
                report.backing_off += 1;
                continue;
            }
            let spec = WebhookSpec {
                name: webhook.name.clone(),
                target_url: webhook.target_url.clone(),
                resource: webhook.resource.clone(),
                event: webhook.event.clone(),
                filter: webhook.filter.clone(),
                secret: None,
            };
            *webhook = self
                .directory
                .update(service_token, &webhook.id, &spec, true)
                .await?;
            self.lock_reactivated().insert(webhook.id.clone(), now);
            tracing::warn!(resource = webhook.resource, "org-wide webhook re-activated");
            report.repaired += 1;
        }
        Ok((ours, report))
    }

    fn lock_checked(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Check>> {
        self.checked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_reactivated(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.reactivated.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::MockWebhookDirectory;

    fn person() -> PersonId {
        PersonId::from_uuid(Uuid::new_v4())
    }

    fn token() -> AccessToken {
        AccessToken::parse("token-of-ada").unwrap()
    }

    fn upkeep(directory: MockWebhookDirectory, interval: Duration) -> WebhookUpkeep {
        WebhookUpkeep::new(
            Arc::new(directory),
            "https://push.example.com/webhook".into(),
            interval,
        )
        .with_secrets(secret_for())
    }

    fn secret_for() -> SecretFor {
        Arc::new(|person: &PersonId, resource: &str| {
            WebhookSecret::new(format!("{}:{resource}", person.uuid()))
        })
    }

    fn remote(spec: &WebhookSpec, id: &str, active: bool) -> RemoteWebhook {
        RemoteWebhook {
            id: id.into(),
            name: spec.name.clone(),
            target_url: spec.target_url.clone(),
            resource: spec.resource.clone(),
            event: spec.event.clone(),
            filter: spec.filter.clone(),
            secret: spec.secret.clone(),
            org_wide: false,
            active,
        }
    }

    #[tokio::test]
    async fn missing_webhooks_are_made_once_and_a_second_check_is_cached() {
        let ada = person();
        let mut directory = MockWebhookDirectory::new();
        directory
            .expect_list()
            .times(1)
            .returning(|_, _| Ok(Vec::new()));
        directory
            .expect_create()
            .times(4)
            .returning(|_, spec| Ok(remote(spec, "new", true)));
        let upkeep = upkeep(directory, Duration::from_secs(900));

        let report = upkeep.ensure_for(&token(), &ada).await.unwrap();
        assert_eq!(report.created, 4);
        let again = upkeep.ensure_for(&token(), &ada).await.unwrap();
        assert!(again.cached);
    }

    #[tokio::test]
    async fn disabled_ones_are_reactivated_duplicates_removed_and_others_left_alone() {
        let ada = person();
        let upkeep_specs =
            upkeep(MockWebhookDirectory::new(), Duration::ZERO).specs_for(&ada, &secret_for());
        let mut listed = vec![
            remote(&upkeep_specs[0], "rings", false),
            remote(&upkeep_specs[1], "changes", true),
            remote(&upkeep_specs[2], "messages", true),
            remote(&upkeep_specs[2], "messages-again", true),
            remote(&upkeep_specs[3], "calls", true),
        ];
        let mut elsewhere = remote(&upkeep_specs[2], "elsewhere", false);
        elsewhere.target_url = "https://other.example.com/hook".into();
        listed.push(elsewhere);
        let mut directory = MockWebhookDirectory::new();
        directory
            .expect_list()
            .returning(move |_, _| Ok(listed.clone()));
        directory
            .expect_update()
            .withf(|_, id, spec, activate| id == "rings" && *activate && spec.secret.is_some())
            .times(1)
            .returning(|_, id, spec, _| Ok(remote(spec, id, true)));
        directory
            .expect_delete()
            .withf(|_, id| id == "messages-again")
            .times(1)
            .returning(|_, _| Ok(()));
        let report = upkeep(directory, Duration::ZERO)
            .ensure_for(&token(), &ada)
            .await
            .unwrap();
        assert_eq!(
            (report.repaired, report.removed, report.unchanged),
            (1, 1, 3)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_webhook_webex_refuses_is_skipped_and_an_outage_is_an_error() {
        let ada = person();
        let mut directory = MockWebhookDirectory::new();
        directory.expect_list().returning(|_, _| Ok(Vec::new()));
        directory.expect_create().returning(|_, spec| {
            if spec.resource == "telephony_calls" {
                Err(DirectoryError::Refused("no Webex Calling".into()))
            } else {
                Ok(remote(spec, "new", true))
            }
        });
        let report = upkeep(directory, Duration::ZERO)
            .ensure_for(&token(), &ada)
            .await
            .unwrap();
        assert_eq!(report.created, 3);
        assert_eq!(report.refused, ["telephony_calls"]);

        let mut down = MockWebhookDirectory::new();
        down.expect_list()
            .returning(|_, _| Err(DirectoryError::Unavailable("timeout".into())));
        let upkeep = upkeep(down, Duration::from_secs(900));
        assert!(upkeep.ensure_for(&token(), &ada).await.is_err());
        // The registrations right after leave Webex alone; later ones try again.
        assert!(upkeep.ensure_for(&token(), &ada).await.unwrap().cached);
        tokio::time::advance(FAILED_CHECK_BACKOFF).await;
        assert!(upkeep.ensure_for(&token(), &ada).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_org_webhook_disabled_again_right_after_its_reactivation_waits() {
        let spec = WebhookSpec {
            name: "firehose".into(),
            target_url: "https://push.example.com/webhook".into(),
            resource: "telephony_push".into(),
            event: "updated".into(),
            filter: None,
            secret: None,
        };
        let mut firehose = remote(&spec, "firehose", false);
        firehose.org_wide = true;
        let mut directory = MockWebhookDirectory::new();
        directory
            .expect_list()
            .withf(|_, org_wide| *org_wide)
            .returning(move |_, _| Ok(vec![firehose.clone()]));
        directory
            .expect_update()
            .times(2)
            .returning(|_, id, spec, _| Ok(remote(spec, id, true)));
        let upkeep = upkeep(directory, Duration::ZERO);
        let (_, report) = upkeep.sync_org(&token()).await.unwrap();
        assert_eq!(report.repaired, 1);
        let (_, report) = upkeep.sync_org(&token()).await.unwrap();
        assert_eq!(report.backing_off, 1);
        tokio::time::advance(REACTIVATION_WINDOW).await;
        let (_, report) = upkeep.sync_org(&token()).await.unwrap();
        assert_eq!(report.repaired, 1);
    }
}
