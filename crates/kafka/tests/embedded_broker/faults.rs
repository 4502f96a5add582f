use smartflow_domain::OutboundTransport;
use smartflow_kafka::{EmbeddedBroker, KafkaProducer, ProduceFault};

use crate::fixture::{config_for, message, send_all_ok, unique, SEND_WITHIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_produce_errors_are_retried_inside_the_producer() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let topic = unique("not-leader");
    broker.create_topic(&topic, 1).unwrap();
    let producer = KafkaProducer::new(&config_for(&broker)).unwrap();

    broker
        .inject_produce_errors(3, ProduceFault::NotLeader)
        .unwrap();
    let batch = (0..5)
        .map(|i| message(&topic, "k", &i.to_string(), &[]))
        .collect();
    send_all_ok(&producer, batch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_rejected_and_the_producer_stays_usable() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let topic = unique("too-large");
    broker.create_topic(&topic, 1).unwrap();
    let producer = KafkaProducer::new(&config_for(&broker)).unwrap();
    send_all_ok(&producer, vec![message(&topic, "k", "warm-up", &[])]).await;

    broker
        .inject_produce_errors(1, ProduceFault::MessageTooLarge)
        .unwrap();
    let outcomes = producer
        .send_batch(vec![message(&topic, "k", "rejected", &[])], SEND_WITHIN)
        .await;
    let err = outcomes[0].as_ref().expect_err("the broker rejected it");
    assert!(!err.is_unavailable(), "{err:?}");

    send_all_ok(&producer, vec![message(&topic, "k", "accepted", &[])]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_failure_is_the_infrastructures_and_other_topics_still_work() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let denied = unique("denied");
    let allowed = unique("allowed");
    broker.create_topic(&denied, 1).unwrap();
    broker.create_topic(&allowed, 1).unwrap();
    let producer = KafkaProducer::new(&config_for(&broker)).unwrap();
    send_all_ok(&producer, vec![message(&denied, "k", "warm-up", &[])]).await;

    broker
        .inject_produce_errors(1, ProduceFault::TopicAuthorizationFailed)
        .unwrap();
    let outcomes = producer
        .send_batch(vec![message(&denied, "k", "rejected", &[])], SEND_WITHIN)
        .await;
    let err = outcomes[0].as_ref().expect_err("the broker refused it");
    assert!(
        err.is_unavailable(),
        "an ACL mistake is the operator's to fix, not the event's: {err:?}"
    );

    // librdkafka marks the denied topic as failed until its next metadata refresh; only that
    // topic, though.
    send_all_ok(&producer, vec![message(&allowed, "k", "accepted", &[])]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleared_produce_errors_are_not_returned() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let topic = unique("cleared");
    broker.create_topic(&topic, 1).unwrap();
    let producer = KafkaProducer::new(&config_for(&broker)).unwrap();

    broker
        .inject_produce_errors(5, ProduceFault::MessageTooLarge)
        .unwrap();
    broker.clear_produce_errors().unwrap();
    send_all_ok(&producer, vec![message(&topic, "k", "fine", &[])]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_error_makes_the_producer_rebuild_itself() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let topic = unique("fatal");
    broker.create_topic(&topic, 1).unwrap();
    let mut config = config_for(&broker);
    config
        .extra
        .push(("enable.gapless.guarantee".into(), "true".into()));
    let producer = KafkaProducer::new(&config).unwrap();
    send_all_ok(&producer, vec![message(&topic, "k", "warm-up", &[])]).await;
    assert_eq!(producer.rebuilds(), 0);

    broker
        .inject_produce_errors(1, ProduceFault::OutOfOrderSequence)
        .unwrap();
    let outcomes = producer
        .send_batch(
            vec![message(&topic, "k", "poisons the producer", &[])],
            SEND_WITHIN,
        )
        .await;
    let err = outcomes[0]
        .as_ref()
        .expect_err("the producer is fatally broken");
    assert!(err.is_unavailable(), "{err:?}");

    // The next send goes through a new producer, without anyone restarting anything.
    send_all_ok(
        &producer,
        vec![message(&topic, "k", "after the rebuild", &[])],
    )
    .await;
    assert_eq!(producer.rebuilds(), 1);
}
