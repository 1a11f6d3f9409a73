//! Prometheus metrics: one registry per `Application`, rendered at `GET /metrics` in
//! Prometheus' text format (0.0.4), and the decorators that count pushes, time APNs and
//! time the registration store. Every metric of the server is named `webex_push_...`;
//! the standard `process_*` metrics sit beside them (see [`crate::process_metrics`]).
//!
//! - [`registry`]: the families, their label sets and buckets, the probes read at
//!   scrape time, and rendering;
//! - [`decorators`]: the ports wrapped so the domain stays untouched: pushes are counted
//!   by wrapping the gateway, store calls are timed by wrapping the store, and the ring
//!   latency start (webhook arrival) reaches the gateway decorator as a task-local set
//!   by the push worker (the notification service fans out on the worker's own task);
//! - `exposition`: OpenMetrics text, as prometheus-client writes it, turned into
//!   Prometheus' text format.

pub mod decorators;
mod exposition;
pub mod registry;

pub use decorators::{MeteredGateway, MeteredStore, WEBHOOK_RECEIVED};
pub use registry::{METHODS, Metrics, NAMESPACE, method_label, resource_label};
