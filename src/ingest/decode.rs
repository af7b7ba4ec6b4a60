//! Turns a message body (AMQP or HTTP) into valid usage events, or into the reason the whole
//! message must be dead-lettered (SPEC §1.1–1.2). Fields are read from the raw JSON text, so
//! no number ever passes through a float.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::metering::{MeteringRules, TenantId, UsageEvent};
use crate::rating::Arch;

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most events in one message.
pub const MAX_EVENTS: usize = 10_000;
/// How far in the future a timestamp may lie (clock skew between platform and meterd).
const MAX_FUTURE: Duration = Duration::minutes(5);

/// Why a message cannot be recorded: its `x-meterd-error` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidJson,
    InvalidShape,
    MissingField,
    InvalidValue,
    TooOld,
    InFuture,
    TooLarge,
    TooManyEvents,
    /// Valid by every rule above, yet the database refused its data (SQLSTATE class 22 or
    /// 23): a gap in validation, isolated instead of retried for ever.
    RejectedByDatabase,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::InvalidJson,
        ErrorCode::InvalidShape,
        ErrorCode::MissingField,
        ErrorCode::InvalidValue,
        ErrorCode::TooOld,
        ErrorCode::InFuture,
        ErrorCode::TooLarge,
        ErrorCode::TooManyEvents,
        ErrorCode::RejectedByDatabase,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidShape => "invalid_shape",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::TooOld => "too_old",
            ErrorCode::InFuture => "in_future",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::TooManyEvents => "too_many_events",
            ErrorCode::RejectedByDatabase => "rejected_by_database",
        }
    }
}

impl FromStr for ErrorCode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
                format!("unknown error code {text:?}; one of {}", known.join(", "))
            })
    }
}

/// A message that is not valid as a whole: the code and a sentence naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", code.as_str())]
pub struct Rejection {
    pub code: ErrorCode,
    pub reason: String,
}

impl Rejection {
    fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Rejection {
            code,
            reason: reason.into(),
        }
    }
}

