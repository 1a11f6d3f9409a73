//! `GET /metrics`: Prometheus' text format. Unauthenticated like most exporters, so
//! keep it off the public internet (see `docs/operations.md`).

use actix_web::{HttpResponse, web};

use super::method_not_allowed;
use crate::error::ApiError;
use crate::metrics::Metrics;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/metrics")
            .route(web::get().to(metrics))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}

async fn metrics(metrics: web::Data<Metrics>) -> Result<HttpResponse, ApiError> {
    let text = metrics
        .render()
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(text))
}
