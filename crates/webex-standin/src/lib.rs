//! A local stand-in for the parts of the Webex API webex-push talks to, for tests and
//! the demo: `GET /v1/people/me` and `/v1/webhooks` (list, create, read, update,
//! delete), with the rules Webex applies to webhooks (`../shared/reference/webex-today.md`
//! §4): a webhook is disabled after [`FAILURES_TO_DISABLE`] failed deliveries within
//! [`FAILURE_WINDOW`], never re-enabled by Webex itself, re-activated only by a `PUT`
//! with `status: active`, and one re-activated less than [`FAILURE_WINDOW`] ago is
//! disabled again at its next failure. `PUT` cannot deactivate.
//!
//! It also plays Webex's delivery side: [`WebexStandIn::deliver`] posts an event of a
//! webhook to its `targetUrl`, signed with the webhook's secret as Webex signs it
//! (`X-Spark-Signature`, HMAC-SHA1 of the body), and counts a failure when the answer is
//! not 2xx.
//!
//! Plain HTTP on 127.0.0.1; tokens and people are whatever the test adds.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac as _};
use serde_json::{Map, Value, json};
use sha1::Sha1;

/// Failed deliveries within [`FAILURE_WINDOW`] after which Webex disables a webhook.
pub const FAILURES_TO_DISABLE: usize = 100;
/// Webex's window for counting failures, and for "re-activated recently".
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// A webhook as the stand-in keeps it.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: String,
    pub name: String,
    pub target_url: String,
    pub resource: String,
    pub event: String,
    pub filter: Option<String>,
    pub secret: Option<String>,
    /// `creator` or `org`.
    pub owned_by: String,
    /// The person id of whoever created it.
    pub created_by: String,
    pub org_id: String,
    pub active: bool,
    pub created: DateTime<Utc>,
    reactivated_at: Option<Instant>,
    failures: VecDeque<Instant>,
}

impl Webhook {
    fn to_json(&self) -> Value {
        let mut webhook = json!({
            "id": self.id,
            "name": self.name,
            "targetUrl": self.target_url,
            "resource": self.resource,
            "event": self.event,
            "orgId": self.org_id,
            "createdBy": self.created_by,
            "appId": webex_id("APPLICATION", "00000000-0000-4000-8000-0000000000a1"),
            "ownedBy": self.owned_by,
            "status": if self.active { "active" } else { "inactive" },
            "created": self.created.to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        if let Some(filter) = &self.filter {
            webhook["filter"] = json!(filter);
        }
        if let Some(secret) = &self.secret {
            webhook["secret"] = json!(secret);
        }
        webhook
    }

    /// Webex's rule: disabled after too many failures in the window, or at the first
    /// failure after a re-activation within the window.
    fn count_failure(&mut self, now: Instant) {
        let recently_reactivated = self
            .reactivated_at
            .is_some_and(|at| now.duration_since(at) < FAILURE_WINDOW);
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|at| now.duration_since(*at) >= FAILURE_WINDOW)
        {
            self.failures.pop_front();
        }
        if recently_reactivated || self.failures.len() >= FAILURES_TO_DISABLE {
            self.active = false;
        }
    }
}

/// Someone a token belongs to.
#[derive(Debug, Clone)]
pub struct Person {
    /// The person id as Webex spells it (base64 of `ciscospark://us/PEOPLE/<uuid>`).
    pub id: String,
    pub org_id: String,
    /// An org admin (or a service app): may list, create and change org-wide webhooks.
    pub admin: bool,
    /// Has Webex Calling: may have `telephony_calls` webhooks.
    pub calling: bool,
}

impl Person {
    /// A Webex Calling user of the default org, not an admin.
    pub fn user(uuid: &str) -> Self {
        Self {
            id: webex_id("PEOPLE", uuid),
            org_id: default_org(),
            admin: false,
            calling: true,
        }
    }

    /// An admin of the default org.
    pub fn admin(uuid: &str) -> Self {
        Self {
            admin: true,
            ..Self::user(uuid)
        }
    }
}

/// `ciscospark://us/<kind>/<uuid>` in unpadded base64, as Webex spells ids.
pub fn webex_id(kind: &str, uuid: &str) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(format!("ciscospark://us/{kind}/{uuid}"))
}

