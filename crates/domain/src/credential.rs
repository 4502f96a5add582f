//! The HTTP header a service presents its credential in, shared by the services that check it
//! (`smartflow-service`) and the clients that send it (the contracts crates).

/// The header that carries a service credential: `X-Smartflow-Service-Token: <secret>`. End
/// users never hold such a secret; it marks a request as a trusted service's.
pub const SERVICE_TOKEN_HEADER: &str = "x-smartflow-service-token";
