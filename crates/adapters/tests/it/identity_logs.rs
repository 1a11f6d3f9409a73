//! The Webex identity adapter never lets an access token reach the logs.
//!
//! The scenario runs in a child process of this test binary, alone: it captures the
//! logs with a process-wide subscriber, which no other test may see or disturb. In the
//! same process it could not be trusted under `cargo test`: tracing caches per call
//! site whether anyone listens, and while at most one subscriber is registered, a call
//! site first reached on another test's thread (where nobody listens) is cached as
//! "never", so this test would miss the lines logged there afterwards.

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::identity_support::*;
use webex_push_domain::ManualClock;

/// Set in the child process: run the scenario instead of starting the child.
const CHILD: &str = "WEBEX_PUSH_IDENTITY_LOGS_CHILD";

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

#[test]
fn the_token_never_reaches_the_logs_or_the_errors() {
    if std::env::var_os(CHILD).is_some() {
        return scenario();
    }
    // The test's name as the harness knows it: the module path without the crate.
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    let name = format!("{module}::the_token_never_reaches_the_logs_or_the_errors");
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .expect("the test binary runs again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the scenario failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // A filter that matched nothing would pass too: the child must have run it.
    assert!(
        stdout.contains("1 passed"),
        "the scenario did not run:\n{stdout}"
    );
}

/// In the child process: every thread's logs go to one buffer, and nothing else runs.
fn scenario() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
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
        });
}
