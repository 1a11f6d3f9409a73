//! Webhook upkeep end to end: the real binary with REGISTER_AUTH=webex and PUBLIC_URL,
//! the Webex API stand-in making and delivering webhooks as Webex does, and the APNs
//! stand-in. A registration makes the person's webhooks (once), a disabled one is
//! re-activated at the next registration, deliveries are checked with their own
//! webhook's secret, and no token or secret reaches the logs.

use serde_json::{Value, json};
use webex_standin::{Person, WebexStandIn, Webhook, sign};

use crate::common::*;

const ADA_TOKEN: &str = "ada-access-token_PF84_org";
const BOB_TOKEN: &str = "bob-access-token_PF84_org";
const SERVICE_TOKEN: &str = "service-app-token_PF84_org";
const ADMIN: &str = "22222222-3333-4444-8555-666666666666";

async fn start(webex: &WebexStandIn, interval_secs: u64) -> Harness {
    start_with(webex, interval_secs, &[]).await
}

async fn start_with(webex: &WebexStandIn, interval_secs: u64, extra: &[(&str, String)]) -> Harness {
    let port = free_port();
    let mut envs = vec![
        ("PORT", port.to_string()),
        ("PUBLIC_URL", format!("http://127.0.0.1:{port}/")),
        ("REGISTER_AUTH", "webex".into()),
        ("WEBEX_API_URL", webex.url()),
        ("WEBHOOK_CHECK_INTERVAL_SECS", interval_secs.to_string()),
        ("RUST_LOG", "info,webex_push_domain=debug".into()),
    ];
    envs.extend(extra.iter().cloned());
    Harness::start_with(2, &envs).await
}

async fn register_as(h: &Harness, access: &str, person: &str, voip: &str, alert: &str) {
    let response = h
        .http
        .post(h.url("/register"))
        .bearer_auth(access)
        .json(&registration(&webex_id(person), voip, alert))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204, "{}", h.server.log_text());
}

/// Waits until the server logged its `n`th check of someone's webhooks.
async fn checks(h: &Harness, n: usize, message: &str) {
    h.server
        .wait_for_count(&format!("`{message}`"), n, |l| message_is(l, message))
        .await;
}

