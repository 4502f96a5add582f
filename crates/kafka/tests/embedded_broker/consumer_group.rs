use std::collections::HashSet;

use smartflow_domain::InboundTransport;
use smartflow_kafka::{EmbeddedBroker, KafkaConsumer, KafkaProducer};

use crate::fixture::{config_for, consume_until, message, position, send_all_ok, unique};

const COUNT: usize = 40;
const COMMITTED: usize = COUNT / 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_resumes_after_the_committed_offsets() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let topic = unique("offsets");
    broker.create_topic(&topic, 2).unwrap();
    let mut config = config_for(&broker);
    // When the last member of a group leaves, the mock cluster does not mark the group empty but
    // starts a rebalance that waits out the session timeout minus 1 s (44 s with the default
    // 45 s) before admitting the next member. A short session keeps that wait to 5 s.
    config
        .extra
        .push(("session.timeout.ms".to_owned(), "6000".to_owned()));
    let group = unique("group");

    let producer = KafkaProducer::new(&config).unwrap();
    let batch = (0..COUNT)
        .map(|i| message(&topic, &format!("k{}", i % 5), &i.to_string(), &[]))
        .collect();
    send_all_ok(&producer, batch).await;
    let all: HashSet<_> = {
        let reader = KafkaConsumer::new(&config, &unique("group"), &[&topic]).unwrap();
        let everything = consume_until(&reader, |got| got.len() >= COUNT).await;
        reader.close().await;
        everything.iter().map(position).collect()
    };
    assert_eq!(all.len(), COUNT);

    // The first member handles half the messages and commits exactly those. Messages of one
    // partition arrive in offset order, so what it commits is a prefix of each partition.
    let first = KafkaConsumer::new(&config, &group, &[&topic]).unwrap();
    let received = consume_until(&first, |got| got.len() >= COMMITTED).await;
    let handled = &received[..COMMITTED];
    first.commit(handled).await.unwrap();
    let committed: HashSet<_> = handled.iter().map(position).collect();
    first.close().await;

    let second = KafkaConsumer::new(&config, &group, &[&topic]).unwrap();
    let remaining: HashSet<_> = all.difference(&committed).cloned().collect();
    let resumed = consume_until(&second, |got| {
        let got: HashSet<_> = got.iter().map(position).collect();
        remaining.is_subset(&got)
    })
    .await;
    for m in &resumed {
        assert!(
            !committed.contains(&position(m)),
            "message at {:?} was committed but delivered again",
            position(m)
        );
    }
    assert_eq!(resumed.len(), COUNT - COMMITTED);
    second.close().await;
}
