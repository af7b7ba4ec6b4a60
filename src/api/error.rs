//! The JSON error envelope `{"error": {"code", "message"}}`, for every error the API
//! returns: handler errors, extractor errors and the framework's own 404/405/413.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use actix_web::{
    FromRequest, HttpRequest, HttpResponse, ResponseError,
    body::MessageBody,
    dev::Payload,
    dev::ServiceResponse,
    error::JsonPayloadError,
    http::{StatusCode, header},
    middleware::ErrorHandlerResponse,
    web,
};
use serde::{Serialize, de::DeserializeOwned};
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

/// The one place a failure's kind decides its status: an outage of storage is `503` (retry),
/// data the database refuses is the client's (`422`), anything else a bug (`500`). The cause's
/// whole chain is searched, so a `sqlx::Error` under `.context(…)` is classified alike.
impl From<anyhow::Error> for ApiError {
    fn from(cause: anyhow::Error) -> Self {
        match classify(&cause) {
            Kind::Outage => ApiError::unavailable(cause),
            Kind::BadData => ApiError::unprocessable(
                "invalid_value",
                "a value in the request cannot be stored (e.g. it holds a NUL or is out of range)",
            ),
            Kind::Bug => ApiError {
                cause: Some(cause),
                ..Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            },
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        anyhow::Error::from(e).into()
    }
}

enum Kind {
    Outage,
    BadData,
    Bug,
}

fn classify(cause: &anyhow::Error) -> Kind {
    for e in cause.chain() {
        if let Some(e) = e.downcast_ref::<sqlx::Error>() {
            return classify_sqlx(e);
        }
        if e.is::<std::io::Error>() {
            return Kind::Outage;
        }
    }
    Kind::Bug
}

fn classify_sqlx(e: &sqlx::Error) -> Kind {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => Kind::Outage,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            match code.get(..2) {
                // Connection exceptions, insufficient resources, operator intervention
                // (57P01 admin shutdown, 57P03 cannot connect now, 57014 statement timeout),
                // a database not accepting connections or a lock not available (55),
                // serialization failures and deadlocks: all pass, so the client may retry.
                Some("08" | "40" | "53" | "55" | "57") => Kind::Outage,
                Some("22") => Kind::BadData,
                _ => Kind::Bug,
            }
        }
        _ => Kind::Bug,
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
        // Every 503 says when to retry: an outage after a second, a full ingest budget as it
        // asks.
        let retry_after = self
            .retry_after_secs
            .or((self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(RETRY_AFTER_SECS));
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

/// What a `503` asks a client to wait before retrying, in seconds.
const RETRY_AFTER_SECS: u32 = 1;

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
        .limit(JSON_LIMIT_BYTES)
        .error_handler(|err, _req| json_error(err).into())
}

/// The largest JSON body (plans, tenants, keys, finalize) read; events have their own limit.
const JSON_LIMIT_BYTES: usize = 1024 * 1024;

fn json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body exceeds {JSON_LIMIT_BYTES} bytes (1 MiB)"),
            )
        }
        JsonPayloadError::ContentType => ApiError::bad_request(
            "invalid_body",
            "the body must be JSON sent as Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(e) => body_error("", &e),
        JsonPayloadError::Serialize(e) => anyhow::Error::from(e).into(),
        other => ApiError::bad_request(
            "invalid_body",
            format!("the body could not be read: {other}"),
        ),
    }
}

/// A JSON problem as the client should read it: where it is (`path`, a field) and what is
/// wrong, without the Rust type names serde puts in its messages.
fn body_error(path: &str, e: &serde_json::Error) -> ApiError {
    let problem = without_rust_types(&e.to_string());
    if e.is_syntax() || e.is_eof() || e.is_io() {
        return ApiError::bad_request("invalid_body", format!("the body is not JSON: {problem}"));
    }
    if let Some(field) = problem
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
    {
        let field = if path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
        return ApiError::unprocessable("missing_field", format!("{field}: is required"));
    }
    if path.is_empty() {
        ApiError::unprocessable(
            "invalid_value",
            format!("the body must be a JSON object: {problem}"),
        )
    } else {
        ApiError::unprocessable("invalid_value", format!("{path}: {problem}"))
    }
}

/// serde says `expected struct NewKey`: clients know JSON, not our types.
fn without_rust_types(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((i, kind)) = ["struct ", "enum "]
        .iter()
        .filter_map(|kind| rest.find(kind).map(|i| (i, *kind)))
        .min()
    {
        out.push_str(&rest[..i]);
        rest = &rest[i + kind.len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        rest = &rest[end..];
        out.push_str(if kind == "enum " {
            "one of the documented values"
        } else {
            "a JSON object"
        });
    }
    out.push_str(rest);
    out
}

/// A JSON body read into `T` field by field: a value of the wrong type names its field
/// (`period: invalid type: integer, expected a string`), which `web::Json<T>` cannot say.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        // Size, content type and syntax go through `json_config` like every JSON body.
        let value = web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move {
            let web::Json(value) = value.await?;
            // serde would read a struct from an array too, and then name an index.
            if !value.is_object() {
                return Err(ApiError::unprocessable(
                    "invalid_value",
                    "the body must be a JSON object",
                )
                .into());
            }
            serde_path_to_error::deserialize(value)
                .map(JsonBody)
                .map_err(|e| {
                    let path = e.path().to_string();
                    let path = if path == "." { String::new() } else { path };
                    body_error(&path, e.inner()).into()
                })
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_json_not_rust_types() {
        assert_eq!(
            without_rust_types("invalid type: sequence, expected struct NewKey"),
            "invalid type: sequence, expected a JSON object"
        );
        assert_eq!(
            without_rust_types("unknown variant `x`, expected enum Role"),
            "unknown variant `x`, expected one of the documented values"
        );
        assert_eq!(
            without_rust_types("invalid type: integer `3`, expected a string"),
            "invalid type: integer `3`, expected a string"
        );
    }

    #[test]
    fn outages_are_503_bad_data_422_and_the_rest_500() {
        let status = |e: sqlx::Error| ApiError::from(e).status;
        assert_eq!(
            status(sqlx::Error::PoolTimedOut),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(status(sqlx::Error::Io(io)), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status(sqlx::Error::RowNotFound),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let wrapped = anyhow::Error::from(sqlx::Error::PoolClosed).context("load the plan");
        assert_eq!(
            ApiError::from(wrapped).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::from(anyhow::anyhow!("a bug")).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