fn default_org() -> String {
    webex_id("ORGANIZATION", "1eb65fdf-9643-417f-9974-ad72cae0e10f")
}

#[derive(Default)]
struct State {
    people: HashMap<String, Person>,
    webhooks: Vec<Webhook>,
    next_id: u64,
    /// `METHOD /path` of every API request, in order.
    requests: Vec<String>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running stand-in; stopped when [`WebexStandIn::shutdown`] is called or the value
/// is dropped with its runtime.
pub struct WebexStandIn {
    url: String,
    state: Shared,
    server: ServerHandle,
    http: reqwest::Client,
}

impl WebexStandIn {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> std::io::Result<Self> {
        let state: Shared = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let data = web::Data::new(Arc::clone(&state));
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .route("/v1/people/me", web::get().to(me))
                .route("/v1/webhooks", web::get().to(list))
                .route("/v1/webhooks", web::post().to(create))
                .route("/v1/webhooks/{id}", web::get().to(read))
                .route("/v1/webhooks/{id}", web::put().to(update))
                .route("/v1/webhooks/{id}", web::delete().to(delete))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self {
            url: format!("http://{address}"),
            state,
            server: handle,
            http: reqwest::Client::new(),
        })
    }

    /// The API's base URL, without `/v1` (what `WEBEX_API_URL` takes).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Lets `token` act as `person`.
    pub fn add_person(&self, token: &str, person: Person) {
        lock(&self.state).people.insert(token.to_owned(), person);
    }

    /// Every webhook, in creation order.
    pub fn webhooks(&self) -> Vec<Webhook> {
        lock(&self.state).webhooks.clone()
    }

    /// `METHOD /path` of every API request so far.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state).requests.clone()
    }

    /// Makes a webhook as `token`'s holder would through the API (a stray one, an
    /// org-wide one an admin made); the id.
    pub fn create_webhook(&self, token: &str, fields: Value) -> Result<String, String> {
        let mut state = lock(&self.state);
        let person = state
            .people
            .get(token)
            .cloned()
            .ok_or_else(|| "unknown token".to_owned())?;
        insert(&mut state, &person, &fields).map(|webhook| webhook.id)
    }

    /// Disables webhook `id` as Webex does once it failed [`FAILURES_TO_DISABLE`] times.
    pub fn disable(&self, id: &str) {
        if let Some(webhook) = lock(&self.state).webhooks.iter_mut().find(|w| w.id == id) {
            webhook.active = false;
        }
    }

    /// Delivers an event of webhook `id` as Webex would: the envelope with `data`,
    /// signed with the webhook's secret, posted to its `targetUrl`. `None` when the
    /// webhook is unknown or disabled (Webex sends nothing); else the answer's status
    /// (`0` when none came), a failure counted against the webhook unless it was 2xx.
    pub async fn deliver(&self, id: &str, event: &str, actor: &str, data: Value) -> Option<u16> {
        let (webhook, body) = {
            let state = lock(&self.state);
            let webhook = state
                .webhooks
                .iter()
                .find(|w| w.id == id && w.active)?
                .clone();
            let mut envelope = webhook.to_json();
            let fields = envelope.as_object_mut()?;
            fields.remove("secret");
            fields.insert("event".into(), json!(event));
            fields.insert("actorId".into(), json!(actor));
            fields.insert("data".into(), data);
            (webhook, envelope.to_string())
        };
        let mut request = self
            .http
            .post(&webhook.target_url)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(secret) = &webhook.secret {
            request = request.header("X-Spark-Signature", sign(secret, body.as_bytes()));
        }
        let status = match request.send().await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        };
        if !(200..300).contains(&status) {
            let mut state = lock(&self.state);
            if let Some(webhook) = state.webhooks.iter_mut().find(|w| w.id == id) {
                webhook.count_failure(Instant::now());
            }
        }
        Some(status)
    }

    /// Records a failed delivery of webhook `id` (as [`WebexStandIn::deliver`] does for a
    /// non-2xx answer), applying Webex's disable rule.
    pub fn count_failure(&self, id: &str) {
        if let Some(webhook) = lock(&self.state).webhooks.iter_mut().find(|w| w.id == id) {
            webhook.count_failure(Instant::now());
        }
    }

    pub async fn shutdown(self) {
        self.server.stop(true).await;
    }
}

