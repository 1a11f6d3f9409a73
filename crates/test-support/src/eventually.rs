//! Waiting for a condition instead of sleeping for a guessed time: a test polls what it
//! expects until it holds, and fails with a message that says what did not happen.

use std::time::Duration;

/// How long to wait between two looks at the condition.
const INTERVAL: Duration = Duration::from_millis(20);

/// Polls `condition` every 20 ms until it holds; panics after `within`, naming `what`.
pub async fn eventually(within: Duration, what: &str, condition: impl AsyncFnMut() -> bool) {
    eventually_explained(within, what, String::new, condition).await;
}

/// As [`eventually`], with `explain()` (a server's log, the last error seen) added to
/// the message when it fails.
pub async fn eventually_explained(
    within: Duration,
    what: &str,
    explain: impl FnOnce() -> String,
    mut condition: impl AsyncFnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition().await {
        if tokio::time::Instant::now() >= deadline {
            panic!("{what} did not happen within {within:?}\n{}", explain());
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
