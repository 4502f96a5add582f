//! A table named at run time, as each service names its outbox and inbox.

use sea_orm::sea_query::Alias;
use smartflow_domain::route::check_sql_identifier;

use crate::StorageError;

/// The name is checked once here because it is spliced into SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableName(String);

impl TableName {
    /// `what` names the kind of table in the error.
    pub(crate) fn checked(what: &'static str, name: String) -> Result<Self, StorageError> {
        check_sql_identifier(what, &name)?;
        Ok(Self(name))
    }

    /// A name known to be a valid identifier.
    pub(crate) fn known(name: &'static str) -> Self {
        Self(name.to_owned())
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn alias(&self) -> Alias {
        Alias::new(&self.0)
    }
}
