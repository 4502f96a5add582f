use std::collections::HashMap;
use std::time::Duration;

use crate::DomainError;

/// Where one service's events live: its outbox table, its Kafka topic and the consumer group that
/// handles them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRoute {
    pub service: String,
    pub outbox_table: String,
    pub topic: String,
    pub consumer_group: String,
    /// What a failing event of this topic does to the later events of its key.
    pub key_order: KeyOrder,
    /// How `EventBus::publish` delivers this route's events.
    pub delivery: Delivery,
    /// How long this route's rows stay in the outbox once the bus is done with them (consumed,
    /// or handed off to other services): the relay deletes them after that. `None`: the
    /// service's default (the relay's `Retention::outbox`).
    pub retention: Option<Duration>,
}

/// How the events of a route are delivered, and so what is guaranteed about them
/// (`docs/architecture.md`, "Delivery guarantees").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// A `pending` row in the publisher's outbox, in the caller's transaction, published by the
    /// relay: at least once, if and only if the transaction commits.
    #[default]
    Outbox,
    /// A `stored` row in the publisher's outbox, in the caller's transaction, for the record:
    /// never published, never consumed (an audit trail of what the service decided).
    StoreOnly,
    /// No row: sent to the broker at once by `EventBus::send_direct`, outside any transaction,
    /// which returns once the broker acknowledged it or with the broker's error. At most once:
    /// an event the broker did not take is lost (nothing keeps it, nothing tries it again).
    /// `EventBus::publish` refuses the events of such a route, so a caller never believes one
    /// is tied to its transaction. For events that may be lost (progress, telemetry).
    Direct,
}

/// What happens to the later events of a message key while one of its events fails: the route's
/// ordering policy. Events of one key always reach Kafka in the order their rows were written,
/// and a consumer applies them in that order; the policy decides only what waits for a failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum KeyOrder {
    /// The later events of the key wait until the failing one succeeds or is `dead` (a relay
    /// holds them back; a consumer holds its partition at the event and tries it again).
    #[default]
    Block,
    /// The later events go on; the failing one is tried again after them (a consumer sends it
    /// back to its outbox to be published again, a relay does not hold the key back).
    Skip,
}

impl ServiceRoute {
    /// A route with checked names: the table is used in SQL, so only `[a-z_][a-z0-9_]*` is
    /// accepted; the topic must be a legal Kafka topic name.
    pub fn new(
        service: impl Into<String>,
        outbox_table: impl Into<String>,
        topic: impl Into<String>,
        consumer_group: impl Into<String>,
    ) -> Result<Self, DomainError> {
        let route = Self {
            service: service.into(),
            outbox_table: outbox_table.into(),
            topic: topic.into(),
            consumer_group: consumer_group.into(),
            key_order: KeyOrder::Block,
            delivery: Delivery::Outbox,
            retention: None,
        };
        check_sql_identifier("outbox table", &route.outbox_table)?;
        check_kafka_name("service", &route.service)?;
        check_kafka_name("topic", &route.topic)?;
        check_kafka_name("consumer group", &route.consumer_group)?;
        Ok(route)
    }

    /// The same route with another delivery strategy.
    pub fn with_delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// The same route with a retention of its own: its rows the bus is done with are deleted
    /// `keep` after they were consumed (or handed off).
    pub fn with_retention(mut self, keep: Duration) -> Self {
        self.retention = Some(keep);
        self
    }

    /// The same route with another ordering policy.
    pub fn with_key_order(mut self, key_order: KeyOrder) -> Self {
        self.key_order = key_order;
        self
    }
}

/// Checks a name that storage splices into SQL as a table name.
pub fn check_sql_identifier(what: &'static str, value: &str) -> Result<(), DomainError> {
    let invalid = |reason| DomainError::InvalidName {
        what,
        value: value.to_owned(),
        reason,
    };
    let mut chars = value.chars();
    match chars.next() {
        None => return Err(invalid("must not be empty")),
        Some(c) if !(c.is_ascii_lowercase() || c == '_') => {
            return Err(invalid("must start with a lowercase letter or `_`"))
        }
        _ => {}
    }
    if value.len() > 63 {
        return Err(invalid("must be at most 63 characters"));
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(invalid("may hold only lowercase letters, digits and `_`"));
    }
    Ok(())
}

