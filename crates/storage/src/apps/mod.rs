//! The tables of this workspace's services, each behind the cargo feature of its service
//! (`agent`, `notification`, `userauth`), so that a service outside the workspace depends on the
//! bus's tables alone.

#[cfg(feature = "agent")]
pub(crate) mod agent;
#[cfg(feature = "notification")]
pub(crate) mod notification;
#[cfg(feature = "userauth")]
pub(crate) mod userauth;
