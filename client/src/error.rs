//! The crate's errors: only setting up can fail this way. Verification
//! itself answers with `tonic::Status`, like the generated stub.

/// Why a [`CachedVerifier`](crate::CachedVerifier) could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint is not a URI tonic can connect to.
    #[error("invalid tokend endpoint {endpoint:?}: {}", chain(.source))]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        source: tonic::transport::Error,
    },
    /// tokend could not be reached within `connect_timeout`.
    #[error("cannot connect to tokend at {endpoint}: {}", chain(.source))]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// The transport's reason.
        source: tonic::transport::Error,
    },
}

/// An error and its causes, `: `-separated (tonic's transport error alone
/// says only "transport error").
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
