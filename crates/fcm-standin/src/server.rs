//! The HTTP/2 server: the token endpoint (`POST /token`) and `messages:send`, each
//! request checked as Google checks it, then answered as scripted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::script::Rejection;
use crate::{AcceptedMessage, FCM_SCOPE, Issued, MAX_DATA_BYTES, Shared, lock};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies larger than this are refused unread (FCM's own limit is far above any
/// message: data is capped at 4 KiB).
const MAX_BODY: usize = 64 * 1024;
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    connections.spawn(serve_connection(tcp, acceptor.clone(), Arc::clone(&shared)));
                }
                Err(error) => {
                    tracing::warn!(%error, "FCM stand-in failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn serve_connection(tcp: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    if tls.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
        tracing::debug!("client did not negotiate ALPN h2; closing");
        return;
    }
    let mut connection = match h2::server::Builder::new()
        .max_concurrent_streams(1000)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake::<_, Bytes>(tls)
        .await
    {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%error, "HTTP/2 handshake failed");
            return;
        }
    };
    let id = shared.next_connection.fetch_add(1, Ordering::AcqRel);
    shared
        .counters
        .connections_opened
        .fetch_add(1, Ordering::AcqRel);
    let mut streams = JoinSet::new();
    while let Some(accepted) = connection.accept().await {
        let Ok((request, respond)) = accepted else {
            break;
        };
        streams.spawn(answer(Arc::clone(&shared), id, request, respond));
        while streams.try_join_next().is_some() {}
    }
}

async fn answer(
    shared: Arc<Shared>,
    connection: u64,
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
) {
    let (head, body) = request.into_parts();
    let body = read_body(body).await;
    if let Some(latency) = shared.script.latency_now() {
        tokio::time::sleep(latency).await;
    }
    let path = head.uri.path().to_owned();
    if path == "/token" {
        shared
            .counters
            .token_requests
            .fetch_add(1, Ordering::AcqRel);
        let (status, answer) = token(&shared, &head, body.as_deref());
        send_json(respond, status, &answer, None);
        return;
    }
    shared.counters.requests.fetch_add(1, Ordering::AcqRel);
    let received_at = SystemTime::now();
    match send(&shared, &head, body.as_deref(), &path) {
        Ok((message, access_token)) => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let name = format!("projects/{}/messages/{id}", shared.config.project_id);
            let answer = json!({ "name": name });
            // Recorded before the answer goes out, so a client that has seen its 200
            // always finds its message recorded.
            if shared.config.record_accepted {
                let raw = body.unwrap_or_default();
                lock(&shared.records).push(AcceptedMessage {
                    token: message.token,
                    data: message.data,
                    priority: message.priority,
                    ttl: message.ttl,
                    body: serde_json::from_slice(&raw).unwrap_or_default(),
                    raw,
                    name,
                    access_token,
                    received_at,
                    connection,
                });
            }
            send_json(respond, 200, &answer, None);
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            shared.accepted_notify.notify_waiters();
        }
        Err(rejection) => {
            {
                let mut errors = lock(&shared.errors);
                *errors.0.entry(rejection.status).or_default() += 1;
                let code = rejection
                    .error_code
                    .clone()
                    .unwrap_or_else(|| rejection.status_text.clone());
                *errors.1.entry(code).or_default() += 1;
            }
            let retry_after = matches!(rejection.status, 429 | 503)
                .then(|| shared.script.retry_after_now())
                .flatten();
            send_json(
                respond,
                rejection.status,
                &error_body(&rejection),
                retry_after,
            );
        }
    }
}

/// The whole body, `None` past [`MAX_BODY`] or when the stream broke.
async fn read_body(mut body: RecvStream) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut too_big = false;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if out.len() + chunk.len() > MAX_BODY {
            too_big = true;
        } else {
            out.extend_from_slice(&chunk);
        }
    }
    (!too_big).then_some(out)
}

fn send_json(
    mut respond: SendResponse<Bytes>,
    status: u16,
    body: &Value,
    retry_after: Option<u64>,
) {
    let mut response = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json; charset=UTF-8");
    if let Some(secs) = retry_after {
        response = response.header("retry-after", secs);
    }
    let Ok(response) = response.body(()) else {
        return;
    };
    if let Ok(mut stream) = respond.send_response(response, false) {
        let _ = stream.send_data(Bytes::from(body.to_string()), true);
    }
}

/// Google's error body for `messages:send`.
fn error_body(rejection: &Rejection) -> Value {
    let mut details = Vec::new();
    if let Some(code) = &rejection.error_code {
        details.push(json!({
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": code,
        }));
    }
    if let Some((field, description)) = rejection.field.as_deref() {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{ "field": field, "description": description }],
        }));
    }
    let mut error = json!({
        "code": rejection.status,
        "message": rejection.message,
        "status": rejection.status_text,
    });
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    json!({ "error": error })
}

