//! Hostile input against the real `webex-push` binary: oversized bodies, wrong content
//! types, deeply nested JSON, invalid UTF-8, empty bodies, arrays and huge numbers.
//! Each is refused with a problem body (`application/problem+json` with `type`,
//! `title`, `status`), nothing crashes, and nothing is pushed.

use serde_json::{Value, json};
use webex_push_adapters::webex::sign;

use crate::common::*;

const ADMIN: &str = "hostile-admin-token-0123456789";

struct Hostile {
    h: Harness,
}

impl Hostile {
    async fn start() -> Self {
        let h = Harness::start_with(1, &[("ADMIN_TOKEN", ADMIN.to_owned())]).await;
        h.register_ok(PERSON, &token("a1"), &token("b1")).await;
        Self { h }
    }

    async fn post(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = self.h.http.post(self.h.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send().await.unwrap()
    }

    /// A webhook signed with the right secret, so it gets past the signature check.
    async fn signed_webhook(&self, body: Vec<u8>) -> reqwest::Response {
        self.h
            .http
            .post(self.h.url("/webhook"))
            .header("content-type", "application/json")
            .header("X-Spark-Signature", sign(SECRET, &body))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn admin_test_push(&self, content_type: &str, body: Vec<u8>) -> reqwest::Response {
        self.h
            .http
            .post(self.h.url("/admin/test-push"))
            .bearer_auth(ADMIN)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// The server is still up, and Apple saw nothing but the start-up warm-up.
    async fn assert_alive_and_nothing_pushed(&self) {
        assert_eq!(self.h.get_status("/healthz").await, 200);
        assert!(
            self.h.server.child.id() > 0 && self.h.standin.accepted().is_empty(),
            "{}",
            self.h.server.log_text()
        );
        assert_eq!(self.h.standin.stats().requests, self.h.warm_up_requests);
    }
}

fn valid_registration() -> Value {
    registration(PERSON, &token("c1"), &token("d1"))
}

/// A real ring with `padding` bytes of an unknown field, so only its size is wrong.
fn padded_webhook(padding: usize) -> Vec<u8> {
    let mut body = call_membership("call-big", &webex_id(PERSON));
    body["padding"] = json!("x".repeat(padding));
    body.to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_with_413_problems() {
    let t = Hostile::start().await;
    // Just over 256 KiB: refused before the signature is even looked at.
    let body = padded_webhook(256 * 1024);
    assert_problem(t.signed_webhook(body).await, 413, Some("payload-too-large")).await;
    // Megabytes, unsigned: the server answers 413 as soon as the limit is passed and
    // may close the connection while the client is still writing; either way it is
    // refused without reading the rest, and the server carries on.
    let huge = vec![b' '; 4 * 1024 * 1024];
    // A client of its own, so a connection the server dropped is never reused.
    let sent = reqwest::Client::new()
        .post(t.h.url("/webhook"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await;
    if let Ok(response) = sent {
        assert_problem(response, 413, Some("payload-too-large")).await;
    }
    assert_eq!(t.h.get_status("/healthz").await, 200);

    let mut register = valid_registration();
    register["padding"] = json!("x".repeat(16 * 1024));
    assert_problem(
        t.post(
            "/register",
            Some("application/json"),
            register.to_string().into_bytes(),
        )
        .await,
        413,
        Some("payload-too-large"),
    )
    .await;

    let admin =
        json!({"token": token("e1"), "channel": "alert", "message": "x".repeat(300 * 1024)});
    assert_problem(
        t.admin_test_push("application/json", admin.to_string().into_bytes())
            .await,
        413,
        Some("payload-too-large"),
    )
    .await;

    // Just under the limits is fine.
    let fits = padded_webhook(200 * 1024);
    assert_eq!(t.signed_webhook(fits).await.status().as_u16(), 204);
    t.h.pushes(0, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_say_they_are_not_json_are_refused_with_415_problems() {
    let t = Hostile::start().await;
    let body = valid_registration().to_string().into_bytes();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonp",
        "json",
    ] {
        let response = t.post("/register", Some(content_type), body.clone()).await;
        assert_problem(response, 415, Some("unsupported-media-type")).await;
    }
    // `+json` types, parameters and any case are JSON.
    for content_type in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.api+json",
    ] {
        let response = t.post("/register", Some(content_type), body.clone()).await;
        assert_eq!(response.status().as_u16(), 204, "{content_type}");
    }
    assert_problem(
        t.admin_test_push("text/plain", b"channel=voip".to_vec())
            .await,
        415,
        Some("unsupported-media-type"),
    )
    .await;
    t.assert_alive_and_nothing_pushed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_a_400_problem_not_a_stack_overflow() {
    let t = Hostile::start().await;
    // As deep as each route's body limit allows: 100,000 levels for a webhook, 10,000
    // for the 16 KiB registration and the admin API.
    let nested = |depth: usize| {
        [
            "[".repeat(depth).into_bytes(),
            r#"{"a":"#.repeat(depth / 5).into_bytes(),
            // Inside an otherwise plausible body, where a reader would recurse into it.
            [
                br#"{"resource":"callMemberships","event":"created","data":"#.as_slice(),
                "[".repeat(depth).as_bytes(),
            ]
            .concat(),
        ]
    };
    for body in nested(100_000) {
        assert_problem(t.signed_webhook(body).await, 400, Some("malformed-webhook")).await;
    }
    for body in nested(10_000) {
        assert_problem(
            t.post("/register", Some("application/json"), body.clone())
                .await,
            400,
            Some("malformed-json"),
        )
        .await;
        assert_problem(
            t.admin_test_push("application/json", body).await,
            400,
            Some("malformed-json"),
        )
        .await;
    }
    t.assert_alive_and_nothing_pushed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_empty_bodies_and_non_objects_are_400_problems() {
    let t = Hostile::start().await;
    let mut invalid_utf8 = valid_registration().to_string().into_bytes();
    // Inside the e-mail string: an overlong encoding and a lone continuation byte.
    let at = invalid_utf8.iter().position(|b| *b == b'@').unwrap();
    invalid_utf8.splice(at..at, [0xc0, 0xaf, 0x80]);
    let mut webhook_utf8 = call_membership("call-utf8", &webex_id(PERSON))
        .to_string()
        .into_bytes();
    let at = webhook_utf8
        .windows(8)
        .position(|w| w == b"call-utf")
        .unwrap();
    webhook_utf8.splice(at..at, [0xff, 0xfe]);

    let cases: [(&str, Vec<u8>, Vec<u8>); 5] = [
        ("invalid UTF-8", invalid_utf8, webhook_utf8),
        ("empty", Vec::new(), Vec::new()),
        ("whitespace", b" \n\t ".to_vec(), b" \n\t ".to_vec()),
        (
            "an array",
            json!([valid_registration()]).to_string().into_bytes(),
            json!([call_membership("call-array", &webex_id(PERSON))])
                .to_string()
                .into_bytes(),
        ),
        ("a string", b"\"hello\"".to_vec(), b"null".to_vec()),
    ];
    for (what, register, webhook) in cases {
        let problem = assert_problem(
            t.post("/register", Some("application/json"), register)
                .await,
            400,
            None,
        )
        .await;
        assert!(
            ["malformed-json", "unreadable-body"]
                .iter()
                .any(|slug| problem["type"].as_str().unwrap().ends_with(slug)),
            "{what}: {problem}"
        );
        assert_problem(
            t.signed_webhook(webhook).await,
            400,
            Some("malformed-webhook"),
        )
        .await;
    }
    // A body with no Content-Type at all is read as JSON (apps in the field omit it).
    assert_problem(
        t.post("/register", None, Vec::new()).await,
        400,
        Some("malformed-json"),
    )
    .await;
    t.assert_alive_and_nothing_pushed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_numbers_and_wrong_types_are_refused_field_by_field() {
    let t = Hostile::start().await;
    let mut register = valid_registration();
    register["email"] = json!(1e300);
    register["voipToken"] = json!(u64::MAX);
    register["personId"] = json!(-1);
    let problem = assert_problem(
        t.post(
            "/register",
            Some("application/json"),
            register.to_string().into_bytes(),
        )
        .await,
        400,
        Some("validation"),
    )
    .await;
    let mut fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["email", "personId", "voipToken"], "{problem}");

    // Numbers beyond f64 and beyond any integer type, where strings belong.
    let out_of_range = format!(
        r#"{{"email":"a@example.com","voipToken":1e999999,"msgToken":{},"personId":"{PERSON}"}}"#,
        "9".repeat(5_000)
    );
    let response = t
        .post(
            "/register",
            Some("application/json"),
            out_of_range.into_bytes(),
        )
        .await;
    assert_problem(response, 400, None).await;

    // In a webhook: a huge number in a field nobody reads is no reason to fail, one
    // where the call id belongs is a malformed webhook; neither is a 5xx.
    let mut ignored = call_membership("call-huge", &webex_id(PERSON));
    ignored["data"]["unusual"] = json!(1.7e308);
    assert_eq!(
        t.signed_webhook(ignored.to_string().into_bytes())
            .await
            .status()
            .as_u16(),
        204
    );
    let mut bad_call = call_membership("call-bad", &webex_id(PERSON));
    bad_call["data"]["callId"] = json!(1e300);
    let problem = assert_problem(
        t.signed_webhook(bad_call.to_string().into_bytes()).await,
        400,
        Some("malformed-webhook"),
    )
    .await;
    assert!(
        problem["field"].as_str().unwrap().contains("callId"),
        "{problem}"
    );
    let huge_literal =
        br#"{"resource":"callMemberships","event":"created","data":{"callId":1e999999}}"#;
    assert_problem(
        t.signed_webhook(huge_literal.to_vec()).await,
        400,
        Some("malformed-webhook"),
    )
    .await;
    // Only the first ring got through.
    let pushes = t.h.pushes(0, 1).await;
    assert_eq!(pushes[0].payload["webex"]["callId"], "call-huge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_error_of_every_route_is_a_problem() {
    let t = Hostile::start().await;
    let h = &t.h;
    let long_token = "ab".repeat(5_000);
    let requests = [
        h.http.get(h.url("/nowhere")),
        h.http.get(h.url("/register")),
        h.http.put(h.url("/webhook")),
        h.http.delete(h.url("/register/not-hex")),
        h.http.delete(h.url(&format!("/register/{long_token}"))),
        h.http.post(h.url("/webhook")).body("{}"),
        h.http.get(h.url("/admin/persons/nobody/devices")),
        h.http
            .get(h.url("/admin/persons/nobody/devices"))
            .bearer_auth(ADMIN),
        h.http
            .post(h.url("/admin/test-push"))
            .bearer_auth(ADMIN)
            .json(&json!({})),
        h.http
            .post(h.url("/admin/test-push"))
            .bearer_auth(ADMIN)
            .json(&json!({"token": token("e1"), "personId": PERSON, "channel": "voip"})),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "{status}");
        assert_problem(response, status, None).await;
    }
    t.assert_alive_and_nothing_pushed().await;
}

/// Writes `request` on a fresh connection and reads until the server closes it (or
/// `read_for` passes); returns the status and the body.
async fn raw_exchange(h: &Harness, request: &[u8], read_for: std::time::Duration) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = h.server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(read_for, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"));
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{answer}"
    );
    (status, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_layers_own_refusals_are_problem_documents() {
    let h = Harness::start_with(1, &[("REQUEST_TIMEOUT_SECS", "1".into())]).await;
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let wait = std::time::Duration::from_secs(10);
    for (request, status, slug) in [
        (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), 400, "malformed-request"),
        (
            b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"
                .to_vec(),
            400,
            "malformed-request",
        ),
        (
            b"POST /webhook HTTP/1.1\r\nHost: x\r\nA header without a colon\r\n\r\n".to_vec(),
            400,
            "malformed-request",
        ),
        (huge_header.into_bytes(), 431, "headers-too-large"),
        // A head that never ends: refused once REQUEST_TIMEOUT_SECS is over.
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec(), 408, "request-timeout"),
    ] {
        let (got, body) = raw_exchange(&h, &request, wait).await;
        assert_eq!(got, status, "{body}");
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["type"], format!("{PROBLEM_BASE}{slug}"), "{problem}");
        assert_eq!(problem["status"], status, "{problem}");
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{problem}");
    }
    // The server is unharmed and nothing was pushed.
    assert_eq!(h.get_status("/healthz").await, 200);
    assert!(h.standin.accepted().is_empty());
}

/// The series `/metrics` holds now (sample lines, comments left out).
async fn series(h: &Harness) -> std::collections::BTreeSet<String> {
    let text = h.metrics().await;
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        // The series name and labels, not its value.
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series.to_owned()))
        // Process metrics (CPU, memory, file descriptors) are fixed series, changing values.
        // The store's timing series appear as its background upkeep first runs (the
        // take-over every 2 s, pruning), whenever that falls: no request here reaches
        // the store.
        .filter(|series| !series.starts_with("webex_push_store_operation_duration_seconds"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_random_methods_and_paths_add_no_metric_series() {
    use rand::Rng as _;
    use rand::distributions::Alphanumeric;
    let h = Harness::start(1).await;
    let random_request = |rng: &mut rand::rngs::ThreadRng| {
        let len = rng.gen_range(1..4096);
        let method: String = rng
            .sample_iter(&Alphanumeric)
            .take(len)
            .map(char::from)
            .collect();
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let path = match rng.gen_range(0..4) {
            0 => "/register".to_owned(),
            1 => format!("/register/{}", token("ab")),
            2 => "/webhook".to_owned(),
            _ => {
                let len = rng.gen_range(1..200);
                let segment: String = rng
                    .sample_iter(&Alphanumeric)
                    .take(len)
                    .map(char::from)
                    .collect();
                format!("/{segment}")
            }
        };
        (method, path)
    };
    let send = |method: reqwest::Method, path: String| {
        let request = h.http.request(method, h.url(&path));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Every kind of answer these requests get, once, so their series exist.
    let mut rng = rand::thread_rng();
    for _ in 0..100 {
        let (method, path) = random_request(&mut rng);
        assert!((400..500).contains(&send(method, path).await));
    }
    // The first scrape counts itself: scrape once so its own series exist too.
    series(&h).await;
    let before = series(&h).await;
    for _ in 0..1_000 {
        let (method, path) = random_request(&mut rng);
        let status = send(method, path).await;
        assert!((400..500).contains(&status), "{status}");
    }
    let after = series(&h).await;
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(added.is_empty(), "new series: {added:#?}");
    assert!(
        after.iter().any(|s| s.contains(r#"method="other""#)),
        "random methods are counted as `other`"
    );
    assert_eq!(h.get_status("/healthz").await, 200);
}
