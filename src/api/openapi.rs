//! The OpenAPI document of the REST API, generated from the handlers' `#[utoipa::path]`
//! annotations: served at `GET /openapi.json`, printed by `meterd openapi`, and committed as
//! `openapi.json` (a test fails when the committed file drifts from the code).

use std::borrow::Cow;
use std::sync::LazyLock;

use actix_web::HttpResponse;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::{error, events, exports, health, invoices, keys, plans, tenants, usage};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "meterd",
        version = env!("CARGO_PKG_VERSION"),
        description = "Pay-per-use metering and billing for serverless platforms: usage \
            ingestion, versioned plans, tenants, invoices and finance exports.\n\n\
            Authenticate with `Authorization: Bearer <key>`. Roles: `admin` (everything), \
            `finance` (reads all, exports), `ingest` (`POST /v1/events`), `tenant` (its own \
            tenant only; another tenant's data answers `404`). Every error is \
            `{\"error\": {\"code\", \"message\"}}`. Money and quantities are JSON strings \
            holding exact decimals, never numbers."
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        openapi,
        events::ingest,
        keys::create,
        keys::list,
        keys::get,
        keys::revoke,
        usage::get_usage,
        plans::list_plans,
        plans::get_plan,
        plans::put_plan,
        tenants::list_tenants,
        tenants::get_tenant,
        tenants::put_tenant,
        invoices::list,
        invoices::upcoming,
        invoices::get,
        invoices::finalize,
        exports::invoice_lines,
        exports::usage,
        exports::function_costs,
    ),
    components(
        // Schemas only parameters refer to are not collected by themselves.
        schemas(error::ErrorEnvelope, Decimal, NonNegativeDecimal, Money, Period, Currency, Meter, Arch, Granularity),
        responses(error::Unauthorized, error::Forbidden, error::Unavailable),
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "health", description = "Liveness, readiness, metrics and this document; \
            served by every role without a key."),
        (name = "events", description = "HTTP ingest of usage events, as over AMQP."),
        (name = "api-keys", description = "Issuing, listing and revoking finance, ingest and tenant keys."),
        (name = "usage", description = "A tenant's metered usage."),
        (name = "plans", description = "Versioned price plans."),
        (name = "tenants", description = "Tenants and the plans they are on."),
        (name = "invoices", description = "Upcoming drafts, finalized invoices, finalization."),
        (name = "exports", description = "Finance CSV exports (RFC 4180, streamed)."),
    )
)]
pub struct ApiDoc;

/// The security scheme's name: operations that need a key say `security(("bearer" = []))`.
const BEARER: &str = "bearer";

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key as `Authorization: Bearer <key>` (no other scheme is \
                         accepted): the admin key from configuration (`auth.admin_key`), or one \
                         issued by `POST /v1/api-keys`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as pretty JSON. Its maps are sorted, so the text is stable from build to build:
/// what `GET /openapi.json` serves, `meterd openapi` prints and `openapi.json` holds.
pub fn document() -> &'static str {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        serde_json::to_string_pretty(&ApiDoc::openapi()).expect("the OpenAPI document serializes")
    });
    &DOCUMENT
}

/// This document
///
/// The OpenAPI 3.1 description of this API, generated from the code.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    operation_id = "openapi",
    responses(
        (status = 200, description = "The OpenAPI document", body = Object,
            content_type = "application/json"),
    )
)]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

/// Declares a schema-only type for a value that travels as a JSON string with a pattern.
macro_rules! string_schema {
    ($(#[$doc:meta])* $name:ident: $description:literal, $pattern:expr, $example:literal) => {
        $(#[$doc])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some($description))
                    .pattern(Some($pattern))
                    .examples([$example])
                    .into()
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }
    };
}

const DECIMAL_PATTERN: &str = r"^-?[0-9]+(\.[0-9]+)?$";

string_schema! {
    /// Schema only: an exact decimal quantity or price.
    Decimal: "An exact decimal number as a JSON string: digits, an optional leading `-` and \
        fraction, no exponent. Quantities and prices are never JSON numbers.",
    DECIMAL_PATTERN,
    "0.0000166667"
}

string_schema! {
    /// Schema only: a decimal quantity or price that is not negative.
    NonNegativeDecimal: "An exact decimal number, not negative, as a JSON string: digits and \
        an optional fraction, no sign or exponent, at most 28 significant digits.",
    r"^[0-9]+(\.[0-9]+)?$",
    "0.0000166667"
}

string_schema! {
    /// Schema only: an amount of money.
    Money: "An amount of money as a JSON string with exactly the currency's minor digits \
        (`\"0.40\"` in USD, `\"3\"` in JPY); adjustments may be negative.",
    DECIMAL_PATTERN,
    "18.33"
}

string_schema! {
    /// Schema only: a billing period.
    Period: "A billing period: a calendar month in UTC, `YYYY-MM`, from `0001-01`.",
    r"^([0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})-(0[1-9]|1[0-2])$",
    "2026-10"
}

string_schema! {
    /// Schema only: an ISO 4217 currency code.
    Currency: "An ISO 4217 currency code; it fixes the minor digits of amounts.",
    "^[A-Z]{3}$",
    "USD"
}

/// A usage meter.
#[derive(ToSchema)]
#[allow(dead_code)] // schema only: the domain type is `rating::Meter`
pub enum Meter {
    /// Number of invocations.
    #[schema(rename = "requests")]
    Requests,
    /// Memory × billed duration, in GB-seconds.
    #[schema(rename = "compute")]
    Compute,
    /// Billed duration, in seconds.
    #[schema(rename = "duration")]
    Duration,
}

/// The CPU architecture a function ran on.
#[derive(ToSchema)]
#[allow(dead_code)] // schema only: the domain type is `rating::Arch`
pub enum Arch {
    #[schema(rename = "x86_64")]
    X86_64,
    #[schema(rename = "arm64")]
    Arm64,
}

/// The size of usage buckets, aligned in UTC.
#[derive(ToSchema)]
#[allow(dead_code)] // schema only: the domain type is `metering::usage::Granularity`
pub enum Granularity {
    #[schema(rename = "hour")]
    Hour,
    #[schema(rename = "day")]
    Day,
    #[schema(rename = "month")]
    Month,
}
