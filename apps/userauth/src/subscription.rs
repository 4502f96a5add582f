//! A transport decorator that hands the consumer only the event types it subscribes to.
//!
//! Userauth reads the agent's topic, which carries every agent event (chat messages above all).
//! Without a filter, the inbox-mode runner would find no handler for those and record each as a
//! dead inbox row: one pointless write per chat message, and a dead-letter list full of noise.
//! The filter reads the relay's `event_type` header and skips other types; their offsets are
//! committed with the next commit (or at once when a whole batch is skipped), so they are not
//! read again. A message without the header is passed on, so the runner reports it loudly.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use smartflow_bus::relay::EVENT_TYPE_HEADER;
use smartflow_domain::{InboundTransport, IncomingMessage, TransportError};

/// Passes on the messages whose event type is subscribed to; see the module docs.
pub struct SubscribedEvents {
    inner: Arc<dyn InboundTransport>,
    event_types: BTreeSet<String>,
    /// Skipped messages whose offsets have not been committed yet. The runner commits each batch
    /// before it asks for the next, so this holds at most one batch's worth.
    skipped: Mutex<Vec<IncomingMessage>>,
}

impl SubscribedEvents {
    pub fn new<'a>(
        inner: Arc<dyn InboundTransport>,
        event_types: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Self {
            inner,
            event_types: event_types.into_iter().map(str::to_owned).collect(),
            skipped: Mutex::new(Vec::new()),
        }
    }

    fn wanted(&self, message: &IncomingMessage) -> bool {
        match message.header(EVENT_TYPE_HEADER) {
            Some(event_type) => self.event_types.contains(event_type),
            None => true,
        }
    }

    fn take_skipped(&self) -> Vec<IncomingMessage> {
        std::mem::take(&mut *self.skipped.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn keep_skipped(&self, messages: Vec<IncomingMessage>) {
        self.skipped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(messages);
    }

    /// Commits `messages` plus every skipped message waiting; on failure the skipped ones wait
    /// for the next commit.
    async fn commit_with_skipped(
        &self,
        messages: &[IncomingMessage],
    ) -> Result<(), TransportError> {
        let skipped = self.take_skipped();
        if skipped.is_empty() {
            return self.inner.commit(messages).await;
        }
        let mut all = messages.to_vec();
        all.extend(skipped.iter().cloned());
        let result = self.inner.commit(&all).await;
        if result.is_err() {
            self.keep_skipped(skipped);
        }
        result
    }
}

#[async_trait]
impl InboundTransport for SubscribedEvents {
    /// Waits until a batch holds at least one subscribed (or unlabelled) message and returns
    /// those; batches with none are committed and not returned.
    async fn recv_batch(
        &self,
        max: usize,
        linger: Duration,
    ) -> Result<Vec<IncomingMessage>, TransportError> {
        loop {
            let batch = self.inner.recv_batch(max, linger).await?;
            let (wanted, skipped): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|m| self.wanted(m));
            if !skipped.is_empty() {
                tracing::trace!(skipped = skipped.len(), "skipped unsubscribed event types");
                self.keep_skipped(skipped);
            }
            if !wanted.is_empty() {
                return Ok(wanted);
            }
            // Everything returned before was committed (the runner commits a batch before it
            // asks for the next), so committing these alone cannot skip unapplied work.
            self.commit_with_skipped(&[]).await?;
        }
    }

    async fn commit(&self, messages: &[IncomingMessage]) -> Result<(), TransportError> {
        self.commit_with_skipped(messages).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// Hands out scripted batches and records what was committed.
    #[derive(Default)]
    struct Script {
        batches: Mutex<VecDeque<Vec<IncomingMessage>>>,
        commits: Mutex<Vec<Vec<i64>>>,
    }

    #[async_trait]
    impl InboundTransport for Script {
        async fn recv_batch(
            &self,
            _: usize,
            _: Duration,
        ) -> Result<Vec<IncomingMessage>, TransportError> {
            self.batches
                .lock()
                .unwrap()
                .pop_front()
                .ok_or_else(|| TransportError::retryable("script ended"))
        }

        async fn commit(&self, messages: &[IncomingMessage]) -> Result<(), TransportError> {
            let mut offsets: Vec<i64> = messages.iter().map(|m| m.offset).collect();
            offsets.sort_unstable();
            self.commits.lock().unwrap().push(offsets);
            Ok(())
        }
    }

    fn message(offset: i64, event_type: Option<&str>) -> IncomingMessage {
        IncomingMessage {
            topic: "t".into(),
            partition: 0,
            offset,
            key: None,
            payload: None,
            headers: event_type
                .map(|t| vec![(EVENT_TYPE_HEADER.to_owned(), t.as_bytes().to_vec())])
                .unwrap_or_default(),
        }
    }

    #[tokio::test]
    async fn only_subscribed_and_unlabelled_messages_reach_the_consumer() {
        let script = Arc::new(Script::default());
        script.batches.lock().unwrap().extend([
            vec![message(0, Some("chat")), message(1, Some("chat"))],
            vec![
                message(2, Some("usage")),
                message(3, Some("chat")),
                message(4, None),
            ],
        ]);
        let filter = SubscribedEvents::new(script.clone(), ["usage"]);
        let got = filter.recv_batch(10, Duration::ZERO).await.unwrap();
        let offsets: Vec<i64> = got.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [2, 4], "chat skipped, unlabelled passed on");
        assert_eq!(
            *script.commits.lock().unwrap(),
            vec![vec![0, 1]],
            "an all-skipped batch is committed at once"
        );
        filter.commit(&got).await.unwrap();
        assert_eq!(
            script.commits.lock().unwrap()[1],
            vec![2, 3, 4],
            "skipped messages ride along with the next commit"
        );
    }
}
