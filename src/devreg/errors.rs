//! SC error codes and the error body every failing request gets.
//!
//! Service Center answers a failure with `{"errorCode":"400012","errorMessage":"…","detail":"…"}`
//! (the code is a JSON *string*), status `code / 1000`, `Content-Type: application/json` and a
//! trailing newline. This module owns the code table (`server/scerror/error.go` of SC 1.4.8) and
//! that response shape; the handlers only pick a code and write the situation-specific detail.

use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::http::{json_response, json_status};

/// Invalid parameter(s): validation failures, bad JSON, bad `force`, empty batches.
pub const INVALID_PARAMS: u32 = 400_001;
/// Server is Unhealthy (`/health`).
pub const UNHEALTHY: u32 = 400_002;
/// Create a service whose id or key conflicts with another service.
pub const SERVICE_ALREADY_EXISTS: u32 = 400_010;
/// Unknown service (also unknown consumer/provider).
pub const SERVICE_NOT_EXISTS: u32 = 400_012;
/// Non-force delete of a service that still has instances.
pub const DEPLOYED_INSTANCE: u32 = 400_013;
/// A schema id outside the service's `schemas` list, in production.
pub const UNDEFINED_SCHEMA_ID: u32 = 400_014;
/// Changing a schema that already exists, in production.
pub const MODIFY_SCHEMA_NOT_ALLOW: u32 = 400_015;
/// Schema does not exist (`existence?type=schema`, schema get and delete).
pub const SCHEMA_NOT_EXISTS: u32 = 400_016;
/// Unknown instance (heartbeat, unregister, get one, status and properties updates).
pub const INSTANCE_NOT_EXISTS: u32 = 400_017;
/// Updating or deleting a tag the service does not have.
pub const TAG_NOT_EXISTS: u32 = 400_018;
/// Adding a rule of the other type than the service's existing rules.
pub const BLACK_AND_WHITE_RULE: u32 = 400_020;
/// Changing the type of a rule while the service has rules.
pub const MODIFY_RULE_NOT_ALLOW: u32 = 400_021;
/// Unknown rule id.
pub const RULE_NOT_EXISTS: u32 = 400_022;
/// Non-force delete of a provider that some other consumer depends on.
pub const DEPENDED_ON_CONSUMER: u32 = 400_023;
/// A version rule matches no version of a known service (existence).
pub const SERVICE_VERSION_NOT_EXISTS: u32 = 400_026;
/// Over the service or instance quota.
pub const NOT_ENOUGH_QUOTA: u32 = 400_100;
/// Admin dump from a tenant other than `default/default`.
pub const FORBIDDEN: u32 = 403_001;
/// Unexpected failure.
pub const INTERNAL: u32 = 500_003;

/// The fixed `errorMessage` of a code.
pub fn message(code: u32) -> &'static str {
    match code {
        INVALID_PARAMS => "Invalid parameter(s)",
        UNHEALTHY => "Server is Unhealthy",
        SERVICE_ALREADY_EXISTS => "Micro-service already exists",
        SERVICE_NOT_EXISTS => "Micro-service does not exist",
        DEPLOYED_INSTANCE => "Micro-service has deployed instance(s)",
        UNDEFINED_SCHEMA_ID => "Undefined schema id",
        MODIFY_SCHEMA_NOT_ALLOW => "Not allowed to modify schema",
        SCHEMA_NOT_EXISTS => "Schema does not exist",
        INSTANCE_NOT_EXISTS => "Instance does not exist",
        TAG_NOT_EXISTS => "Tag does not exist",
        400_019 => "Rule already exist",
        BLACK_AND_WHITE_RULE => "Can not have both 'BLACK' and 'WHITE'",
        MODIFY_RULE_NOT_ALLOW => "Not allowed to modify the type of the rule",
        RULE_NOT_EXISTS => "Rule does not exist",
        DEPENDED_ON_CONSUMER => "Consumer(s) depends on this micro-service",
        400_024 => "Access micro-service refused",
        400_025 => "Endpoint is already belong to other service",
        SERVICE_VERSION_NOT_EXISTS => "Micro-service version does not exist",
        NOT_ENOUGH_QUOTA => "Not enough quota",
        401_002 => "Request unauthorized",
        // go-chassis/cari `rbac/error.go` (SC 2.x RBAC).
        401_201 => "Request unauthorized",
        401_202 => "User name or password is wrong",
        401_204 => "No authorization header",
        401_205 => "Token is expired",
        FORBIDDEN => "Forbidden",
        409_001 => "account name is duplicated",
        INTERNAL => "Internal server error",
        500_011 => "Registry service is unavailable",
        500_101 => "Quota service is unavailable",
        _ => "",
    }
}

/// One SC error: a code and the situation-specific detail (may be empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScError {
    /// Six-digit SC code; the HTTP status is `code / 1000`.
    pub code: u32,
    /// Free text; omitted from the body when empty.
    pub detail: String,
}

impl ScError {
    pub fn new(code: u32, detail: impl Into<String>) -> Self {
        ScError {
            code,
            detail: detail.into(),
        }
    }

    /// `400001` with `detail`.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, detail)
    }

    /// The HTTP status SC answers with.
    pub fn status(&self) -> u16 {
        u16::try_from(self.code / 1000).unwrap_or(500)
    }

    /// The wire body (without the trailing newline).
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error_code: self.code.to_string(),
            error_message: message(self.code),
            detail: self.detail.clone(),
        }
    }

    /// Go's `scerror.Error.Error()`: `message(detail)`, or just the message without detail.
    /// Used where SC embeds an error in another text (batch heartbeat `errMessage`).
    pub fn go_error_text(&self) -> String {
        if self.detail.is_empty() {
            message(self.code).to_owned()
        } else {
            format!("{}({})", message(self.code), self.detail)
        }
    }
}

/// `{"errorCode":"…","errorMessage":"…","detail":"…"}`; also embedded in batch find results.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorBody {
    #[serde(rename = "errorCode")]
    pub error_code: String,
    #[serde(rename = "errorMessage")]
    pub error_message: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl IntoResponse for ScError {
    fn into_response(self) -> Response {
        json_response(json_status(self.status()), &self.body())
    }
}