fn check_kafka_name(what: &'static str, value: &str) -> Result<(), DomainError> {
    let invalid = |reason| DomainError::InvalidName {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if value.len() > 249 {
        return Err(invalid("must be at most 249 characters"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(invalid("may hold only letters, digits, `.`, `_` and `-`"));
    }
    Ok(())
}

/// The immutable map `event_type -> service -> route`, built once at start-up.
#[derive(Debug, Clone, Default)]
pub struct RouteRegistry {
    routes: HashMap<String, ServiceRoute>,
    event_services: HashMap<String, String>,
}

impl RouteRegistry {
    pub fn builder() -> RouteRegistryBuilder {
        RouteRegistryBuilder::default()
    }

    /// The route of an event type; an unregistered type is an error, never a default route.
    pub fn resolve(&self, event_type: &str) -> Result<&ServiceRoute, DomainError> {
        self.event_services
            .get(event_type)
            .and_then(|service| self.routes.get(service))
            .ok_or_else(|| DomainError::UnknownEventType(event_type.to_owned()))
    }

    /// The route of a service by name.
    pub fn service(&self, service: &str) -> Option<&ServiceRoute> {
        self.routes.get(service)
    }

    /// Every service route, in no particular order.
    pub fn routes(&self) -> impl Iterator<Item = &ServiceRoute> {
        self.routes.values()
    }

    /// The event types routed to a service, sorted.
    pub fn event_types_of(&self, service: &str) -> Vec<&str> {
        let mut types: Vec<&str> = self
            .event_services
            .iter()
            .filter(|(_, s)| s.as_str() == service)
            .map(|(t, _)| t.as_str())
            .collect();
        types.sort_unstable();
        types
    }
}

/// Collects routes and event types, then checks them all at `build`.
#[derive(Debug, Default)]
pub struct RouteRegistryBuilder {
    routes: Vec<ServiceRoute>,
    events: Vec<(String, String)>,
}

impl RouteRegistryBuilder {
    pub fn service(mut self, route: ServiceRoute) -> Self {
        self.routes.push(route);
        self
    }

    pub fn event(mut self, event_type: impl Into<String>, service: impl Into<String>) -> Self {
        self.events.push((event_type.into(), service.into()));
        self
    }

    pub fn build(self) -> Result<RouteRegistry, DomainError> {
        let mut registry = RouteRegistry::default();
        for route in &self.routes {
            // A consumer of a topic tells an event with an outbox row from one without by the
            // topic's route, so a direct route needs a topic of its own.
            let shared = self.routes.iter().find(|other| {
                other.topic == route.topic
                    && route.delivery == Delivery::Direct
                    && other.delivery == Delivery::Outbox
            });
            if let Some(other) = shared {
                return Err(DomainError::DirectTopicShared {
                    topic: route.topic.clone(),
                    direct: route.service.clone(),
                    outbox: other.service.clone(),
                });
            }
        }
        for route in self.routes {
            if registry.routes.contains_key(&route.service) {
                return Err(DomainError::DuplicateService(route.service));
            }
            registry.routes.insert(route.service.clone(), route);
        }
        for (event_type, service) in self.events {
            if event_type.is_empty() {
                return Err(DomainError::InvalidName {
                    what: "event type",
                    value: event_type,
                    reason: "must not be empty",
                });
            }
            if !registry.routes.contains_key(&service) {
                return Err(DomainError::UnknownService {
                    event_type,
                    service,
                });
            }
            if let Some(existing) = registry.event_services.get(&event_type) {
                return Err(DomainError::DuplicateEventType {
                    event_type,
                    service: existing.clone(),
                });
            }
            registry.event_services.insert(event_type, service);
        }
        Ok(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> ServiceRoute {
        ServiceRoute::new(
            "agent",
            "agent_outbox",
            "smartflow.agent",
            "agent-consumers",
        )
        .unwrap()
    }

    #[test]
    fn resolves_event_type_to_its_service_route() {
        let reg = RouteRegistry::builder()
            .service(agent())
            .event("agent.chat.message.appended", "agent")
            .build()
            .unwrap();
        assert_eq!(
            reg.resolve("agent.chat.message.appended").unwrap(),
            &agent()
        );
        assert_eq!(
            reg.resolve("nobody.knows"),
            Err(DomainError::UnknownEventType("nobody.knows".into()))
        );
        assert_eq!(
            reg.event_types_of("agent"),
            vec!["agent.chat.message.appended"]
        );
    }

    #[test]
    fn bad_registrations_are_refused() {
        assert!(matches!(
            RouteRegistry::builder().event("x", "ghost").build(),
            Err(DomainError::UnknownService { .. })
        ));
        assert!(matches!(
            RouteRegistry::builder()
                .service(agent())
                .service(agent())
                .build(),
            Err(DomainError::DuplicateService(_))
        ));
        assert!(matches!(
            RouteRegistry::builder()
                .service(agent())
                .event("x", "agent")
                .event("x", "agent")
                .build(),
            Err(DomainError::DuplicateEventType { .. })
        ));
    }

    #[test]
    fn a_direct_route_needs_a_topic_of_its_own() {
        let direct = ServiceRoute::new("progress", "progress_outbox", "smartflow.agent", "g")
            .unwrap()
            .with_delivery(Delivery::Direct);
        let err = RouteRegistry::builder()
            .service(agent())
            .service(direct.clone())
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            DomainError::DirectTopicShared {
                topic: "smartflow.agent".into(),
                direct: "progress".into(),
                outbox: "agent".into(),
            }
        );
        let own_topic = ServiceRoute {
            topic: "smartflow.progress".into(),
            ..direct
        };
        assert!(RouteRegistry::builder()
            .service(agent())
            .service(own_topic)
            .build()
            .is_ok());
    }

    #[test]
    fn table_and_topic_names_are_checked() {
        assert!(ServiceRoute::new("a", "outbox; drop table x", "t", "g").is_err());
        assert!(ServiceRoute::new("a", "Outbox", "t", "g").is_err());
        assert!(ServiceRoute::new("a", "", "t", "g").is_err());
        assert!(ServiceRoute::new("a", "ok_table", "bad topic", "g").is_err());
        assert!(ServiceRoute::new("a", "ok_table", "good.topic-1", "g").is_ok());
    }
}
