pub(crate) mod refresh_token_families;
pub(crate) mod refresh_tokens;
pub(crate) mod revoked_access_tokens;
pub(crate) mod token_usage_ledger;
pub(crate) mod users;
