use smartflow_kafka::{EmbeddedBroker, KafkaConsumer, KafkaProducer};

use crate::fixture::{config_for, consume_until, message, send_all_ok, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_local_queue_is_still_delivered_whole() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let topic = unique("backpressure");
    broker.create_topic(&topic, 2).unwrap();
    let mut config = config_for(&broker);
    // A queue far smaller than the batch makes enqueueing hit QueueFull and wait for room.
    config
        .extra
        .push(("queue.buffering.max.messages".to_owned(), "10".to_owned()));
    let producer = KafkaProducer::new(&config).unwrap();

    let count = 300;
    let batch = (0..count)
        .map(|i| message(&topic, &format!("k{}", i % 3), &i.to_string(), &[]))
        .collect();
    send_all_ok(&producer, batch).await;

    let consumer = KafkaConsumer::new(&config, &unique("group"), &[&topic]).unwrap();
    let received = consume_until(&consumer, |got| got.len() >= count).await;
    assert_eq!(received.len(), count);
    consumer.close().await;
}
