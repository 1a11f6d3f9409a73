//! The Webex identity adapter never lets an access token reach the logs.
//!
//! It installs a log-capturing subscriber, and tracing caches per call site whether
//! anyone listens, so tests running beside it on other threads could make it miss lines.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::identity_support::*;
use webex_push_domain::ManualClock;

/// Collects everything the adapter logs, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_token_never_reaches_the_logs_or_the_errors() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);
    let mut shown = Vec::new();
    ask(&identity, ADA_TOKEN).await.unwrap();
    ask(&identity, ADA_TOKEN).await.unwrap();
    shown.push(format!("{:?}", ask(&identity, UNKNOWN_TOKEN).await));
    for status in [503, 404] {
        webex.set_mode(Mode::Status(status));
        let error = ask(&identity, BOB_TOKEN).await.unwrap_err();
        shown.push(format!(
            "{error:?} {error} {:?}",
            std::error::Error::source(&error)
        ));
    }

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("webex_person_for_token"),
        "nothing was logged: {logs}"
    );
    for secret in [ADA_TOKEN, BOB_TOKEN, UNKNOWN_TOKEN] {
        let part = &secret[..16];
        assert!(!logs.contains(part), "a token is in the logs:\n{logs}");
        for text in &shown {
            assert!(!text.contains(part), "a token is in an error: {text}");
        }
    }
}
