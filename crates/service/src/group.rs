//! Several services in one process (the all-in-one binary): started one after another from a
//! list, each able to see the ones started before it, and stopped in the reverse order.

use std::future::Future;
use std::net::SocketAddr;

use futures::future::{BoxFuture, FutureExt as _};
use sea_orm::DatabaseConnection;

use crate::skeleton::Running;

/// A started service as a process running several holds it.
pub trait HostedService: Send + Sync {
    /// The service's name, as its [`ServiceLaunch`] gives it.
    fn name(&self) -> &'static str;

    /// The address its HTTP API listens on.
    fn local_addr(&self) -> SocketAddr;

    /// `http://ADDR`, the prefix of every API URL.
    fn base_url(&self) -> String {
        format!("http://{}", self.local_addr())
    }

    /// Its database connection.
    fn db(&self) -> &DatabaseConnection;

    /// Resolves once the service is stopping (after a shutdown, or a task that ended on its own).
    fn stopping(&self) -> BoxFuture<'_, ()>;

    /// Stops it gracefully; see [`Running::shutdown`].
    fn shutdown(self: Box<Self>) -> BoxFuture<'static, ()>;
}

impl<P: Send + Sync + 'static> HostedService for Running<P> {
    fn name(&self) -> &'static str {
        Running::name(self)
    }

    fn local_addr(&self) -> SocketAddr {
        Running::local_addr(self)
    }

    fn db(&self) -> &DatabaseConnection {
        Running::db(self)
    }

    fn stopping(&self) -> BoxFuture<'_, ()> {
        self.stopped().boxed()
    }

    fn shutdown(self: Box<Self>) -> BoxFuture<'static, ()> {
        Running::shutdown(*self).boxed()
    }
}

type StartFn = Box<
    dyn FnOnce(&ServiceGroup) -> BoxFuture<'static, anyhow::Result<Box<dyn HostedService>>> + Send,
>;

/// One entry of the list a [`ServiceGroup`] starts: a name, what a failed start is reported
/// as, and how to start the service, given the services started before it (say, to point it at
/// one of them).
pub struct ServiceLaunch {
    name: &'static str,
    starting: String,
    start: StartFn,
}

impl ServiceLaunch {
    /// `starting` names the start in its error, with the settings to check ("starting the agent
    /// (SMARTFLOW_AGENT_ADDR ...)").
    pub fn new<F, Fut, S>(name: &'static str, starting: impl Into<String>, start: F) -> Self
    where
        F: FnOnce(&ServiceGroup) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<S>> + Send + 'static,
        S: HostedService + 'static,
    {
        let start: StartFn = Box::new(move |started: &ServiceGroup| {
            let starting = start(started);
            async move {
                let service = starting.await?;
                Ok(Box::new(service) as Box<dyn HostedService>)
            }
            .boxed()
        });
        Self {
            name,
            starting: starting.into(),
            start,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Services started in list order, stopped in the reverse one.
#[derive(Default)]
pub struct ServiceGroup {
    started: Vec<Box<dyn HostedService>>,
}

impl ServiceGroup {
    /// Starts `launches` one after another. If one fails, the ones already started are shut
    /// down (latest first) and its error is returned, naming the start that failed.
    pub async fn start(launches: Vec<ServiceLaunch>) -> anyhow::Result<Self> {
        let mut group = Self::default();
        for launch in launches {
            tracing::debug!(service = launch.name, "starting");
            let starting = (launch.start)(&group);
            match starting.await {
                Ok(service) => group.started.push(service),
                Err(e) => {
                    group.shutdown().await;
                    return Err(e.context(launch.starting));
                }
            }
        }
        Ok(group)
    }

    /// The started service called `name`.
    pub fn get(&self, name: &str) -> Option<&dyn HostedService> {
        self.started
            .iter()
            .find(|s| s.name() == name)
            .map(|s| s.as_ref())
    }

    /// The started services, in start order.
    pub fn iter(&self) -> impl Iterator<Item = &dyn HostedService> {
        self.started.iter().map(|s| s.as_ref())
    }

    /// Resolves once any service is stopping, with its name. The others keep running until
    /// [`ServiceGroup::shutdown`]. Never resolves for an empty group.
    pub async fn stopped(&self) -> &'static str {
        if self.started.is_empty() {
            return futures::future::pending().await;
        }
        let stopping = self.started.iter().map(|s| {
            let name = s.name();
            s.stopping().map(move |()| name)
        });
        futures::future::select_all(stopping).await.0
    }

    /// Stops every service gracefully, in the reverse of the start order.
    pub async fn shutdown(self) {
        for service in self.started.into_iter().rev() {
            service.shutdown().await;
        }
    }
}
