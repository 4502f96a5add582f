use crate::config::KafkaConfig;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::error::KafkaError;

type Cluster = MockCluster<'static, DefaultProducerContext>;
type Job = Box<dyn FnOnce(&Cluster) + Send>;

/// An in-process, Kafka-protocol broker for development and tests: librdkafka's mock cluster,
/// listening on loopback ports that any Kafka client (ours included) can bootstrap from.
///
/// What it is not: durable (everything lives in memory and is gone on drop), complete (no
/// CreateTopics, so create topics with [`EmbeddedBroker::create_topic`]; a Metadata or Produce
/// request naming an unknown topic auto-creates it with 4 partitions), or unbounded (each partition
/// keeps only about the last 5 MB / 100 000 messages).
///
/// Consumer groups are slow to settle: the first member of a group waits out a 3 s initial
/// rebalance delay, and after the *last* member leaves, the mock does not mark the group empty,
/// so the next member waits `session.timeout.ms` minus 1 s (44 s with the 45 s default). Tests that
/// restart a group's only member should put a short `session.timeout.ms` (e.g. 6000) in
/// `KafkaConfig::extra`.
///
/// `MockCluster` holds a raw pointer and so is neither `Send` nor `Sync`; it lives on its own
/// thread here and every method sends that thread a job. That makes this type `Send + Sync`, so it
/// can be shared across Tokio tasks. Each method blocks the caller until the job is done, which is
/// an in-memory change applied by the mock's own thread: well under a millisecond, no network I/O.
pub struct EmbeddedBroker {
    // `Option` so `drop` can close the channel, which is what tells the owner thread to stop.
    jobs: Option<mpsc::Sender<Job>>,
    owner: Option<JoinHandle<()>>,
    bootstrap_servers: String,
}

/// A produce error the embedded broker can return, named by what it makes our producer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceFault {
    /// `NOT_LEADER_FOR_PARTITION`: retriable. librdkafka refreshes metadata and resends, so the
    /// message is still delivered if the injected errors run out before `message_timeout`; use it
    /// to check that transient broker trouble is invisible to callers.
    NotLeader,
    /// `MSG_SIZE_TOO_LARGE`: the message's own fault. The deliveries in the failed request fail
    /// at once, and `send_batch` reports them as rejected.
    MessageTooLarge,
    /// `TOPIC_AUTHORIZATION_FAILED`: the infrastructure's (an ACL), reported as unavailable. librdkafka also marks the
    /// topic as failed, so later messages to it fail the same way until the producer's next
    /// metadata refresh (`topic.metadata.refresh.interval.ms`, 5 min by default), even after the
    /// injected errors are used up.
    TopicAuthorizationFailed,
    /// `OUT_OF_ORDER_SEQUENCE_NUMBER`: the broker and the idempotent producer disagree about the
    /// sequence. With `enable.gapless.guarantee=true` librdkafka treats it as a fatal error that
    /// poisons the producer, which is how tests reach the producer's rebuild.
    OutOfOrderSequence,
}

impl ProduceFault {
    fn code(self) -> RDKafkaRespErr {
        match self {
            Self::NotLeader => RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            Self::MessageTooLarge => RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
            Self::TopicAuthorizationFailed => {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED
            }
            Self::OutOfOrderSequence => {
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER
            }
        }
    }
}

