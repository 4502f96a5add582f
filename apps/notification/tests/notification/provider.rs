//! The Feishu webhook provider against a local fake of the webhook: the body and signature it
//! sends, and how it reads success, 5xx, timeouts and Feishu error codes.

use std::time::Duration;

use smartflow_notification::provider::{
    FeishuConfig, FeishuWebhook, NotificationProvider, OutgoingNotification, TargetPolicy,
};

use crate::support::*;

fn provider(fake: &FakeFeishu, secret: Option<&str>, timeout: Duration) -> FeishuWebhook {
    FeishuWebhook::new(FeishuConfig {
        targets: TargetPolicy::new(vec![fake.prefix()], Some(fake.url())).unwrap(),
        secret: secret.map(str::to_owned),
        timeout,
    })
    .unwrap()
}

fn message(title: &str, text: &str) -> OutgoingNotification {
    OutgoingNotification {
        target: None,
        title: title.into(),
        text: text.into(),
    }
}

#[tokio::test]
async fn a_signed_rich_text_message_is_accepted() {
    let fake = FakeFeishu::start(Some("SEC-test")).await;
    let feishu = provider(&fake, Some("SEC-test"), Duration::from_secs(5));
    let receipt = feishu
        .send(&message("New conversation", "line one\nline two"))
        .await
        .unwrap();
    assert!(receipt.response.contains("success"), "{}", receipt.response);
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let body = &requests[0];
    assert_eq!(body["msg_type"], "post");
    assert_eq!(
        body["content"]["post"]["zh_cn"]["title"],
        "New conversation"
    );
    assert_eq!(message_text(body), "line one\nline two");
    assert!(body["timestamp"].as_str().unwrap().parse::<i64>().is_ok());

    // A wrong secret is what the real bot reports as code 19021: permanent.
    let wrong = provider(&fake, Some("not-the-secret"), Duration::from_secs(5));
    let err = wrong.send(&message("", "x")).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.reason().contains("19021"), "{err}");
}

#[tokio::test]
async fn an_explicit_target_is_used_and_an_unlisted_one_never_called() {
    let fake = FakeFeishu::start(None).await;
    let feishu = provider(&fake, None, Duration::from_secs(5));
    let mut explicit = message("", "to another bot");
    explicit.target = Some(format!("{}other-bot", fake.prefix()));
    feishu.send(&explicit).await.unwrap();
    assert_eq!(fake.requests()[0]["msg_type"], "text");
    assert!(
        fake.requests()[0].get("sign").is_none(),
        "unsigned without a secret"
    );

    let mut unlisted = message("", "x");
    unlisted.target = Some("http://127.0.0.1:9/open-apis/bot/v2/hook/x".into());
    let err = feishu.send(&unlisted).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert_eq!(
        fake.requests().len(),
        1,
        "nothing sent to an unlisted target"
    );
}

#[tokio::test]
async fn failures_are_classified_from_the_wire() {
    let fake = FakeFeishu::start(None).await;
    let feishu = provider(&fake, None, Duration::from_millis(300));
    let cases = [
        (Answer::Status(500), true, "HTTP 500"),
        (Answer::Status(429), true, "HTTP 429"),
        (Answer::Code(200, 11232, "frequency limited"), true, "11232"),
        (Answer::Code(400, 9499, "Bad Request"), false, "9499"),
        (
            Answer::Code(200, 19024, "Key Words Not Found"),
            false,
            "19024",
        ),
        (Answer::Status(404), false, "HTTP 404"),
        (
            Answer::Hang(Duration::from_secs(3)),
            true,
            "did not answer within 300 ms",
        ),
    ];
    for (answer, retryable, needle) in cases {
        fake.script([answer]);
        let err = feishu.send(&message("", "x")).await.unwrap_err();
        assert_eq!(err.is_retryable(), retryable, "{answer:?}: {err}");
        assert!(err.reason().contains(needle), "{answer:?}: {err}");
        assert!(
            !err.reason().contains("test-token"),
            "the token stays hidden: {err}"
        );
    }
    assert_eq!(fake.requests().len(), cases.len());
}

#[tokio::test]
async fn an_unreachable_webhook_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let prefix = format!("http://127.0.0.1:{port}/open-apis/bot/v2/hook/");
    let feishu = FeishuWebhook::new(FeishuConfig {
        targets: TargetPolicy::new(vec![prefix.clone()], Some(format!("{prefix}zz-secret-zz")))
            .unwrap(),
        secret: None,
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let err = feishu.send(&message("", "x")).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(!err.reason().contains("zz-secret-zz"), "{err}");
}

/// An allowed webhook that answers with a redirect cannot lead the request elsewhere (an
/// internal address here): redirects are not followed, and the redirect is the send's failure.
#[tokio::test]
async fn a_redirect_is_not_followed() {
    let internal = FakeFeishu::start(None).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let location = internal.url();
    let redirector = axum::Router::new().fallback(move || {
        let location = location.clone();
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, location)],
            )
        }
    });
    tokio::spawn(async move { axum::serve(listener, redirector).await });
    let prefix = format!("http://127.0.0.1:{port}/open-apis/bot/v2/hook/");
    let feishu = FeishuWebhook::new(FeishuConfig {
        targets: TargetPolicy::new(vec![prefix.clone()], Some(format!("{prefix}bot"))).unwrap(),
        secret: None,
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    let err = feishu.send(&message("", "x")).await.unwrap_err();
    assert!(err.reason().contains("307"), "{err}");
    assert!(internal.requests().is_empty(), "the redirect was followed");
}
