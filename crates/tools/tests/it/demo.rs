//! Runs `webex-push-demo` as a user would (against the real server binary) and checks
//! that every push arrived, the server stopped cleanly and the temporary directory is gone.

use std::process::Command;

use crate::common;

#[test]
fn the_demo_shows_every_push_and_cleans_up() {
    let demo = env!("CARGO_BIN_EXE_webex-push-demo");
    let server = common::server_binary(demo);
    let output = Command::new(demo)
        .arg("--server-bin")
        .arg(&server)
        .args(["--timeout", "30"])
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the demo failed ({}):\n{stdout}\n{stderr}",
        output.status
    );

    // Two phones of one person: the 2017 sample app (A) and KitchenSink (B).
    let arrivals: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("push at the stand-in"))
        .collect();
    assert_eq!(arrivals.len(), 6, "{stdout}");
    // And KitchenSink for Android (C), through FCM: the call, the SDK's push, the message.
    let android: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("data message at the FCM stand-in"))
        .collect();
    assert_eq!(android.len(), 3, "{stdout}");
    assert!(android[..2].iter().all(|l| l.contains("HIGH")), "{stdout}");
    assert!(android[2].contains("NORMAL"), "{stdout}");
    assert!(
        stdout.contains(r#""webhookTelephonyPush": "{\"externalTrackingId\""#),
        "the fcmPayload as Webex sent it: {stdout}"
    );
    let phone_a = "phone A (2017 sample app)";
    let phone_b = "phone B (KitchenSink app)";
    // callMemberships: A rings (VoIP), B gets an alert; in either order.
    let first: Vec<&str> = arrivals[..2].to_vec();
    assert!(
        first
            .iter()
            .any(|l| l.contains("voip") && l.contains(phone_a)),
        "{stdout}"
    );
    assert!(
        first
            .iter()
            .any(|l| l.contains("alert") && l.contains(phone_b)),
        "{stdout}"
    );
    // telephony_calls: A only; then the call's telephony_push: B only, as VoIP.
    assert!(
        arrivals[2].contains("voip") && arrivals[2].contains(phone_a),
        "{stdout}"
    );
    assert!(
        arrivals[3].contains("voip") && arrivals[3].contains(phone_b),
        "{stdout}"
    );
    // The message: an alert to each.
    assert!(
        arrivals[4..].iter().all(|l| l.contains("alert")),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"source\": \"callMemberships\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"source\": \"telephony_calls\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"callerName\": \"Grace Hopper\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"pushId\":\"push-demo-call-2\""),
        "{stdout}"
    );
    assert!(stdout.contains("the whole webhook as posted"), "{stdout}");
    // The server made Ada's webhooks at the Webex stand-in, and the ring came from one.
    assert!(
        stdout.contains("The server made Ada's webhooks"),
        "{stdout}"
    );
    assert!(
        stdout.contains("callMemberships/created state=notified&personId=me"),
        "{stdout}"
    );
    assert!(
        stdout.contains("signed with the webhook's own secret"),
        "{stdout}"
    );
    assert!(stdout.contains("\"userId\""), "{stdout}");
    assert!(
        stdout.contains("apns-topic: com.example.app.voip"),
        "{stdout}"
    );
    assert!(
        stdout.contains("9 of 9 expected pushes arrived"),
        "{stdout}"
    );
    // The provider token is shown cut short, never whole.
    let authorization: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("authorization:"))
        .collect();
    assert_eq!(authorization.len(), 6, "{stdout}");
    for line in authorization {
        let shown = line.split("bearer ").nth(1).expect("a bearer token");
        assert_eq!(
            shown.chars().count(),
            17,
            "16 characters and an ellipsis: {line}"
        );
    }

    assert!(stdout.contains("server stopped cleanly"), "{stdout}");
    let dir = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("temporary directory "))
        .expect("the demo names its temporary directory")
        .trim();
    assert!(!std::path::Path::new(dir).exists(), "{dir} was left behind");
}
