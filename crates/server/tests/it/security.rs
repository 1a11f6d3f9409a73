//! Security checks against the real `webex-push` binary: webhook signatures (forged,
//! missing, stale, rotated), the admin API's lock, secrets kept out of the logs, and
//! SQL injection strings stored verbatim and never executed.

use apns_standin::Failure;
use diesel::sql_types::{Nullable, Text};
use diesel::{Connection as _, PgConnection, QueryableByName, RunQueryDsl as _};
use serde_json::{Value, json};
use webex_push_adapters::webex::sign;

use crate::common::*;

const ADMIN: &str = "security-admin-token-5f0c1e9a77d2";
const NEW_SECRET: &str = "rotated-in-secret-4b1d";
const OLD_SECRET: &str = "rotated-out-secret-93ac";

async fn assert_refused_signature(response: reqwest::Response) {
    assert_problem(response, 401, Some("invalid-signature")).await;
}

/// The call ids the stand-in accepted pushes for, sorted.
fn rung_calls(h: &Harness) -> Vec<String> {
    let mut calls: Vec<String> = h
        .standin
        .accepted()
        .iter()
        .map(|p| p.payload["webex"]["callId"].as_str().unwrap().to_owned())
        .collect();
    calls.sort();
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_missing_and_stale_signatures_are_refused_and_both_rotated_secrets_work() {
    let secrets = format!("{NEW_SECRET},{OLD_SECRET}");
    let h = Harness::start_with(1, &[("WEBHOOK_SECRET", secrets)]).await;
    h.register_ok(PERSON, &token("a1"), &token("b1")).await;

    let body = call_membership("call-forged", &webex_id(PERSON));
    let text = body.to_string();
    let genuine_for_other_body = sign(
        NEW_SECRET,
        call_membership("call-other", PERSON).to_string().as_bytes(),
    );
    let refused = [
        None,
        Some(String::new()),
        Some(sign("guessed-secret", text.as_bytes())),
        // A secret this deployment used before the last rotation.
        Some(sign("retired-secret-of-2024", text.as_bytes())),
        // A genuine signature, replayed on another body.
        Some(genuine_for_other_body),
        // The right HMAC, cut short or padded.
        Some(sign(NEW_SECRET, text.as_bytes())[..39].to_owned()),
        Some(format!("{}00", sign(NEW_SECRET, text.as_bytes()))),
        Some("sha1=".to_owned() + &sign(NEW_SECRET, text.as_bytes())),
        Some("not-a-signature".to_owned()),
    ];
    for signature in refused {
        assert_refused_signature(h.post_webhook(&body, signature).await).await;
    }

    let by_new = call_membership("call-new-secret", &webex_id(PERSON));
    let signature = sign(NEW_SECRET, by_new.to_string().as_bytes());
    assert_eq!(h.post_webhook(&by_new, Some(signature)).await.status(), 204);
    let by_old = call_membership("call-old-secret", &webex_id(PERSON));
    let signature = sign(OLD_SECRET, by_old.to_string().as_bytes());
    assert_eq!(h.post_webhook(&by_old, Some(signature)).await.status(), 204);
    h.pushes(0, 2).await;
    h.relayed(2).await;
    assert_eq!(rung_calls(&h), ["call-new-secret", "call-old-secret"]);
    assert_eq!(
        h.standin.stats().requests - h.warm_up_requests,
        2,
        "nothing refused reached Apple"
    );

    // The rotation is over: the old secret is removed, its signatures stop working.
    let h = Harness::start_with(1, &[("WEBHOOK_SECRET", NEW_SECRET.to_owned())]).await;
    h.register_ok(PERSON, &token("a1"), &token("b1")).await;
    let late_old = call_membership("call-late-old", &webex_id(PERSON));
    let signature = sign(OLD_SECRET, late_old.to_string().as_bytes());
    assert_refused_signature(h.post_webhook(&late_old, Some(signature)).await).await;
    let by_new = call_membership("call-after-rotation", &webex_id(PERSON));
    let signature = sign(NEW_SECRET, by_new.to_string().as_bytes());
    assert_eq!(h.post_webhook(&by_new, Some(signature)).await.status(), 204);
    h.pushes(0, 1).await;
    h.relayed(1).await;
    assert_eq!(rung_calls(&h), ["call-after-rotation"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_are_absent_without_a_token_and_locked_with_one() {
    let routes = |h: &Harness| {
        [
            h.http
                .get(h.url(&format!("/admin/persons/{PERSON}/devices"))),
            h.http
                .post(h.url("/admin/test-push"))
                .json(&json!({"token": token("a1"), "channel": "alert"})),
        ]
    };

    // No ADMIN_TOKEN: the admin API does not exist, whatever is presented.
    let off = Harness::start(1).await;
    for request in routes(&off) {
        for request in [request.try_clone().unwrap(), request.bearer_auth(ADMIN)] {
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 404);
        }
    }

    let on = Harness::start_with(1, &[("ADMIN_TOKEN", ADMIN.to_owned())]).await;
    on.register_ok(PERSON, &token("a1"), &token("b1")).await;
    let wrong = [
        None,
        Some(format!("Bearer {}", &ADMIN[..ADMIN.len() - 1])),
        Some(format!("Bearer {ADMIN}x")),
        Some(format!("Bearer {}", ADMIN.to_uppercase())),
        Some(format!("Basic {ADMIN}")),
        Some(ADMIN.to_owned()),
        Some("Bearer ".to_owned()),
    ];
    for request in routes(&on) {
        for authorization in &wrong {
            let mut request = request.try_clone().unwrap();
            if let Some(authorization) = authorization {
                request = request.header("authorization", authorization);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 401, "{authorization:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let problem: Value = response.json().await.unwrap();
            assert!(
                problem["type"]
                    .as_str()
                    .unwrap()
                    .ends_with("#admin-unauthorized")
            );
        }
        let response = request.bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
    // Only the one authorised test push reached Apple.
    assert_eq!(on.standin.accepted().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_whole_scenario_hold_no_token_secret_email_jwt_or_key() {
    let secrets = format!("{NEW_SECRET},{OLD_SECRET}");
    let h = Harness::start_with(
        2,
        &[
            ("WEBHOOK_SECRET", secrets),
            ("ADMIN_TOKEN", ADMIN.to_owned()),
            // Everything our crates say, even at debug level.
            (
                "RUST_LOG",
                "info,webex_push=debug,webex_push_adapters=debug,webex_push_domain=debug"
                    .to_owned(),
            ),
        ],
    )
    .await;
    let emails = ["ada.lovelace@example.com", "charles.babbage@example.org"];
    let (v1, a1, v2, a2) = (token("c1"), token("d1"), token("c2"), token("d2"));
    let dead = token("e7");
    let mut registration1 = registration(PERSON, &v1, &a1);
    registration1["email"] = json!(emails[0]);
    assert_eq!(h.register(&registration1).await.status(), 204);
    let mut registration2 = registration(&webex_id(OTHER), &v2, &a2);
    registration2["email"] = json!(emails[1]);
    registration2["environment"] = json!("sandbox");
    assert_eq!(h.register(&registration2).await.status(), 204);

    // Webhooks: a ring, a message, a call end, a forged one and a malformed one.
    let signed = |body: &Value| Some(sign(NEW_SECRET, body.to_string().as_bytes()));
    let ring = call_membership("call-logs-1", &webex_id(PERSON));
    assert_eq!(h.post_webhook(&ring, signed(&ring)).await.status(), 204);
    let message = message(PERSON, OTHER, emails[1]);
    assert_eq!(
        h.post_webhook(&message, signed(&message)).await.status(),
        204
    );
    let ended = telephony_call("call-logs-2", "disconnected", "disconnected");
    assert_eq!(h.post_webhook(&ended, signed(&ended)).await.status(), 204);
    let forged = call_membership("call-logs-forged", &webex_id(PERSON));
    let forged_signature = Some(sign("attacker", forged.to_string().as_bytes()));
    assert_eq!(
        h.post_webhook(&forged, forged_signature).await.status(),
        401
    );
    let malformed = b"{\"resource\": \"callMemberships\", \"data\": ";
    let response = h
        .http
        .post(h.url("/webhook"))
        .header("X-Spark-Signature", sign(NEW_SECRET, malformed))
        .body(malformed.as_slice())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    h.pushes(0, 3).await;

    // Admin: listing, a test push to a token Apple refuses, and a failed login.
    let mut registration3 = registration(&webex_id(OTHER), &dead, &token("f7"));
    registration3["email"] = json!(emails[1]);
    assert_eq!(h.register(&registration3).await.status(), 204);
    h.standin.script().fail_token(
        &dead,
        Failure::Unregistered {
            timestamp_ms: chrono::Utc::now().timestamp_millis() + 1,
        },
    );
    let admin = |path: &str| h.http.get(h.url(path)).bearer_auth(ADMIN);
    let listing = admin(&format!("/admin/persons/{PERSON}/devices"))
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), 200);
    for (target, channel) in [
        (json!({"token": dead}), "voip"),
        (json!({"personId": OTHER}), "alert"),
    ] {
        let mut body = target;
        body["channel"] = json!(channel);
        let response = h
            .http
            .post(h.url("/admin/test-push"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let bad_login = h
        .http
        .get(h.url("/admin/persons/x/devices"))
        .bearer_auth("not-the-admin-token-at-all")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_login.status(), 401);

    // A dead token found by a real ring, and the database going away and back.
    let ring_other = call_membership("call-logs-3", &webex_id(OTHER));
    assert_eq!(
        h.post_webhook(&ring_other, signed(&ring_other))
            .await
            .status(),
        204
    );
    h.server
        .wait_for_log("`dead token removed`", |l| {
            message_is(l, "dead token removed")
        })
        .await;
    h.db.take_offline();
    assert_eq!(h.register(&registration1).await.status(), 503);
    h.db.bring_online();
    h.relayed(4).await;

    let log = h.server.log_text();
    assert!(
        log.contains("\"level\":\"DEBUG\""),
        "debug lines were captured"
    );
    let key = std::fs::read_dir(h.key_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "p8"))
        .unwrap();
    let key = std::fs::read_to_string(key).unwrap();
    let key_lines = key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16);
    let mut forbidden: Vec<String> = [&v1, &a1, &v2, &a2, &dead, &token("f7")]
        .into_iter()
        .cloned()
        .collect();
    forbidden.extend(emails.iter().map(|e| (*e).to_owned()));
    forbidden
        .extend([NEW_SECRET, OLD_SECRET, ADMIN, "not-the-admin-token-at-all"].map(String::from));
    forbidden.extend(key_lines.map(String::from));
    // Base64url of `{"alg"`, `{"kid"` and `{"typ"`: how every JWT starts.
    forbidden.extend(["eyJhbGci", "eyJraWQi", "eyJ0eXAi"].map(String::from));
    for secret in &forbidden {
        assert!(
            !log.contains(secret.as_str()),
            "{secret} appears in the logs:\n{log}"
        );
    }
    // Tokens are still identifiable in the logs by their redacted prefix.
    assert!(log.contains(&format!("{}…", &v1[..8])), "{log}");
}

/// One row of `devices` as stored.
#[derive(QueryableByName, Debug)]
struct StoredDevice {
    #[diesel(sql_type = Text)]
    email: String,
    #[diesel(sql_type = Nullable<Text>)]
    bundle_id: Option<String>,
    #[diesel(sql_type = Text)]
    person_id: String,
}

fn stored(h: &Harness, token: &str) -> Option<StoredDevice> {
    let mut connection = PgConnection::establish(h.db.url()).unwrap();
    diesel::sql_query("SELECT email, bundle_id, person_id FROM devices WHERE token = $1")
        .bind::<Text, _>(token)
        .load::<StoredDevice>(&mut connection)
        .unwrap()
        .pop()
}

fn count(h: &Harness, table: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut connection = PgConnection::establish(h.db.url()).unwrap();
    diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
        .get_result::<Count>(&mut connection)
        .unwrap()
        .n
}

const INJECTIONS: [&str; 4] = [
    "'; DROP TABLE devices; --",
    "\" OR 1=1 --",
    "x'); DELETE FROM devices WHERE ('1'='1",
    "1; TRUNCATE seen_events",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_injection_strings_are_refused_or_stored_verbatim_and_never_executed() {
    let h = Harness::start_with(1, &[("ADMIN_TOKEN", ADMIN.to_owned())]).await;
    h.register_ok(PERSON, &token("a1"), &token("b1")).await;
    h.webhook(&call_membership("call-before", &webex_id(PERSON)))
        .await;
    h.pushes(0, 1).await;
    h.relayed(1).await;
    let seen_before = count(&h, "seen_events");

    let mut stored_verbatim = std::collections::HashSet::new();
    for (n, injection) in INJECTIONS.iter().enumerate() {
        let (voip, alert) = (format!("{:064x}", 0xc0 + n), format!("{:064x}", 0xd0 + n));
        // Each field on its own, the others valid.
        for field in ["email", "bundleId", "personId"] {
            let mut body = registration(OTHER, &voip, &alert);
            body[field] = json!(match field {
                "email" => format!("{injection}@example.com"),
                "bundleId" => format!("com.example.{injection}"),
                _ => (*injection).to_owned(),
            });
            let response = h.register(&body).await;
            match response.status().as_u16() {
                400 => {
                    let problem: Value = response.json().await.unwrap();
                    assert_eq!(problem["field"], field, "{problem}");
                }
                204 => {
                    stored_verbatim.insert(n);
                    let row = stored(&h, &voip).unwrap();
                    match field {
                        "email" => assert_eq!(row.email, body["email"]),
                        "bundleId" => assert_eq!(row.bundle_id.unwrap(), body["bundleId"]),
                        _ => assert_eq!(row.person_id, body["personId"]),
                    }
                    if field == "bundleId" {
                        let listing = h.admin_devices(ADMIN, OTHER).await;
                        assert!(
                            listing["devices"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .any(|d| d["bundleId"] == body["bundleId"]),
                            "{listing}"
                        );
                    }
                }
                other => panic!("{field} = {injection:?} answered {other}"),
            }
        }
        // In paths and in webhooks too.
        let path = format!(
            "/admin/persons/{}/devices",
            injection.replace(' ', "%20").replace('"', "%22")
        );
        let response = h
            .http
            .get(h.url(&path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{path}");
        let response = h
            .http
            .delete(h.url(&format!(
                "/register/{}",
                injection.replace(' ', "%20").replace('"', "%22")
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let mut ring = call_membership(injection, injection);
        ring["data"]["callId"] = json!(injection);
        let signature = sign(SECRET, ring.to_string().as_bytes());
        let status = h
            .post_webhook(&ring, Some(signature))
            .await
            .status()
            .as_u16();
        assert!(status == 400 || status == 204, "{status}");
    }

    // The tables are there and hold what they held, plus what was accepted.
    let accepted_pairs = i64::try_from(stored_verbatim.len()).unwrap();
    assert_eq!(count(&h, "devices"), 2 + 2 * accepted_pairs);
    assert!(count(&h, "seen_events") >= seen_before);
    assert_eq!(stored(&h, &token("a1")).unwrap().person_id, PERSON);
    h.webhook(&call_membership("call-after", &webex_id(PERSON)))
        .await;
    let pushes = h.pushes(1, 2).await;
    assert_eq!(pushes[0].payload["webex"]["callId"], "call-after");
}

/// Runs the binary with `envs` until it exits by itself (within [`WAIT`]); returns
/// whether it succeeded and everything it wrote.
async fn run_to_exit(envs: &[(&str, String)]) -> (bool, String) {
    let (ok, stdout, stderr) = run_binary(&[], envs).await;
    (ok, format!("{stdout}{stderr}"))
}

/// A key for Apple's own gateways (no `APNS_ENDPOINT`) on an SQLite file in `dir`.
fn apple_envs(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let key_file = dir.join("AuthKey_KEY1234567.p8");
    std::fs::write(
        &key_file,
        apns_standin::AuthKey::generate().unwrap().private_pem,
    )
    .unwrap();
    vec![
        ("PORT", "0".into()),
        ("HOST", "127.0.0.1".into()),
        (
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("push.db").display()),
        ),
        ("APNS_KEY_FILE", key_file.display().to_string()),
        ("APNS_KEY_ID", KEY_ID.into()),
        ("APNS_TEAM_ID", TEAM_ID.into()),
        ("APNS_TOPIC", TOPIC.into()),
        ("LOG_FORMAT", "json".into()),
        ("RUST_LOG", "info".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_fail_closed_when_pushes_can_reach_real_phones() {
    let dir = tempfile::tempdir().unwrap();
    let apple = apple_envs(dir.path());

    // A key for Apple and no secret: neither `serve` nor `check` accepts it.
    let (ok, log) = run_to_exit(&apple).await;
    assert!(!ok, "{log}");
    assert!(
        log.contains("WEBHOOK_SECRET: is required when pushes go to Apple"),
        "{log}"
    );
    assert!(log.contains("ALLOW_UNSIGNED_WEBHOOKS=true"), "{log}");
    assert!(!dir.path().join("push.db").exists(), "nothing was set up");
    let (ok, printed, _) = run_binary(&["check"], &apple).await;
    assert!(!ok, "{printed}");
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("webhook auth") && l.contains("FAILED: WEBHOOK_SECRET")),
        "{printed}"
    );

    // Set but blank is an error everywhere, even where unsigned would be allowed.
    for blank in ["", "   ", " , "] {
        let mut envs = apple.clone();
        envs.push(("WEBHOOK_SECRET", blank.to_owned()));
        envs.push(("ALLOW_UNSIGNED_WEBHOOKS", "true".to_owned()));
        let (ok, log) = run_to_exit(&envs).await;
        assert!(!ok, "{blank:?}: {log}");
        assert!(
            log.contains("WEBHOOK_SECRET: is set but holds no secret"),
            "{log}"
        );
    }
    let (ok, log) = run_to_exit(&[
        ("PORT", "0".into()),
        (
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("x.db").display()),
        ),
        ("WEBHOOK_SECRET", " ".into()),
    ])
    .await;
    assert!(
        !ok && log.contains("WEBHOOK_SECRET: is set but holds no secret"),
        "{log}"
    );

    // Only an explicit ALLOW_UNSIGNED_WEBHOOKS=true starts it, loudly, and says so.
    let mut envs = apple.clone();
    envs.push(("ALLOW_UNSIGNED_WEBHOOKS", "true".to_owned()));
    let mut server = Server::spawn(&envs);
    server.wait_until_listening().await;
    server
        .wait_for_log("the unsigned-webhooks warning", |l| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("ALLOW_UNSIGNED_WEBHOOKS=true"))
        })
        .await;
    let ready: Value = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["webhook_auth"], "unsigned", "{ready}");
    assert_eq!(ready["register_auth"], "off", "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_auth_off_is_warned_and_shown_and_signed_webhooks_are_shown() {
    let h = Harness::start(1).await;
    h.server
        .wait_for_log("the REGISTER_AUTH=off warning", |l| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("REGISTER_AUTH=off: anyone who knows"))
        })
        .await;
    let ready = h.get_json("/readyz").await;
    assert_eq!(ready["webhook_auth"], "signed", "{ready}");
    assert_eq!(ready["register_auth"], "off", "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_is_held_to_its_registration_rate() {
    let h = Harness::start_with(1, &[("REGISTER_RATE_PER_MINUTE", "4".into())]).await;
    for n in 0..4 {
        h.register_ok(PERSON, &token(&format!("a{n}")), &token(&format!("b{n}")))
            .await;
    }
    let refused = h
        .register(&registration(PERSON, &token("a9"), &token("b9")))
        .await;
    assert_eq!(refused.status().as_u16(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15).contains(&retry_after), "Retry-After {retry_after}");
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["type"].as_str().unwrap().ends_with("#rate-limited"),
        "{problem}"
    );
    // Nothing of the refused registration was stored; the earlier ones are intact.
    let voip = |t: &str| stored(&h, t).map(|d| d.person_id);
    assert_eq!(voip(&token("a9")), None);
    assert!(voip(&token("a3")).is_some());
    // Spoofing X-Forwarded-For does not help: the peer is not a trusted proxy.
    let spoofed = h
        .http
        .post(h.url("/register"))
        .header("x-forwarded-for", "203.0.113.200")
        .json(&registration(PERSON, &token("a8"), &token("b8")))
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status().as_u16(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_keeps_only_the_most_recent_devices_and_a_ring_fans_out_to_those() {
    let h = Harness::start_with(1, &[("MAX_DEVICES_PER_PERSON", "2".into())]).await;
    for n in 0..4 {
        h.register_ok(PERSON, &token(&format!("a{n}")), &token(&format!("b{n}")))
            .await;
        // Registration times must differ for "least recently registered" to be exact.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for n in 0..4 {
        let kept = n >= 2;
        assert_eq!(stored(&h, &token(&format!("a{n}"))).is_some(), kept, "a{n}");
        assert_eq!(stored(&h, &token(&format!("b{n}"))).is_some(), kept, "b{n}");
    }
    assert_eq!(
        h.server.count_logs(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("device removed"))),
        4,
        "{}",
        h.server.log_text()
    );
    h.webhook(&call_membership("limit-call", PERSON)).await;
    let pushes = h.pushes(0, 2).await;
    assert_eq!(sorted_tokens(&pushes), vec![token("a2"), token("a3")]);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("webex_push_devices_evicted_total 4"),
        "{metrics}"
    );
}
