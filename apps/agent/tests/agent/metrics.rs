//! `/metrics` of a running agent, read with a Prometheus text-format parser: the standard names,
//! their types and label sets, and values that move as events are published and consumed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use smartflow_agent::RunningAgent;
use smartflow_domain::SERVICE_TOKEN_HEADER;
use smartflow_testkit::metrics::{Kind, Scrape};

use crate::support::*;

const TABLE: (&str, &str) = ("table", "agent_outbox");
const SERVICE: (&str, &str) = ("service", "agent");
const CONSUMER: (&str, &str) = ("consumer", smartflow_agent_contracts::CONSUMER_GROUP);

/// One scrape of the agent's `/metrics`, with its service credential.
pub async fn scrape(agent: &RunningAgent) -> Scrape {
    let response = client()
        .get(format!("{}/metrics", agent.base_url()))
        .header(SERVICE_TOKEN_HEADER, SERVICE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    Scrape::parse(&response.text().await.unwrap())
}

fn labels(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// What a scrape after a round trip (4 chat messages, each consumed by the agent's own consumer)
/// shows against one `before` it.
pub async fn assert_metrics_moved(agent: &RunningAgent, before: &Scrape) {
    // The end-to-end latency is observed after the consumer's offset commit, which follows the
    // database commit the caller waited for: scrape until the four observations are in.
    let latency = "smartflow_end_to_end_latency_seconds";
    let after =
        smartflow_testkit::eventually("the four end-to-end latencies are observed", || async {
            let after = scrape(agent).await;
            let observed = after.observations(latency, &[SERVICE, CONSUMER])
                - before.observations(latency, &[SERVICE, CONSUMER]);
            (observed >= 4.0).then_some(after)
        })
        .await;
    for (name, kind, label_set) in [
        (
            "smartflow_bus_published_total",
            Kind::Counter,
            &["service"][..],
        ),
        ("smartflow_bus_consumed_total", Kind::Counter, &["service"]),
        (
            "smartflow_component_healthy",
            Kind::Gauge,
            &["service", "component"],
        ),
        (
            "smartflow_outbox_rows",
            Kind::Gauge,
            &["service", "table", "status"],
        ),
        (
            "smartflow_outbox_oldest_pending_age_seconds",
            Kind::Gauge,
            &["service", "table"],
        ),
        (
            "smartflow_relay_round_duration_seconds",
            Kind::Histogram,
            &["service", "table"],
        ),
        (
            "smartflow_relay_batch_rows",
            Kind::Histogram,
            &["service", "table"],
        ),
        (
            "smartflow_end_to_end_latency_seconds",
            Kind::Histogram,
            &["service", "consumer"],
        ),
    ] {
        assert_eq!(after.kind(name), Some(kind), "{name}");
        assert_eq!(after.label_names(name), labels(label_set), "{name}");
    }
    // The families of a fixed label set are there from the start, at 0 on a run with no error.
    for (name, label_set, series) in [
        (
            "smartflow_dead_total",
            &["service", "stage", "reason"][..],
            5,
        ),
        ("smartflow_handler_errors_total", &["service", "kind"], 4),
        ("smartflow_publish_errors_total", &["service", "kind"], 3),
    ] {
        assert_eq!(after.kind(name), Some(Kind::Counter), "{name}");
        assert_eq!(after.label_names(name), labels(label_set), "{name}");
        assert_eq!(after.samples(name, &[SERVICE]).count(), series, "{name}");
    }
    assert_eq!(
        after.value(
            "smartflow_dead_total",
            &[SERVICE, ("stage", "consume"), ("reason", "permanent")]
        ),
        0.0
    );

    let grew = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    assert!(grew("smartflow_bus_published_total", &[SERVICE]) >= 4.0);
    assert!(grew("smartflow_bus_consumed_total", &[SERVICE]) >= 4.0);
    for histogram in [
        "smartflow_relay_round_duration_seconds",
        "smartflow_relay_batch_rows",
    ] {
        assert!(
            after.observations(histogram, &[SERVICE, TABLE])
                > before.observations(histogram, &[SERVICE, TABLE]),
            "{histogram} observed the rounds"
        );
    }
    assert!(
        after.observations(latency, &[SERVICE, CONSUMER])
            >= before.observations(latency, &[SERVICE, CONSUMER]) + 4.0,
        "each consumed chat message's latency is observed"
    );
    assert_eq!(
        after.value(
            "smartflow_outbox_rows",
            &[SERVICE, TABLE, ("status", "consumed")]
        ),
        4.0
    );
    assert_eq!(
        after.value(
            "smartflow_component_healthy",
            &[SERVICE, ("component", "relay agent_outbox")]
        ),
        1.0
    );

    // The lag comes with librdkafka's statistics (every 5 s): every partition of the agent's
    // topic is reported, and with everything consumed and committed it comes down to 0.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = scrape(agent).await;
        let lags = now.gauges("smartflow_consumer_lag", &[SERVICE, CONSUMER]);
        if !lags.is_empty() && lags.iter().all(|lag| *lag == 0.0) {
            assert_eq!(
                now.label_names("smartflow_consumer_lag"),
                labels(&["service", "consumer", "topic", "partition"])
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer's lag never came down to 0: {lags:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
