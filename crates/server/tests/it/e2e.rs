//! End to end: the real `webex-push` binary against a fresh Postgres database and the
//! local APNs stand-in, driven over HTTP as the iOS app and Webex would.
//!
//! The binary is started with `PORT=0` and JSON logs; the test reads the `listening`
//! line for the address, and waits on log lines and stand-in counters, never on sleeps.

use std::time::Duration;

use apns_standin::{Failure, StandIn};
use serde_json::{Value, json};
use webex_push_adapters::webex::sign;
use webex_push_test_support::TestDatabase;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resource_pushes_to_every_phone_of_the_person_in_any_spelling() {
    let h = Harness::start(4).await;
    let (v1, a1, v2, a2) = (token("a1"), token("b1"), token("a2"), token("b2"));
    // Phone 1 registers with a bare UUID, phone 2 with padded base64 on a urn:TEAM
    // cluster; the webhooks say unpadded base64 on `us`.
    h.register_ok(&PERSON.to_uppercase(), &v1, &a1).await;
    h.register_ok(
        &b64_padded(&format!(
            "ciscospark://urn:TEAM:us-west-2_r/PEOPLE/{PERSON}"
        )),
        &v2,
        &a2,
    )
    .await;
    let voips = vec![v1.clone(), v2.clone()];
    let alerts = vec![a1.clone(), a2.clone()];

    h.webhook(&call_membership("call-membership-1", &webex_id(PERSON)))
        .await;
    let rings = h.pushes(0, 2).await;
    assert_eq!(sorted_tokens(&rings), voips);
    for push in &rings {
        assert_voip(push);
        assert_eq!(push.payload["webex"]["type"], "incoming_call");
        assert_eq!(push.payload["webex"]["callId"], "call-membership-1");
        assert_eq!(push.payload["webex"]["source"], "callMemberships");
    }

    h.webhook(&telephony_call("telephony-1", "alerting", "received"))
        .await;
    let rings = h.pushes(2, 4).await;
    assert_eq!(sorted_tokens(&rings), voips);
    for push in &rings {
        assert_voip(push);
        assert_eq!(push.payload["webex"]["callerName"], "Ada Lovelace");
        assert_eq!(push.payload["webex"]["callerNumber"], "+15551234567");
        assert_eq!(push.payload["webex"]["callId"], "telephony-1");
    }

    let apns_payload = json!({"data": {"callId": "sdk-call-1", "blob": "eyJ2IjoxfQ"}});
    h.webhook(&envelope(
        "telephony_push",
        "updated",
        OTHER,
        PERSON,
        json!({"personId": PERSON, "apnsPayload": apns_payload}),
    ))
    .await;
    let rings = h.pushes(4, 6).await;
    assert_eq!(sorted_tokens(&rings), voips);
    for push in &rings {
        assert_voip(push);
        // The SDK's payload arrives at the top level, as the Calling SDK expects.
        assert_eq!(
            push.payload["data"], apns_payload["data"],
            "{}",
            push.payload
        );
    }

    h.webhook(&message(PERSON, CALLER, "caller@example.com"))
        .await;
    let notices = h.pushes(6, 8).await;
    assert_eq!(sorted_tokens(&notices), alerts);
    for push in &notices {
        assert_alert(push);
        assert_eq!(push.payload["webex"]["type"], "message");
        assert_eq!(push.payload["webex"]["roomId"], "room-1");
    }

    h.webhook(&telephony_call(
        "telephony-1",
        "disconnected",
        "disconnected",
    ))
    .await;
    let ended = h.pushes(8, 10).await;
    assert_eq!(sorted_tokens(&ended), alerts);
    for push in &ended {
        assert_alert(push);
        assert!(push.collapse_id.is_some());
        assert_ne!(push.push_type, "voip", "a call-ended notice is never VoIP");
    }
    assert_eq!(h.standin.accepted().len(), 10);

    let log = h.server.log_text();
    for secret in [&v1, &a1, &v2, &a2] {
        assert!(
            !log.contains(secret.as_str()),
            "a full token was logged:\n{log}"
        );
    }
    for private in [
        "ada@example.com",
        "caller@example.com",
        "callee@example.com",
        SECRET,
    ] {
        assert!(!log.contains(private), "{private} was logged:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kitchensink_app_and_a_seed_app_of_one_person_each_get_the_pushes_they_read() {
    let h = Harness::start(4).await;
    let (seed_voip, seed_alert) = (token("a1"), token("b1"));
    let (ks_voip, ks_alert) = (token("c1"), token("d1"));
    h.register_ok(&webex_id(PERSON), &seed_voip, &seed_alert)
        .await;
    let response = h
        .register(&kitchensink_registration(
            &webex_id(PERSON),
            &ks_voip,
            &ks_alert,
        ))
        .await;
    assert_eq!(response.status().as_u16(), 204, "{}", h.server.log_text());

    // A telephony_push from an org-wide webhook, its payload in spellings a
    // re-serialisation would change, and a `webex` key of the SDK's own.
    let apns_payload = r#"{"aps":{"alert":{"loc-key":"CALL"}},"webex":"the SDK's","pushId":"p-1","version":1.50,"name":"\u00c9mile","data":{"k":[1,{"x":null}]}}"#;
    let telephony_push = format!(
        r#"{{"id":"wh-1","resource":"telephony_push","event":"updated","ownedBy":"org","createdBy":"{admin}","actorId":"{admin}","data":{{"personId":"{person}","callId":"tp-1","apnsPayload":{apns_payload}}}}}"#,
        admin = webex_id(OTHER),
        person = webex_id(PERSON),
    );
    h.webhook_text(&telephony_push).await;
    let rings = h.pushes(0, 2).await;
    assert_eq!(sorted_tokens(&rings), sorted(&[&seed_voip, &ks_voip]));
    let sdk: Value = serde_json::from_str(apns_payload).unwrap();
    for push in &rings {
        assert_voip(push);
        if push.token == ks_voip {
            // KitchenSink's PushKit handler gets the SDK's payload as Webex wrote it.
            assert_eq!(push.body, apns_payload.as_bytes());
        } else {
            // The seed app keeps every SDK key and finds ours beside them.
            for (key, value) in sdk.as_object().unwrap() {
                assert_eq!(&push.payload[key], value, "{key}");
            }
            assert_eq!(push.payload["webexPush"]["type"], "incoming_call");
        }
    }

    // A Webex app call: VoIP to the seed app, an alert with the webhook to KitchenSink.
    let membership = call_membership("call-membership-1", &webex_id(PERSON)).to_string();
    h.webhook_text(&membership).await;
    let rings = h.pushes(2, 4).await;
    assert_eq!(sorted_tokens(&rings), sorted(&[&seed_voip, &ks_alert]));
    for push in &rings {
        if push.token == ks_alert {
            assert_alert(push);
            assert_eq!(push.payload["webhookData"], membership);
            let webhook: Value =
                serde_json::from_str(push.payload["webhookData"].as_str().unwrap()).unwrap();
            assert_eq!(webhook["data"]["callId"], "call-membership-1");
        } else {
            assert_voip(push);
            assert_eq!(push.payload["webex"]["callId"], "call-membership-1");
        }
    }

    let message = message(PERSON, CALLER, "caller@example.com").to_string();
    h.webhook_text(&message).await;
    let notices = h.pushes(4, 6).await;
    assert_eq!(sorted_tokens(&notices), sorted(&[&seed_alert, &ks_alert]));
    for push in &notices {
        assert_alert(push);
        if push.token == ks_alert {
            assert_eq!(push.payload["webhookData"], message);
        } else {
            assert_eq!(push.payload["webex"]["roomId"], "room-1");
        }
    }

    // A Webex Calling ring KitchenSink gets from its telephony_push: the seed app only.
    // (The telephony_push was two jobs, one per flavour of app: 5 relayed so far.)
    h.webhook(&telephony_call("telephony-1", "alerting", "received"))
        .await;
    h.relayed(5).await;
    let rest: Vec<_> = h.standin.accepted()[6..].to_vec();
    assert_eq!(sorted_tokens(&rest), vec![seed_voip.clone()]);

    // The telephony_calls event of the call the telephony_push rang: the seed app was
    // rung for it already, and rings once.
    h.webhook(&telephony_call("tp-1", "alerting", "received"))
        .await;
    h.relayed(6).await;
    assert_eq!(h.standin.accepted().len(), 7);

    // Never a VoIP push of another shape to KitchenSink: one VoIP push in all, the SDK's.
    let to_ks_voip: Vec<_> = h
        .standin
        .accepted()
        .into_iter()
        .filter(|push| push.token == ks_voip)
        .collect();
    assert_eq!(to_ks_voip.len(), 1);

    // A telephony_push for nobody registered here is counted for the operator.
    let for_nobody = telephony_push.replace(&webex_id(PERSON), &webex_id(CALLER));
    h.webhook_text(&for_nobody.replace("tp-1", "tp-2")).await;
    h.relayed(8).await;
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("webex_push_telephony_push_unmatched_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_deliveries_ring_and_stop_ringing_and_the_guides_signature_is_accepted() {
    use webex_push_test_support::webex_fixtures::{
        GUIDE_MESSAGE, GUIDE_SECRET, GUIDE_SIGNATURE, QUEUE_CALL_CREATED, QUEUE_CALL_OWNER,
        queue_call_taken_elsewhere,
    };
    let h = Harness::start_with(2, &[("WEBHOOK_SECRET", format!("{SECRET},{GUIDE_SECRET}"))]).await;
    let (voip, alert) = (token("e1"), token("f1"));
    h.register_ok(&webex_id(QUEUE_CALL_OWNER), &voip, &alert)
        .await;

    // A queue call as Webex delivered it: `appearance`, `muteCapable`, the webhook's own
    // `created`, pretty-printed; then its `deleted` with `completedElsewhere`.
    h.webhook_text(QUEUE_CALL_CREATED).await;
    let ring = h.pushes(0, 1).await;
    assert_voip(&ring[0]);
    assert_eq!(ring[0].token, voip);
    assert_eq!(ring[0].payload["webex"]["callerName"], "ALEX EXAMPLE");
    assert_eq!(ring[0].payload["webex"]["event"]["appearance"], 1);
    h.webhook_text(&queue_call_taken_elsewhere()).await;
    let ended = h.pushes(1, 2).await;
    assert_alert(&ended[0]);
    assert_eq!(ended[0].token, alert);
    assert_eq!(ended[0].payload["webex"]["answeredElsewhere"], true);

    // The guide's message, signed as its test vector says (a bare base64 `orgId`): the
    // owner's own message, accepted and announced to nobody.
    let response = h
        .http
        .post(h.url("/webhook"))
        .header("content-type", "application/json")
        .header("X-Spark-Signature", GUIDE_SIGNATURE)
        .body(GUIDE_MESSAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204, "{}", h.server.log_text());
    h.server
        .wait_for_log("the guide's message ignored", |l| {
            message_is(l, "webhook ignored") && l["resource"] == "messages"
        })
        .await;
    let tampered = GUIDE_MESSAGE.replace("matt@", "mallory@");
    let response = h
        .http
        .post(h.url("/webhook"))
        .header("content-type", "application/json")
        .header("X-Spark-Signature", GUIDE_SIGNATURE)
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(h.standin.accepted().len(), 2);
}

fn sorted(tokens: &[&String]) -> Vec<String> {
    let mut tokens: Vec<String> = tokens.iter().map(|t| (*t).clone()).collect();
    tokens.sort();
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_with_bad_or_missing_signature_is_rejected_and_nothing_is_pushed() {
    let h = Harness::start(1).await;
    h.register_ok(PERSON, &token("a1"), &token("b1")).await;
    let body = call_membership("call-forged", &webex_id(PERSON));
    let forged = sign("guessed", body.to_string().as_bytes());
    assert_eq!(h.webhook_signed_with(&body, None).await, 401);
    assert_eq!(h.webhook_signed_with(&body, Some(forged)).await, 401);
    // The rejections were synchronous; a genuine event queued after them (one worker,
    // in order) is the only push.
    h.webhook(&call_membership("call-genuine", &webex_id(PERSON)))
        .await;
    let pushes = h.pushes(0, 1).await;
    h.relayed(1).await;
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].payload["webex"]["callId"], "call-genuine");
    assert_eq!(h.standin.stats().requests - h.warm_up_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_webhook_rings_once() {
    let h = Harness::start(1).await;
    h.register_ok(PERSON, &token("a1"), &token("b1")).await;
    let body = telephony_call("call-dup", "alerting", "received");
    h.webhook(&body).await;
    h.webhook(&body).await;
    h.relayed(2).await;
    let duplicates = h
        .server
        .count_logs(|l| message_is(l, "event relayed") && l["duplicate"] == true);
    assert_eq!(duplicates, 1, "{}", h.server.log_text());
    assert_eq!(h.standin.accepted().len(), 1);
    assert_eq!(h.standin.stats().requests - h.warm_up_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_removes_the_token_and_a_later_registration_brings_it_back() {
    let h = Harness::start(1).await;
    let (voip, msg) = (token("a1"), token("b1"));
    h.register_ok(PERSON, &voip, &msg).await;
    let now_ms = chrono::Utc::now().timestamp_millis() + 1;
    h.standin.script().fail_token(
        &voip,
        Failure::Unregistered {
            timestamp_ms: now_ms,
        },
    );

    h.webhook(&call_membership("call-1", PERSON)).await;
    h.server
        .wait_for_log("`dead token removed`", |l| {
            message_is(l, "dead token removed")
        })
        .await;
    h.relayed(1).await;

    // Gone: the next call finds no device and asks Apple nothing.
    let requests_before = h.standin.stats().requests;
    h.webhook(&call_membership("call-2", PERSON)).await;
    h.relayed(2).await;
    assert_eq!(h.standin.stats().requests, requests_before);

    // The app registers the same token again (Apple reissued it): it rings again.
    h.standin.script().clear_token(&voip);
    h.register_ok(PERSON, &voip, &msg).await;
    h.webhook(&call_membership("call-3", PERSON)).await;
    let pushes = h.pushes(0, 1).await;
    assert_eq!(pushes[0].token, voip);
    assert_eq!(pushes[0].payload["webex"]["callId"], "call-3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_with_a_missing_field_or_a_bad_token_is_400() {
    let h = Harness::start(1).await;
    let mut missing = registration(PERSON, &token("a1"), &token("b1"));
    missing.as_object_mut().unwrap().remove("msgToken");
    let response = h.register(&missing).await;
    assert_eq!(response.status().as_u16(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["field"], "msgToken");
    assert_eq!(problem["rule"], "required");

    let response = h
        .register(&registration(PERSON, "<a1b2 c3d4>", &token("b1")))
        .await;
    assert_eq!(response.status().as_u16(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["field"], "voipToken");
    assert_eq!(problem["rule"], "hex");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_gives_503_and_the_service_recovers_by_itself() {
    let h = Harness::start(1).await;
    assert_eq!(h.get_status("/readyz").await, 200);
    h.register_ok(PERSON, &token("a1"), &token("b1")).await;

    h.db.take_offline();
    let response = h
        .register(&registration(PERSON, &token("a2"), &token("b2")))
        .await;
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(h.get_status("/readyz").await, 503);
    assert_eq!(h.get_status("/healthz").await, 200);

    h.db.bring_online();
    eventually(&h, "registration recovering", async || {
        let status = h
            .register(&registration(PERSON, &token("a2"), &token("b2")))
            .await
            .status()
            .as_u16();
        assert!(
            status == 204 || status == 503,
            "only 503 while the pool reconnects, got {status}"
        );
        status == 204
    })
    .await;
    assert_eq!(h.get_status("/readyz").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_queued_pushes_and_exits_zero() {
    let mut h = Harness::start(1).await;
    h.register_ok(PERSON, &token("a1"), &token("b1")).await;
    h.standin.script().latency(Duration::from_millis(300));
    for call in ["call-a", "call-b", "call-c"] {
        h.webhook(&call_membership(call, PERSON)).await;
    }
    h.server.signal("TERM");
    let status = h.server.exited().await;
    assert!(status.success(), "{}", h.server.log_text());
    assert_eq!(h.standin.accepted().len(), 3, "{}", h.server.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_command_sends_one_push_and_prints_apples_answer() {
    let dir = tempfile::tempdir().unwrap();
    let Apns {
        standin,
        key_pem,
        ca_file,
        ..
    } = Apns::start(dir.path()).await;
    let envs = [
        // The key from the environment this time, as on Heroku.
        ("APNS_KEY", key_pem),
        ("APNS_KEY_ID", KEY_ID.to_owned()),
        ("APNS_TEAM_ID", TEAM_ID.to_owned()),
        ("APNS_TOPIC", TOPIC.to_owned()),
        ("APNS_ENDPOINT", standin.url()),
        ("APNS_CA_FILE", ca_file.display().to_string()),
        ("LOG_FORMAT", "json".to_owned()),
    ];
    let alert = token("c3");
    let (ok, stdout, stderr) = run_binary(
        &[
            "push",
            "--token",
            &alert,
            "--channel",
            "alert",
            "--message",
            "Hello",
        ],
        &envs,
    )
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("status: 200"), "{stdout}");
    assert!(stdout.contains("apns-id: "), "{stdout}");
    assert!(
        stdout.lines().all(|l| !l.starts_with('{')),
        "logs stay off stdout:\n{stdout}"
    );
    let pushes = standin.wait_for_accepted(1, WAIT).await;
    assert_eq!(pushes[0].token, alert);
    assert_alert(&pushes[0]);
    assert_eq!(pushes[0].payload["aps"]["alert"]["body"], "Hello");

    standin
        .script()
        .fail_token(&token("d4"), Failure::BadDeviceToken);
    let (ok, stdout, _) = run_binary(
        &[
            "push",
            "--token",
            &token("d4"),
            "--channel",
            "voip",
            "--environment",
            "sandbox",
        ],
        &envs,
    )
    .await;
    assert!(!ok, "a refused push exits non-zero");
    assert!(stdout.contains("status: 400"), "{stdout}");
    assert!(stdout.contains("reason: BadDeviceToken"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_the_schema_and_a_second_run_has_nothing_to_do() {
    let db = TestDatabase::postgres();
    let envs = [
        ("DATABASE_URL", db.url().to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
    ];
    let (ok, stdout, stderr) = run_binary(&["migrate"], &envs).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("migrations applied"), "{stderr}");
    let (ok, _, stderr) = run_binary(&["migrate"], &envs).await;
    assert!(ok);
    assert!(stderr.contains("already up to date"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_stops_start_up_naming_the_variable() {
    for (envs, variable) in [
        (
            vec![("APNS_KEY_ID", "KEY1234567".to_owned())],
            "APNS_KEY_ID",
        ),
        (vec![("PUSH_WORKERS", "0".to_owned())], "PUSH_WORKERS"),
        (vec![("PORT", "eighty".to_owned())], "PORT"),
        (
            vec![("DATABASE_URL", "mysql://localhost/x".to_owned())],
            "DATABASE_URL",
        ),
    ] {
        let mut envs = envs;
        envs.push(("HOST", "127.0.0.1".to_owned()));
        if !envs.iter().any(|(k, _)| *k == "PORT") {
            envs.push(("PORT", "0".to_owned()));
        }
        let (ok, stdout, stderr) = run_binary(&["serve"], &envs).await;
        assert!(!ok, "{variable}: start-up should fail\n{stdout}");
        // Said once: in the log (stdout for `serve`), or by the argument parser.
        let output = format!("{stdout}{stderr}");
        let saying = output.lines().filter(|l| l.contains(variable)).count();
        assert_eq!(saying, 1, "{variable} is named once:\n{output}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_reports_its_version_and_a_failure_once() {
    let version = env!("CARGO_PKG_VERSION");
    for args in [
        &["--version"][..],
        &["serve", "--version"],
        &["check", "--version"],
    ] {
        let (ok, stdout, _) = run_binary(args, &[]).await;
        assert!(ok, "{args:?}");
        let printed = stdout.trim();
        assert!(
            printed.starts_with("webex-push") && printed.ends_with(&format!(" {version}")),
            "{args:?}: {printed}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let envs = [
        (
            "DATABASE_URL",
            format!("sqlite://{}/missing/dir/x.db", dir.path().display()),
        ),
        ("LOG_FORMAT", "json".to_owned()),
    ];
    let (ok, stdout, stderr) = run_binary(&["migrate"], &envs).await;
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout}");
    let lines: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines[0]["message"], "webex-push starting", "{stderr}");
    assert_eq!(lines[0]["version"], version, "{stderr}");
    let failures = stderr.lines().filter(|l| l.contains("x.db")).count();
    assert_eq!(failures, 1, "the error is printed once:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_command_takes_only_the_options_it_uses_one_name_each() {
    let help = |args: &'static [&'static str]| async move {
        let (ok, stdout, _) = run_binary(args, &[]).await;
        assert!(ok, "{args:?}");
        stdout
    };
    let migrate = help(&["migrate", "--help"]).await;
    assert!(migrate.contains("--database-url"), "{migrate}");
    for unused in [
        "--migrate-on-start",
        "--database-pool-size",
        "--apns-key",
        "--port",
    ] {
        assert!(
            !migrate.contains(unused),
            "migrate lists {unused}:\n{migrate}"
        );
    }
    let push = help(&["push", "--help"]).await;
    assert!(push.contains("--apns-environment"), "{push}");
    for unused in [
        "--environment ",
        "--apns-max-in-flight",
        "--database-url",
        "--port",
    ] {
        assert!(!push.contains(unused), "push lists {unused}:\n{push}");
    }
    // The old spelling still parses (scripts in the field), as the same option.
    let (_, _, stderr) = run_binary(
        &[
            "push",
            "--token",
            "00",
            "--channel",
            "voip",
            "--environment",
            "bogus",
        ],
        &[],
    )
    .await;
    assert!(!stderr.contains("unexpected argument"), "{stderr}");
}

const ADMIN: &str = "e2e-admin-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_ring_end_to_end_and_its_push_logs_carry_the_webhook_request_id() {
    let h = Harness::start(2).await;
    h.server
        .wait_for_log("`APNs connection warmed up`", |l| {
            message_is(l, "APNs connection warmed up")
        })
        .await;
    let (voip, alert) = (token("a7"), token("b7"));
    h.register_ok(PERSON, &voip, &alert).await;

    let body = call_membership("call-metrics-1", &webex_id(PERSON));
    let text = body.to_string();
    let response = h
        .http
        .post(h.url("/webhook"))
        .header("content-type", "application/json")
        .header("X-Spark-Signature", sign(SECRET, text.as_bytes()))
        .header("X-Request-Id", "ring-e2e-42")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(response.headers()["x-request-id"], "ring-e2e-42");
    let pushes = h.pushes(0, 1).await;
    assert_eq!(pushes[0].token, voip);
    h.relayed(1).await;

    // The request's lines and the worker's lines for its event share the id, with the
    // event's kind and call id, as top-level keys a log collector indexes.
    for message in ["webhook accepted", "event relayed", "request answered"] {
        let line = h
            .server
            .wait_for_log(message, |l| {
                message_is(l, message) && l["request_id"] == "ring-e2e-42"
            })
            .await;
        assert_eq!(line["kind"], "ring", "{line}");
        assert_eq!(line["call_id"], "call-metrics-1", "{line}");
        assert!(line["spans"].is_array(), "{line}");
    }

    // The event is counted just after its log line: wait for the count.
    let mut metrics = String::new();
    eventually(&h, "the event counted", async || {
        metrics = h.metrics().await;
        metrics.contains("webex_push_events_total{")
    })
    .await;
    for expected in [
        r#"webex_push_webhooks_total{resource="callMemberships",outcome="accepted"} 1"#,
        r#"webex_push_pushes_total{provider="apns",channel="voip",outcome="delivered",reason=""} 1"#,
        r#"webex_push_events_total{kind="ring",outcome="relayed"} 1"#,
        "webex_push_ring_latency_seconds_count 1",
        "webex_push_apns_request_duration_seconds_count 1",
        "webex_push_apns_provider_tokens_minted_total 1",
        r#"webex_push_db_pool_connections{state="idle"}"#,
        r#"webex_push_db_pool_connections{state="in_use"}"#,
        "webex_push_push_queue_depth 0",
        r#"webex_push_http_requests_total{route="/register",method="POST",status="204"} 1"#,
        r#"webex_push_http_request_duration_seconds_count{route="/webhook",method="POST"} 1"#,
        r#"webex_push_build_info{version=""#,
        "process_resident_memory_bytes ",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_test_push_rings_a_registered_phone_through_apns_and_shows_the_outcome() {
    let h = Harness::start_with(2, &[("ADMIN_TOKEN", ADMIN.to_owned())]).await;
    let (voip, alert) = (token("a8"), token("b8"));
    h.register_ok(PERSON, &voip, &alert).await;
    let answer: Value = h
        .http
        .post(h.url("/admin/test-push"))
        .bearer_auth(ADMIN)
        .json(&json!({"personId": webex_id(PERSON), "channel": "voip"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{answer}");
    assert_eq!(results[0]["status"], 200);
    assert_eq!(results[0]["token"], format!("{}…", &voip[..8]));
    assert!(results[0]["apnsId"].as_str().unwrap().len() >= 32);
    let pushes = h.pushes(0, 1).await;
    assert_voip(&pushes[0]);

    let devices = h.admin_devices(ADMIN, PERSON).await;
    let voip_device = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["channel"] == "voip")
        .unwrap();
    assert_eq!(voip_device["lastOutcome"], "delivered");
    assert!(!devices.to_string().contains(&voip));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_environment_variables_count_as_unset() {
    let db = TestDatabase::postgres();
    let mut server = Server::spawn(&[
        ("PORT", "0".into()),
        ("HOST", "127.0.0.1".into()),
        ("DATABASE_URL", db.url().to_owned()),
        ("LOG_FORMAT", "json".into()),
        // What a Heroku or Kubernetes config says for "no value".
        ("HTTP_WORKERS", String::new()),
        ("DATABASE_POOL_SIZE", String::new()),
        ("APNS_KEY_ID", String::new()),
        ("APNS_ENDPOINT", " ".into()),
        ("ADMIN_TOKEN", String::new()),
        ("REGISTER_AUTH", String::new()),
        ("PUSH_WORKERS", String::new()),
    ]);
    server.wait_until_listening().await;
    let status = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    // ADMIN_TOKEN= is unset: the admin API is off.
    let status = reqwest::get(format!("{}/admin/persons/{PERSON}/devices", server.base))
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404);
}

/// A stand-in, a key it trusts, and `check`'s environment for both and `db_url`.
struct CheckSetup {
    standin: StandIn,
    dir: tempfile::TempDir,
    envs: Vec<(&'static str, String)>,
}

impl CheckSetup {
    async fn new(db_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let apns = Apns::start(dir.path()).await;
        let mut envs = apns.envs(apns.standin.url());
        envs.extend([
            ("DATABASE_URL", db_url.to_owned()),
            ("DATABASE_CONNECT_TIMEOUT_SECS", "2".to_owned()),
            ("APNS_REQUEST_TIMEOUT_SECS", "3".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
        ]);
        Self {
            standin: apns.standin,
            dir,
            envs,
        }
    }

    fn with(&self, variable: &'static str, value: String) -> Vec<(&'static str, String)> {
        let mut envs = self.envs.clone();
        envs.retain(|(k, _)| *k != variable);
        envs.push((variable, value));
        envs
    }
}

/// The line `check` printed for `step`.
fn step_line<'a>(stdout: &'a str, step: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(step))
        .unwrap_or_else(|| panic!("no `{step}` line in:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_every_step_against_the_standin_and_postgres() {
    let db = TestDatabase::postgres();
    let setup = CheckSetup::new(db.url()).await;
    let (ok, stdout, stderr) = run_binary(&["check"], &setup.envs).await;
    assert!(ok, "{stdout}\n{stderr}");
    for step in [
        "configuration",
        "APNs key",
        "APNs provider token",
        "APNs connection",
        "database",
    ] {
        assert!(step_line(&stdout, step).ends_with(" ok"), "{stdout}");
    }
    assert!(stdout.contains("check passed"), "{stdout}");
    assert!(
        setup.standin.accepted().is_empty(),
        "the warm-up push is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_clearly_for_a_wrong_key_an_unreachable_apns_and_an_unreachable_database() {
    let db = TestDatabase::postgres();
    let setup = CheckSetup::new(db.url()).await;

    let bad_key = setup.dir.path().join("AuthKey_BAD.p8");
    std::fs::write(
        &bad_key,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let (ok, stdout, _) = run_binary(
        &["check"],
        &setup.with("APNS_KEY_FILE", bad_key.display().to_string()),
    )
    .await;
    assert!(!ok, "{stdout}");
    let line = step_line(&stdout, "APNs key");
    assert!(
        line.contains("FAILED: ") && line.contains("APNS_KEY"),
        "{stdout}"
    );
    assert!(step_line(&stdout, "database").ends_with(" ok"), "{stdout}");
    assert!(stdout.contains("check FAILED"), "{stdout}");

    let (ok, stdout, _) = run_binary(
        &["check"],
        &setup.with(
            "APNS_ENDPOINT",
            format!("https://127.0.0.1:{}", free_port()),
        ),
    )
    .await;
    assert!(!ok, "{stdout}");
    assert!(
        step_line(&stdout, "APNs provider token").ends_with(" ok"),
        "{stdout}"
    );
    let line = step_line(&stdout, "APNs connection");
    assert!(line.contains("FAILED: cannot reach APNs"), "{stdout}");

    let (ok, stdout, _) = run_binary(
        &["check"],
        &setup.with(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{}/postgres", free_port()),
        ),
    )
    .await;
    assert!(!ok, "{stdout}");
    assert!(
        step_line(&stdout, "APNs connection").ends_with(" ok"),
        "{stdout}"
    );
    let line = step_line(&stdout, "database");
    assert!(line.contains("FAILED: "), "{stdout}");
    assert!(
        line.contains("DATABASE_URL") || line.contains("connect"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_changes_nothing_lists_every_step_and_warns_about_insecure_settings() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("webex-push.db");
    let envs = vec![
        ("DATABASE_URL", format!("sqlite://{}", db.display())),
        (
            "APNS_KEY_FILE",
            "/nonexistent/AuthKey_KEY1234567.p8".to_owned(),
        ),
        ("APNS_KEY_ID", KEY_ID.to_owned()),
        ("APNS_TEAM_ID", TEAM_ID.to_owned()),
        ("APNS_TOPIC", TOPIC.to_owned()),
    ];
    let (ok, stdout, _) = run_binary(&["check"], &envs).await;
    assert!(!ok, "{stdout}");
    assert!(!db.exists(), "a check creates no database file");
    assert!(
        step_line(&stdout, "configuration").ends_with(" ok"),
        "{stdout}"
    );
    assert!(
        step_line(&stdout, "APNs key").contains("FAILED: APNS_KEY_FILE"),
        "{stdout}"
    );
    // The steps after a failed key are listed, as skipped.
    assert!(
        step_line(&stdout, "APNs provider token").contains("skipped"),
        "{stdout}"
    );
    assert!(
        step_line(&stdout, "APNs connection").contains("skipped"),
        "{stdout}"
    );
    assert!(step_line(&stdout, "database").ends_with(" ok"), "{stdout}");
    assert!(stdout.contains("does not exist yet"), "{stdout}");
    assert!(
        step_line(&stdout, "insecure settings").ends_with(" 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("WARNING: WEBHOOK_SECRET is not set"),
        "{stdout}"
    );
    assert!(stdout.contains("WARNING: REGISTER_AUTH=off"), "{stdout}");
    assert!(stdout.trim_end().ends_with("check FAILED"), "{stdout}");

    // Without migrations at start-up, a database without the schema fails the check.
    let mut no_migrations = envs.clone();
    no_migrations.push(("MIGRATE_ON_START", "false".to_owned()));
    let (_, stdout, _) = run_binary(&["check"], &no_migrations).await;
    assert!(
        step_line(&stdout, "database").contains("FAILED: "),
        "{stdout}"
    );
    assert!(stdout.contains("webex-push migrate"), "{stdout}");
    assert!(!db.exists());

    // An existing file is opened read-only: its schema is read, others reading it warned.
    let (ok, _, stderr) = run_binary(&["migrate"], &envs[..1]).await;
    assert!(ok, "{stderr}");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::read(&db).unwrap();
    let (_, stdout, _) = run_binary(&["check"], &no_migrations).await;
    assert!(step_line(&stdout, "database").ends_with(" ok"), "{stdout}");
    assert!(stdout.contains("schema up to date"), "{stdout}");
    assert!(stdout.contains("WARNING: the SQLite database"), "{stdout}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the check wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_proof_refuses_a_mismatched_person_and_binds_only_the_holder() {
    let h = Harness::start_with(
        1,
        &[
            ("REGISTER_AUTH", "webex".to_owned()),
            ("WEBEX_API_URL", webex_identity_standin().await),
        ],
    )
    .await;
    let (voip, alert) = (token("a9"), token("b9"));
    let register = |person: &str, access: Option<&str>| {
        let mut request = h
            .http
            .post(h.url("/register"))
            .json(&registration(person, &voip, &alert));
        if let Some(access) = access {
            request = request.bearer_auth(access);
        }
        request.send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    // Ada's token, Bob's person id: someone trying to receive Bob's calls.
    assert_eq!(
        status(register(OTHER, Some(ADA_ACCESS)).await.unwrap()),
        403
    );
    assert_eq!(status(register(PERSON, None).await.unwrap()), 401);
    assert_eq!(
        status(register(PERSON, Some("expired-token")).await.unwrap()),
        401
    );
    // Ada herself, in another spelling of her id than Webex's.
    assert_eq!(
        status(register(PERSON, Some(ADA_ACCESS)).await.unwrap()),
        204
    );

    // Only Ada may remove Ada's phone.
    let delete = |access: Option<&str>| {
        let mut request = h.http.delete(h.url(&format!("/register/{voip}")));
        if let Some(access) = access {
            request = request.bearer_auth(access);
        }
        request.send()
    };
    assert_eq!(status(delete(Some("expired-token")).await.unwrap()), 401);
    assert_eq!(status(delete(Some(ADA_ACCESS)).await.unwrap()), 204);
    // The mismatch was logged by person, never with the access token.
    assert!(!h.server.log_text().contains(ADA_ACCESS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_android_phone_is_rung_through_fcm_told_about_messages_and_its_dead_token_removed() {
    let h = Harness::start_with_fcm(4).await;
    let android = fcm_token("ada-pixel");
    let (ks_voip, ks_alert) = (token("c1"), token("d1"));
    let response = h
        .register(&android_registration(&webex_id(PERSON), &android))
        .await;
    assert_eq!(response.status().as_u16(), 204, "{}", h.server.log_text());
    let response = h
        .register(&kitchensink_registration(
            &webex_id(PERSON),
            &ks_voip,
            &ks_alert,
        ))
        .await;
    assert_eq!(response.status().as_u16(), 204, "{}", h.server.log_text());

    // A telephony_push carrying both payloads, in spellings a re-serialisation would
    // change: the Android phone gets fcmPayload as Webex wrote it, the iPhone its
    // apnsPayload as before.
    let apns_payload = r#"{"aps":{},"pushId":"p-1","version":1.50}"#;
    let fcm_payload =
        r#"{"pushId": "p-1", "version":1.50, "name":"\u00c9mile", "data":{"k":[1,{"x":null}]}}"#;
    let telephony_push = format!(
        r#"{{"id":"wh-1","resource":"telephony_push","event":"updated","ownedBy":"org","createdBy":"{admin}","actorId":"{admin}","data":{{"personId":"{person}","callId":"tp-1","apnsPayload":{apns_payload},"fcmPayload":{fcm_payload}}}}}"#,
        admin = webex_id(OTHER),
        person = webex_id(PERSON),
    );
    h.webhook_text(&telephony_push).await;
    let rings = h.fcm_messages(0, 1).await;
    let ring = &rings[0];
    assert_eq!(ring.token, android);
    assert_eq!(ring.priority.as_deref(), Some("HIGH"));
    assert_eq!(
        ring.data["webhookTelephonyPush"], fcm_payload,
        "byte for byte"
    );
    assert_eq!(ring.data["pushId"], "p-1");
    assert_eq!(ring.data["version"], "1.50");
    let ttl = ring.ttl_seconds().unwrap();
    assert!(ttl <= 30, "the TTL follows the ring's 30 s deadline: {ttl}");
    let voip = h.pushes(0, 1).await;
    assert_eq!(voip[0].token, ks_voip);
    assert_voip(&voip[0]);
    assert_eq!(voip[0].body, apns_payload.as_bytes());

    // A Webex app call: webhookData on Android (high priority), an alert on the iPhone.
    let membership = call_membership("call-membership-1", &webex_id(PERSON)).to_string();
    h.webhook_text(&membership).await;
    let ring = &h.fcm_messages(1, 2).await[0];
    assert_eq!(ring.data["webhookData"], membership);
    assert_eq!(ring.priority.as_deref(), Some("HIGH"));
    let alert = &h.pushes(1, 2).await[0];
    assert_eq!(alert.token, ks_alert);
    assert_eq!(alert.payload["webhookData"], membership);

    // A message: webhookData, as the Android sample reads it.
    let message = message(PERSON, CALLER, "caller@example.com").to_string();
    h.webhook_text(&message).await;
    let notice = &h.fcm_messages(2, 3).await[0];
    assert_eq!(notice.data["webhookData"], message);
    assert_eq!(notice.priority.as_deref(), Some("NORMAL"));
    assert!(notice.data.values().all(|v| !v.is_empty()));

    // The same telephony_push again (a Webex re-delivery): nothing more to anyone.
    h.webhook_text(&telephony_push).await;
    // (telephony_push: two jobs each time; membership, message: one each.)
    h.relayed(6).await;
    assert_eq!(h.fcm().stats().accepted, 3);

    // FCM says the app is gone: the token is removed, and the next ring asks FCM nothing.
    let dead = fcm_token("gone-phone");
    h.fcm()
        .script()
        .fail_prefix("gone-phone", fcm_standin::Failure::Unregistered);
    let response = h
        .register(&android_registration(&webex_id(CALLER), &dead))
        .await;
    assert_eq!(response.status().as_u16(), 204);
    h.webhook(&call_membership("call-2", &webex_id(CALLER)))
        .await;
    h.server
        .wait_for_log("`dead token removed`", |l| {
            message_is(l, "dead token removed")
        })
        .await;
    h.relayed(7).await;
    let requests = h.fcm().stats().requests;
    h.webhook(&call_membership("call-3", &webex_id(CALLER)))
        .await;
    h.relayed(8).await;
    assert_eq!(
        h.fcm().stats().requests,
        requests,
        "{}",
        h.server.log_text()
    );

    // One access token for all of it; Android's pushes counted apart from iOS's.
    assert_eq!(h.fcm().stats().tokens_issued, 1);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            r#"webex_push_pushes_total{provider="fcm",channel="alert",outcome="delivered",reason=""} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"webex_push_pushes_total{provider="fcm",channel="alert",outcome="token_invalid",reason="UNREGISTERED"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("webex_push_fcm_ring_latency_seconds_count 2"),
        "two rings delivered through FCM: {metrics}"
    );
    // No FCM token ever reaches the log in full.
    assert!(!h.server.log_text().contains(&android));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_reach_fcm_with_the_push_command_check_and_the_admin_test_push() {
    let h = Harness::start_with_fcm_and(2, &[("ADMIN_TOKEN", ADMIN.to_owned())]).await;
    let android = fcm_token("ops-pixel");
    let response = h
        .register(&android_registration(&webex_id(PERSON), &android))
        .await;
    assert_eq!(response.status().as_u16(), 204, "{}", h.server.log_text());

    // The admin test push on the alert channel reaches the Android phone through FCM.
    let answer: Value = h
        .http
        .post(h.url("/admin/test-push"))
        .bearer_auth(ADMIN)
        .json(&json!({"personId": webex_id(PERSON), "channel": "alert", "message": "Hi"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{answer}");
    assert_eq!(results[0]["provider"], "fcm");
    assert_eq!(results[0]["status"], 200);
    assert!(
        results[0]["fcmMessage"]
            .as_str()
            .unwrap()
            .starts_with("projects/")
    );
    assert_eq!(results[0]["token"], format!("{}…", &android[..8]));
    let sent = h.fcm_messages(0, 1).await;
    assert_eq!(sent[0].token, android);
    assert_eq!(sent[0].data["type"], "message");

    // `webex-push push --provider fcm`, with the server's own environment.
    let envs: Vec<(&str, String)> = h
        .envs()
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let (ok, stdout, stderr) = run_binary(
        &[
            "push",
            "--provider",
            "fcm",
            "--token",
            &android,
            "--channel",
            "voip",
        ],
        &envs,
    )
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("status: 200"), "{stdout}");
    assert!(stdout.contains("name: projects/"), "{stdout}");
    let ring = &h.fcm_messages(1, 2).await[0];
    assert_eq!(ring.priority.as_deref(), Some("HIGH"));
    assert_eq!(ring.data["type"], "incoming_call");
    h.fcm()
        .script()
        .fail_prefix("ops-gone", fcm_standin::Failure::Unregistered);
    let (ok, stdout, _) = run_binary(
        &[
            "push",
            "--provider",
            "fcm",
            "--token",
            &fcm_token("ops-gone"),
            "--channel",
            "alert",
        ],
        &envs,
    )
    .await;
    assert!(!ok, "a refused push exits non-zero");
    assert!(stdout.contains("status: 404"), "{stdout}");
    assert!(stdout.contains("reason: UNREGISTERED"), "{stdout}");

    // `webex-push check` covers FCM: the account, and an access token fetched.
    let (ok, stdout, stderr) = run_binary(&["check"], &envs).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        step_line(&stdout, "FCM service account").ends_with(" ok"),
        "{stdout}"
    );
    assert!(
        step_line(&stdout, "FCM access token").ends_with(" ok"),
        "{stdout}"
    );
    // Android only: no APNs key, and the check passes with iOS off.
    let android_only: Vec<(&str, String)> = envs
        .iter()
        .filter(|(k, _)| !k.starts_with("APNS_"))
        .cloned()
        .collect();
    let (ok, stdout, stderr) = run_binary(&["check"], &android_only).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(step_line(&stdout, "APNs key").ends_with(" off"), "{stdout}");
    assert!(
        step_line(&stdout, "FCM access token").ends_with(" ok"),
        "{stdout}"
    );
    h.fcm().script().refuse_assertions(true);
    let (ok, stdout, _) = run_binary(&["check"], &envs).await;
    assert!(!ok, "{stdout}");
    assert!(
        step_line(&stdout, "FCM access token").contains("FAILED: the token endpoint refused"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_fcm_and_no_apns_key_rings_android_phones_and_is_ready() {
    let fcm = fcm_standin::FcmStandIn::start(fcm_standin::FcmStandInConfig::test())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::postgres();
    let mut envs = vec![
        ("PORT", "0".into()),
        ("HOST", "127.0.0.1".into()),
        ("DATABASE_URL", db.url().to_owned()),
        ("WEBHOOK_SECRET", SECRET.into()),
        ("LOG_FORMAT", "json".into()),
        ("RUST_LOG", "info".into()),
    ];
    envs.extend(fcm_envs(&fcm, dir.path()));
    let mut server = Server::spawn(&envs);
    server.wait_until_listening().await;
    server
        .wait_for_log("`FCM warmed up`", |l| message_is(l, "FCM warmed up"))
        .await;
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200, "{}", server.log_text());
    let android = fcm_token("solo-pixel");
    let registered = http
        .post(format!("{}/register", server.base))
        .json(&android_registration(PERSON, &android))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status().as_u16(), 204);
    // An iPhone may register (its tokens are kept), but nothing can push to it.
    let iphone = http
        .post(format!("{}/register", server.base))
        .json(&registration(PERSON, &token("a1"), &token("b1")))
        .send()
        .await
        .unwrap();
    assert_eq!(iphone.status().as_u16(), 204);
    let body = call_membership("solo-call", PERSON).to_string();
    let status = http
        .post(format!("{}/webhook", server.base))
        .header("content-type", "application/json")
        .header("X-Spark-Signature", sign(SECRET, body.as_bytes()))
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 204, "{}", server.log_text());
    let sent = fcm.wait_for_accepted(1, WAIT).await;
    assert_eq!(sent.len(), 1, "{}", server.log_text());
    assert_eq!(sent[0].token, android);
    assert_eq!(sent[0].data["webhookData"], body);
    server
        .wait_for_log("`ApnsNotConfigured` for the iPhone", |l| {
            l.to_string().contains("ApnsNotConfigured")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fcm_503_is_retried_within_the_ring_deadline_no_sooner_than_retry_after() {
    let h = Harness::start_with_fcm(2).await;
    let android = fcm_token("busy-pixel");
    let response = h.register(&android_registration(PERSON, &android)).await;
    assert_eq!(response.status().as_u16(), 204);
    h.fcm().script().set_retry_after(Some(1));
    h.fcm()
        .script()
        .fail_prefix_times("busy-pixel", fcm_standin::Failure::Unavailable, 1);
    let sent = std::time::Instant::now();
    h.webhook(&call_membership("busy-call", PERSON)).await;
    let delivered = h.fcm_messages(0, 1).await;
    assert_eq!(delivered[0].token, android);
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    let stats = h.fcm().stats();
    assert_eq!(stats.responses.get(&503), Some(&1), "{stats:?}");
    assert_eq!(stats.accepted, 1);
    h.relayed(1).await;
}
