use std::collections::HashSet;
use std::time::Duration;

use smartflow_domain::{InboundTransport, PartitionLag};
use smartflow_kafka::{EmbeddedBroker, KafkaConsumer, KafkaProducer};

use crate::fixture::{config_for, consume_until, message, position, send_all_ok, unique, PATIENCE};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_consumes_pauses_and_resumes() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let topic = unique("static");
    broker.create_topic(&topic, 2).unwrap();
    let mut config = config_for(&broker);
    config.group_instance_id = Some(unique("instance"));
    let producer = KafkaProducer::new(&config).unwrap();
    let batch = (0..10)
        .map(|i| message(&topic, &format!("k{i}"), "before", &[]))
        .collect();
    send_all_ok(&producer, batch).await;
    let member = KafkaConsumer::new(&config, &unique("group"), &[&topic]).unwrap();
    let got = consume_until(&member, |got| got.len() >= 10).await;
    assert!(member.assigned_partitions() > 0);
    assert!(member.owns(&topic, got[0].partition));
    assert!(!member.owns("another-topic", 0));

    // Paused, a member polls without receiving; resumed, it receives what arrived meanwhile.
    member.pause().await.unwrap();
    let batch = (0..5)
        .map(|i| message(&topic, &format!("k{i}"), "while paused", &[]))
        .collect();
    send_all_ok(&producer, batch).await;
    for _ in 0..3 {
        let polled = member
            .recv_batch(
                50,
                std::time::Duration::from_millis(500),
                std::time::Duration::ZERO,
            )
            .await
            .unwrap();
        assert!(polled.is_empty(), "a paused member receives nothing");
    }
    member.resume().await.unwrap();
    let after = consume_until(&member, |got| got.len() >= 5).await;
    assert!(after
        .iter()
        .all(|m| m.payload.as_deref() == Some(b"while paused".as_slice())));
    member.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_member_thrown_out_of_its_group_fetches_again_once_resumed() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let topic = unique("paused-maxpoll");
    broker.create_topic(&topic, 1).unwrap();
    let mut config = config_for(&broker);
    config
        .extra
        .push(("max.poll.interval.ms".into(), "7000".into()));
    let producer = KafkaProducer::new(&config).unwrap();
    send_all_ok(&producer, vec![message(&topic, "k", "first", &[])]).await;
    let member = KafkaConsumer::new(&config, &unique("group"), &[&topic]).unwrap();
    let first = consume_until(&member, |got| !got.is_empty()).await;
    member.commit(&first).await.unwrap();
    // Stuck (a database outage, a hung statement) past max.poll.interval.ms: thrown out of the
    // group. The next poll rejoins.
    member.pause().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(9)).await;
    // The caller resumes while the member is out of its group (no assignment to resume yet).
    member.resume().await.unwrap();
    send_all_ok(&producer, vec![message(&topic, "k", "second", &[])]).await;
    consume_until(&member, |got| {
        got.iter()
            .any(|m| m.payload.as_deref() == Some(b"second".as_slice()))
    })
    .await;
    member.close().await;
}

/// Waits (up to `PATIENCE`) until the member reports `expected` as its lag.
async fn lag_becomes(member: &KafkaConsumer, expected: &[PartitionLag]) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let lag = member.lag();
        if lag == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag stayed {lag:?}, expected {expected:?}"
        );
        // Polling keeps the member in its group and its statistics coming.
        let more = member
            .recv_batch(10, Duration::from_millis(50), Duration::ZERO)
            .await
            .unwrap();
        assert!(more.is_empty(), "nothing else was produced: {more:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_is_what_the_member_has_not_committed() {
    let broker = EmbeddedBroker::start(1).unwrap();
    let topic = unique("lag");
    broker.create_topic(&topic, 1).unwrap();
    let mut config = config_for(&broker);
    config.lag_interval = Duration::from_millis(100);
    let producer = KafkaProducer::new(&config).unwrap();
    let batch = (0..3)
        .map(|i| message(&topic, "k", &i.to_string(), &[]))
        .collect();
    send_all_ok(&producer, batch).await;
    let member = KafkaConsumer::new(&config, &unique("group"), &[&topic]).unwrap();
    let got = consume_until(&member, |got| got.len() >= 3).await;
    let lag = |lag| {
        vec![PartitionLag {
            topic: topic.clone(),
            partition: 0,
            lag,
        }]
    };
    member.commit(&got[..1]).await.unwrap();
    lag_becomes(&member, &lag(2)).await;
    member.commit(&got).await.unwrap();
    lag_becomes(&member, &lag(0)).await;
    member.close().await;
}