/// Decodes a whole message: every event valid, or the first problem found.
pub fn decode_message(
    body: &[u8],
    rules: &MeteringRules,
    now: DateTime<Utc>,
) -> Result<Vec<UsageEvent>, Rejection> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Rejection::new(
            ErrorCode::TooLarge,
            format!(
                "the body is {} bytes; the limit is {MAX_BODY_BYTES} bytes (4 MiB)",
                body.len()
            ),
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        Rejection::new(
            ErrorCode::InvalidJson,
            format!("the body is not UTF-8: {e}"),
        )
    })?;
    let top: &RawValue = serde_json::from_str(text).map_err(|e| {
        Rejection::new(
            ErrorCode::InvalidJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let window = TimeWindow::new(rules, now);
    match top.get().as_bytes().first() {
        Some(b'{') => Ok(vec![decode_event(top, None, rules, &window)?]),
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(top.get()).map_err(|e| {
                Rejection::new(ErrorCode::InvalidJson, format!("the array is invalid: {e}"))
            })?;
            if items.is_empty() {
                return Err(Rejection::new(
                    ErrorCode::InvalidShape,
                    "the body is an empty array; send 1 to 10000 events",
                ));
            }
            if items.len() > MAX_EVENTS {
                return Err(Rejection::new(
                    ErrorCode::TooManyEvents,
                    format!(
                        "the array holds {} events; the limit is {MAX_EVENTS}",
                        items.len()
                    ),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| decode_event(item, Some(i), rules, &window))
                .collect()
        }
        _ => Err(Rejection::new(
            ErrorCode::InvalidShape,
            "the body must be an event object or a non-empty array of event objects",
        )),
    }
}

struct TimeWindow {
    oldest: DateTime<Utc>,
    newest: DateTime<Utc>,
}

impl TimeWindow {
    fn new(rules: &MeteringRules, now: DateTime<Utc>) -> Self {
        TimeWindow {
            oldest: now - Duration::days(i64::from(rules.max_event_age_days)),
            newest: now + MAX_FUTURE,
        }
    }
}

/// The fields of one event as raw JSON, so each can be checked and reported on its own.
#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tenant: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    duration_ms: Option<&'a RawValue>,
    #[serde(borrow, default)]
    init_duration_ms: Option<&'a RawValue>,
    #[serde(borrow, default)]
    memory_mb: Option<&'a RawValue>,
    #[serde(borrow, default)]
    arch: Option<&'a RawValue>,
}

/// Names a field of the event at `index` (None for a single-event body) in messages.
struct FieldPath {
    index: Option<usize>,
}

impl FieldPath {
    fn name(&self, field: &str) -> String {
        match self.index {
            Some(i) => format!("events[{i}].{field}"),
            None => field.to_owned(),
        }
    }

    fn missing(&self, field: &str) -> Rejection {
        Rejection::new(
            ErrorCode::MissingField,
            format!("{} is required", self.name(field)),
        )
    }

    fn invalid(&self, field: &str, problem: impl std::fmt::Display) -> Rejection {
        Rejection::new(
            ErrorCode::InvalidValue,
            format!("{} {problem}", self.name(field)),
        )
    }
}

fn decode_event(
    raw: &RawValue,
    index: Option<usize>,
    rules: &MeteringRules,
    window: &TimeWindow,
) -> Result<UsageEvent, Rejection> {
    let path = FieldPath { index };
    let what = match index {
        Some(i) => format!("events[{i}]"),
        None => "the event".to_owned(),
    };
    if !raw.get().starts_with('{') {
        return Err(Rejection::new(
            ErrorCode::InvalidShape,
            format!("{what} is not a JSON object"),
        ));
    }
    let fields: RawEvent<'_> = serde_json::from_str(raw.get())
        .map_err(|e| Rejection::new(ErrorCode::InvalidValue, format!("{what}: {e}")))?;

    let id = string_field(&path, "id", fields.id)?;
    let id_len = id.chars().count();
    if !(1..=128).contains(&id_len) {
        return Err(path.invalid("id", format!("must be 1 to 128 characters (got {id_len})")));
    }
    // PostgreSQL text cannot hold U+0000; any other character is stored as sent.
    if id.contains('\0') {
        return Err(path.invalid("id", "must not contain U+0000 (NUL)"));
    }

    let tenant = string_field(&path, "tenant", fields.tenant)?;
    let tenant = TenantId::parse(&tenant).map_err(|problem| path.invalid("tenant", problem))?;

    let function = string_field(&path, "function", fields.function)?;
    let function_len = function.chars().count();
    if !(1..=256).contains(&function_len) {
        return Err(path.invalid(
            "function",
            format!("must be 1 to 256 characters (got {function_len})"),
        ));
    }
    if function.chars().any(char::is_control) {
        return Err(path.invalid("function", "must not contain control characters"));
    }

    let timestamp = string_field(&path, "timestamp", fields.timestamp)?;
    let timestamp = DateTime::parse_from_rfc3339(&timestamp)
        .map_err(|e| {
            path.invalid(
                "timestamp",
                format!(
                    "must be RFC 3339 with an offset, e.g. 2026-11-21T10:15:30.123Z ({e}; got {})",
                    echo(&timestamp)
                ),
            )
        })?
        .with_timezone(&Utc);
    if timestamp < window.oldest {
        return Err(Rejection::new(
            ErrorCode::TooOld,
            format!(
                "{} {timestamp} is older than the oldest accepted time {} (metering.max_event_age_days = {})",
                path.name("timestamp"),
                window.oldest,
                rules.max_event_age_days
            ),
        ));
    }
    if timestamp > window.newest {
        return Err(Rejection::new(
            ErrorCode::InFuture,
            format!(
                "{} {timestamp} is more than 5 minutes in the future",
                path.name("timestamp")
            ),
        ));
    }

    let max_ms = Decimal::from(rules.max_duration_ms);
    let duration_ms = number_field(&path, "duration_ms", fields.duration_ms)?
        .ok_or_else(|| path.missing("duration_ms"))?;
    check_range(&path, "duration_ms", duration_ms, max_ms)?;
    let init_duration_ms =
        number_field(&path, "init_duration_ms", fields.init_duration_ms)?.unwrap_or_default();
    check_range(&path, "init_duration_ms", init_duration_ms, max_ms)?;

    let memory_mb = number_field(&path, "memory_mb", fields.memory_mb)?
        .ok_or_else(|| path.missing("memory_mb"))?;
    if !memory_mb.fract().is_zero() || memory_mb < Decimal::ONE || memory_mb > Decimal::from(65_536)
    {
        return Err(path.invalid(
            "memory_mb",
            format!("must be an integer from 1 to 65536 (got {memory_mb})"),
        ));
    }
    let memory_mb = u32::try_from(memory_mb).expect("range checked above");

    let arch = match fields.arch {
        None => Arch::X86_64,
        Some(raw) => {
            let text: String = serde_json::from_str(raw.get())
                .map_err(|_| path.invalid("arch", "must be the string x86_64 or arm64"))?;
            Arch::from_str(&text).map_err(|problem| path.invalid("arch", problem))?
        }
    };

    Ok(UsageEvent {
        id,
        tenant,
        function,
        timestamp,
        duration_ms,
        init_duration_ms,
        memory_mb,
        arch,
    })
}

fn string_field(
    path: &FieldPath,
    field: &str,
    raw: Option<&RawValue>,
) -> Result<String, Rejection> {
    let raw = raw.ok_or_else(|| path.missing(field))?;
    serde_json::from_str(raw.get())
        .map_err(|_| path.invalid(field, format!("must be a string (got {})", echo(raw.get()))))
}

/// A JSON number read exactly from its text; `None` when absent or null. A number a
/// `Decimal` cannot hold exactly (more than 28 decimal places, or a mantissa beyond 96 bits)
/// is refused, never rounded.
fn number_field(
    path: &FieldPath,
    field: &str,
    raw: Option<&RawValue>,
) -> Result<Option<Decimal>, Rejection> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get();
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Err(path.invalid(field, format!("must be a number (got {})", echo(text))));
    }
    exact_decimal(text).map(Some).ok_or_else(|| {
        path.invalid(
            field,
            format!(
                "cannot be held exactly: at most 28 significant digits and 28 decimal places \
                 (got {})",
                echo(text)
            ),
        )
    })
}

