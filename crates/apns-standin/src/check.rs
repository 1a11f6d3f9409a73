//! Apple's request checks: method, path, headers, provider token and payload, each
//! failure answered with the status and reason APNs uses.

use http::{HeaderMap, Method, Request};

use crate::jwt::{JwtRegistry, Verdict};
use crate::script::Rejection;

/// Apple's payload limit for every push type but VoIP.
pub const MAX_PAYLOAD: usize = 4096;
/// Apple's payload limit for VoIP pushes.
pub const MAX_VOIP_PAYLOAD: usize = 5120;
/// How far in the future a token's `iat` may be before it is refused (clock skew).
const MAX_IAT_SKEW_SECS: i64 = 60;

/// The headers of a request that passed every check.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) token: String,
    pub(crate) topic: String,
    pub(crate) push_type: &'static str,
    pub(crate) priority: Option<u8>,
    pub(crate) expiration: Option<i64>,
    pub(crate) apns_id: Option<String>,
    pub(crate) collapse_id: Option<String>,
    pub(crate) jwt: String,
}

impl Checked {
    pub(crate) fn payload_limit(&self) -> usize {
        if self.push_type == "voip" {
            MAX_VOIP_PAYLOAD
        } else {
            MAX_PAYLOAD
        }
    }
}

/// What a request's checks need from the server.
pub(crate) struct Rules<'a> {
    pub(crate) topics: &'a [String],
    pub(crate) max_jwt_age_secs: i64,
    pub(crate) jwts: &'a JwtRegistry,
    pub(crate) now_secs: i64,
}

/// The last token a connection used and its verdict: clients send the same token on
/// every request, so this spares the shared registry's lock.
#[derive(Default)]
pub(crate) struct ConnJwtCache {
    last: Option<(String, Verdict, u64)>,
}

impl ConnJwtCache {
    fn verdict(&mut self, jwts: &JwtRegistry, jwt: &str) -> Verdict {
        let generation = jwts.generation();
        if let Some((cached, verdict, cached_generation)) = &self.last {
            if cached == jwt && *cached_generation == generation {
                return *verdict;
            }
        }
        let verdict = jwts.verdict(jwt);
        self.last = Some((jwt.to_owned(), verdict, generation));
        verdict
    }
}

/// Push types Apple knows, each with the suffix its topic must carry after the bundle id.
const PUSH_TYPES: &[(&str, &str)] = &[
    ("alert", ""),
    ("background", ""),
    ("mdm", ""),
    ("voip", ".voip"),
    ("complication", ".complication"),
    ("fileprovider", ".pushkit.fileprovider"),
    ("location", ".location-query"),
    ("liveactivity", ".push-type.liveactivity"),
    ("pushtotalk", ".voip-ptt"),
    ("widgets", ".push-type.widgets"),
    ("controls", ".push-type.controls"),
];

const CHECKED_HEADERS: &[&str] = &[
    "authorization",
    "apns-topic",
    "apns-push-type",
    "apns-priority",
    "apns-expiration",
    "apns-id",
    "apns-collapse-id",
];

/// Checks everything but the body, in the order Apple's answers suggest: routing, then
/// headers, then the provider token, then the topic and the rest.
pub(crate) fn check_head<B>(
    request: &Request<B>,
    rules: &Rules<'_>,
    cache: &mut ConnJwtCache,
) -> Result<Checked, Rejection> {
    if request.method() != Method::POST {
        return Err(Rejection::new(405, "MethodNotAllowed"));
    }
    let token = request
        .uri()
        .path()
        .strip_prefix("/3/device/")
        .ok_or(Rejection::new(404, "BadPath"))?;
    if token.contains('/') {
        return Err(Rejection::new(404, "BadPath"));
    }
    let headers = request.headers();
    if CHECKED_HEADERS
        .iter()
        .any(|name| headers.get_all(*name).iter().nth(1).is_some())
    {
        return Err(Rejection::new(400, "DuplicateHeaders"));
    }
    let jwt = check_provider_token(headers, rules, cache)?;
    if token.is_empty() {
        return Err(Rejection::new(400, "MissingDeviceToken"));
    }
    if !is_device_token(token) {
        return Err(Rejection::new(400, "BadDeviceToken"));
    }
    let push_type = match text(headers, "apns-push-type")? {
        // Apple treats a missing push type as an alert.
        None => "alert",
        Some(given) => PUSH_TYPES
            .iter()
            .map(|(name, _)| *name)
            .find(|name| *name == given)
            .ok_or(Rejection::new(400, "InvalidPushType"))?,
    };
    let topic = text(headers, "apns-topic")?.ok_or(Rejection::new(400, "MissingTopic"))?;
    check_topic(topic, push_type, rules.topics)?;
    let priority = match text(headers, "apns-priority")? {
        None => None,
        Some("10") => Some(10),
        Some("5") => Some(5),
        Some("1") => Some(1),
        Some(_) => return Err(Rejection::new(400, "BadPriority")),
    };
    // Apple's default priority is 10, which background pushes may not use.
    if push_type == "background" && priority.unwrap_or(10) == 10 {
        return Err(Rejection::new(400, "BadPriority"));
    }
    let expiration = text(headers, "apns-expiration")?
        .map(|v| v.parse::<i64>().ok().filter(|e| *e >= 0))
        .map(|v| v.ok_or(Rejection::new(400, "BadExpirationDate")))
        .transpose()?;
    let apns_id = text(headers, "apns-id")?
        .map(|v| {
            // Only the canonical 8-4-4-4-12 form, which is what Apple documents.
            if v.len() == 36 && uuid::Uuid::try_parse(v).is_ok() {
                Ok(v.to_ascii_lowercase())
            } else {
                Err(Rejection::new(400, "BadMessageId"))
            }
        })
        .transpose()?;
    let collapse_id = text(headers, "apns-collapse-id")?
        .map(|v| {
            if v.len() <= 64 {
                Ok(v.to_owned())
            } else {
                Err(Rejection::new(400, "BadCollapseId"))
            }
        })
        .transpose()?;
    Ok(Checked {
        token: token.to_owned(),
        topic: topic.to_owned(),
        push_type,
        priority,
        expiration,
        apns_id,
        collapse_id,
        jwt: jwt.to_owned(),
    })
}

