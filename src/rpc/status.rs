//! The one mapping from the engine's and the wire's refusals to gRPC statuses (server side)
//! and back to the engine's link errors (client side). Codes are part of the protocol:
//! `unavailable` means "retry later or elsewhere", `invalid_argument` "this request will
//! never be accepted" (its message names the offending field).

use tonic::{Code, Status};

use super::convert::ConvertError;
use crate::sync::EngineError;
use crate::sync::link::LinkError;

/// The status a refused call answers with.
pub(crate) fn from_engine(e: &EngineError) -> Status {
    if e.is_unavailable() {
        Status::unavailable(e.to_string())
    } else {
        Status::invalid_argument(e.to_string())
    }
}

/// The status of a request that failed validation (the message names the field).
pub(crate) fn from_malformed(e: &ConvertError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// What a failed call means to the engine.
pub(crate) fn to_link_error(status: &Status) -> LinkError {
    let text = status.to_string();
    match status.code() {
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::Unimplemented
        | Code::OutOfRange => LinkError::Refused(text),
        _ => LinkError::Unavailable(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_refusals_keep_their_codes_and_texts() {
        let standby = "standby: this member is not the active syncer of its data centre";
        for (e, code, text) in [
            (
                EngineError::Starting,
                Code::Unavailable,
                "the sync engine is starting",
            ),
            (EngineError::Standby(standby), Code::Unavailable, standby),
            (
                EngineError::NotReady,
                Code::Unavailable,
                "the local registry has not been read yet",
            ),
            (
                EngineError::Stopping,
                Code::Unavailable,
                "the importer is stopping",
            ),
            (
                EngineError::Busy,
                Code::Unavailable,
                "the importer is busy: no room for the push, retry later",
            ),
            (
                EngineError::OwnOrigin("dc1".into()),
                Code::InvalidArgument,
                "origin \"dc1\" is this data centre",
            ),
        ] {
            let status = from_engine(&e);
            assert_eq!(status.code(), code, "{e:?}");
            assert_eq!(status.message(), text, "{e:?}");
        }
    }

    #[test]
    fn statuses_become_link_errors_by_code() {
        assert!(matches!(
            to_link_error(&Status::unavailable("x")),
            LinkError::Unavailable(_)
        ));
        assert!(matches!(
            to_link_error(&Status::invalid_argument("x")),
            LinkError::Refused(_)
        ));
        assert!(matches!(
            to_link_error(&Status::internal("x")),
            LinkError::Unavailable(_)
        ));
    }
}
