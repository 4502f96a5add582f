use smartflow_domain::{DomainError, TransportError};
use smartflow_storage::StorageError;
use thiserror::Error;

/// Errors of the bus. Publishing errors reach the caller, who decides whether to roll back.
#[derive(Debug, Error)]
pub enum BusError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("broker: {0}")]
    Transport(#[from] TransportError),
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl From<sea_orm::DbErr> for BusError {
    fn from(e: sea_orm::DbErr) -> Self {
        BusError::Storage(StorageError::Db(e))
    }
}
