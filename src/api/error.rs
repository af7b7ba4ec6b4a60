//! The JSON error envelope `{"error": {"code", "message"}}`, for every error the API
//! returns: handler errors, extractor errors and the framework's own 404/405/413.

use std::borrow::Cow;

use actix_web::{
    HttpResponse, ResponseError,
    body::MessageBody,
    dev::ServiceResponse,
    http::{StatusCode, header},
    middleware::ErrorHandlerResponse,
};
use serde::Serialize;
use utoipa::{IntoResponses, ToResponse, ToSchema};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    /// The cause of a 5xx: logged once, never shown.
    cause: Option<anyhow::Error>,
    /// Seconds for a `Retry-After` header.
    retry_after_secs: Option<u32>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            cause: None,
            retry_after_secs: None,
        }
    }

    /// Asks the client to retry after `secs` seconds (`Retry-After`).
    pub fn retry_after(self, secs: u32) -> Self {
        ApiError {
            retry_after_secs: Some(secs),
            ..self
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A query parameter that is missing or malformed.
    pub fn bad_parameter(name: &str, problem: impl std::fmt::Display) -> Self {
        Self::bad_request("invalid_parameter", format!("{name}: {problem}"))
    }

    pub fn unprocessable(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this key's role may not do that",
        )
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// The database or broker is unreachable: the client may retry.
    pub fn unavailable(cause: anyhow::Error) -> Self {
        ApiError {
            cause: Some(cause),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service cannot reach its storage right now; retry later",
            )
        }
    }

    pub fn code(&self) -> &str {
        &self.code
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Anything unexpected is a 500 whose body says nothing of the inside.
impl From<anyhow::Error> for ApiError {
    fn from(cause: anyhow::Error) -> Self {
        ApiError {
            cause: Some(cause),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                ApiError::unavailable(e.into())
            }
            other => anyhow::Error::from(other).into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if let Some(cause) = &self.cause {
            tracing::error!(
                status = self.status.as_u16(),
                cause = format!("{cause:#}"),
                "request failed"
            );
        }
        let mut response = envelope(self.status, &self.code, &self.message);
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

pub fn envelope(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(ErrorEnvelope {
        error: ErrorDetail { code, message },
    })
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({
    "error": {"code": "invalid_parameter", "message": "limit: must be an integer from 1 to 1000"}
})))]
pub struct ErrorEnvelope<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail<'a> {
    /// A stable snake_case code for programs, e.g. `unauthorized`, `forbidden`, `not_found`,
    /// `invalid_parameter`, `invalid_body`, `invalid_value`, `conflict`, `unavailable`.
    pub code: &'a str,
    /// A sentence for people, naming the parameter or field at fault. A 5xx message says
    /// nothing of the inside.
    pub message: &'a str,
}

/// No API key, an unknown key, or a scheme other than Bearer (`unauthorized`).
#[derive(ToResponse)]
#[allow(dead_code)] // schema only
pub struct Unauthorized(ErrorEnvelope<'static>);

/// The key's role may not do this (`forbidden`).
#[derive(ToResponse)]
#[allow(dead_code)] // schema only
pub struct Forbidden(ErrorEnvelope<'static>);

/// The service cannot reach its storage right now; retry later (`unavailable`).
#[derive(ToResponse)]
#[allow(dead_code)] // schema only
pub struct Unavailable(ErrorEnvelope<'static>);

/// What any operation behind a key may answer whatever it does: the key is missing or unknown,
/// its role may not do this, or the key cannot be checked because storage is unreachable.
#[derive(IntoResponses)]
#[allow(dead_code)] // schema only
pub enum KeyedErrors {
    #[response(status = 401)]
    Unauthorized(#[ref_response] Unauthorized),
    #[response(status = 403)]
    Forbidden(#[ref_response] Forbidden),
    #[response(status = 503)]
    Unavailable(#[ref_response] Unavailable),
}

/// Replaces any error response that is not already JSON (actix's own 404, 405, 413, …)
/// with the envelope.
pub fn wrap_bare_errors<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed here"),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the request body is too large"),
        s if s.is_server_error() => ("internal", "internal error"),
        _ => ("bad_request", "the request is invalid"),
    };
    let (req, _) = res.into_parts();
    let response = envelope(status, code, message);
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response).map_into_right_body(),
    ))
}

/// Extractor configs that turn malformed JSON bodies, queries and paths into the envelope.
pub fn json_config() -> actix_web::web::JsonConfig {
    actix_web::web::JsonConfig::default()
        .limit(1024 * 1024)
        .error_handler(|err, _req| {
            ApiError::bad_request("invalid_body", format!("the JSON body is invalid: {err}")).into()
        })
}

pub fn query_config() -> actix_web::web::QueryConfig {
    actix_web::web::QueryConfig::default().error_handler(|err, _req| {
        ApiError::bad_request(
            "invalid_parameter",
            format!("the query string is invalid: {err}"),
        )
        .into()
    })
}

pub fn path_config() -> actix_web::web::PathConfig {
    actix_web::web::PathConfig::default().error_handler(|err, _req| {
        ApiError::bad_request("invalid_path", format!("the path is invalid: {err}")).into()
    })
}
