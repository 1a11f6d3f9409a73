//! The HTTP/2 server: accepts TLS connections, checks each stream and answers it, applying
//! the script (failures, latency, GOAWAY, dropped connections).

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::check::{self, Checked, ConnJwtCache, MAX_VOIP_PAYLOAD, Rules};
use crate::jwt::lock;
use crate::script::Rejection;
use crate::{AcceptedPush, Shared};

/// A client that has not finished TLS by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // A dropped sender (the `StandIn` was dropped) also stops the server.
            _ = stopped.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    connections.spawn(serve_connection(tcp, acceptor.clone(), Arc::clone(&shared)));
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(%error, "APNs stand-in failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn serve_connection(tcp: TcpStream, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    // Without it, small answers wait for Nagle's algorithm (~40 ms each).
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
        tracing::debug!("client did not negotiate ALPN h2; closing");
        return;
    }
    let mut connection = match h2::server::Builder::new()
        .max_concurrent_streams(shared.config.max_concurrent_streams)
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
    let max_jwt_age_secs = i64::try_from(shared.config.max_jwt_age.as_secs()).unwrap_or(i64::MAX);
    let mut jwt_cache = ConnJwtCache::default();
    let mut streams = 0_u64;
    let mut going_away = false;
    // Set by the first answer other than 403 (the provider token passed).
    let answered = Arc::new(AtomicBool::new(false));
    // Streams are answered on this connection's task rather than spawned: it spares a
    // cross-thread wake-up per request, which at load costs more than the work itself.
    let mut in_flight = FuturesUnordered::new();
    loop {
        let accepted = tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
            accepted = connection.accept() => accepted,
        };
        let Some(accepted) = accepted else { break };
        let (request, mut respond) = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, connection = id, "HTTP/2 connection ended with an error");
                break;
            }
        };
        streams += 1;
        shared.counters.requests.fetch_add(1, Ordering::AcqRel);
        if !answered.load(Ordering::Acquire) && !in_flight.is_empty() {
            shared
                .counters
                .streams_before_first_answer
                .fetch_add(1, Ordering::AcqRel);
        }
        if shared.script.take_refusal() {
            shared
                .counters
                .refused_streams
                .fetch_add(1, Ordering::AcqRel);
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            continue;
        }
        let drop_after = shared.script.drop_after_now();
        if drop_after != 0 && streams > drop_after {
            shared
                .counters
                .connections_dropped
                .fetch_add(1, Ordering::AcqRel);
            tracing::debug!(connection = id, "dropping connection as scripted");
            // Dropping the connection closes the socket: every open stream is lost.
            return;
        }
        let received_at = SystemTime::now();
        let rules = Rules {
            topics: &shared.config.topics,
            max_jwt_age_secs,
            jwts: &shared.jwts,
            now_secs: unix_secs(received_at),
        };
        let head = check::check_head(&request, &rules, &mut jwt_cache);
        let echo_id = match &head {
            Ok(_) => None,
            Err(_) => request_apns_id(&request),
        };
        let wants_record =
            shared.config.record_accepted || shared.subscribed.load(Ordering::Acquire);
        let headers = (head.is_ok() && wants_record).then(|| header_list(&request));
        let stream = Stream {
            shared: Arc::clone(&shared),
            connection: id,
            answered: Arc::clone(&answered),
            received_at,
            head,
            headers,
            echo_id,
        };
        in_flight.push(stream.answer(request.into_body(), respond));

        let goaway_after = shared.script.goaway_after_now();
        if !going_away && goaway_after != 0 && streams >= goaway_after {
            going_away = true;
            shared.counters.goaways_sent.fetch_add(1, Ordering::AcqRel);
            connection.graceful_shutdown();
        }
    }
}

/// One request, checked up to its body, on its way to an answer.
struct Stream {
    shared: Arc<Shared>,
    connection: u64,
    /// The connection's "first answer sent" flag.
    answered: Arc<AtomicBool>,
    received_at: SystemTime,
    head: Result<Checked, Rejection>,
    headers: Option<Vec<(String, String)>>,
    echo_id: Option<String>,
}