/// The claims of a service-account assertion.
#[derive(serde::Deserialize)]
struct Assertion {
    scope: Option<String>,
    iat: Option<u64>,
    exp: u64,
}

/// `POST /token`: checks a JWT-bearer assertion and issues an access token.
fn token(shared: &Shared, head: &http::request::Parts, body: Option<&[u8]>) -> (u16, Value) {
    let refuse = |error: &str, description: &str| {
        (
            400,
            json!({ "error": error, "error_description": description }),
        )
    };
    if head.method != Method::POST {
        return (405, json!({ "error": "method_not_allowed" }));
    }
    let form_type = head
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return refuse(
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    let Some(form) =
        body.and_then(|b| serde_urlencoded::from_bytes::<BTreeMap<String, String>>(b).ok())
    else {
        return refuse("invalid_request", "Malformed form body.");
    };
    if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER) {
        return refuse("unsupported_grant_type", "Invalid grant_type.");
    }
    let Some(assertion) = form.get("assertion") else {
        return refuse("invalid_request", "Missing required parameter: assertion");
    };
    if shared.script.refusing_assertions() {
        return refuse("invalid_grant", "Invalid JWT Signature.");
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[shared.token_uri.as_str()]);
    validation.set_issuer(&[shared.config.client_email.as_str()]);
    validation.set_required_spec_claims(&["exp", "aud", "iss"]);
    let claims =
        match jsonwebtoken::decode::<Assertion>(assertion, &shared.decoding_key, &validation) {
            Ok(data) => data.claims,
            Err(error) => {
                tracing::debug!(%error, "assertion refused");
                return refuse("invalid_grant", &format!("Invalid JWT: {error}"));
            }
        };
    let Some(iat) = claims.iat else {
        return refuse("invalid_grant", "Invalid JWT: missing iat.");
    };
    let now = unix_secs(SystemTime::now());
    if iat > now + 60 || claims.exp > iat + 3600 {
        return refuse(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        );
    }
    if !claims
        .scope
        .as_deref()
        .is_some_and(|scope| scope.split(' ').any(|s| s == FCM_SCOPE))
    {
        return refuse("invalid_scope", "The FCM scope is missing.");
    }
    let serial = shared.tokens_issued.fetch_add(1, Ordering::AcqRel) + 1;
    let access_token = format!("ya29.standin-{serial}-{}", uuid::Uuid::new_v4().simple());
    let lifetime = shared.config.token_lifetime;
    lock(&shared.issued).insert(
        access_token.clone(),
        Issued {
            serial,
            expires: SystemTime::now() + lifetime,
        },
    );
    (
        200,
        json!({
            "access_token": access_token,
            "expires_in": lifetime.as_secs(),
            "token_type": "Bearer",
        }),
    )
}

/// What `messages:send` read from a valid message.
struct Message {
    token: String,
    data: BTreeMap<String, String>,
    priority: Option<String>,
    ttl: Option<String>,
}

fn unauthenticated() -> Rejection {
    Rejection::new(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, \
         login cookie or other valid authentication credential.",
    )
}

/// `POST /v1/projects/{p}/messages:send`: the checks, then the script.
fn send(
    shared: &Shared,
    head: &http::request::Parts,
    body: Option<&[u8]>,
    path: &str,
) -> Result<(Message, String), Rejection> {
    let project = path
        .strip_prefix("/v1/projects/")
        .and_then(|rest| rest.strip_suffix("/messages:send"))
        .ok_or_else(|| Rejection::new(404, "NOT_FOUND", format!("no such method: {path}")))?;
    if head.method != Method::POST {
        return Err(Rejection::new(405, "METHOD_NOT_ALLOWED", "use POST"));
    }
    let access_token = head
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthenticated)?
        .to_owned();
    {
        let issued = lock(&shared.issued);
        let revoked = shared.script.revoked_before.load(Ordering::Acquire);
        match issued.get(&access_token) {
            Some(token) if token.serial > revoked && token.expires > SystemTime::now() => {}
            _ => return Err(unauthenticated()),
        }
    }
    if project != shared.config.project_id {
        return Err(Rejection::new(
            403,
            "PERMISSION_DENIED",
            format!(
                "Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/{project}'"
            ),
        ));
    }
    let json_type = head
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return Err(Rejection::new(
            400,
            "INVALID_ARGUMENT",
            "Content-Type must be application/json",
        ));
    }
    let body = body.ok_or_else(|| Rejection::new(413, "INVALID_ARGUMENT", "request too large"))?;
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Rejection::new(
            400,
            "INVALID_ARGUMENT",
            format!("Invalid JSON payload received. {e}"),
        )
    })?;
    let message = check_message(&value)?;
    match shared.script.failure_for(&message.token) {
        Some(rejection) => Err(rejection),
        None => Ok((message, access_token)),
    }
}