/// The exact value of a JSON number's text (`-12.5e3`), or None if a `Decimal` cannot hold
/// it without rounding.
fn exact_decimal(text: &str) -> Option<Decimal> {
    const MAX_SCALE: i64 = 28;
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (number, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => {
            let exponent = &unsigned[at + 1..];
            let exponent = exponent.strip_prefix('+').unwrap_or(exponent);
            (&unsigned[..at], exponent.parse::<i64>().ok()?)
        }
        None => (unsigned, 0),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || !(whole.bytes().chain(fraction.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // value = digits × 10^exponent, with the digits' own leading and trailing zeros dropped.
    let digits = format!("{whole}{fraction}");
    let mut exponent = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?;
    let significant = digits.trim_start_matches('0');
    let trimmed = significant.trim_end_matches('0');
    if trimmed.is_empty() {
        return Some(Decimal::ZERO);
    }
    exponent = exponent.checked_add(i64::try_from(significant.len() - trimmed.len()).ok()?)?;
    // 29 digits already exceed a Decimal's 96-bit mantissa once over 79228162514264337593543950335.
    if trimmed.len() > 29 {
        return None;
    }
    let mut mantissa: i128 = trimmed.parse().ok()?;
    let scale = if exponent >= 0 {
        mantissa = mantissa.checked_mul(10i128.checked_pow(u32::try_from(exponent).ok()?)?)?;
        0
    } else if -exponent <= MAX_SCALE {
        u32::try_from(-exponent).ok()?
    } else {
        return None;
    };
    if negative {
        mantissa = -mantissa;
    }
    Decimal::try_from_i128_with_scale(mantissa, scale).ok()
}

fn check_range(
    path: &FieldPath,
    field: &str,
    value: Decimal,
    max: Decimal,
) -> Result<(), Rejection> {
    if value.is_sign_negative() && !value.is_zero() || value > max {
        return Err(path.invalid(
            field,
            format!("must be a number from 0 to {max} (got {value})"),
        ));
    }
    Ok(())
}

/// A short quote of an offending value for a reason sentence.
fn echo(text: &str) -> String {
    const LIMIT: usize = 64;
    if text.chars().count() <= LIMIT {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(LIMIT).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
    }

    fn event() -> serde_json::Value {
        json!({"id": "e1", "tenant": "acme", "function": "resize", "timestamp": "2026-11-21T10:15:30.123Z",
               "duration_ms": 120.5, "memory_mb": 1536})
    }

    fn decode(v: &serde_json::Value) -> Result<Vec<UsageEvent>, Rejection> {
        decode_message(v.to_string().as_bytes(), &MeteringRules::default(), now())
    }

    fn rejection_with(
        mutate: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) -> Rejection {
        let mut e = event();
        mutate(e.as_object_mut().unwrap());
        decode(&e).unwrap_err()
    }

    #[test]
    fn a_single_event_decodes_with_defaults() {
        let events = decode(&event()).unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.id, "e1");
        assert_eq!(e.tenant.as_str(), "acme");
        assert_eq!(e.duration_ms, Decimal::from_str("120.5").unwrap());
        assert_eq!(e.init_duration_ms, Decimal::ZERO);
        assert_eq!(e.memory_mb, 1536);
        assert_eq!(e.arch, Arch::X86_64);
        assert_eq!(
            e.timestamp,
            Utc.with_ymd_and_hms(2026, 11, 21, 10, 15, 30).unwrap() + Duration::milliseconds(123)
        );
    }

    #[test]
    fn numbers_are_read_exactly_from_their_text() {
        let body = br#"{"id":"e","tenant":"t","function":"f","timestamp":"2026-11-21T10:00:00+02:00",
            "duration_ms":0.1000000000000000000001,"init_duration_ms":1.5e2,"memory_mb":128.0,"arch":"arm64","extra":{"x":[1]}}"#;
        let e = &decode_message(body, &MeteringRules::default(), now()).unwrap()[0];
        assert_eq!(
            e.duration_ms,
            Decimal::from_str("0.1000000000000000000001").unwrap()
        );
        assert_eq!(e.init_duration_ms, Decimal::from(150));
        assert_eq!(e.memory_mb, 128);
        assert_eq!(e.arch, Arch::Arm64);
        assert_eq!(
            e.timestamp,
            Utc.with_ymd_and_hms(2026, 11, 21, 8, 0, 0).unwrap()
        );
    }

    #[test]
    fn arrays_decode_in_order() {
        let mut second = event();
        second["id"] = json!("e2");
        let events = decode(&json!([event(), second])).unwrap();
        assert_eq!(
            events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["e1", "e2"]
        );
    }

    #[test]
    fn envelope_problems_have_their_codes() {
        let rules = MeteringRules::default();
        let code = |body: &[u8]| decode_message(body, &rules, now()).unwrap_err().code;
        assert_eq!(code(b"not json"), ErrorCode::InvalidJson);
        assert_eq!(code(b"{\"id\":"), ErrorCode::InvalidJson);
        assert_eq!(code(&[0xff, 0xfe]), ErrorCode::InvalidJson);
        assert_eq!(code(b"42"), ErrorCode::InvalidShape);
        assert_eq!(code(b"\"x\""), ErrorCode::InvalidShape);
        assert_eq!(code(b"[]"), ErrorCode::InvalidShape);
        assert_eq!(code(b"[1]"), ErrorCode::InvalidShape);
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(code(&big), ErrorCode::TooLarge);
        let many = serde_json::Value::Array(vec![event(); MAX_EVENTS + 1]);
        assert_eq!(code(many.to_string().as_bytes()), ErrorCode::TooManyEvents);
    }

    #[test]
    fn each_missing_required_field_is_named() {
        for field in [
            "id",
            "tenant",
            "function",
            "timestamp",
            "duration_ms",
            "memory_mb",
        ] {
            let r = rejection_with(|e| {
                e.remove(field);
            });
            assert_eq!(r.code, ErrorCode::MissingField, "{field}");
            assert!(r.reason.contains(field), "{field}: {}", r.reason);
            let r = rejection_with(|e| {
                e.insert(field.into(), serde_json::Value::Null);
            });
            assert_eq!(r.code, ErrorCode::MissingField, "{field} null");
        }
    }

    #[test]
    fn each_bad_value_is_named() {
        let cases: Vec<(&str, serde_json::Value)> = vec![
            ("id", json!("")),
            ("id", json!("x".repeat(129))),
            ("id", json!(7)),
            ("tenant", json!("acme corp")),
            ("tenant", json!("a".repeat(65))),
            ("function", json!("")),
            ("function", json!("f".repeat(257))),
            ("function", json!("bad\nname")),
            ("timestamp", json!("2026-11-21T10:15:30")),
            ("timestamp", json!("yesterday")),
            ("duration_ms", json!(-1)),
            ("duration_ms", json!(3_600_001)),
            ("duration_ms", json!("120")),
            ("init_duration_ms", json!(-0.5)),
            ("memory_mb", json!(0)),
            ("memory_mb", json!(65_537)),
            ("memory_mb", json!(128.5)),
            ("arch", json!("sparc")),
            ("arch", json!(64)),
        ];
        for (field, value) in cases {
            let r = rejection_with(|e| {
                e.insert(field.into(), value.clone());
            });
            assert_eq!(
                r.code,
                ErrorCode::InvalidValue,
                "{field} = {value}: {}",
                r.reason
            );
            assert!(r.reason.starts_with(field), "{field}: {}", r.reason);
        }
    }

    #[test]
    fn a_nul_in_a_text_field_is_an_invalid_value_naming_the_field() {
        for field in ["id", "tenant", "function"] {
            let r = rejection_with(|e| {
                e.insert(field.into(), json!("a\u{0}b"));
            });
            assert_eq!(r.code, ErrorCode::InvalidValue, "{field}: {}", r.reason);
            assert!(r.reason.starts_with(field), "{field}: {}", r.reason);
        }
    }

    #[test]
    fn numbers_that_a_decimal_cannot_hold_exactly_are_refused_not_rounded() {
        for number in [
            "1.000000000000000000000000000001",
            "1e-32",
            "0.00000000000000000000000000001",
            "1234567890.12345678901234567890",
            "-1e-400",
            "1e400",
            "123456789012345678901234567890123",
            "1e99999999999999999999",
        ] {
            for field in ["duration_ms", "init_duration_ms", "memory_mb"] {
                let mut fields = vec![
                    r#""id":"e","tenant":"t","function":"f","timestamp":"2026-11-21T10:00:00Z""#
                        .to_owned(),
                ];
                for (name, value) in [("duration_ms", "1"), ("memory_mb", "128")] {
                    if name != field {
                        fields.push(format!(r#""{name}":{value}"#));
                    }
                }
                fields.push(format!(r#""{field}":{number}"#));
                let body = format!("{{{}}}", fields.join(","));
                let r = decode_message(body.as_bytes(), &MeteringRules::default(), now())
                    .expect_err(number);
                assert_eq!(r.code, ErrorCode::InvalidValue, "{number}: {}", r.reason);
                assert!(r.reason.starts_with(field), "{number}: {}", r.reason);
            }
        }
        // Exactly representable, however written: accepted with its exact value.
        for (number, exact) in [
            ("1e-28", "0.0000000000000000000000000001"),
            ("0.1000000000000000000000000000", "0.1"),
            ("1.0000000000000000000000000000000000", "1"),
            ("0e-400", "0"),
            ("-0", "0"),
            ("2.5E+3", "2500"),
            ("12.5e-1", "1.25"),
        ] {
            let body = format!(
                r#"{{"id":"e","tenant":"t","function":"f","timestamp":"2026-11-21T10:00:00Z","duration_ms":{number},"memory_mb":128}}"#
            );
            let events = decode_message(body.as_bytes(), &MeteringRules::default(), now());
            let events = events.unwrap_or_else(|r| panic!("{number}: {r}"));
            assert_eq!(
                events[0].duration_ms,
                Decimal::from_str(exact).unwrap(),
                "{number}"
            );
        }
    }

    #[test]
    fn numbers_beyond_decimal_range_are_invalid_values_not_panics() {
        for number in ["1e400", "123456789012345678901234567890123", "-1e-400"] {
            let body = format!(
                r#"{{"id":"e","tenant":"t","function":"f","timestamp":"2026-11-21T10:00:00Z","duration_ms":{number},"memory_mb":128}}"#
            );
            let r = decode_message(body.as_bytes(), &MeteringRules::default(), now());
            match r {
                Err(r) => assert_eq!(r.code, ErrorCode::InvalidValue, "{number}: {}", r.reason),
                // A vanishingly small number parses as zero, which is valid.
                Ok(events) => assert!(events[0].duration_ms.is_zero(), "{number}"),
            }
        }
    }

    #[test]
    fn the_time_window_is_enforced_at_its_edges() {
        let at = |ts: DateTime<Utc>| {
            rejection_with(|e| {
                e.insert("timestamp".into(), json!(ts.to_rfc3339()));
            })
        };
        assert_eq!(
            at(now() - Duration::days(90) - Duration::seconds(1)).code,
            ErrorCode::TooOld
        );
        assert_eq!(
            at(now() + Duration::minutes(5) + Duration::seconds(1)).code,
            ErrorCode::InFuture
        );
        for ok in [now() - Duration::days(90), now() + Duration::minutes(5)] {
            let mut e = event();
            e["timestamp"] = json!(ok.to_rfc3339());
            assert!(decode(&e).is_ok(), "{ok}");
        }
    }

    proptest::proptest! {
        /// Whatever the bytes, the decoder answers with events or a code; it never panics.
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = decode_message(&body, &MeteringRules::default(), now());
        }

        /// Any JSON number text is read exactly or refused: never rounded.
        #[test]
        fn number_text_is_exact_or_refused(text in "-?(0|[1-9][0-9]{0,35})(\\.[0-9]{1,35})?") {
            // The text's own canonical form: no trailing fraction zeros, no negative zero.
            let trimmed = if text.contains('.') {
                text.trim_end_matches('0').trim_end_matches('.')
            } else {
                &text
            };
            let canonical = if trimmed.trim_start_matches('-').bytes().all(|b| b == b'0') {
                "0".to_owned()
            } else {
                trimmed.to_owned()
            };
            match exact_decimal(&text) {
                Some(exact) => proptest::prop_assert_eq!(exact.normalize().to_string(), canonical),
                None => proptest::prop_assert!(
                    Decimal::from_str(&canonical).map_or(true, |d| d.normalize().to_string() != canonical),
                    "{} is representable but was refused", text
                ),
            }
        }
    }

    #[test]
    fn one_bad_element_rejects_the_array_and_names_its_index() {
        let mut bad = event();
        bad["memory_mb"] = json!(0);
        let r = decode(&json!([event(), event(), bad])).unwrap_err();
        assert_eq!(r.code, ErrorCode::InvalidValue);
        assert!(r.reason.starts_with("events[2].memory_mb"), "{}", r.reason);
        let r = decode(&json!([event(), "x"])).unwrap_err();
        assert_eq!(r.code, ErrorCode::InvalidShape);
        assert!(r.reason.contains("events[1]"), "{}", r.reason);
    }
}
