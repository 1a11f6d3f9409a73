//! Wiring: builds the adapters and services from a `Config`, hands them to the HTTP
//! app, and runs it until a stop signal, then drains the push queue.

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpServer, middleware, web};
use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use tokio::task::JoinHandle;
use webex_push_adapters::apns::ApnsClient;
use webex_push_adapters::fcm::FcmClient;
use webex_push_adapters::identity::WebexIdentity;
use webex_push_adapters::persistence::DieselRegistrationStore;
use webex_push_adapters::webex::{WebexWebhooks, WebexWebhooksConfig, webhook_secret};
use webex_push_domain::{
    AccessToken, Clock, DiagnosticsService, IdentityPort, IncomingCallPort, NotificationService,
    PersonId, ProviderGateways, ProviderTestGateways, PushProvider, RegistrationGuard,
    RegistrationPort, RegistrationService, SystemClock, TestPushGateway, WebhookDirectory,
    WebhookUpkeep,
};

use crate::config::{Config, WebhookAuth};
use crate::error::ApiError;
use crate::housekeeping;
use crate::metrics::{MeteredGateway, MeteredStore, Metrics};
use crate::queue::{self, PushWorkers};
use crate::rate_limit::RegisterRateLimiter;
use crate::request_telemetry;
use crate::routes::admin::AdminState;
use crate::routes::{self, Limits, health::Readiness, webhook::WebhookIntake};
use crate::watchdog;

/// The ports the HTTP app drives: the real adapters in production, mocks in tests.
pub struct Dependencies {
    pub store: Arc<dyn RegistrationPort>,
    /// `None` when no APNs key is loaded.
    pub notifier: Option<Arc<dyn IncomingCallPort>>,
    pub clock: Arc<dyn Clock>,
    /// `Some` with `REGISTER_AUTH=webex`: who holds a Webex access token.
    pub identity: Option<Arc<dyn IdentityPort>>,
    /// Where admin test pushes go (the APNs and FCM clients, unmetered); `None` when
    /// neither an APNs key nor an FCM service account is loaded.
    pub test_pushes: Option<Arc<dyn TestPushGateway>>,
    /// Shared with the adapters' decorators, so `/metrics` sees what they count.
    pub metrics: Arc<Metrics>,
    /// The Webex webhooks API, for keeping people's webhooks (`PUBLIC_URL` with
    /// REGISTER_AUTH=webex); `None`: nothing is kept.
    pub webhooks: Option<Arc<dyn WebhookDirectory>>,
}

impl Dependencies {
    /// A store and a notifier, everything else off (what most tests need).
    pub fn new(
        store: Arc<dyn RegistrationPort>,
        notifier: Option<Arc<dyn IncomingCallPort>>,
    ) -> Self {
        Self {
            store,
            notifier,
            clock: Arc::new(SystemClock),
            identity: None,
            test_pushes: None,
            metrics: Arc::new(Metrics::new()),
            webhooks: None,
        }
    }
}

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    workers: Option<PushWorkers>,
    shutdown_timeout: Duration,
    /// Background upkeep (pruning de-duplication keys); stopped with the server.
    housekeeping: Option<JoinHandle<()>>,
    /// The webhook watchdog (`WEBEX_SERVICE_TOKEN`); stopped with the server.
    watchdog: Option<JoinHandle<()>>,
}

