//! `GET /healthz` (the process answers), `GET /readyz` (it can do its job: store
//! reachable, APNs key loaded) and `GET /` (name and version).

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;
use webex_push_domain::RegistrationPort;

use super::method_not_allowed;
use crate::config::WebhookAuth;
use crate::error::{ApiError, Chain};

/// What readiness depends on.
pub struct Readiness {
    pub store: Arc<dyn RegistrationPort>,
    pub apns_loaded: bool,
    /// Shown in the answer, so an operator sees at a glance what is checked.
    pub webhook_auth: WebhookAuth,
    /// `REGISTER_AUTH=webex`.
    pub register_auth: bool,
    /// A probe must answer before the orchestrator's own timeout.
    pub ping_timeout: Duration,
    /// What the webhook watchdog last saw (`WEBEX_SERVICE_TOKEN`); not a condition
    /// of readiness (a replica serves whatever Webex does), shown for operators.
    pub webhooks: Option<crate::watchdog::SharedStatus>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    for (path, handler) in [
        ("/", web::get().to(index)),
        ("/healthz", web::get().to(healthz)),
        ("/readyz", web::get().to(readyz)),
    ] {
        cfg.service(
            web::resource(path)
                .route(handler)
                .default_service(web::to(method_not_allowed("GET"))),
        );
    }
}

async fn index() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "name": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(readiness: web::Data<Readiness>) -> Result<HttpResponse, ApiError> {
    let mut problems = Vec::new();
    match tokio::time::timeout(readiness.ping_timeout, readiness.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(error = %Chain(&error), "readiness: database not reachable");
            problems.push("database not reachable");
        }
        Err(_) => {
            tracing::warn!("readiness: database ping timed out");
            problems.push("database not reachable (ping timed out)");
        }
    }
    if !readiness.apns_loaded {
        problems.push("APNs key not loaded");
    }
    if problems.is_empty() {
        let mut answer = json!({
            "status": "ready",
            "webhook_auth": readiness.webhook_auth.as_str(),
            "register_auth": if readiness.register_auth { "webex" } else { "off" },
        });
        if let Some(status) = &readiness.webhooks {
            answer["webhooks"] = status.lock().unwrap_or_else(|e| e.into_inner()).to_json();
        }
        Ok(HttpResponse::Ok().json(answer))
    } else {
        Err(ApiError::NotReady(problems.join("; ")))
    }
}
