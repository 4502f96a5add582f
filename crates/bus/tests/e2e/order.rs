//! Per-key order: with two relays (each with its own database pool and producer, as two relay
//! processes have) of two workers each, events of one key reach Kafka in the order they were
//! written and the consumer applies them in that order, while chosen events fail on the way: a
//! broker unavailable for a message, a broker rejecting one, a handler failing retryably. The
//! route's policy decides what a failure does to the later events of its key.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use smartflow_bus::domain::{
    Envelope, KeyOrder, OutboundMessage, OutboundTransport, TransportError, EVENT_ID_HEADER,
};
use smartflow_bus::{
    DatabaseTransaction, HandlerError, HandlerRegistry, Relay, RelayConfig, TypedHandler,
};
use smartflow_kafka::KafkaProducer;
use smartflow_storage::chat_history::{self, NewChatMessage};
use smartflow_storage::ConnectionTrait;
use smartflow_testkit::{on_every_backend, TestDb};
use tokio_util::sync::CancellationToken;

use crate::fixture::*;

const KEYS: usize = 1000;
const PER_KEY: usize = 3;

/// A producer that fails chosen messages as the Kafka producer would: an unavailable message
/// makes the later messages of its key in the batch unavailable too (the transport's promise);
/// a rejected one fails alone.
struct Flaky {
    inner: KafkaProducer,
    unavailable_once: Mutex<HashSet<String>>,
    rejected: HashSet<String>,
}

#[async_trait]
impl OutboundTransport for Flaky {
    async fn send_batch(
        &self,
        messages: Vec<OutboundMessage>,
        within: Duration,
    ) -> Vec<Result<(), TransportError>> {
        let mut outcomes: Vec<Option<Result<(), TransportError>>> = Vec::new();
        let mut passed = Vec::new();
        let mut broken: HashSet<String> = HashSet::new();
        for message in messages {
            let id = message
                .headers
                .iter()
                .find(|(k, _)| k == EVENT_ID_HEADER)
                .map(|(_, v)| v.clone())
                .unwrap();
            let injected = if broken.contains(&message.key) {
                Some(TransportError::unavailable(
                    "an earlier message of the key failed",
                ))
            } else if self.unavailable_once.lock().unwrap().remove(&id) {
                broken.insert(message.key.clone());
                Some(TransportError::unavailable("injected: broker unavailable"))
            } else if self.rejected.contains(&id) {
                Some(TransportError::rejected("injected: record rejected"))
            } else {
                None
            };
            match injected {
                Some(e) => outcomes.push(Some(Err(e))),
                None => {
                    outcomes.push(None);
                    passed.push(message);
                }
            }
        }
        let mut sent = self.inner.send_batch(passed, within).await.into_iter();
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| sent.next().unwrap()))
            .collect()
    }

    fn delivery_timeout(&self) -> Duration {
        self.inner.delivery_timeout()
    }
}

/// Stores each event as a chat row (the consumer's applied order is the rows' id order) and
/// fails chosen events retryably a number of times first.
struct FailsFirst {
    failures_left: Mutex<HashMap<String, u32>>,
}

#[async_trait]
impl TypedHandler<Said> for FailsFirst {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: Said,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let id = envelope.event_id.to_string();
        if let Some(left) = self.failures_left.lock().unwrap().get_mut(&id) {
            if *left > 0 {
                *left -= 1;
                return Err(HandlerError::Retryable("injected: downstream busy".into()));
            }
        }
        chat_history::insert(
            txn,
            &NewChatMessage {
                event_id: id,
                conversation_id: event.conversation,
                user_id: "u".into(),
                role: "user".into(),
                content: event.content,
                created_at: envelope.occurred_at.timestamp_millis(),
            },
        )
        .await?;
        Ok(())
    }
}

/// Publishes `PER_KEY` events for each of `KEYS` keys, the keys interleaved (so one key's rows
/// are far apart in id order), 100 per transaction; returns `ids[key][seq]`.
async fn publish_interleaved(w: &World) -> Vec<Vec<String>> {
    let mut ids = vec![Vec::new(); KEYS];
    let mut txn = w.bus.begin(&w.t.db).await.unwrap();
    let mut in_txn = 0;
    for seq in 0..PER_KEY {
        for (key, key_ids) in ids.iter_mut().enumerate() {
            let conversation = format!("key-{key}");
            let said = Said {
                conversation: conversation.clone(),
                content: seq.to_string(),
            };
            let id = w.bus.publish(&txn, &conversation, &said).await.unwrap();
            key_ids.push(id.to_string());
            in_txn += 1;
            if in_txn == 100 {
                w.bus.commit(txn).await.unwrap();
                txn = w.bus.begin(&w.t.db).await.unwrap();
                in_txn = 0;
            }
        }
    }
    w.bus.commit(txn).await.unwrap();
    ids
}

/// The sequence numbers of each key in the order the consumer applied them.
async fn applied_order(w: &World) -> HashMap<String, Vec<usize>> {
    let backend = w.t.db.get_database_backend();
    let rows =
        w.t.db
            .query_all(sea_orm::Statement::from_string(
                backend,
                "SELECT conversation_id, content FROM chat_histories ORDER BY id",
            ))
            .await
            .unwrap();
    let mut order: HashMap<String, Vec<usize>> = HashMap::new();
    for row in rows {
        let key: String = row.try_get("", "conversation_id").unwrap();
        let content: String = row.try_get("", "content").unwrap();
        order.entry(key).or_default().push(content.parse().unwrap());
    }
    order
}

