//! The gRPC layer: validates requests, converts between protobuf and domain
//! types, and maps domain errors to `tonic::Status` (in [`status`], the one
//! place that does). No rule about tokens lives here.

pub mod admin;
pub mod admission;
pub mod convert;
pub mod reply;
pub mod verify;
pub mod watch;

use tonic::Status;

use crate::{error::Error, store::StoreError};

/// The one mapping from domain errors to gRPC statuses.
pub fn status(e: Error) -> Status {
    match e {
        Error::InvalidArgument { .. } => Status::invalid_argument(e.to_string()),
        Error::NotFound(_) => Status::not_found(e.to_string()),
        Error::FailedPrecondition { .. } => Status::failed_precondition(e.to_string()),
        Error::QuotaExceeded { .. } => Status::resource_exhausted(e.to_string()),
        Error::ShuttingDown | Error::Store(StoreError::Closed) => Status::unavailable(Error::ShuttingDown.to_string()),
        Error::Store(StoreError::Unavailable(detail)) => {
            tracing::warn!(error = %detail, "token store unavailable");
            Status::unavailable("the token store is unavailable; nothing was changed, retry later")
        }
        Error::Store(inner) => {
            // The detail (paths, sled's message) is for the operator's log,
            // not for the caller.
            tracing::error!(error = %inner, "store failure");
            Status::internal("storage error; see the tokend log")
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        status(e)
    }
}
