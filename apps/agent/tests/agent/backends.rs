use smartflow_testkit::{Backend, TestDb};

use crate::messages::chat_round_trip;
use crate::support::*;

async fn round_trip_on(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let agent = start(config_for(&test_db)).await;
    chat_round_trip(&agent).await;
    stop(agent).await;
    test_db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_round_trip() {
    round_trip_on(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_round_trip() {
    round_trip_on(Backend::MariaDb).await;
}