/// The sequence numbers of each key in the order they first reached the topic.
fn topic_order(messages: &[smartflow_bus::domain::IncomingMessage]) -> HashMap<String, Vec<usize>> {
    let mut seen = HashSet::new();
    let mut order: HashMap<String, Vec<usize>> = HashMap::new();
    for m in messages {
        let env = Envelope::from_slice(m.payload.as_deref().unwrap()).unwrap();
        if !seen.insert(env.event_id) {
            continue;
        }
        let said: Said = env.decode().unwrap();
        order
            .entry(said.conversation)
            .or_default()
            .push(said.content.parse().unwrap());
    }
    order
}

/// Which events fail how: spread over keys, each failing event followed by later events of
/// its key.
struct Injected {
    /// The first send of these is unavailable (the relay pauses; the row goes again).
    unavailable: Vec<(usize, usize)>,
    /// The broker rejects these: `dead`, never consumed.
    rejected: Vec<(usize, usize)>,
    /// The handler fails these twice before applying them.
    handler: Vec<(usize, usize)>,
}

fn injected() -> Injected {
    Injected {
        unavailable: vec![(7, 0), (333, 1), (901, 0)],
        rejected: vec![(42, 0), (555, 1)],
        handler: vec![(3, 0), (250, 0), (777, 1), (999, 0)],
    }
}

/// Two relays of two workers each, with their own pools and producers, and one consumer, until
/// every event that can be applied is.
async fn run_the_system(w: &World, ids: &[Vec<String>], inj: &Injected, key_order: KeyOrder) {
    let pick = |at: &[(usize, usize)]| -> HashSet<String> {
        at.iter().map(|&(k, s)| ids[k][s].clone()).collect()
    };
    let relay_config = RelayConfig {
        batch_size: 200,
        workers: 2,
        skip_topics: match key_order {
            KeyOrder::Skip => [w.route.topic.clone()].into(),
            KeyOrder::Block => Default::default(),
        },
        ..relay_config()
    };
    let relay = |owner: &str, db| -> Relay {
        let flaky = Flaky {
            inner: KafkaProducer::new(&w.kafka).unwrap(),
            unavailable_once: Mutex::new(pick(&inj.unavailable)),
            rejected: pick(&inj.rejected),
        };
        w.relay_through(
            db,
            RelayConfig {
                owner: owner.into(),
                ..relay_config.clone()
            },
            Arc::new(flaky),
        )
    };
    let a = relay("a", w.t.connect_again().await);
    let b = relay("b", w.t.connect_again().await);
    let handler = FailsFirst {
        failures_left: Mutex::new(pick(&inj.handler).into_iter().map(|id| (id, 2)).collect()),
    };
    let (consumer, _transport) = w.consumer(
        HandlerRegistry::builder()
            .on::<Said, _>(handler)
            .build()
            .unwrap(),
    );
    let shutdown = CancellationToken::new();
    let tasks = [
        tokio::spawn(a.run(shutdown.clone())),
        tokio::spawn(b.run(shutdown.clone())),
        tokio::spawn(consumer.run(shutdown.clone())),
    ];
    let applicable = KEYS * PER_KEY - inj.rejected.len();
    wait_until("every event that can be applied is applied", || async {
        let s = w.stats().await;
        s.consumed as usize == applicable && s.dead as usize == inj.rejected.len()
    })
    .await;
    shutdown.cancel();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        w.bus
            .metrics()
            .order_breaks
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// `KeyOrder::Block`: every key's events reach Kafka and are applied in the order they were
/// written, with only the rejected (dead) ones missing.
async fn two_relays_of_two_workers_keep_every_keys_order_through_failures(t: TestDb) {
    let w = World::ordered(t, KeyOrder::Block).await;
    let ids = publish_interleaved(&w).await;
    let inj = injected();
    run_the_system(&w, &ids, &inj, KeyOrder::Block).await;

    let dead: HashSet<(usize, usize)> = inj.rejected.iter().copied().collect();
    let expected = |key: usize| -> Vec<usize> {
        (0..PER_KEY)
            .filter(|&s| !dead.contains(&(key, s)))
            .collect()
    };
    let topic = topic_order(&w.read_topic(KEYS * PER_KEY - dead.len()).await);
    let applied = applied_order(&w).await;
    for key in 0..KEYS {
        let name = format!("key-{key}");
        assert_eq!(
            topic.get(&name),
            Some(&expected(key)),
            "{name} on the topic"
        );
        assert_eq!(
            applied.get(&name),
            Some(&expected(key)),
            "{name} as applied"
        );
    }
    w.finish().await;
}

/// `KeyOrder::Skip`: an event whose handler fails goes back to the outbox and is applied after
/// the later events of its key; every other key keeps its order.
async fn under_skip_a_failing_event_lets_the_later_events_of_its_key_go_on(t: TestDb) {
    let w = World::ordered(t, KeyOrder::Skip).await;
    let ids = publish_interleaved(&w).await;
    let inj = Injected {
        unavailable: vec![(7, 0)],
        rejected: vec![],
        handler: vec![(3, 0), (250, 0)],
    };
    run_the_system(&w, &ids, &inj, KeyOrder::Skip).await;

    let applied = applied_order(&w).await;
    let in_order: Vec<usize> = (0..PER_KEY).collect();
    for key in 0..KEYS {
        let name = format!("key-{key}");
        let got = applied.get(&name).unwrap();
        if inj.handler.iter().any(|&(k, _)| k == key) {
            // Its first event was sent back and applied after the two later ones.
            assert_eq!(got, &vec![1, 2, 0], "{name}");
        } else {
            assert_eq!(got, &in_order, "{name}");
        }
    }
    w.finish().await;
}

on_every_backend!(
    two_relays_of_two_workers_keep_every_keys_order_through_failures,
    under_skip_a_failing_event_lets_the_later_events_of_its_key_go_on,
);
