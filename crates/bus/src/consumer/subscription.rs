//! A transport decorator that hands the consumer only the event types it subscribes to.
//!
//! A service reading another service's topic (userauth reads the agent's, which carries chat
//! messages above all) has handlers for a few of its event types. Without a filter, the
//! inbox-mode runner would find no handler for the others and record each as a dead inbox row:
//! one pointless write per message, and a dead-letter list full of noise. The filter reads the
//! relay's `event_type` header and skips other types; a skipped message's offset is committed
//! with a later commit once no subscribed message before it in its partition is still unapplied,
//! so skipping never lets a commit pass unapplied work. A message without the header is passed
//! on, so the runner reports it loudly.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use smartflow_domain::{InboundTransport, IncomingMessage, TransportError, EVENT_TYPE_HEADER};

use super::decorate::{decorate_inbound, Decorate};

/// Passes on the messages whose event type is subscribed to; see the module docs.
pub struct SubscribedEvents {
    inner: Arc<dyn InboundTransport>,
    event_types: BTreeSet<String>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Skipped messages whose offsets have not been committed yet.
    skipped: Vec<IncomingMessage>,
    /// Subscribed messages handed out and not committed yet: (topic, partition, offset).
    outstanding: Vec<(String, i32, i64)>,
}

impl State {
    /// Takes the skipped messages that no outstanding message of their partition precedes.
    fn take_committable(&mut self) -> Vec<IncomingMessage> {
        let outstanding = &self.outstanding;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.skipped)
            .into_iter()
            .partition(|s| {
                !outstanding
                    .iter()
                    .any(|(t, p, o)| *t == s.topic && *p == s.partition && *o < s.offset)
            });
        self.skipped = waiting;
        ready
    }
}

impl SubscribedEvents {
    /// Wraps `inner`, passing on the messages of `event_types` and those without the header.
    pub fn new<'a>(
        inner: Arc<dyn InboundTransport>,
        event_types: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Self {
            inner,
            event_types: event_types.into_iter().map(str::to_owned).collect(),
            state: Mutex::default(),
        }
    }

    fn wanted(&self, message: &IncomingMessage) -> bool {
        match message.header(EVENT_TYPE_HEADER) {
            Some(event_type) => self.event_types.contains(event_type),
            None => true,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Decorate for SubscribedEvents {
    fn inner(&self) -> &dyn InboundTransport {
        &*self.inner
    }

    /// The wrapped transport's batch without the unsubscribed messages; a poll that brought
    /// only those returns an empty batch (after committing what it safely can).
    async fn received(
        &self,
        batch: Vec<IncomingMessage>,
    ) -> Result<Vec<IncomingMessage>, TransportError> {
        if batch.is_empty() {
            return Ok(batch);
        }
        let (wanted, skipped): (Vec<_>, Vec<_>) = batch.into_iter().partition(|m| self.wanted(m));
        {
            let mut state = self.state();
            if !skipped.is_empty() {
                tracing::trace!(skipped = skipped.len(), "skipped unsubscribed event types");
                state.skipped.extend(skipped);
            }
            state.outstanding.extend(
                wanted
                    .iter()
                    .map(|m| (m.topic.clone(), m.partition, m.offset)),
            );
        }
        if wanted.is_empty() {
            self.commit_through(&[]).await?;
        }
        Ok(wanted)
    }

    /// Commits `messages` plus every skipped message that may go with them; on failure the
    /// skipped ones wait for the next commit.
    async fn commit_through(&self, messages: &[IncomingMessage]) -> Result<(), TransportError> {
        let skipped = {
            let mut state = self.state();
            state.outstanding.retain(|(t, p, o)| {
                !messages
                    .iter()
                    .any(|m| m.topic == *t && m.partition == *p && m.offset == *o)
            });
            state.take_committable()
        };
        if skipped.is_empty() {
            return self.inner.commit(messages).await;
        }
        let mut all = messages.to_vec();
        all.extend(skipped.iter().cloned());
        let result = self.inner.commit(&all).await;
        if result.is_err() {
            self.state().skipped.extend(skipped);
        }
        result
    }
}

decorate_inbound!(SubscribedEvents);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::decorate::script::Script;
    use super::*;

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
        let none = filter
            .recv_batch(10, Duration::ZERO, Duration::ZERO)
            .await
            .unwrap();
        assert!(none.is_empty());
        assert_eq!(
            *script.commits.lock().unwrap(),
            vec![vec![0, 1]],
            "an all-skipped batch is committed at once"
        );
        let got = filter
            .recv_batch(10, Duration::ZERO, Duration::ZERO)
            .await
            .unwrap();
        let offsets: Vec<i64> = got.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [2, 4], "chat skipped, unlabelled passed on");
        filter.commit(&got).await.unwrap();
        assert_eq!(
            script.commits.lock().unwrap()[1],
            vec![2, 3, 4],
            "skipped messages ride along with the next commit"
        );
    }

    #[tokio::test]
    async fn a_skipped_message_is_never_committed_past_unapplied_work() {
        let script = Arc::new(Script::default());
        script.batches.lock().unwrap().push_back(vec![
            message(2, Some("usage")),
            message(3, Some("chat")),
            message(4, Some("usage")),
        ]);
        let filter = SubscribedEvents::new(script.clone(), ["usage"]);
        let got = filter
            .recv_batch(10, Duration::ZERO, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(got.len(), 2);
        // The runner applied nothing yet (the first event failed and is held): committing the
        // empty prefix must not commit offset 3, which would skip offset 2 after a restart.
        filter.commit(&[]).await.unwrap();
        assert_eq!(*script.commits.lock().unwrap(), vec![Vec::<i64>::new()]);
        filter.commit(&got[..1]).await.unwrap();
        assert_eq!(script.commits.lock().unwrap()[1], vec![2, 3]);
    }
}
