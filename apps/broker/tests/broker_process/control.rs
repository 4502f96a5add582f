use reqwest::Method;
use serde_json::json;

use crate::fixture::{assert_error, BrokerProcess};

#[tokio::test(flavor = "multi_thread")]
async fn bad_control_requests_get_a_clear_4xx() {
    let broker = BrokerProcess::start(&["--brokers", "2", "--topic", "taken:1"]).await;

    assert_error(
        &broker.post("/brokers/3/down", None).await,
        404,
        "no_such_broker",
    );
    assert_error(
        &broker.post("/brokers/0/up", None).await,
        404,
        "no_such_broker",
    );
    assert_error(
        &broker.post("/brokers/one/down", None).await,
        400,
        "invalid_request",
    );

    let bad_fault = broker
        .post(
            "/produce-errors",
            Some(json!({"count": 1, "fault": "gremlins"})),
        )
        .await;
    assert_error(&bad_fault, 400, "invalid_request");
    let message = bad_fault.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("not_leader"),
        "names the allowed faults: {message}"
    );
    assert_error(
        &broker
            .post(
                "/produce-errors",
                Some(json!({"count": 0, "fault": "not_leader"})),
            )
            .await,
        400,
        "invalid_request",
    );
    assert_error(
        &broker.post("/produce-errors", None).await,
        400,
        "invalid_request",
    );

    assert_error(
        &broker
            .post(
                "/topics",
                Some(json!({"name": "no spaces", "partitions": 1})),
            )
            .await,
        400,
        "invalid_request",
    );
    assert_error(
        &broker
            .post("/topics", Some(json!({"name": "fine", "partitions": 0})))
            .await,
        400,
        "invalid_request",
    );
    assert_error(
        &broker
            .post("/topics", Some(json!({"name": "taken", "partitions": 1})))
            .await,
        409,
        "topic_exists",
    );

    assert_error(
        &broker.request(Method::GET, "/nowhere").await,
        404,
        "not_found",
    );
    assert_error(
        &broker.request(Method::GET, "/produce-errors").await,
        405,
        "method_not_allowed",
    );

    // Good requests still work after the bad ones.
    let (status, health) = broker.request(Method::GET, "/healthz").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["brokers"], 2);
    assert_eq!(
        health["bootstrap_servers"],
        broker.info.bootstrap_servers.as_str()
    );
}

/// The control API takes no credential, so it answers local tools only: start-up refuses an
/// address other than loopback, and a browser's request (an `Origin` header) or one through a
/// rebound DNS name (another `Host`) is refused before it reaches the cluster.
#[tokio::test(flavor = "multi_thread")]
async fn the_control_api_answers_local_tools_only() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smartflow-broker"))
        .args(["--control-addr", "0.0.0.0:0"])
        .output()
        .expect("run smartflow-broker");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SMARTFLOW_BROKER_CONTROL_ADDR 0.0.0.0:0 is not a loopback address"),
        "{stderr}"
    );

    let broker = BrokerProcess::start(&[]).await;
    let down = broker.url("/brokers/-1/down");
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("host", "evil.example"),
        ("host", "rebound.evil.example:8080"),
    ] {
        let response = broker
            .http
            .post(&down)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 403, "{name}: {value}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body["error"]["code"], "not_a_local_client",
            "{name}: {value}"
        );
    }
    let (status, health) = broker.request(Method::GET, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(
        health["down"],
        json!([]),
        "no refused request reached the cluster"
    );
    assert_eq!(broker.post("/brokers/-1/down", None).await.0, 200);
}
