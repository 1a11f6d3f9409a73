//! webex-push patch: bodies for the responses the HTTP/1 dispatcher writes itself.
//!
//! Upstream answers a malformed request (`400`), a request head too large (`431`), a
//! client too slow to send its head (`408`) and an internal dispatch failure (`500`)
//! with an empty body, before any application code runs. An application that answers
//! every error with a problem document registers a renderer here once, at start-up;
//! without one, the dispatcher behaves exactly as upstream.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::{header::HeaderValue, StatusCode};

/// Renders the body (content type and bytes) of a response the dispatcher writes on its
/// own; `None` keeps the body empty.
pub type ErrorBodyRenderer = fn(StatusCode) -> Option<(HeaderValue, Bytes)>;

static RENDERER: OnceLock<ErrorBodyRenderer> = OnceLock::new();

/// Sets the renderer for the whole process. Returns `false` (and keeps the first one)
/// when one was set already.
pub fn set_error_body_renderer(renderer: ErrorBodyRenderer) -> bool {
    RENDERER.set(renderer).is_ok()
}

pub(crate) fn render(status: StatusCode) -> Option<(HeaderValue, Bytes)> {
    RENDERER.get().and_then(|renderer| renderer(status))
}
