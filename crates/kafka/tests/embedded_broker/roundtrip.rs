use std::collections::HashMap;

use smartflow_kafka::{EmbeddedBroker, KafkaConsumer, KafkaProducer};

use crate::fixture::{config_for, consume_until, message, send_all_ok, unique};

const COUNT: usize = 100;
const KEYS: usize = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_comes_back_with_keys_headers_and_per_key_order() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let topic = unique("roundtrip");
    broker.create_topic(&topic, 4).unwrap();
    let config = config_for(&broker);

    let producer = KafkaProducer::new(&config).unwrap();
    let batch = (0..COUNT)
        .map(|i| {
            let seq = i.to_string();
            message(
                &topic,
                &format!("key-{}", i % KEYS),
                &format!("{{\"n\":{i}}}"),
                &[("seq", &seq), ("event-type", "order.created")],
            )
        })
        .collect();
    send_all_ok(&producer, batch).await;

    let consumer = KafkaConsumer::new(&config, &unique("group"), &[&topic]).unwrap();
    let received = consume_until(&consumer, |got| got.len() >= COUNT).await;
    assert_eq!(received.len(), COUNT, "no message twice, none missing");

    let mut last_seq_per_key: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut seen = [false; COUNT];
    for m in &received {
        assert_eq!(m.topic, topic);
        let seq: usize = m.header("seq").unwrap().parse().unwrap();
        assert!(!seen[seq], "seq {seq} received twice");
        seen[seq] = true;
        assert_eq!(m.header("event-type"), Some("order.created"));
        assert_eq!(
            m.payload.as_deref(),
            Some(format!("{{\"n\":{seq}}}").as_bytes())
        );
        let key = m.key.clone().unwrap();
        assert_eq!(key, format!("key-{}", seq % KEYS).into_bytes());
        if let Some(previous) = last_seq_per_key.insert(key, seq) {
            assert!(previous < seq, "key order broken: {seq} after {previous}");
        }
    }
    assert!(seen.iter().all(|s| *s));
    consumer.close().await;
}