fn unknown_name(name: &str, at: &str) -> Rejection {
    Rejection::new(
        400,
        "INVALID_ARGUMENT",
        format!(
            "Invalid JSON payload received. Unknown name \"{name}\" at '{at}': Cannot find field."
        ),
    )
}

/// The body's shape as the v1 API requires it for a data message to one token.
fn check_message(value: &Value) -> Result<Message, Rejection> {
    let Value::Object(top) = value else {
        return Err(Rejection::new(
            400,
            "INVALID_ARGUMENT",
            "the body must be a JSON object",
        ));
    };
    if let Some(name) = top
        .keys()
        .find(|k| !matches!(k.as_str(), "message" | "validate_only"))
    {
        return Err(unknown_name(name, ""));
    }
    let Some(Value::Object(message)) = top.get("message") else {
        return Err(Rejection::invalid("message", "message is required"));
    };
    const FIELDS: [&str; 9] = [
        "name",
        "data",
        "notification",
        "android",
        "webpush",
        "apns",
        "fcm_options",
        "token",
        "topic",
    ];
    if let Some(name) = message.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(unknown_name(name, "message"));
    }
    let token = match message.get("token") {
        Some(Value::String(token)) if !token.is_empty() => token.clone(),
        _ => {
            return Err(Rejection::invalid(
                "message.token",
                "a registration token is required",
            ));
        }
    };
    let data = match message.get("data") {
        None => BTreeMap::new(),
        Some(Value::Object(data)) => string_data(data, "message.data")?,
        Some(_) => return Err(Rejection::invalid("message.data", "data must be an object")),
    };
    let (mut priority, mut ttl) = (None, None);
    match message.get("android") {
        None => {}
        Some(Value::Object(android)) => {
            const ANDROID: [&str; 7] = [
                "collapse_key",
                "priority",
                "ttl",
                "restricted_package_name",
                "data",
                "notification",
                "direct_boot_ok",
            ];
            if let Some(name) = android.keys().find(|k| !ANDROID.contains(&k.as_str())) {
                return Err(unknown_name(name, "message.android"));
            }
            match android.get("priority") {
                None => {}
                Some(Value::String(p)) if matches!(p.as_str(), "HIGH" | "NORMAL") => {
                    priority = Some(p.clone());
                }
                Some(other) => {
                    return Err(Rejection::invalid(
                        "message.android.priority",
                        format!("Invalid value at 'message.android.priority' ({other})"),
                    ));
                }
            }
            match android.get("ttl") {
                None => {}
                Some(Value::String(t)) if is_duration(t) => ttl = Some(t.clone()),
                Some(other) => {
                    return Err(Rejection::invalid(
                        "message.android.ttl",
                        format!(
                            "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), {other}"
                        ),
                    ));
                }
            }
            if let Some(Value::Object(data)) = android.get("data") {
                string_data(data, "message.android.data")?;
            }
        }
        Some(_) => {
            return Err(Rejection::invalid(
                "message.android",
                "android must be an object",
            ));
        }
    }
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_DATA_BYTES {
        return Err(Rejection::invalid(
            "message.data",
            format!("Android message is too big: data is {size} bytes, at most {MAX_DATA_BYTES}"),
        ));
    }
    Ok(Message {
        token,
        data,
        priority,
        ttl,
    })
}

/// Data values must be strings, and some keys are FCM's own.
fn string_data(
    data: &Map<String, Value>,
    field: &str,
) -> Result<BTreeMap<String, String>, Rejection> {
    let mut out = BTreeMap::new();
    for (index, (key, value)) in data.iter().enumerate() {
        if matches!(
            key.as_str(),
            "from" | "gcm" | "message_type" | "collapse_key"
        ) || key.starts_with("google.")
        {
            return Err(Rejection::invalid(
                &format!("{field}[{index}].key"),
                format!("Invalid data payload key: {key}"),
            ));
        }
        let Value::String(text) = value else {
            return Err(Rejection::invalid(
                &format!("{field}[{index}].value"),
                format!("Invalid value at '{field}[{index}].value' (TYPE_STRING), {value}"),
            ));
        };
        out.insert(key.clone(), text.clone());
    }
    Ok(out)
}

/// A protobuf Duration in JSON: seconds with up to nine decimals, then `s`.
fn is_duration(text: &str) -> bool {
    let Some(number) = text.strip_suffix('s') else {
        return false;
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.len() <= 9
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && (fraction.is_empty() || !number.ends_with('.'))
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