fn of(webhooks: &[Webhook], resource: &str) -> Webhook {
    webhooks
        .iter()
        .find(|w| w.resource == resource)
        .unwrap_or_else(|| panic!("no {resource} webhook in {webhooks:?}"))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_makes_the_persons_webhooks_once_each_with_a_secret_of_its_own() {
    let webex = WebexStandIn::start().await.unwrap();
    webex.add_person(ADA_TOKEN, Person::user(PERSON));
    let h = start(&webex, 900).await;
    register_as(&h, ADA_TOKEN, PERSON, &token("a1"), &token("b1")).await;
    checks(&h, 1, "webhooks checked").await;

    let webhooks = webex.webhooks();
    assert_eq!(webhooks.len(), 4, "{webhooks:?}");
    let target = h.url("/webhook");
    for webhook in &webhooks {
        assert_eq!(webhook.target_url, target);
        assert_eq!(webhook.created_by, webex_id(PERSON));
        let secret = webhook.secret.as_deref().expect("a secret");
        assert_ne!(secret, SECRET, "never the shared secret");
    }
    let rings = of(&webhooks, "callMemberships");
    assert_eq!(rings.event, "created");
    assert_eq!(rings.filter.as_deref(), Some("state=notified&personId=me"));
    assert_ne!(rings.secret, of(&webhooks, "messages").secret);

    // The next registration within WEBHOOK_CHECK_INTERVAL_SECS asks Webex nothing.
    let asked = webex.requests().len();
    register_as(&h, ADA_TOKEN, PERSON, &token("a1"), &token("b1")).await;
    checks(&h, 1, "webhooks checked recently; nothing asked of Webex").await;
    assert_eq!(webex.requests().len(), asked);
    assert_eq!(webex.webhooks().len(), 4);

    let log = h.server.log_text();
    assert!(
        !log.contains(ADA_TOKEN),
        "the access token was logged:\n{log}"
    );
    for webhook in webex.webhooks() {
        let secret = webhook.secret.unwrap();
        assert!(
            !log.contains(&secret),
            "a webhook secret was logged:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_webhook_is_reactivated_at_the_next_registration_and_its_event_rings() {
    let webex = WebexStandIn::start().await.unwrap();
    webex.add_person(ADA_TOKEN, Person::user(PERSON));
    webex.add_person(
        BOB_TOKEN,
        Person {
            calling: false,
            ..Person::user(OTHER)
        },
    );
    // Checked at every registration, so each one shows what it found.
    let h = start(&webex, 0).await;
    let (voip, alert) = (token("a1"), token("b1"));
    register_as(&h, ADA_TOKEN, PERSON, &voip, &alert).await;
    checks(&h, 1, "webhooks checked").await;
    // Bob has no Webex Calling: Webex refuses his telephony_calls webhook, the others
    // are made.
    register_as(&h, BOB_TOKEN, OTHER, &token("c1"), &token("d1")).await;
    checks(&h, 2, "webhooks checked").await;
    assert_eq!(webex.webhooks().len(), 7);

    // A second registration finds Ada's four and makes none.
    register_as(&h, ADA_TOKEN, PERSON, &voip, &alert).await;
    checks(&h, 3, "webhooks checked").await;
    assert_eq!(webex.webhooks().len(), 7);

    // Webex disables her rings webhook (100 failed deliveries): nothing arrives...
    let rings = of(&webex.webhooks(), "callMemberships");
    webex.disable(&rings.id);
    let data = json!({
        "id": "membership-1",
        "callId": "call-upkeep-1",
        "personId": webex_id(PERSON),
        "state": "notified",
        "isInitiator": false,
    });
    assert_eq!(
        webex
            .deliver(&rings.id, "created", &webex_id(CALLER), data.clone())
            .await,
        None
    );
    // ...until her next registration re-activates it; the next ring arrives.
    register_as(&h, ADA_TOKEN, PERSON, &voip, &alert).await;
    checks(&h, 1, "webhook repaired").await;
    checks(&h, 4, "webhooks checked").await;
    assert!(
        webex
            .webhooks()
            .iter()
            .all(|w| w.active || w.created_by != webex_id(PERSON))
    );
    assert_eq!(
        webex
            .deliver(&rings.id, "created", &webex_id(CALLER), data)
            .await,
        Some(204)
    );
    let pushes = h.pushes(0, 1).await;
    assert_eq!(pushes[0].token, voip);
    assert_eq!(pushes[0].payload["webex"]["callId"], "call-upkeep-1");

    // Bob's webhook's secret cannot speak for Ada: signed for Ada's webhook (the body
    // says she made it) it does not verify...
    let bobs = webex
        .webhooks()
        .into_iter()
        .find(|w| w.resource == "messages" && w.created_by == webex_id(OTHER))
        .unwrap();
    let bob_secret = bobs.secret.clone().unwrap();
    let mut forged: Value =
        serde_json::from_str(&call_membership("call-forged-1", &webex_id(PERSON)).to_string())
            .unwrap();
    forged["createdBy"] = json!(webex_id(PERSON));
    assert_eq!(post_signed(&h, &forged, &bob_secret).await, 401);
    // ...and signed as Bob's own webhook, an event about Ada is refused too.
    let mut bob_signed = json!({
        "id": rings.id,
        "resource": "callMemberships",
        "event": "created",
        "createdBy": webex_id(OTHER),
        "ownedBy": "creator",
        "actorId": webex_id(CALLER),
        "data": {"id": "m-2", "callId": "call-forged-2", "personId": webex_id(PERSON), "state": "notified"},
    });
    let bob_rings = webex
        .webhooks()
        .into_iter()
        .find(|w| w.resource == "callMemberships" && w.created_by == webex_id(OTHER))
        .unwrap();
    assert_eq!(
        post_signed(&h, &bob_signed, bob_rings.secret.as_deref().unwrap()).await,
        401
    );
    // About Bob himself it is his to send.
    bob_signed["data"]["personId"] = json!(webex_id(OTHER));
    assert_eq!(
        post_signed(&h, &bob_signed, bob_rings.secret.as_deref().unwrap()).await,
        204
    );
    h.relayed(2).await;
    assert_eq!(h.standin.accepted().len(), 2);

    let log = h.server.log_text();
    for secret in [ADA_TOKEN, BOB_TOKEN, &bob_secret] {
        assert!(
            !log.contains(secret),
            "a token or secret was logged:\n{log}"
        );
    }
}

/// Posts `body` signed with `secret`; the status.
async fn post_signed(h: &Harness, body: &Value, secret: &str) -> u16 {
    let signature = sign(secret, body.to_string().as_bytes());
    h.webhook_signed_with(body, Some(signature)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_and_webhooks_sync_reactivate_the_org_wide_firehose_and_its_next_push_rings() {
    let webex = WebexStandIn::start().await.unwrap();
    webex.add_person(ADA_TOKEN, Person::user(PERSON));
    webex.add_person(SERVICE_TOKEN, Person::admin(ADMIN));
    let h = start_with(
        &webex,
        900,
        &[
            ("WEBEX_SERVICE_TOKEN", SERVICE_TOKEN.into()),
            ("WEBHOOK_WATCHDOG_INTERVAL_SECS", "1".into()),
        ],
    )
    .await;
    // The admin's firehose, made elsewhere with the shared secret (as Webex's guide has
    // it), and one of another server's that must be left alone.
    let firehose = webex
        .create_webhook(
            SERVICE_TOKEN,
            json!({"name": "firehose", "targetUrl": h.url("/webhook"), "resource": "telephony_push",
                   "event": "updated", "ownedBy": "org", "secret": SECRET}),
        )
        .unwrap();
    let foreign = webex
        .create_webhook(
            SERVICE_TOKEN,
            json!({"name": "theirs", "targetUrl": "https://elsewhere.example.com/hook",
                   "resource": "telephony_push", "event": "updated", "ownedBy": "org"}),
        )
        .unwrap();
    let voip = token("a1");
    register_as(&h, ADA_TOKEN, PERSON, &voip, &token("b1")).await;

    webex.disable(&firehose);
    webex.disable(&foreign);
    checks(&h, 1, "org-wide webhook re-activated").await;
    let states: Vec<(String, bool)> = webex
        .webhooks()
        .into_iter()
        .filter(|w| w.owned_by == "org")
        .map(|w| (w.id, w.active))
        .collect();
    assert_eq!(states, [(firehose.clone(), true), (foreign.clone(), false)]);
    let push = json!({
        "personId": webex_id(PERSON),
        "callId": "firehose-call-1",
        "apnsPayload": {"aps": {}, "pushId": "p-1"},
    });
    assert_eq!(
        webex
            .deliver(&firehose, "updated", &webex_id(ADMIN), push)
            .await,
        Some(204)
    );
    let rings = h.pushes(0, 1).await;
    assert_eq!(rings[0].token, voip);
    assert_eq!(rings[0].payload["pushId"], "p-1");

    // What it saw, for operators.
    checks(&h, 1, "org-wide webhooks checked").await;
    let ready = h.get_json("/readyz").await;
    assert_eq!(ready["webhooks"]["active"], 1, "{ready}");
    assert_eq!(ready["webhooks"]["inactive"], 0, "{ready}");
    assert_eq!(
        ready["webhooks"]["webhooks"][0]["resource"],
        "telephony_push"
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            r#"webex_push_webhooks_watched{resource="telephony_push",status="active"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("webex_push_webhooks_reactivated_total 1"),
        "{metrics}"
    );

    // Disabled again at once: Webex's rule disables one re-activated < 5 min ago at
    // its next failure, so the watchdog waits; `webhooks sync` is the operator's lever.
    webex.count_failure(&firehose);
    assert!(
        !webex
            .webhooks()
            .iter()
            .any(|w| w.id == firehose && w.active)
    );
    checks(
        &h,
        1,
        "org-wide webhook disabled again soon after its re-activation; waiting",
    )
    .await;
    let list = run(&h, "list").await;
    assert!(!list.0, "list fails while one is inactive:\n{}", list.1);
    assert!(
        list.1.contains("telephony_push/updated  inactive"),
        "{}",
        list.1
    );
    assert!(!list.1.contains(&foreign), "{}", list.1);
    let sync = run(&h, "sync").await;
    assert!(sync.0, "{}", sync.1);
    assert!(sync.1.contains("re-activated: 1"), "{}", sync.1);
    assert!(
        webex
            .webhooks()
            .iter()
            .any(|w| w.id == firehose && w.active)
    );

    let log = h.server.log_text();
    for secret in [ADA_TOKEN, SERVICE_TOKEN, SECRET] {
        assert!(
            !log.contains(secret),
            "a token or secret was logged:\n{log}"
        );
    }
    assert!(!sync.1.contains(SERVICE_TOKEN) && !sync.1.contains(SECRET));
}

/// Runs `webex-push webhooks <action>` with the server's environment (text logs):
/// success and its whole output.
async fn run(h: &Harness, action: &str) -> (bool, String) {
    let mut envs: Vec<(&str, String)> = h
        .envs()
        .iter()
        .filter(|(k, _)| k != "LOG_FORMAT")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    envs.push(("LOG_FORMAT", "text".to_owned()));
    let (ok, stdout, stderr) = run_binary(&["webhooks", action], &envs).await;
    (ok, format!("{stdout}{stderr}"))
}
