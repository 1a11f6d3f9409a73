//! A short run of `webex-push-load` against the real server binary and a fresh
//! database: every webhook accepted, every accepted webhook ends as a push.

use std::process::Command;

use serde_json::Value;
use webex_push_test_support::TestDatabase;

use crate::common;

#[test]
fn a_short_fixed_rate_run_accepts_every_webhook_and_loses_no_push() {
    let load = env!("CARGO_BIN_EXE_webex-push-load");
    let server = common::server_binary(load);
    let db = TestDatabase::postgres();
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let output = Command::new(load)
        .arg("--server-bin")
        .arg(&server)
        .args(["--database-url", db.url()])
        .args(["--persons", "200", "--rate", "100", "--duration", "2"])
        .args(["--max-duration", "0", "--warmup", "0", "--connections", "4"])
        .arg("--require-all-accepted")
        .arg("--report-json")
        .arg(&report_path)
        .output()
        .expect("the load tool runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the load tool failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["persons"], 200);
    assert_eq!(
        report["seeded_devices"], 400,
        "one VoIP and one Alert device each"
    );
    let phases = report["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 1, "{report}");
    let fixed = &phases[0];
    assert_eq!(fixed["name"], "fixed 100/s");
    assert_eq!(fixed["rate"], 100);
    assert_eq!(fixed["sent"], 200, "{fixed}");
    assert_eq!(fixed["accepted"], 200, "{fixed}");
    assert_eq!(fixed["refused"], serde_json::json!({}), "{fixed}");
    assert_eq!(fixed["transport_errors"], 0, "{fixed}");
    // One ring per webhook reaches the stand-in: nothing lost, nothing doubled.
    assert_eq!(fixed["pushes_received"], 200, "{fixed}");
    assert_eq!(fixed["pushes_rejected"], 0, "{fixed}");
    assert_eq!(fixed["lost"], 0, "{fixed}");
    assert_eq!(fixed["latency_samples"], 200, "{fixed}");
    assert!(fixed["latency_p50_ms"].as_f64().unwrap() > 0.0, "{fixed}");
    assert!(fixed["peak_rss_mib"].as_f64().unwrap() > 0.0, "{fixed}");
    assert!(report["idle_rss_mib"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn an_android_run_gets_one_fcm_message_per_accepted_webhook() {
    let load = env!("CARGO_BIN_EXE_webex-push-load");
    let server = common::server_binary(load);
    let db = TestDatabase::postgres();
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let output = Command::new(load)
        .arg("--server-bin")
        .arg(&server)
        .args(["--database-url", db.url()])
        .args(["--persons", "100", "--rate", "50", "--duration", "2"])
        .args(["--max-duration", "0", "--warmup", "0", "--connections", "4"])
        .args(["--android", "--require-all-accepted", "--report-json"])
        .arg(&report_path)
        .output()
        .expect("the load tool runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the load tool failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(
        report["seeded_devices"], 300,
        "an iPhone's two tokens and an Android phone's one, each"
    );
    let fixed = &report["phases"][0];
    assert_eq!(fixed["accepted"], 100, "{fixed}");
    assert_eq!(
        fixed["pushes_received"], 100,
        "the iPhones still ring: {fixed}"
    );
    assert_eq!(fixed["lost"], 0, "{fixed}");
    let fcm = &report["fcm"];
    assert_eq!(fcm["messages_accepted"], 100, "{report}");
    assert_eq!(fcm["lost"], 0, "{report}");
    assert_eq!(fcm["errors"], serde_json::json!({}), "{report}");
    assert_eq!(fcm["access_tokens"], 1, "{report}");
}
