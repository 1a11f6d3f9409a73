//! The registry: every family the server exports, its label set and buckets, the
//! numbers probed at scrape time, and the rendering of it all for `GET /metrics`.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use webex_push_domain::{EventKind, EventSource, Push, PushOutcome, PushProvider};

use super::exposition::prometheus_text;
use crate::process_metrics::ProcessCollector;

/// The namespace of every metric the server itself defines.
pub const NAMESPACE: &str = "webex_push";

/// A number read when `/metrics` is scraped (pool state, provider tokens).
type Probe<T> = Box<dyn Fn() -> T + Send + Sync>;

// Label values are `&'static str` wherever their set is closed, so counting a webhook
// or a push allocates nothing once its series exists. A route pattern comes owned from
// actix and is moved, not copied; a provider's reason is a `Cow`, owned only when a
// push failed.

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route pattern (`/register/{token}`), never the raw path: tokens stay out
    /// of the series and the cardinality stays bounded.
    pub route: String,
    /// One of [`METHODS`], else `other`.
    pub method: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    /// `release` or `debug`.
    pub profile: &'static str,
}

/// The request methods that get a label of their own; any other is `other`, so a
/// client inventing methods cannot grow the series.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// `method`'s label: itself when it is one of [`METHODS`], else `other`.
pub fn method_label(method: &str) -> &'static str {
    METHODS
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

/// The Webex resources that never become an [`EventSource`] but are worth a label.
const OTHER_RESOURCES: [&str; 4] = ["memberships", "rooms", "meetings", "attachmentActions"];

/// A Webex resource name for a metric label: the ones Webex sends (an
/// [`EventSource`]'s own name for those we relay), else `other`, so a client cannot
/// grow the series without bound.
pub fn resource_label(name: &str) -> &'static str {
    EventSource::ALL
        .into_iter()
        .map(EventSource::as_str)
        .chain(OTHER_RESOURCES)
        .find(|known| *known == name)
        .unwrap_or("other")
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// One of [`resource_label`]'s.
    pub resource: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchedLabels {
    pub resource: &'static str,
    pub status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    /// `apns` or `fcm`.
    pub provider: &'static str,
    pub channel: &'static str,
    /// `delivered`, `token_invalid`, `retry` or `rejected`.
    pub outcome: &'static str,
    /// Apple's reason (or ours when no answer came); empty when delivered.
    pub reason: Cow<'static, str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// [`EventKind::as_str`]: the kinds' one vocabulary, in logs and here.
    pub kind: &'static str,
    /// `relayed`, `duplicate`, `late` or `failed`.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// `in_use` or `idle`.
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// The `RegistrationPort` method (`claim`, `record_outcome`, ...).
    pub operation: &'static str,
    /// `ok`, `unavailable` or `unknown`.
    pub result: &'static str,
}

/// A histogram of one store operation, with the stage buckets.
type StageHistogram = fn() -> Histogram;

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    /// From a request's arrival to its answer, by route pattern and method.
    pub http_duration: Family<RouteLabels, Histogram, StageHistogram>,
    pub webhooks: Family<WebhookLabels, Counter>,
    pub pushes: Family<PushLabels, Counter>,
    pub events: Family<EventLabels, Counter>,
    pub apns_duration: Histogram,
    pub ring_latency: Histogram,
    /// The same two for Android's pushes, through FCM.
    pub fcm_duration: Histogram,
    pub fcm_ring_latency: Histogram,
    /// From a webhook's arrival to a push worker taking its event.
    pub queue_wait: Histogram,
    /// Events accepted while the store could not record them (held in memory only).
    unrecorded: Counter,
    /// Jobs of stopped replicas this one took over.
    taken_over: Counter,
    /// Unfinished jobs found past their deadline with no live holder: never relayed.
    expired: Counter,
    /// Devices removed because their person registered more than the limit.
    evicted: Counter,
    /// Registrations refused because their client address went past its rate.
    rate_limited: Counter,
    telephony_push_unmatched: Counter,
    watched_webhooks: Family<WatchedLabels, Gauge>,
    webhooks_reactivated: Counter,
    pub store_duration: Family<StoreLabels, Histogram, StageHistogram>,
    queue_depth: Gauge,
    pool: Family<PoolLabels, Gauge>,
    tokens_minted: Counter,
    queue_probe: OnceLock<Probe<usize>>,
    pool_probe: OnceLock<Probe<(u32, u32)>>,
    tokens_probe: OnceLock<Probe<u64>>,
}

