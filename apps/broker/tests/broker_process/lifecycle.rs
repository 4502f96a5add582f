use std::process::Command;

use crate::fixture::BrokerProcess;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_broker_with_exit_code_zero_and_removes_the_ready_file() {
    let mut broker = BrokerProcess::start(&[]).await;
    let status = Command::new("kill")
        .args(["-TERM", &broker.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    assert_eq!(broker.wait_for_exit().await, Some(0));
    assert!(
        !broker.ready_file.exists(),
        "a stopped broker leaves no ready file"
    );
}
