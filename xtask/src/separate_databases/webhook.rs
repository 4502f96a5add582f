//! A stand-in for a Feishu custom-bot webhook: it answers every POST as Feishu does
//! (`{"code":0}`) and keeps the bodies it got, so the run can count the notifications sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};

type Calls = Arc<Mutex<Vec<String>>>;

/// The running stand-in; it stops when dropped.
pub struct FakeWebhook {
    addr: SocketAddr,
    calls: Calls,
    server: tokio::task::JoinHandle<()>,
}

impl FakeWebhook {
    pub async fn start() -> Result<Self> {
        let calls = Calls::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake webhook")?;
        let addr = listener.local_addr()?;
        let hooks = Router::new()
            .route("/open-apis/bot/v2/hook/{token}", post(receive))
            .with_state(calls.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, hooks).await;
        });
        Ok(Self {
            addr,
            calls,
            server,
        })
    }

    /// The prefix a target must start with (`SMARTFLOW_FEISHU_ALLOWED_TARGETS`).
    pub fn allowed_prefix(&self) -> String {
        format!("http://{}/open-apis/bot/v2/hook/", self.addr)
    }

    /// The default webhook (`SMARTFLOW_FEISHU_WEBHOOK_URL`).
    pub fn url(&self) -> String {
        format!("{}separate-databases", self.allowed_prefix())
    }

    /// How many calls so far had `needle` in their body.
    pub fn calls_mentioning(&self, needle: &str) -> usize {
        self.calls().iter().filter(|c| c.contains(needle)).count()
    }

    /// Every body received, in arrival order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Drop for FakeWebhook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(State(calls): State<Calls>, body: String) -> Json<serde_json::Value> {
    if let Ok(mut calls) = calls.lock() {
        calls.push(body);
    }
    Json(serde_json::json!({"code": 0, "msg": "success", "data": {}}))
}
