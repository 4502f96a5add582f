//! What every inbound transport decorator shares: a decorator says what it does to a received
//! batch and to a commit ([`Decorate`]); [`decorate_inbound!`] makes it an `InboundTransport`
//! whose other calls go to the transport it wraps.

use async_trait::async_trait;
use smartflow_domain::{InboundTransport, IncomingMessage, TransportError};

/// What an inbound transport decorator changes about the transport it wraps.
#[async_trait]
pub(crate) trait Decorate: Send + Sync {
    /// The wrapped transport; `pause`, `resume`, `owns` and `assigned_partitions` go to it
    /// unchanged, so a decorator never changes what the runner learns about partitions.
    fn inner(&self) -> &dyn InboundTransport;

    /// What the runner gets of a batch the wrapped transport received: by default all of it.
    async fn received(
        &self,
        batch: Vec<IncomingMessage>,
    ) -> Result<Vec<IncomingMessage>, TransportError> {
        Ok(batch)
    }

    /// Commits `messages`, the runner's applied messages, through the wrapped transport.
    async fn commit_through(&self, messages: &[IncomingMessage]) -> Result<(), TransportError>;
}

/// Implements `InboundTransport` for a type that implements [`Decorate`]: receiving and
/// committing as it says, everything else forwarded to its inner transport. (A blanket impl
/// over every `Decorate` is not allowed for a trait of another crate.)
macro_rules! decorate_inbound {
    ($decorator:ty) => {
        #[async_trait::async_trait]
        impl smartflow_domain::InboundTransport for $decorator {
            async fn recv_batch(
                &self,
                max: usize,
                wait: std::time::Duration,
                linger: std::time::Duration,
            ) -> Result<Vec<smartflow_domain::IncomingMessage>, smartflow_domain::TransportError>
            {
                use $crate::consumer::decorate::Decorate as _;
                let batch = self.inner().recv_batch(max, wait, linger).await?;
                self.received(batch).await
            }

            async fn commit(
                &self,
                messages: &[smartflow_domain::IncomingMessage],
            ) -> Result<(), smartflow_domain::TransportError> {
                $crate::consumer::decorate::Decorate::commit_through(self, messages).await
            }

            async fn pause(&self) -> Result<(), smartflow_domain::TransportError> {
                $crate::consumer::decorate::Decorate::inner(self)
                    .pause()
                    .await
            }

            async fn resume(&self) -> Result<(), smartflow_domain::TransportError> {
                $crate::consumer::decorate::Decorate::inner(self)
                    .resume()
                    .await
            }

            fn owns(&self, topic: &str, partition: i32) -> bool {
                $crate::consumer::decorate::Decorate::inner(self).owns(topic, partition)
            }

            fn assigned_partitions(&self) -> usize {
                $crate::consumer::decorate::Decorate::inner(self).assigned_partitions()
            }

            fn lag(&self) -> Vec<smartflow_domain::PartitionLag> {
                $crate::consumer::decorate::Decorate::inner(self).lag()
            }
        }
    };
}

pub(crate) use decorate_inbound;

#[cfg(test)]
pub(crate) mod script {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use smartflow_domain::{InboundTransport, IncomingMessage, TransportError};

    /// A transport for decorator tests: hands out scripted batches (then an empty one), answers
    /// every commit with `commit_result`, and records the offsets of each commit.
    pub(crate) struct Script {
        pub batches: Mutex<VecDeque<Vec<IncomingMessage>>>,
        pub commits: Mutex<Vec<Vec<i64>>>,
        pub commit_result: Result<(), TransportError>,
    }

    impl Default for Script {
        fn default() -> Self {
            Self::answering(Ok(()))
        }
    }

    impl Script {
        pub fn answering(commit_result: Result<(), TransportError>) -> Self {
            Self {
                batches: Mutex::default(),
                commits: Mutex::default(),
                commit_result,
            }
        }
    }

    #[async_trait]
    impl InboundTransport for Script {
        async fn recv_batch(
            &self,
            _: usize,
            _: Duration,
            _: Duration,
        ) -> Result<Vec<IncomingMessage>, TransportError> {
            Ok(self.batches.lock().unwrap().pop_front().unwrap_or_default())
        }

        async fn commit(&self, messages: &[IncomingMessage]) -> Result<(), TransportError> {
            let mut offsets: Vec<i64> = messages.iter().map(|m| m.offset).collect();
            offsets.sort_unstable();
            self.commits.lock().unwrap().push(offsets);
            self.commit_result.clone()
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
}