/// Checks the body once it has been read in full (`body` may be cut at the limit).
pub(crate) fn check_body(body: &[u8], total_len: usize, limit: usize) -> Result<(), Rejection> {
    if total_len == 0 {
        return Err(Rejection::new(400, "PayloadEmpty"));
    }
    if total_len > limit {
        return Err(Rejection::new(413, "PayloadTooLarge"));
    }
    let starts_as_object = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if !starts_as_object || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
        // Apple's table has no reason for malformed JSON; this one is the stand-in's.
        return Err(Rejection::new(400, "BadPayload"));
    }
    Ok(())
}

fn check_provider_token<'h>(
    headers: &'h HeaderMap,
    rules: &Rules<'_>,
    cache: &mut ConnJwtCache,
) -> Result<&'h str, Rejection> {
    let value = headers
        .get("authorization")
        .ok_or(Rejection::new(403, "MissingProviderToken"))?;
    let jwt = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, jwt) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(jwt.trim())
        })
        .ok_or(Rejection::new(403, "InvalidProviderToken"))?;
    if jwt.is_empty() {
        return Err(Rejection::new(403, "MissingProviderToken"));
    }
    match cache.verdict(rules.jwts, jwt) {
        Verdict::Invalid => Err(Rejection::new(403, "InvalidProviderToken")),
        Verdict::Revoked { .. } => Err(Rejection::new(403, "ExpiredProviderToken")),
        Verdict::Valid { iat } if iat > rules.now_secs + MAX_IAT_SKEW_SECS => {
            Err(Rejection::new(403, "InvalidProviderToken"))
        }
        Verdict::Valid { iat } if rules.now_secs - iat > rules.max_jwt_age_secs => {
            Err(Rejection::new(403, "ExpiredProviderToken"))
        }
        Verdict::Valid { .. } => Ok(jwt),
    }
}

/// Topic rules: the bundle id plus the suffix the push type needs. A known bundle with
/// another type's suffix is a push-type mismatch (a configuration error, never a reason
/// to drop the device token); anything else is not this key's topic.
fn check_topic(topic: &str, push_type: &str, allowed: &[String]) -> Result<(), Rejection> {
    if topic.is_empty() || !topic.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Rejection::new(400, "BadTopic"));
    }
    let suffix = PUSH_TYPES
        .iter()
        .find(|(name, _)| *name == push_type)
        .map_or("", |(_, suffix)| *suffix);
    let matches = |bundle: &String, suffix: &str| {
        topic.len() == bundle.len() + suffix.len()
            && topic.starts_with(bundle.as_str())
            && topic.ends_with(suffix)
    };
    if allowed.iter().any(|bundle| matches(bundle, suffix)) {
        return Ok(());
    }
    let other_type = allowed
        .iter()
        .any(|bundle| PUSH_TYPES.iter().any(|(_, other)| matches(bundle, other)));
    if other_type {
        Err(Rejection::new(400, "InvalidPushType"))
    } else {
        Err(Rejection::new(400, "TopicDisallowed"))
    }
}

/// Device tokens are hex, a whole number of bytes, 32 to 100 bytes long (today's tokens
/// are 32; Apple says they may grow).
fn is_device_token(token: &str) -> bool {
    (64..=200).contains(&token.len())
        && token.len() % 2 == 0
        && token.bytes().all(|b| b.is_ascii_hexdigit())
}

fn text<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Rejection> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                let reason = match name {
                    "apns-topic" => "BadTopic",
                    "apns-push-type" => "InvalidPushType",
                    "apns-priority" => "BadPriority",
                    "apns-expiration" => "BadExpirationDate",
                    "apns-collapse-id" => "BadCollapseId",
                    _ => "BadMessageId",
                };
                Rejection::new(400, reason)
            })
        })
        .transpose()
}
