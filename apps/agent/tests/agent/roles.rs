//! Clients post `user` messages only; `assistant` and `system` messages need the service
//! credential (`X-Smartflow-Service-Token`, configured as `SMARTFLOW_SERVICE_TOKEN`) next to
//! the user's token, and an agent with none configured refuses them always.

use reqwest::StatusCode;
use serde_json::json;
use smartflow_testkit::{Backend, TestDb};

use crate::behind_userauth::{send, Stack};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_service_posts_assistant_and_system_messages() {
    let t = TestDb::new(Backend::Sqlite).await;
    let stack = Stack::start(&t, with_service_token).await;
    let agent = &stack.agent;
    let (alice, alice_id) = stack.login("alice@example.com").await;
    let url = messages_url(agent, "roles-1");
    let post = |role: &str, credential: Option<&str>| {
        let mut request = client()
            .post(&url)
            .bearer_auth(&alice)
            .json(&json!({"role": role, "content": format!("a {role} message")}));
        if let Some(credential) = credential {
            request = request.header(SERVICE_TOKEN_HEADER, credential);
        }
        send(request)
    };

    let (status, body) = post("user", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for role in ["system", "assistant"] {
        for credential in [
            None,
            Some("a-wrong-credential-of-the-same-kind-0123"),
            Some(""),
        ] {
            let (status, body) = post(role, credential).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{role} {credential:?}: {body}"
            );
            assert_eq!(
                body["error"]["code"], "service_credential_required",
                "{body}"
            );
        }
    }
    for role in ["system", "assistant"] {
        let (status, body) = post(role, Some(SERVICE_TOKEN)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{role}: {body}");
    }

    let history = stack.wait_for_history("roles-1", &alice, 3).await;
    let roles: Vec<&str> = history
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "system", "assistant"]);
    // A service's message is part of the user's conversation, in the user's name.
    assert!(history.iter().all(|m| m["user_id"] == alice_id.as_str()));
    stack.stop().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_credential_only_user_messages_are_accepted() {
    let dir = TempDir::new();
    let mut config = sqlite_config(&dir);
    config.service.service_tokens = None;
    let agent = start(config).await;
    let url = messages_url(&agent, "roles-2");
    for credential in [SERVICE_TOKEN, ""] {
        let response = client()
            .post(&url)
            .header(SERVICE_TOKEN_HEADER, credential)
            .json(&json!({"user_id": "u1", "role": "system", "content": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(response).await,
            (
                StatusCode::FORBIDDEN,
                "service_credential_required".to_owned()
            )
        );
    }
    post_message(&agent, "roles-2", "u1", "user", "hi").await;
    stop(agent).await;
}
