//! A transport decorator that tells a worker when the consumer has committed a batch, so the
//! worker acts on the batch's records at once instead of at its next scan (notification's
//! dispatcher sends the records its consumer stored).
//!
//! The consumer runner commits a batch's offsets only after the batch's database transaction has
//! committed, so a wrapper around the transport's `commit` sees exactly the moment the records
//! became visible.

use std::sync::Arc;

use async_trait::async_trait;
use smartflow_domain::{InboundTransport, IncomingMessage, TransportError};
use tokio::sync::Notify;

use super::decorate::{decorate_inbound, Decorate};

/// An inbound transport that fires `signal` after every batch whose effects are committed.
pub struct WakeOnCommit {
    inner: Arc<dyn InboundTransport>,
    signal: Arc<Notify>,
}

impl WakeOnCommit {
    /// Wraps `inner`; every commit through it fires `signal`.
    pub fn new(inner: Arc<dyn InboundTransport>, signal: Arc<Notify>) -> Self {
        Self { inner, signal }
    }
}

#[async_trait]
impl Decorate for WakeOnCommit {
    fn inner(&self) -> &dyn InboundTransport {
        &*self.inner
    }

    /// Commits through the wrapped transport, then fires the signal whatever the broker said:
    /// the database transaction holding the batch's records has committed before this is called.
    async fn commit_through(&self, messages: &[IncomingMessage]) -> Result<(), TransportError> {
        let result = self.inner.commit(messages).await;
        self.signal.notify_one();
        result
    }
}

decorate_inbound!(WakeOnCommit);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt as _;

    use super::super::decorate::script::Script;
    use super::*;

    #[tokio::test]
    async fn a_commit_fires_the_signal_and_a_receive_does_not() {
        for result in [Ok(()), Err(TransportError::unavailable("broker away"))] {
            let signal = Arc::new(Notify::new());
            let transport =
                WakeOnCommit::new(Arc::new(Script::answering(result.clone())), signal.clone());
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
