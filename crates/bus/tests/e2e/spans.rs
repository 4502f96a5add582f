//! The consumer's spans are entered only while its code runs. A span held entered across an
//! `await` stays the thread's current span while the task waits, so whatever else that thread
//! polls meanwhile runs inside it: an HTTP request without a `traceparent`, started on the thread
//! while a handler waited for its database, joined the trace of the event being handled.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use smartflow_bus::domain::Envelope;
use smartflow_bus::{
    ConsumerConfig, ConsumerRunner, DatabaseTransaction, HandlerError, HandlerRegistry, Metrics,
    TypedHandler,
};
use smartflow_storage::chat_history;
use smartflow_testkit::{Backend, TestDb};
use tokio::sync::oneshot;

use crate::delivery::as_delivered;
use crate::fixture::*;

/// `StoreSaid` after a rendezvous: it tells `waiting` it is in the handler, then waits for
/// `go_on`.
struct Rendezvous {
    waiting: Mutex<Option<oneshot::Sender<()>>>,
    go_on: Mutex<Option<oneshot::Receiver<()>>>,
}

#[async_trait]
impl TypedHandler<Said> for Rendezvous {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: Said,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let waiting = self.waiting.lock().unwrap().take();
        let go_on = self.go_on.lock().unwrap().take();
        if let (Some(waiting), Some(go_on)) = (waiting, go_on) {
            waiting.send(()).unwrap();
            go_on.await.unwrap();
        }
        StoreSaid.handle(txn, event, envelope).await
    }
}

/// One thread polls both the consumer and another task (a current-thread runtime); the other
/// task looks at the thread's current span while the handler waits.
#[tokio::test(flavor = "current_thread")]
async fn a_task_polled_while_a_handler_waits_is_in_no_span_of_the_consumer() {
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry());
    let w = World::new(TestDb::new(Backend::Sqlite).await).await;
    let ids = w.publish(&["wait for me"]).await;
    let batch = as_delivered(&w, &ids).await;
    let (waiting, in_handler) = oneshot::channel();
    let (go_on, went_on) = oneshot::channel();
    let registry = HandlerRegistry::builder()
        .on::<Said, _>(Rendezvous {
            waiting: Mutex::new(Some(waiting)),
            go_on: Mutex::new(Some(went_on)),
        })
        .build()
        .unwrap();
    let runner = ConsumerRunner::for_route(
        w.t.db.clone(),
        &w.route,
        registry,
        Arc::new(smartflow_testkit::Unplugged),
        ConsumerConfig {
            // One event at a time: the path that enters a `handle` span per event.
            whole_batches: false,
            ..ConsumerConfig::default()
        },
        Arc::new(Metrics::default()),
    )
    .unwrap();

    let other_task = tokio::spawn(async move {
        in_handler.await.unwrap();
        let current = tracing::Span::current().metadata().map(|m| m.name());
        go_on.send(()).unwrap();
        current
    });
    let report = runner.process_batch(&batch).await.unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(
        other_task.await.unwrap(),
        None,
        "the other task ran inside a span of the consumer"
    );
    assert_eq!(chat_history::count(&w.t.db).await.unwrap(), 1);
    w.finish().await;
}
