//! Tells the dispatcher when the consumer has committed a batch, so new records are sent at once
//! instead of at the next scan.
//!
//! The consumer runner commits a batch's offsets only after the batch's database transaction has
//! committed, so a wrapper around the transport's `commit` sees exactly the moment the records
//! became visible, without any change to the bus.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use smartflow_domain::{InboundTransport, IncomingMessage, TransportError};
use tokio::sync::Notify;

/// An inbound transport that fires `signal` after every batch whose effects are committed.
pub struct WakeOnCommit {
    inner: Arc<dyn InboundTransport>,
    signal: Arc<Notify>,
}

impl WakeOnCommit {
    pub fn new(inner: Arc<dyn InboundTransport>, signal: Arc<Notify>) -> Self {
        Self { inner, signal }
    }
}

#[async_trait]
impl InboundTransport for WakeOnCommit {
    /// As the wrapped transport's.
    async fn recv_batch(
        &self,
        max: usize,
        wait: Duration,
        linger: Duration,
    ) -> Result<Vec<IncomingMessage>, TransportError> {
        self.inner.recv_batch(max, wait, linger).await
    }

    /// Commits through the wrapped transport, then fires the signal whatever the broker said:
    /// the database transaction holding the batch's records has committed before this is called.
    async fn commit(&self, messages: &[IncomingMessage]) -> Result<(), TransportError> {
        let result = self.inner.commit(messages).await;
        self.signal.notify_one();
        result
    }

    async fn pause(&self) -> Result<(), TransportError> {
        self.inner.pause().await
    }

    async fn resume(&self) -> Result<(), TransportError> {
        self.inner.resume().await
    }

    fn owns(&self, topic: &str, partition: i32) -> bool {
        self.inner.owns(topic, partition)
    }

    fn assigned_partitions(&self) -> usize {
        self.inner.assigned_partitions()
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use super::*;

    struct Fixed(Result<(), TransportError>);

    #[async_trait]
    impl InboundTransport for Fixed {
        async fn recv_batch(
            &self,
            _: usize,
            _: Duration,
            _: Duration,
        ) -> Result<Vec<IncomingMessage>, TransportError> {
            Ok(Vec::new())
        }

        async fn commit(&self, _: &[IncomingMessage]) -> Result<(), TransportError> {
            self.0.clone()
        }

        async fn pause(&self) -> Result<(), TransportError> {
            Ok(())
        }

        async fn resume(&self) -> Result<(), TransportError> {
            Ok(())
        }

        fn owns(&self, _: &str, _: i32) -> bool {
            true
        }

        fn assigned_partitions(&self) -> usize {
            1
        }
    }

    #[tokio::test]
    async fn a_commit_fires_the_signal_and_a_receive_does_not() {
        for result in [Ok(()), Err(TransportError::unavailable("broker away"))] {
            let signal = Arc::new(Notify::new());
            let transport = WakeOnCommit::new(Arc::new(Fixed(result.clone())), signal.clone());
            transport
                .recv_batch(10, Duration::ZERO, Duration::ZERO)
                .await
                .unwrap();
            assert!(
                signal.notified().now_or_never().is_none(),
                "no signal on receive"
            );
            assert_eq!(
                transport.commit(&[]).await,
                result,
                "the broker's answer is kept"
            );
            // The permit is stored, so the dispatcher sees it even if it was busy.
            assert!(
                signal.notified().now_or_never().is_some(),
                "signalled after {result:?}"
            );
        }
    }
}