/// `X-Spark-Signature`: lowercase hex HMAC-SHA1 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn message(status: actix_web::http::StatusCode, text: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"message": text, "trackingId": "STANDIN"}))
}

/// The caller, from `Authorization: Bearer <token>`; the request is logged either way.
fn caller(request: &HttpRequest, state: &Shared) -> Result<Person, HttpResponse> {
    let mut state = lock(state);
    state
        .requests
        .push(format!("{} {}", request.method(), request.path()));
    request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(|token| state.people.get(token).cloned())
        .ok_or_else(|| {
            message(
                actix_web::http::StatusCode::UNAUTHORIZED,
                "The request requires a valid access token set in the Authorization request header.",
            )
        })
}

/// Whether `person` may see and change `webhook`.
fn may_manage(person: &Person, webhook: &Webhook) -> bool {
    if webhook.owned_by == "org" {
        person.admin && person.org_id == webhook.org_id
    } else {
        webhook.created_by == person.id
    }
}

async fn me(request: HttpRequest, state: web::Data<Shared>) -> HttpResponse {
    match caller(&request, &state) {
        Ok(person) => HttpResponse::Ok().json(json!({
            "id": person.id,
            "orgId": person.org_id,
            "displayName": "Stand-in person",
        })),
        Err(refused) => refused,
    }
}

async fn list(request: HttpRequest, state: web::Data<Shared>) -> HttpResponse {
    let person = match caller(&request, &state) {
        Ok(person) => person,
        Err(refused) => return refused,
    };
    let org_wide = request
        .query_string()
        .split('&')
        .any(|p| p == "ownedBy=org");
    if org_wide && !person.admin {
        return message(
            actix_web::http::StatusCode::FORBIDDEN,
            "Only an org admin may list org-wide webhooks.",
        );
    }
    let state = lock(&state);
    let items: Vec<Value> = state
        .webhooks
        .iter()
        .filter(|w| {
            if org_wide {
                w.owned_by == "org" && w.org_id == person.org_id
            } else {
                w.owned_by != "org" && w.created_by == person.id
            }
        })
        .map(Webhook::to_json)
        .collect();
    HttpResponse::Ok().json(json!({ "items": items }))
}

fn string_field<'a>(fields: &'a Value, name: &str) -> Option<&'a str> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Creates a webhook of `person` from the API's fields.
fn insert(state: &mut State, person: &Person, fields: &Value) -> Result<Webhook, String> {
    let required = |name: &str| {
        string_field(fields, name)
            .map(str::to_owned)
            .ok_or_else(|| format!("{name} is required"))
    };
    let (name, target_url, resource, event) = (
        required("name")?,
        required("targetUrl")?,
        required("resource")?,
        required("event")?,
    );
    let owned_by = string_field(fields, "ownedBy")
        .unwrap_or("creator")
        .to_owned();
    if owned_by == "org" && !person.admin {
        return Err("only an org admin may create org-wide webhooks".into());
    }
    if resource == "telephony_calls" && !person.calling {
        return Err("the user has no Webex Calling license".into());
    }
    state.next_id += 1;
    let webhook = Webhook {
        id: webex_id(
            "WEBHOOK",
            &format!("00000000-0000-4000-8000-{:012x}", state.next_id),
        ),
        name,
        target_url,
        resource,
        event,
        filter: string_field(fields, "filter").map(str::to_owned),
        secret: string_field(fields, "secret").map(str::to_owned),
        owned_by,
        created_by: person.id.clone(),
        org_id: person.org_id.clone(),
        active: true,
        created: Utc::now(),
        reactivated_at: None,
        failures: VecDeque::new(),
    };
    state.webhooks.push(webhook.clone());
    Ok(webhook)
}

async fn create(
    request: HttpRequest,
    state: web::Data<Shared>,
    body: web::Json<Value>,
) -> HttpResponse {
    let person = match caller(&request, &state) {
        Ok(person) => person,
        Err(refused) => return refused,
    };
    let mut state = lock(&state);
    match insert(&mut state, &person, &body) {
        Ok(webhook) => HttpResponse::Ok().json(webhook.to_json()),
        Err(why) if why.contains("admin") || why.contains("license") => {
            message(actix_web::http::StatusCode::FORBIDDEN, &why)
        }
        Err(why) => message(actix_web::http::StatusCode::BAD_REQUEST, &why),
    }
}

