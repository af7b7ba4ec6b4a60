//! Reading JSON documents (plans, usage files) field by field, so every error names the path of
//! the field at fault (`charges[1].tiers[2].up_to: …`), which serde's derive cannot do.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::Exact;

/// A field of a JSON document that is missing or invalid, named by its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FieldError {
    /// The path, e.g. `charges[0].unit_price`; empty for the document as a whole.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl FieldError {
    pub(super) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Parses JSON text; a syntax error is reported for the whole document.
pub(super) fn parse_document(text: &str) -> Result<Value, FieldError> {
    serde_json::from_str(text).map_err(|e| FieldError::new("", format!("invalid JSON: {e}")))
}

/// A JSON object being read, with its path for error messages.
pub(super) struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Fields<'a> {
    /// Reads `value` as an object found at `path`.
    pub fn of(value: &'a Value, path: String) -> Result<Self, FieldError> {
        match value {
            Value::Object(map) => Ok(Self { map, path }),
            _ => Err(FieldError::new(path, "must be a JSON object")),
        }
    }

    /// The path of one of this object's fields.
    pub fn path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// An error about one of this object's fields.
    pub fn error(&self, name: &str, reason: impl Into<String>) -> FieldError {
        FieldError::new(self.path(name), reason)
    }

    /// An optional field read with `read`; `null` counts as absent.
    pub fn optional<T>(
        &self,
        name: &str,
        read: impl FnOnce(&'a Value) -> Result<T, String>,
    ) -> Result<Option<T>, FieldError> {
        match self.map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => read(value).map(Some).map_err(|e| self.error(name, e)),
        }
    }

    /// A required field read with `read`.
    pub fn required<T>(
        &self,
        name: &str,
        read: impl FnOnce(&'a Value) -> Result<T, String>,
    ) -> Result<T, FieldError> {
        self.optional(name, read)?
            .ok_or_else(|| self.error(name, "is required"))
    }

    /// An optional array, each element with its path (`charges[3]`); absent is empty.
    pub fn items(&self, name: &str) -> Result<Vec<(String, &'a Value)>, FieldError> {
        let items = self.optional(name, array)?.unwrap_or_default();
        let path = self.path(name);
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, item)| (format!("{path}[{i}]"), item))
            .collect())
    }

    /// Refuses fields this object does not define: a misspelt optional field (`minimum_charg`)
    /// would otherwise be silently ignored, and that is a billing error.
    pub fn deny_unknown(&self, known: &[&str], what: &str) -> Result<(), FieldError> {
        match self.map.keys().find(|key| !known.contains(&key.as_str())) {
            Some(key) => Err(self.error(key, format!("is not a field of {what}"))),
            None => Ok(()),
        }
    }
}

/// A JSON string.
pub(super) fn string(value: &Value) -> Result<&str, String> {
    value.as_str().ok_or_else(|| "must be a string".to_owned())
}

/// A non-blank JSON string.
pub(super) fn non_empty_string(value: &Value) -> Result<&str, String> {
    match string(value)? {
        text if text.trim().is_empty() => Err("must not be empty".to_owned()),
        text => Ok(text),
    }
}

/// A JSON array.
pub(super) fn array(value: &Value) -> Result<&[Value], String> {
    value
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| "must be an array".to_owned())
}

/// A string naming one of a fixed set (meter, arch, currency, …).
pub(super) fn name<T: FromStr<Err: fmt::Display>>(value: &Value) -> Result<T, String> {
    string(value)?.parse().map_err(|e: T::Err| e.to_string())
}

/// A decimal written as a JSON string. A JSON number is refused: it may already have passed
/// through a binary float, and money must never do that.
pub(super) fn decimal(value: &Value) -> Result<Decimal, String> {
    let Value::String(text) = value else {
        return Err(r#"must be a decimal string, e.g. "0.0000002""#.to_owned());
    };
    let exact: Exact = text
        .parse()
        .map_err(|e| format!("{e}: {text:?} (expected digits with an optional - and .)"))?;
    let decimal = exact
        .to_decimal()
        .map_err(|_| format!("{text:?} has too many digits (at most 28 significant)"))?;
    Ok(decimal.normalize())
}

/// A decimal string that is not negative.
pub(super) fn non_negative_decimal(value: &Value) -> Result<Decimal, String> {
    match decimal(value)? {
        d if d < Decimal::ZERO => Err("must not be negative".to_owned()),
        d => Ok(d),
    }
}

/// A decimal string that is greater than zero.
pub(super) fn positive_decimal(value: &Value) -> Result<Decimal, String> {
    match decimal(value)? {
        d if d > Decimal::ZERO => Ok(d),
        _ => Err("must be greater than 0".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_nested_field() {
        let doc = json!({"charges": [{"key": "a"}, {"key": null, "extra": 1}]});
        let root = Fields::of(&doc, String::new()).unwrap();
        let items = root.items("charges").unwrap();
        let (path, item) = &items[1];
        let charge = Fields::of(item, path.clone()).unwrap();
        let err = charge.required("key", string).unwrap_err();
        assert_eq!(err.to_string(), "charges[1].key: is required");
        let err = charge.deny_unknown(&["key"], "a charge").unwrap_err();
        assert_eq!(
            err.to_string(),
            "charges[1].extra: is not a field of a charge"
        );
        let err = Fields::of(&json!([1]), String::new()).err().unwrap();
        assert_eq!(err.to_string(), "must be a JSON object");
        let err = parse_document("{").unwrap_err();
        assert!(err.to_string().starts_with("invalid JSON: "), "{err}");
    }

    #[test]
    fn decimals_come_only_from_plain_decimal_strings() {
        assert_eq!(
            decimal(&json!("0.0000150000")).unwrap().to_string(),
            "0.000015"
        );
        assert_eq!(
            decimal(&json!(0.0000002)).unwrap_err(),
            r#"must be a decimal string, e.g. "0.0000002""#
        );
        assert!(
            decimal(&json!("1e5"))
                .unwrap_err()
                .starts_with("not a decimal number")
        );
        assert!(
            decimal(&json!(format!("0.{}1", "0".repeat(28))))
                .unwrap_err()
                .contains("too many digits")
        );
        assert_eq!(
            non_negative_decimal(&json!("-0.01")).unwrap_err(),
            "must not be negative"
        );
        assert!(non_negative_decimal(&json!("-0")).is_ok());
        assert_eq!(
            positive_decimal(&json!("0")).unwrap_err(),
            "must be greater than 0"
        );
        assert_eq!(
            non_empty_string(&json!("  ")).unwrap_err(),
            "must not be empty"
        );
    }
}