/// APNs answers in tens of milliseconds; a ring is worthless after ~30 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
];

/// The stages of a ring inside the server (queue wait, a store call) take from tens of
/// microseconds to seconds when something is wrong.
const STAGE_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

fn stage_histogram() -> Histogram {
    Histogram::new(STAGE_BUCKETS.into_iter())
}

/// HTTP answers take from tens of microseconds (a probe) to seconds (a webhook waiting
/// for room in a full queue, a registration asking Webex who holds a token).
const HTTP_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS.into_iter())
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector::new()));
        // Everything registered through `registry` is named `webex_push_<name>`.
        let registry = root.sub_registry_with_prefix(NAMESPACE);
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                profile: if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                },
            })
            .set(1);
        registry.register(
            "build_info",
            "The running build: always 1, its version in the labels",
            build_info,
        );
        let http_duration =
            Family::<RouteLabels, Histogram, StageHistogram>::new_with_constructor(http_histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time from an HTTP request's arrival to its answer, by route pattern and method",
            http_duration.clone(),
        );
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern, method and status",
            http_requests.clone(),
        );
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhooks",
            "Webex webhooks received, by resource and outcome",
            webhooks.clone(),
        );
        let pushes = Family::<PushLabels, Counter>::default();
        registry.register(
            "pushes",
            "Pushes sent to APNs or FCM for relayed events, by provider, channel, outcome and reason",
            pushes.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Queued events taken by a push worker, by kind and outcome",
            events.clone(),
        );
        let apns_duration = Histogram::new(LATENCY_BUCKETS.into_iter());
        registry.register(
            "apns_request_duration_seconds",
            "Time from sending one push to APNs to its classified answer",
            apns_duration.clone(),
        );
        let ring_latency = Histogram::new(LATENCY_BUCKETS.into_iter());
        registry.register(
            "ring_latency_seconds",
            "Time from the call webhook's arrival to APNs accepting the VoIP push",
            ring_latency.clone(),
        );
        let fcm_duration = Histogram::new(LATENCY_BUCKETS.into_iter());
        registry.register(
            "fcm_request_duration_seconds",
            "Time from sending one push to FCM to its classified answer (an access-token refresh included)",
            fcm_duration.clone(),
        );
        let fcm_ring_latency = Histogram::new(LATENCY_BUCKETS.into_iter());
        registry.register(
            "fcm_ring_latency_seconds",
            "Time from the call webhook's arrival to FCM accepting the ring's data message",
            fcm_ring_latency.clone(),
        );
        let queue_wait = stage_histogram();
        registry.register(
            "push_queue_wait_seconds",
            "Time from a webhook's arrival to a push worker taking its event",
            queue_wait.clone(),
        );
        let store_duration =
            Family::<StoreLabels, Histogram, StageHistogram>::new_with_constructor(stage_histogram);
        registry.register(
            "store_operation_duration_seconds",
            "Time one registration store call took, batching wait included, by operation and result",
            store_duration.clone(),
        );
        let unrecorded = Counter::default();
        registry.register(
            "events_unrecorded",
            "Events accepted while the store could not record them: lost if this replica stops before relaying them",
            unrecorded.clone(),
        );
        let taken_over = Counter::default();
        registry.register(
            "events_taken_over",
            "Accepted events of replicas that stopped, taken over by this one",
            taken_over.clone(),
        );
        let expired = Counter::default();
        registry.register(
            "events_expired_unrelayed",
            "Accepted events whose replica stopped and whose deadline passed before any replica took them over",
            expired.clone(),
        );
        let evicted = Counter::default();
        registry.register(
            "devices_evicted",
            "Devices removed because their person registered more than MAX_DEVICES_PER_PERSON on one channel",
            evicted.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "registrations_rate_limited",
            "Registration requests refused with 429: their client address went past REGISTER_RATE_PER_MINUTE",
            rate_limited.clone(),
        );
        let telephony_push_unmatched = Counter::default();
        registry.register(
            "telephony_push_unmatched",
            "telephony_push events whose callee (data.personId, createdBy or actorId, whichever came first) has no device registered here: many mean the callee is read from the wrong field",
            telephony_push_unmatched.clone(),
        );
        let watched_webhooks = Family::<WatchedLabels, Gauge>::default();
        registry.register(
            "webhooks_watched",
            "Org-wide webhooks pointing at PUBLIC_URL the watchdog saw at its last look, by resource and status (inactive: Webex disabled it)",
            watched_webhooks.clone(),
        );
        let webhooks_reactivated = Counter::default();
        registry.register(
            "webhooks_reactivated",
            "Org-wide webhooks Webex had disabled, re-activated by the watchdog",
            webhooks_reactivated.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "push_queue_depth",
            "Events accepted but not yet taken by a push worker",
            queue_depth.clone(),
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database pool connections, by state (in_use, idle)",
            pool.clone(),
        );
        let tokens_minted = Counter::default();
        registry.register(
            "apns_provider_tokens_minted",
            "APNs provider tokens (JWT) minted since start",
            tokens_minted.clone(),
        );
        Self {
            registry: root,
            http_requests,
            http_duration,
            webhooks,
            pushes,
            events,
            apns_duration,
            ring_latency,
            fcm_duration,
            fcm_ring_latency,
            queue_wait,
            unrecorded,
            taken_over,
            expired,
            evicted,
            rate_limited,
            telephony_push_unmatched,
            watched_webhooks,
            webhooks_reactivated,
            store_duration,
            queue_depth,
            pool,
            tokens_minted,
            queue_probe: OnceLock::new(),
            pool_probe: OnceLock::new(),
            tokens_probe: OnceLock::new(),
        }
    }

    pub fn count_unrecorded(&self) {
        self.unrecorded.inc();
    }

    pub fn count_taken_over(&self) {
        self.taken_over.inc();
    }

    pub fn count_expired(&self, expired: u64) {
        self.expired.inc_by(expired);
    }

    pub fn count_evicted(&self, devices: usize) {
        self.evicted.inc_by(devices as u64);
    }

    pub fn count_rate_limited(&self) {
        self.rate_limited.inc();
    }

    pub fn count_telephony_push_unmatched(&self) {
        self.telephony_push_unmatched.inc();
    }

    pub fn count_webhooks_reactivated(&self, webhooks: usize) {
        self.webhooks_reactivated.inc_by(webhooks as u64);
    }

    /// What the watchdog saw: a count per resource and status, each pair present (0
    /// when none) so an alert on `inactive > 0` has a series to read.
    pub fn set_watched_webhooks(&self, webhooks: &[webex_push_domain::RemoteWebhook]) {
        self.watched_webhooks.clear();
        for webhook in webhooks {
            for status in ["active", "inactive"] {
                self.watched_webhooks
                    .get_or_create(&WatchedLabels {
                        resource: resource_label(&webhook.resource),
                        status,
                    })
                    .set(0);
            }
        }
        for webhook in webhooks {
            self.watched_webhooks
                .get_or_create(&WatchedLabels {
                    resource: resource_label(&webhook.resource),
                    status: if webhook.active { "active" } else { "inactive" },
                })
                .inc();
        }
    }

    /// Where `webex_push_push_queue_depth` is read at scrape time.
    pub fn probe_queue(&self, probe: impl Fn() -> usize + Send + Sync + 'static) {
        let _ = self.queue_probe.set(Box::new(probe));
    }

    /// Where `webex_push_db_pool_connections` is read at scrape time: `(in_use, idle)`.
    pub fn probe_pool(&self, probe: impl Fn() -> (u32, u32) + Send + Sync + 'static) {
        let _ = self.pool_probe.set(Box::new(probe));
    }

    /// Where `webex_push_apns_provider_tokens_minted_total` is read at scrape time.
    pub fn probe_tokens(&self, probe: impl Fn() -> u64 + Send + Sync + 'static) {
        let _ = self.tokens_probe.set(Box::new(probe));
    }

    /// Counts one answered request and times it. `route` is the pattern matched
    /// (`/register/{token}`, `unmatched` when none did), never the raw path.
    pub fn observe_request(&self, route: String, method: &str, status: u16, took: Duration) {
        let method = method_label(method);
        let request = RequestLabels {
            route,
            method,
            status,
        };
        self.http_requests.get_or_create(&request).inc();
        let RequestLabels { route, .. } = request;
        self.http_duration
            .get_or_create(&RouteLabels { route, method })
            .observe(took.as_secs_f64());
    }

    /// Counts one webhook: the resource it was about (see [`resource_label`]) and what
    /// became of it.
    pub fn count_webhook(&self, resource: &'static str, outcome: &'static str) {
        self.webhooks
            .get_or_create(&WebhookLabels { resource, outcome })
            .inc();
    }

    /// Counts one queued event a push worker took, by kind and what became of it.
    pub fn count_event(&self, kind: EventKind, outcome: &'static str) {
        self.events
            .get_or_create(&EventLabels {
                kind: kind.as_str(),
                outcome,
            })
            .inc();
    }

    /// Counts one push's outcome and times it.
    pub fn observe_push(&self, push: &Push, outcome: &PushOutcome, took: Duration) {
        let (kind, reason) = match outcome {
            PushOutcome::Delivered { .. } => ("delivered", Cow::Borrowed("")),
            PushOutcome::TokenInvalid { reason, .. } => ("token_invalid", reason.clone().into()),
            PushOutcome::Retry { reason, .. } => ("retry", reason.clone().into()),
            PushOutcome::Rejected { reason } => ("rejected", reason.clone().into()),
        };
        self.pushes
            .get_or_create(&PushLabels {
                provider: push.token.provider().as_str(),
                channel: push.channel.as_str(),
                outcome: kind,
                reason,
            })
            .inc();
        let duration = match push.token.provider() {
            PushProvider::Apns => &self.apns_duration,
            PushProvider::Fcm => &self.fcm_duration,
        };
        duration.observe(took.as_secs_f64());
    }

    /// The registry in Prometheus' text format, probes read now.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        if let Some(probe) = self.queue_probe.get() {
            self.queue_depth
                .set(i64::try_from(probe()).unwrap_or(i64::MAX));
        }
        if let Some(probe) = self.pool_probe.get() {
            let (in_use, idle) = probe();
            for (state, value) in [("in_use", in_use), ("idle", idle)] {
                self.pool
                    .get_or_create(&PoolLabels { state })
                    .set(i64::from(value));
            }
        }
        if let Some(probe) = self.tokens_probe.get() {
            // A counter owned by the APNs client: mirror its value rather than count.
            self.tokens_minted
                .inner()
                .store(probe(), std::sync::atomic::Ordering::Relaxed);
        }
        let mut open_metrics = String::new();
        prometheus_client::encoding::text::encode(&mut open_metrics, &self.registry)?;
        prometheus_text(&open_metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_is_prometheus_text_with_help_and_type_named_as_the_samples() {
        let metrics = Metrics::new();
        metrics.observe_request("/register".into(), "POST", 204, Duration::from_millis(3));
        metrics.observe_request("/register".into(), "BREW", 405, Duration::from_millis(1));
        metrics.count_event(EventKind::Ring, "relayed");
        let text = metrics.render().unwrap();
        assert!(!text.contains("# EOF"), "{text}");
        for expected in [
            "# HELP webex_push_events_total Queued events",
            "# TYPE webex_push_events_total counter",
            r#"webex_push_events_total{kind="ring",outcome="relayed"} 1"#,
            "# TYPE webex_push_http_request_duration_seconds histogram",
            r#"webex_push_http_request_duration_seconds_count{route="/register",method="POST"} 1"#,
            r#"webex_push_http_requests_total{route="/register",method="other",status="405"} 1"#,
            "# TYPE webex_push_push_queue_depth gauge",
            &format!(
                r#"webex_push_build_info{{version="{}",profile="{}"}} 1"#,
                env!("CARGO_PKG_VERSION"),
                if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                }
            ),
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        // Every sample belongs to a family with HELP and TYPE, and every name is ours
        // or a standard process metric.
        let mut described = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                described.insert(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    name.starts_with("webex_push_") || name.starts_with("process_"),
                    "{line}"
                );
                let family = ["_bucket", "_sum", "_count"]
                    .into_iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|family| described.contains(*family))
                    .unwrap_or(name);
                assert!(described.contains(family), "no TYPE for {line}");
            }
        }
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
        }
        #[cfg(target_os = "linux")]
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter"),
            "{text}"
        );
    }
}