impl EmbeddedBroker {
    /// Starts a cluster of `brokers` brokers (ids 1..=brokers) on loopback ports chosen by the OS,
    /// so several can run side by side; returns once they accept connections.
    pub fn start(brokers: i32) -> Result<Self, KafkaError> {
        if brokers < 1 {
            return Err(KafkaError::Config(format!(
                "an embedded cluster needs at least one broker, not {brokers}"
            )));
        }
        let (jobs, job_queue) = mpsc::channel::<Job>();
        let (started, start_result) = mpsc::sync_channel(1);
        let owner = std::thread::Builder::new()
            .name("embedded-kafka".to_owned())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        let _ = started.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = started.send(Ok(cluster.bootstrap_servers()));
                // Ends when the `EmbeddedBroker` drops its sender; the cluster is destroyed here,
                // on the thread that created it.
                while let Ok(job) = job_queue.recv() {
                    job(&cluster);
                }
            })
            .map_err(|e| KafkaError::Mock(format!("cannot spawn the broker thread: {e}")))?;
        let bootstrap_servers = start_result
            .recv()
            .map_err(|_| KafkaError::Mock("the broker thread died while starting".to_owned()))?
            .map_err(|e| KafkaError::Mock(format!("cannot start the mock cluster: {e}")))?;
        Ok(Self {
            jobs: Some(jobs),
            owner: Some(owner),
            bootstrap_servers,
        })
    }

    /// The `host:port,...` list to use as `KafkaConfig::brokers`.
    pub fn bootstrap_servers(&self) -> String {
        self.bootstrap_servers.clone()
    }

    /// A client configuration for this broker: its address, and a short consumer fetch wait,
    /// because the mock broker holds every empty fetch for the full wait instead of answering
    /// when data arrives (the default would add up to 100 ms to every delivery).
    pub fn client_config(&self) -> KafkaConfig {
        let mut config = KafkaConfig::new(self.bootstrap_servers());
        config.fetch_wait = std::time::Duration::from_millis(5);
        config
    }

    /// Creates `name` with `partitions` partitions and replication factor 1 (the mock keeps one
    /// in-memory copy whatever the factor). Fails if the topic already exists.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), KafkaError> {
        let name = name.to_owned();
        self.run(move |cluster| cluster.create_topic(&name, partitions, 1))?
            .map_err(|e| KafkaError::Mock(format!("cannot create topic: {e}")))
    }

    /// Disconnects every client from broker `broker_id` (1-based; -1 for all) and refuses new
    /// connections until [`EmbeddedBroker::set_broker_up`]. Partition leadership does not move.
    pub fn set_broker_down(&self, broker_id: i32) -> Result<(), KafkaError> {
        self.run(move |cluster| cluster.broker_down(broker_id))?
            .map_err(|e| KafkaError::Mock(format!("cannot take broker {broker_id} down: {e}")))
    }

    /// Lets broker `broker_id` (1-based; -1 for all) accept connections again.
    pub fn set_broker_up(&self, broker_id: i32) -> Result<(), KafkaError> {
        self.run(move |cluster| cluster.broker_up(broker_id))?
            .map_err(|e| KafkaError::Mock(format!("cannot bring broker {broker_id} up: {e}")))
    }

    /// Makes the next `count` Produce requests (cluster-wide, any topic) fail with `fault`. One
    /// request can carry many messages, for several partitions; all of them share its fate.
    pub fn inject_produce_errors(
        &self,
        count: usize,
        fault: ProduceFault,
    ) -> Result<(), KafkaError> {
        let errors = vec![fault.code(); count];
        self.run(move |cluster| cluster.request_errors(RDKafkaApiKey::Produce, &errors))
    }

    /// Drops any injected Produce errors that have not been used up yet.
    pub fn clear_produce_errors(&self) -> Result<(), KafkaError> {
        self.run(|cluster| cluster.clear_request_errors(RDKafkaApiKey::Produce))
    }

    /// Runs `op` on the owner thread and returns its result.
    fn run<T, F>(&self, op: F) -> Result<T, KafkaError>
    where
        T: Send + 'static,
        F: FnOnce(&Cluster) -> T + Send + 'static,
    {
        let gone = || KafkaError::Mock("the broker thread is gone".to_owned());
        let (reply, result) = mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or_else(gone)?;
        jobs.send(Box::new(move |cluster| {
            let _ = reply.send(op(cluster));
        }))
        .map_err(|_| gone())?;
        result.recv().map_err(|_| gone())
    }
}

impl Drop for EmbeddedBroker {
    /// Stops the cluster and waits for its thread, so its ports are free once this returns.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(owner) = self.owner.take() {
            if owner.join().is_err() {
                tracing::error!("the embedded Kafka broker thread panicked");
            }
        }
    }
}