impl Application {
    /// Connects the database (migrating it when configured; the adapter announces the
    /// SQLite file when `DATABASE_URL` is unset), loads the APNs client and binds the
    /// port. Fails with a message saying what to fix.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let diesel = Arc::new(
            DieselRegistrationStore::connect(&config.database)
                .await
                .context("DATABASE_URL: cannot open the database")?,
        );
        {
            let diesel = Arc::clone(&diesel);
            metrics.probe_pool(move || diesel.pool_state());
        }
        let store: Arc<dyn RegistrationPort> =
            Arc::new(MeteredStore::new(diesel, Arc::clone(&metrics)));
        let pruner = housekeeping::spawn_seen_events_pruner(
            Arc::clone(&store),
            config.queue.seen_events_retention,
            housekeeping::PRUNE_INTERVAL,
        );
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let identity = match &config.register_auth {
            Some(webex) => {
                let identity = WebexIdentity::new(webex.clone())
                    .context("REGISTER_AUTH=webex: cannot set up the Webex identity check")?;
                tracing::info!(
                    webex_api_url = webex.base_url.as_str(),
                    "registrations must prove their identity (REGISTER_AUTH=webex)"
                );
                Some(Arc::new(identity) as Arc<dyn IdentityPort>)
            }
            None => None,
        };
        let webhooks = match &config.webhook_upkeep {
            Some(upkeep) => {
                let directory = WebexWebhooks::new(&WebexWebhooksConfig {
                    base_url: upkeep.webex_api_url.clone(),
                    timeout: upkeep.timeout,
                })
                .context("PUBLIC_URL: cannot set up the Webex webhooks client")?;
                tracing::info!(
                    target_url = upkeep.target_url.as_str(),
                    "each registration keeps the person's webhooks (PUBLIC_URL)"
                );
                Some(Arc::new(directory) as Arc<dyn WebhookDirectory>)
            }
            None => None,
        };
        let mut test_gateways = ProviderTestGateways::new();
        let mut gateways = ProviderGateways::new();
        if let Some(fcm) = &config.fcm {
            let client = FcmClient::new(fcm.clone()).context("cannot set up FCM")?;
            warm_up_fcm_in_background(client.clone());
            tracing::info!(
                project = client.project_id(),
                client_email = fcm.account.client_email(),
                endpoint = fcm.endpoint.as_deref().unwrap_or("Google"),
                "FCM service account loaded: Android registrations are accepted"
            );
            test_gateways = test_gateways.with(PushProvider::Fcm, Arc::new(client.clone()));
            let gateway = MeteredGateway::new(Arc::new(client), Arc::clone(&metrics));
            gateways = gateways.with(PushProvider::Fcm, Arc::new(gateway));
        }
        let notifier = match &config.apns {
            Some(apns) => {
                let client = ApnsClient::new(apns.clone()).context("cannot set up APNs")?;
                {
                    let client = client.clone();
                    metrics.probe_tokens(move || client.provider_tokens_minted());
                }
                warm_up_in_background(client.clone());
                test_gateways = test_gateways.with(PushProvider::Apns, Arc::new(client.clone()));
                let gateway = MeteredGateway::new(Arc::new(client), Arc::clone(&metrics));
                tracing::info!(
                    key_id = apns.key_id.as_str(),
                    topic = apns.topic.as_str(),
                    environment = %apns.default_environment,
                    endpoint = apns.endpoint.as_deref().unwrap_or("Apple"),
                    "APNs key loaded"
                );
                let gateways = gateways.with(PushProvider::Apns, Arc::new(gateway));
                let service = NotificationService::new(
                    Arc::clone(&store),
                    Arc::new(gateways),
                    config.retry,
                    Arc::clone(&clock),
                );
                Some(Arc::new(service) as Arc<dyn IncomingCallPort>)
            }
            None if gateways.serves(PushProvider::Fcm) => {
                tracing::warn!(
                    "no APNs key configured (APNS_KEY_FILE or APNS_KEY): only Android (FCM) \
                     devices get pushes; iOS registrations are stored but never pushed to"
                );
                let service = NotificationService::new(
                    Arc::clone(&store),
                    Arc::new(gateways),
                    config.retry,
                    Arc::clone(&clock),
                );
                Some(Arc::new(service) as Arc<dyn IncomingCallPort>)
            }
            None => {
                tracing::warn!(
                    "no APNs key configured (APNS_KEY_FILE or APNS_KEY): registrations are \
                     accepted, but /readyz answers 503 and webhooks that would push get 503"
                );
                None
            }
        };
        let test_pushes = test_gateways
            .serves_any()
            .then(|| Arc::new(test_gateways) as Arc<dyn TestPushGateway>);
        let mut application = Self::build_with(
            &config,
            Dependencies {
                store,
                notifier,
                clock,
                identity,
                test_pushes,
                metrics,
                webhooks,
            },
        )?;
        application.housekeeping = Some(pruner);
        Ok(application)
    }

    /// Binds the port and builds the app on given ports. Must run inside a Tokio
    /// runtime: it starts the push workers.
    pub fn build_with(config: &Config, dependencies: Dependencies) -> std::io::Result<Self> {
        // Once per process (a second app in one test process keeps the first, the same).
        actix_http::error_body::set_error_body_renderer(ApiError::framework_body);
        match config.webhook_auth() {
            WebhookAuth::Signed { .. } => {}
            WebhookAuth::UnsignedAllowed => tracing::warn!(
                "ALLOW_UNSIGNED_WEBHOOKS=true and no WEBHOOK_SECRET: webhooks are accepted \
                 without checking their signature, so anyone who finds the URL can ring \
                 every registered phone with a caller of their choosing"
            ),
            WebhookAuth::UnsignedNoRealPushes => tracing::warn!(
                "WEBHOOK_SECRET is not set: webhooks are accepted unsigned, which is only \
                 allowed while no push can reach Apple (no APNs key, or APNS_ENDPOINT set); \
                 with a key for Apple's gateways the server refuses to start without it"
            ),
        }
        if config.register_auth.is_none() {
            tracing::warn!(
                "REGISTER_AUTH=off: anyone who knows a person id can register a device for \
                 that person and receive their call and message notices; set \
                 REGISTER_AUTH=webex once the apps send their Webex access token"
            );
        }
        let listener = TcpListener::bind((config.http.host.as_str(), config.http.port))?;
        let address = listener.local_addr()?;

        let (queue, workers) = match dependencies.notifier {
            Some(notifier) => {
                let (queue, workers) = queue::start(
                    queue::Sizing {
                        capacity: config.queue.capacity,
                        workers: config.queue.workers,
                        wait: config.queue.wait,
                    },
                    config.deadlines,
                    notifier,
                    Arc::clone(&dependencies.metrics),
                );
                let probed = queue.clone();
                dependencies.metrics.probe_queue(move || probed.depth());
                (Some(queue), Some(workers))
            }
            None => (None, None),
        };
        let mut registrations = RegistrationService::new(
            Arc::clone(&dependencies.store),
            Arc::clone(&dependencies.clock),
        )
        .guarded_by(RegistrationGuard::new(dependencies.identity))
        .keeping(config.register_limits.devices_per_channel);
        let upkeep = match (&config.webhook_upkeep, dependencies.webhooks) {
            (Some(settings), Some(directory)) => {
                let mut upkeep =
                    WebhookUpkeep::new(directory, settings.target_url.clone(), settings.interval);
                if let (true, Some(key)) = (settings.personal, config.webhook_secrets.first()) {
                    // The current secret (the list's first) keys the secrets of new webhooks.
                    let key = key.clone();
                    upkeep =
                        upkeep.with_secrets(Arc::new(move |person: &PersonId, resource: &str| {
                            webhook_secret(key.expose_secret(), person, resource)
                        }));
                }
                Some(Arc::new(upkeep))
            }
            _ => None,
        };
        if let Some(upkeep) = upkeep.as_ref().filter(|u| u.keeps_personal_webhooks()) {
            registrations = registrations.keeping_webhooks(Arc::clone(upkeep));
        }
        let mut watchdog = None;
        let mut watchdog_status = None;
        if let (Some(upkeep), Some(settings)) = (&upkeep, &config.webhook_upkeep)
            && let Some(token) = &settings.service_token
        {
            match AccessToken::parse(token.expose_secret()) {
                Ok(token) => {
                    let status = watchdog::SharedStatus::default();
                    watchdog = Some(watchdog::spawn(
                        Arc::clone(upkeep),
                        token,
                        settings.watchdog_interval,
                        Arc::clone(&status),
                        Arc::clone(&dependencies.metrics),
                    ));
                    watchdog_status = Some(status);
                }
                Err(error) => {
                    tracing::error!(error = %error, "WEBEX_SERVICE_TOKEN is not a token; org-wide webhooks are not watched");
                }
            }
        }
        let registrations = web::Data::new(registrations);
        let rate_limiter = web::Data::new(RegisterRateLimiter::new(
            config.register_limits.rate,
            config.register_limits.trusted_proxies.clone(),
        ));
        let admin = config.admin_token.clone().map(|token| {
            web::Data::new(AdminState {
                token,
                service: DiagnosticsService::new(
                    Arc::clone(&dependencies.store),
                    dependencies.test_pushes,
                    Arc::clone(&dependencies.clock),
                ),
            })
        });
        if admin.is_none() {
            tracing::info!("ADMIN_TOKEN is not set: the /admin routes are off");
        }
        let readiness = web::Data::new(Readiness {
            store: dependencies.store,
            apns_loaded: queue.is_some(),
            webhook_auth: config.webhook_auth(),
            register_auth: config.register_auth.is_some(),
            ping_timeout: Duration::from_secs(3),
            webhooks: watchdog_status,
        });
        let webhook = web::Data::new(WebhookIntake {
            secrets: config.webhook_secrets.clone().into(),
            queue,
            metrics: Arc::clone(&dependencies.metrics),
        });
        let metrics = web::Data::from(dependencies.metrics);
        let limits = web::Data::new(Limits {
            register_body: config.http.register_body_limit,
            webhook_body: config.http.webhook_body_limit,
            request_timeout: config.http.request_timeout,
            fcm: config.fcm.is_some(),
        });

        let mut server = HttpServer::new(move || {
            let mut app = App::new()
                .wrap(middleware::from_fn(request_telemetry::middleware))
                .app_data(registrations.clone())
                .app_data(rate_limiter.clone())
                .app_data(readiness.clone())
                .app_data(webhook.clone())
                .app_data(limits.clone())
                .app_data(metrics.clone())
                .configure(routes::health::configure)
                .configure(routes::register::configure)
                .configure(routes::webhook::configure)
                .configure(routes::metrics::configure)
                .configure(routes::docs::configure);
            if let Some(admin) = &admin {
                app = app
                    .app_data(admin.clone())
                    .configure(routes::admin::configure);
            }
            app.default_service(web::to(routes::not_found))
        })
        .listen(listener)?
        // Signals are ours: stopping also drains the push queue.
        .disable_signals()
        .shutdown_timeout(config.http.shutdown_timeout.as_secs())
        .client_request_timeout(config.http.request_timeout);
        if let Some(workers) = config.http.workers {
            server = server.workers(workers);
        }
        tracing::info!(address = %address, "listening");
        Ok(Self {
            port: address.port(),
            server: server.run(),
            workers,
            shutdown_timeout: config.http.shutdown_timeout,
            housekeeping: None,
            watchdog,
        })
    }

    /// The port bound (useful when the configuration asked for 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or SIGINT, then stops accepting, finishes in-flight
    /// requests, drains the push queue within the shutdown timeout and returns.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let signal = ShutdownSignal::install()?;
        self.run_until(signal.received()).await
    }

    /// Serves until `stop` completes, then shuts down as [`Self::run_until_stopped`].
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> std::io::Result<()> {
        let handle = self.server.handle();
        let mut server = std::pin::pin!(self.server);
        let stopping_since = tokio::select! {
            result = &mut server => {
                result?;
                tokio::time::Instant::now()
            }
            () = stop => {
                tracing::info!("stopping: no new connections; finishing requests in flight");
                if let Some(workers) = &self.workers {
                    workers.close_queue();
                }
                let since = tokio::time::Instant::now();
                let ((), result) = tokio::join!(handle.stop(true), &mut server);
                result?;
                since
            }
        };
        // The workers kept relaying while HTTP stopped; one deadline covers both, so
        // the process exits within SHUTDOWN_TIMEOUT_SECS of the signal.
        if let Some(workers) = self.workers {
            let left = self
                .shutdown_timeout
                .saturating_sub(stopping_since.elapsed());
            workers.drain(left).await;
        }
        for task in [self.housekeeping, self.watchdog].into_iter().flatten() {
            task.abort();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Opens the APNs connection before the first ring, so it does not pay the TLS
/// handshake. Failing is only logged: APNs may come back, and pushes connect anyway.
fn warm_up_in_background(client: ApnsClient) {
    tokio::spawn(async move {
        match client.warm_up().await {
            Ok(()) => tracing::info!("APNs connection warmed up"),
            Err(error) => tracing::warn!(
                error = %error,
                "APNs warm-up failed; pushes will connect on demand (run `webex-push check`)"
            ),
        }
    });
}

/// Fetches the FCM access token before the first push needs it. Failing is only
/// logged: the token endpoint may come back, and pushes fetch one anyway.
fn warm_up_fcm_in_background(client: FcmClient) {
    tokio::spawn(async move {
        match client.warm_up().await {
            Ok(()) => tracing::info!("FCM warmed up"),
            Err(error) => tracing::warn!(
                error = %error,
                "FCM warm-up failed; pushes will fetch a token on demand (run `webex-push check`)"
            ),
        }
    });
}

/// SIGTERM (orchestrators) or SIGINT (Ctrl-C).
/// SIGTERM and SIGINT, listened for from the moment this is installed: a signal that
/// arrives while the server is still starting then stops it cleanly instead of
/// killing it with the default action.
pub struct ShutdownSignal {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    /// Must run inside a Tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Completes when either signal arrives.
    pub async fn received(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM received"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
