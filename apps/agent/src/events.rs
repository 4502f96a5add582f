//! The agent's events (its contracts crate) and the registry it publishes with.

pub use smartflow_agent_contracts::*;
use smartflow_domain::{DomainError, RouteRegistry};

/// Everything the agent publishes: its own events onto `topic`, and notification requests onto
/// the notification service's `notification_topic`. All of them go into the agent's own outbox.
pub fn routes(topic: &str, notification_topic: &str) -> Result<RouteRegistry, DomainError> {
    let builder = register(RouteRegistry::builder(), topic)?;
    smartflow_notification_contracts::register(builder, notification_topic)?.build()
}

#[cfg(test)]
mod tests {
    use smartflow_domain::EventContract;
    use smartflow_notification_contracts::NotificationRequested;

    use super::*;

    #[test]
    fn the_agent_publishes_its_events_and_notification_requests() {
        let registry = routes(
            DEFAULT_TOPIC,
            smartflow_notification_contracts::DEFAULT_TOPIC,
        )
        .unwrap();
        let own = registry.resolve(ChatMessageAppended::EVENT_TYPE).unwrap();
        assert_eq!(own.topic, DEFAULT_TOPIC);
        let requests = registry.resolve(NotificationRequested::EVENT_TYPE).unwrap();
        assert_eq!(
            requests.topic,
            smartflow_notification_contracts::DEFAULT_TOPIC
        );
        assert!(routes("no spaces allowed", DEFAULT_TOPIC).is_err());
    }
}
