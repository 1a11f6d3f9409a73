//! The Webex identity adapter against a local stand-in of `GET /v1/people/me`.

use std::time::{Duration, Instant};

use crate::identity_support::*;
use base64::Engine as _;
use chrono::TimeDelta;
use tokio::net::TcpListener;
use webex_push_adapters::identity::WebexIdentityConfig;
use webex_push_domain::{IdentityError, ManualClock, PersonId};

#[tokio::test]
async fn a_valid_token_names_its_person_as_webex_says() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);

    let ada = ask(&identity, ADA_TOKEN).await.unwrap();
    assert_eq!(ada, PersonId::parse(ADA).unwrap());
    let bob = ask(&identity, BOB_TOKEN).await.unwrap();
    assert_eq!(bob, PersonId::parse(BOB).unwrap());

    let seen = webex.seen();
    assert_eq!(seen[0].request_line, "GET /v1/people/me HTTP/1.1");
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some(format!("Bearer {ADA_TOKEN}").as_str())
    );
    assert_eq!(
        seen[0].headers.get("accept").map(String::as_str),
        Some("application/json")
    );
}

#[tokio::test]
async fn a_second_ask_within_the_ttl_is_answered_from_the_cache() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);

    ask(&identity, ADA_TOKEN).await.unwrap();
    clock.advance(TimeDelta::seconds(299));
    let again = ask(&identity, ADA_TOKEN).await.unwrap();
    assert_eq!(again, PersonId::parse(ADA).unwrap());
    assert_eq!(webex.requests(), 1);
}

#[tokio::test]
async fn after_the_ttl_webex_is_asked_again() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);

    ask(&identity, ADA_TOKEN).await.unwrap();
    clock.advance(TimeDelta::seconds(300));
    ask(&identity, ADA_TOKEN).await.unwrap();
    assert_eq!(webex.requests(), 2);
}

#[tokio::test]
async fn a_clock_set_back_does_not_stretch_a_cached_answer() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);

    ask(&identity, ADA_TOKEN).await.unwrap();
    clock.advance(TimeDelta::seconds(-60));
    ask(&identity, ADA_TOKEN).await.unwrap();
    assert_eq!(webex.requests(), 2);
}

#[tokio::test]
async fn a_token_webex_refuses_is_rejected_and_remembered_briefly() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);

    let refused = ask(&identity, UNKNOWN_TOKEN).await;
    assert!(
        matches!(refused, Err(IdentityError::Rejected)),
        "{refused:?}"
    );
    clock.advance(TimeDelta::seconds(29));
    let refused = ask(&identity, UNKNOWN_TOKEN).await;
    assert!(
        matches!(refused, Err(IdentityError::Rejected)),
        "{refused:?}"
    );
    assert_eq!(webex.requests(), 1);

    clock.advance(TimeDelta::seconds(1));
    let refused = ask(&identity, UNKNOWN_TOKEN).await;
    assert!(
        matches!(refused, Err(IdentityError::Rejected)),
        "{refused:?}"
    );
    assert_eq!(webex.requests(), 2);
}

#[tokio::test]
async fn a_403_is_a_rejection_too() {
    let webex = WebexStandIn::start().await;
    webex.set_mode(Mode::Status(403));
    let identity = identity(config(webex.base_url()), &ManualClock::new(start_time()));
    let refused = ask(&identity, ADA_TOKEN).await;
    assert!(
        matches!(refused, Err(IdentityError::Rejected)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn rejections_are_not_remembered_when_their_ttl_is_zero() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(
        WebexIdentityConfig {
            rejection_ttl: Duration::ZERO,
            ..config(webex.base_url())
        },
        &clock,
    );
    for _ in 0..2 {
        let refused = ask(&identity, UNKNOWN_TOKEN).await;
        assert!(
            matches!(refused, Err(IdentityError::Rejected)),
            "{refused:?}"
        );
    }
    assert_eq!(webex.requests(), 2);
}

#[tokio::test]
async fn webex_failing_is_unavailable_and_not_remembered() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);

    for status in [503, 500, 502, 429] {
        webex.set_mode(Mode::Status(status));
        let answer = ask(&identity, ADA_TOKEN).await;
        assert!(
            matches!(answer, Err(IdentityError::Unavailable(_))),
            "{status}: {answer:?}"
        );
    }
    webex.set_mode(Mode::Webex);
    assert_eq!(
        ask(&identity, ADA_TOKEN).await.unwrap(),
        PersonId::parse(ADA).unwrap()
    );
    assert_eq!(webex.requests(), 5);
}

#[tokio::test]
async fn webex_hanging_is_unavailable_within_the_timeout() {
    let webex = WebexStandIn::start().await;
    webex.set_mode(Mode::Hang);
    let identity = identity(
        WebexIdentityConfig {
            timeout: Duration::from_millis(300),
            ..config(webex.base_url())
        },
        &ManualClock::new(start_time()),
    );
    let started = Instant::now();
    let answer = ask(&identity, ADA_TOKEN).await;
    assert!(
        matches!(answer, Err(IdentityError::Unavailable(_))),
        "{answer:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(webex.requests(), 1);
}

#[tokio::test]
async fn webex_unreachable_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let identity = identity(
        config(format!("http://{addr}")),
        &ManualClock::new(start_time()),
    );
    let answer = ask(&identity, ADA_TOKEN).await;
    assert!(
        matches!(answer, Err(IdentityError::Unavailable(_))),
        "{answer:?}"
    );
}

#[tokio::test]
async fn an_answer_that_is_not_a_person_is_unknown_and_not_remembered() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(config(webex.base_url()), &clock);
    let room =
        base64::engine::general_purpose::STANDARD.encode(format!("ciscospark://us/ROOM/{ADA}"));
    let room_body: &'static str = format!(r#"{{"id":"{room}"}}"#).leak();
    for body in ["<html>maintenance</html>", r#"{"emails":[]}"#, room_body] {
        webex.set_mode(Mode::Body(body));
        let answer = ask(&identity, ADA_TOKEN).await;
        assert!(
            matches!(answer, Err(IdentityError::Unknown(_))),
            "{body}: {answer:?}"
        );
    }
    webex.set_mode(Mode::Status(404));
    let answer = ask(&identity, ADA_TOKEN).await;
    assert!(
        matches!(answer, Err(IdentityError::Unknown(_))),
        "{answer:?}"
    );
    assert_eq!(identity.cached_answers(), 0);
}

#[tokio::test]
async fn the_cache_never_holds_more_than_its_capacity() {
    let webex = WebexStandIn::start().await;
    let clock = ManualClock::new(start_time());
    let identity = identity(
        WebexIdentityConfig {
            cache_capacity: 2,
            ..config(webex.base_url())
        },
        &clock,
    );
    ask(&identity, ADA_TOKEN).await.unwrap();
    clock.advance(TimeDelta::seconds(1));
    ask(&identity, BOB_TOKEN).await.unwrap();
    clock.advance(TimeDelta::seconds(1));
    let _ = ask(&identity, UNKNOWN_TOKEN).await;
    assert_eq!(identity.cached_answers(), 2);
    // Ada's answer expired first, so it made room; Bob's is still cached.
    ask(&identity, BOB_TOKEN).await.unwrap();
    assert_eq!(webex.requests(), 3);
    ask(&identity, ADA_TOKEN).await.unwrap();
    assert_eq!(webex.requests(), 4);
}
