//! The JSON error body every HTTP route answers with, and the one place statuses are chosen.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An HTTP error: a status, a stable machine-readable code and a human message.
/// Serialized as `{"error": code, "message": message}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code, e.g. `malformed_csr`.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The machine-readable error code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// 400 Bad Request.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403 Forbidden.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 429 for an address that presented too many wrong credentials; `wait` until it may try
    /// again.
    pub fn too_many_failed_credentials(
        client: std::net::IpAddr,
        wait: std::time::Duration,
    ) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failed_credentials",
            format!(
                "too many wrong credentials from {client}; retry in {}s",
                wait.as_secs().max(1)
            ),
        )
    }

    /// 500, for local faults; the message is logged, the client gets a generic text.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error while serving a request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            message: &self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// A JSON body extractor whose every rejection is an [`ApiError`]: 413 over the body limit,
/// 415 without a JSON content type, 400 for anything that does not parse into `T`.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => {
                // axum answers 422 for JSON that parses but does not fit `T` (missing or
                // unknown field, wrong type); the API promises 400 for every malformed body.
                let (status, code) = match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => {
                        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
                    }
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
                    }
                    _ => (StatusCode::BAD_REQUEST, "malformed_body"),
                };
                Err(ApiError::new(status, code, rejection.body_text()))
            }
        }
    }
}

/// Answers any unknown route with a JSON 404.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Answers a known route called with the wrong method with a JSON 405 (axum keeps the `Allow`
/// header).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not support that method",
    )
}

/// The verified certificate of a client on an mTLS route: 401 `client_certificate_required`
/// when none was presented, 401 `invalid_client_certificate` when it does not chain to the mesh
/// CA, is out of validity or breaks the node profile. Revocation is the caller's check, since
/// the CA and nodes consult different sources (the CA's store, a node's CRL).
pub fn verified_client(
    trust: &crate::tls::MeshTrust,
    presented: Option<axum::Extension<crate::tls::PresentedCertificate>>,
) -> Result<ztmesh_pki::NodeCertificate, ApiError> {
    let Some(axum::Extension(crate::tls::PresentedCertificate(Some(der)))) = presented else {
        return Err(ApiError::unauthorized(
            "client_certificate_required",
            "this route requires a mesh certificate (mutual TLS)",
        ));
    };
    trust
        .verify_ignoring_revocation(&der, crate::timefmt::now())
        .map_err(|e| ApiError::unauthorized("invalid_client_certificate", e.to_string()))
}