impl Stream {
    async fn answer(self, mut body: RecvStream, mut respond: SendResponse<Bytes>) {
        // Read the whole body even when the answer is already known, so the client never
        // sees its request reset under it.
        let mut payload = Vec::new();
        let mut total = 0_usize;
        while let Some(chunk) = body.data().await {
            let Ok(chunk) = chunk else { return };
            let _ = body.flow_control().release_capacity(chunk.len());
            total += chunk.len();
            if payload.len() + chunk.len() <= MAX_VOIP_PAYLOAD {
                payload.extend_from_slice(&chunk);
            }
        }
        let shared = &self.shared;
        let echo_id = match &self.head {
            Ok(checked) => checked.apns_id.clone(),
            Err(_) => self.echo_id,
        };
        let outcome = self.head.and_then(|checked| {
            check::check_body(&payload, total, checked.payload_limit())?;
            match shared
                .script
                .failure_for(&checked.token.to_ascii_lowercase())
            {
                Some(rejection) => Err(rejection),
                None => Ok(checked),
            }
        });
        if let Some(latency) = shared.script.latency_now() {
            tokio::time::sleep(latency).await;
        }
        match outcome {
            Ok(checked) => {
                let apns_id = checked
                    .apns_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let Ok(response) = Response::builder()
                    .status(StatusCode::OK)
                    .header("apns-id", apns_id.as_str())
                    .body(())
                else {
                    return;
                };
                let record = self.headers.map(|headers| AcceptedPush {
                    token: checked.token,
                    headers,
                    topic: checked.topic,
                    push_type: checked.push_type.to_owned(),
                    priority: checked.priority,
                    expiration: checked.expiration,
                    apns_id,
                    collapse_id: checked.collapse_id,
                    payload: serde_json::from_slice(&payload).unwrap_or_default(),
                    body: payload,
                    jwt: checked.jwt,
                    received_at: self.received_at,
                    connection: self.connection,
                });
                // Recorded under the lock that `accepted()` takes, so a client that has
                // seen its 200 always finds its push recorded.
                let mut records = shared.config.record_accepted.then(|| lock(&shared.records));
                self.answered.store(true, Ordering::Release);
                if respond.send_response(response, true).is_err() {
                    return;
                }
                if let Some(record) = record {
                    if shared.subscribed.load(Ordering::Acquire) {
                        // No receiver left is fine: nobody is printing any more.
                        let _ = shared.pushes.send(record.clone());
                    }
                    if let Some(records) = records.as_mut() {
                        records.push(record);
                    }
                }
                drop(records);
                shared.push_accepted();
            }
            Err(rejection) => {
                let apns_id = echo_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                if rejection.status != 403 {
                    self.answered.store(true, Ordering::Release);
                }
                reject(shared, respond, &rejection, &apns_id);
            }
        }
    }
}

fn reject(shared: &Shared, mut respond: SendResponse<Bytes>, rejection: &Rejection, apns_id: &str) {
    let mut body = serde_json::json!({ "reason": rejection.reason.as_ref() });
    if let Some(timestamp) = rejection.timestamp_ms {
        body["timestamp"] = timestamp.into();
    }
    let mut response = Response::builder()
        .status(rejection.status)
        .header("apns-id", apns_id)
        .header("content-type", "application/json");
    if matches!(rejection.status, 429 | 503) {
        if let Some(secs) = shared.script.retry_after_now() {
            response = response.header("retry-after", secs);
        }
    }
    let Ok(response) = response.body(()) else {
        tracing::warn!(
            status = rejection.status,
            "scripted status is not a valid HTTP status"
        );
        return;
    };
    {
        let mut errors = lock(&shared.errors);
        *errors.by_status.entry(rejection.status).or_default() += 1;
        let reason: &Cow<'static, str> = &rejection.reason;
        *errors.by_reason.entry(reason.to_string()).or_default() += 1;
    }
    if let Ok(mut send) = respond.send_response(response, false) {
        let _ = send.send_data(Bytes::from(body.to_string()), true);
    }
}

fn request_apns_id<B>(request: &Request<B>) -> Option<String> {
    let value = request.headers().get("apns-id")?.to_str().ok()?;
    (value.len() == 36 && uuid::Uuid::try_parse(value).is_ok()).then(|| value.to_ascii_lowercase())
}

fn header_list<B>(request: &Request<B>) -> Vec<(String, String)> {
    request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn unix_secs(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
