//! The gRPC layer: validates requests, converts between protobuf and domain
//! types, and maps domain errors to `tonic::Status` (in [`status`], the one
//! place that does). No rule about tokens lives here.

pub mod admin;
pub mod admission;
pub mod audit;
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
        Error::PermissionDenied(_) => Status::permission_denied(e.to_string()),
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

/// A gRPC code's canonical name (`NOT_FOUND`), as the metrics label and the
/// audit trail record it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        status(e)
    }
}
