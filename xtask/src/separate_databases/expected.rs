//! What the run expects of the services: the services themselves, and what they must have done
//! with what the run posted (the agent's charge and dedupe key come from its contracts).

use smartflow_agent_contracts::{first_message_dedupe_key, tokens_of};

/// The three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Userauth,
    Agent,
    Notification,
}

impl Service {
    /// In start order; they stop in the reverse.
    pub const ALL: [Service; 3] = [Service::Userauth, Service::Agent, Service::Notification];

    pub fn name(self) -> &'static str {
        match self {
            Service::Userauth => "userauth",
            Service::Agent => "agent",
            Service::Notification => "notification",
        }
    }

    pub(super) fn binary(self) -> &'static str {
        match self {
            Service::Userauth => "smartflow-userauth",
            Service::Agent => "smartflow-agent",
            Service::Notification => "smartflow-notification",
        }
    }
}

/// What is wrong, each with the service whose database or API shows it.
pub type Problems = Vec<(Service, String)>;

/// One conversation and the messages posted to it, in order.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub id: String,
    pub contents: Vec<String>,
}

/// What the services must have done with what the run posted.
#[derive(Debug, Clone)]
pub struct Expected {
    pub user_id: String,
    pub conversations: Vec<Conversation>,
}

impl Expected {
    pub(super) fn add(&mut self, conversation: &str, content: &str) {
        match self.conversations.iter_mut().find(|c| c.id == conversation) {
            Some(c) => c.contents.push(content.to_owned()),
            None => self.conversations.push(Conversation {
                id: conversation.to_owned(),
                contents: vec![content.to_owned()],
            }),
        }
    }

    pub fn messages(&self) -> usize {
        self.conversations.iter().map(|c| c.contents.len()).sum()
    }

    /// What the agent charges for every message posted.
    pub fn tokens(&self) -> i64 {
        self.conversations
            .iter()
            .flat_map(|c| &c.contents)
            .map(|content| tokens_of(content) as i64)
            .sum()
    }

    /// The notification dedupe key of each conversation's first message.
    pub fn dedupe_keys(&self) -> Vec<String> {
        self.conversations
            .iter()
            .map(|c| first_message_dedupe_key(&c.id))
            .collect()
    }
}
