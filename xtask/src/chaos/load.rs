//! The writers: concurrent HTTP clients posting chat messages whose content names the writer,
//! the conversation and the writer's sequence number in it (`w3-c17-n42`), so every message is
//! unique and the stored order can be checked against the order each writer sent in.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::rng::Rng;

/// How long one post may take before its outcome counts as unknown.
const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed post, so a down agent is not hammered.
const FAILURE_PAUSE: Duration = Duration::from_millis(50);

/// What the writer knows about one post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 202: the agent says it committed.
    Accepted,
    /// Refused before anything was sent (connection refused): certainly not committed.
    Refused,
    /// Timed out, connection cut mid-request, or a 5xx: it may or may not have committed; the
    /// outbox decides.
    Unknown,
    /// A 4xx: the harness sent something wrong.
    Rejected,
}

/// One post and what became of it.
#[derive(Debug, Clone)]
pub struct Post {
    pub content: String,
    pub outcome: Outcome,
}

/// The conversation id of conversation `c`.
pub fn conversation_id(c: usize) -> String {
    format!("chaos-c{c}")
}

/// The content of writer `w`'s `n`th message to conversation `c`.
pub fn content(w: usize, c: usize, n: u64) -> String {
    format!("w{w}-c{c}-n{n}")
}

/// `(writer, conversation, n)` back from a content, if it is one of ours.
pub fn parse_content(content: &str) -> Option<(usize, usize, u64)> {
    let mut parts = content.split('-');
    let w = parts.next()?.strip_prefix('w')?.parse().ok()?;
    let c = parts.next()?.strip_prefix('c')?.parse().ok()?;
    let n = parts.next()?.strip_prefix('n')?.parse().ok()?;
    parts.next().is_none().then_some((w, c, n))
}

/// Runs writer `w` until `until`: each post goes to a random agent and conversation, one after
/// another (the next is sent only after the previous answered), so one writer's messages to a
/// conversation have a definite order. With `pace`, posts start at most once per `pace`.
pub async fn writer(
    w: usize,
    agents: Vec<String>,
    conversations: usize,
    pace: Option<Duration>,
    until: Instant,
    seed: u64,
) -> Vec<Post> {
    let http = match reqwest::Client::builder().timeout(POST_TIMEOUT).build() {
        Ok(http) => http,
        Err(e) => {
            eprintln!("writer {w}: cannot build an HTTP client: {e}");
            return Vec::new();
        }
    };
    let mut rng = Rng::new(seed);
    let mut next_n: BTreeMap<usize, u64> = BTreeMap::new();
    let mut posts = Vec::new();
    let mut ticks = pace.map(|every| {
        let mut ticks = tokio::time::interval(every);
        // After a slow post, carry on at the pace rather than catch up in a burst.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    while Instant::now() < until {
        if let Some(ticks) = ticks.as_mut() {
            ticks.tick().await;
        }
        let c = rng.below(conversations);
        let agent = &agents[rng.below(agents.len())];
        let n = next_n.entry(c).or_insert(0);
        *n += 1;
        let content = content(w, c, *n);
        let body = serde_json::json!({
            // A conversation belongs to the user who started it, and every writer posts into
            // every conversation: one user per conversation keeps all of them accepted.
            "user_id": format!("chaos-user-c{c}"),
            "role": "user",
            "content": content,
        });
        let url = format!("{agent}/v1/conversations/{}/messages", conversation_id(c));
        let outcome = match http.post(url).json(&body).send().await {
            Ok(response) if response.status().as_u16() == 202 => Outcome::Accepted,
            Ok(response) if response.status().is_client_error() => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                eprintln!("writer {w}: `{content}` was rejected with {status}: {text}");
                Outcome::Rejected
            }
            Ok(_) => Outcome::Unknown,
            Err(e) if e.is_connect() => Outcome::Refused,
            Err(_) => Outcome::Unknown,
        };
        posts.push(Post { content, outcome });
        if outcome != Outcome::Accepted {
            tokio::time::sleep(FAILURE_PAUSE).await;
        }
    }
    posts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_round_trip() {
        assert_eq!(content(3, 17, 42), "w3-c17-n42");
        assert_eq!(parse_content("w3-c17-n42"), Some((3, 17, 42)));
        assert_eq!(parse_content("hello"), None);
        assert_eq!(parse_content("w3-c17-n42-x"), None);
    }
}
