//! `GET /openapi.json` (the committed `docs/openapi.json`, embedded at build time) and
//! `GET /docs`, a self-contained page rendering it: no CDN, nothing fetched but the
//! document from this server.

use actix_web::{HttpResponse, web};

use super::method_not_allowed;

/// The API description, as committed; a test keeps the two equal.
pub const OPENAPI_JSON: &str = include_str!("../../../../docs/openapi.json");

const DOCS_HTML: &str = include_str!("docs.html");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/openapi.json")
            .route(web::get().to(openapi))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/docs")
            .route(web::get().to(docs))
            .default_service(web::to(method_not_allowed("GET"))),
    );
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI_JSON)
}

async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        // The page's script is inline; nothing else may load.
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'",
        ))
        .body(DOCS_HTML)
}