/// The index of webhook `id` if `person` may manage it.
fn find(state: &State, person: &Person, id: &str) -> Option<usize> {
    state
        .webhooks
        .iter()
        .position(|w| w.id == id && may_manage(person, w))
}

fn not_found() -> HttpResponse {
    message(
        actix_web::http::StatusCode::NOT_FOUND,
        "The requested resource could not be found.",
    )
}

async fn read(
    request: HttpRequest,
    state: web::Data<Shared>,
    id: web::Path<String>,
) -> HttpResponse {
    let person = match caller(&request, &state) {
        Ok(person) => person,
        Err(refused) => return refused,
    };
    let state = lock(&state);
    match find(&state, &person, &id) {
        Some(index) => HttpResponse::Ok().json(state.webhooks[index].to_json()),
        None => not_found(),
    }
}

async fn update(
    request: HttpRequest,
    state: web::Data<Shared>,
    id: web::Path<String>,
    body: web::Json<Value>,
) -> HttpResponse {
    let person = match caller(&request, &state) {
        Ok(person) => person,
        Err(refused) => return refused,
    };
    let (Some(name), Some(target_url)) = (
        string_field(&body, "name"),
        string_field(&body, "targetUrl"),
    ) else {
        return message(
            actix_web::http::StatusCode::BAD_REQUEST,
            "name and targetUrl are required",
        );
    };
    let status = string_field(&body, "status");
    if status.is_some_and(|s| s != "active") {
        return message(
            actix_web::http::StatusCode::BAD_REQUEST,
            "status can only be set to active",
        );
    }
    let mut state = lock(&state);
    let Some(index) = find(&state, &person, &id) else {
        return not_found();
    };
    let webhook = &mut state.webhooks[index];
    webhook.name = name.to_owned();
    webhook.target_url = target_url.to_owned();
    if let Some(secret) = string_field(&body, "secret") {
        webhook.secret = Some(secret.to_owned());
    }
    if status == Some("active") && !webhook.active {
        webhook.active = true;
        webhook.reactivated_at = Some(Instant::now());
        webhook.failures.clear();
    }
    HttpResponse::Ok().json(webhook.to_json())
}

async fn delete(
    request: HttpRequest,
    state: web::Data<Shared>,
    id: web::Path<String>,
) -> HttpResponse {
    let person = match caller(&request, &state) {
        Ok(person) => person,
        Err(refused) => return refused,
    };
    let mut state = lock(&state);
    match find(&state, &person, &id) {
        Some(index) => {
            state.webhooks.remove(index);
            HttpResponse::NoContent().finish()
        }
        None => not_found(),
    }
}

/// The fields of a webhook as `POST /v1/webhooks` takes them.
pub fn webhook_fields(
    name: &str,
    target_url: &str,
    resource: &str,
    event: &str,
    filter: Option<&str>,
    secret: Option<&str>,
) -> Value {
    let mut fields = Map::new();
    fields.insert("name".into(), json!(name));
    fields.insert("targetUrl".into(), json!(target_url));
    fields.insert("resource".into(), json!(resource));
    fields.insert("event".into(), json!(event));
    if let Some(filter) = filter {
        fields.insert("filter".into(), json!(filter));
    }
    if let Some(secret) = secret {
        fields.insert("secret".into(), json!(secret));
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_is_disabled_after_a_hundred_failures_and_at_once_after_a_recent_reactivation() {
        let mut webhook = Webhook {
            id: "w".into(),
            name: "n".into(),
            target_url: "http://x".into(),
            resource: "messages".into(),
            event: "created".into(),
            filter: None,
            secret: None,
            owned_by: "creator".into(),
            created_by: "p".into(),
            org_id: "o".into(),
            active: true,
            created: Utc::now(),
            reactivated_at: None,
            failures: VecDeque::new(),
        };
        let now = Instant::now();
        for _ in 0..FAILURES_TO_DISABLE - 1 {
            webhook.count_failure(now);
        }
        assert!(webhook.active);
        webhook.count_failure(now);
        assert!(!webhook.active);

        webhook.active = true;
        webhook.failures.clear();
        webhook.reactivated_at = Some(now);
        webhook.count_failure(now + Duration::from_secs(1));
        assert!(
            !webhook.active,
            "one failure soon after a re-activation disables"
        );
    }
}
