//! Reading one JSON field: objects, arrays, typed values, names, free
//! text, codes and UAIs, each problem reported at its JSON path.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Checker, FREE_TEXT_CONTROLS, Fields, check_code, control_char, kind};
use crate::domain::Uai;

impl Checker {
    pub(super) fn object(&mut self, value: Value, path: &str) -> Option<Fields> {
        match value {
            Value::Object(map) => Some(Fields {
                map,
                path: path.to_owned(),
            }),
            other => {
                self.problem(path, format!("expected an object, found {}", kind(&other)));
                None
            }
        }
    }

    pub(super) fn array(&mut self, value: Value, path: &str) -> Option<Vec<Value>> {
        match value {
            Value::Array(items) => Some(items),
            other => {
                self.problem(path, format!("expected an array, found {}", kind(&other)));
                None
            }
        }
    }

    /// Takes a required field out, reporting it when missing.
    pub(super) fn take(&mut self, fields: &mut Fields, key: &str) -> Option<Value> {
        let value = fields.map.remove(key);
        if value.is_none() {
            self.problem(fields.field_path(key), "required field is missing");
        }
        value
    }

    pub(super) fn decode<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Option<T> {
        match serde_json::from_value(value) {
            Ok(value) => Some(value),
            Err(error) => {
                self.problem(path, error.to_string());
                None
            }
        }
    }

    pub(super) fn required<T: DeserializeOwned>(
        &mut self,
        fields: &mut Fields,
        key: &str,
    ) -> Option<T> {
        let value = self.take(fields, key)?;
        self.decode(value, &fields.field_path(key))
    }

    /// A field that may be missing or null; `None` when mistyped.
    pub(super) fn optional<T: DeserializeOwned>(
        &mut self,
        fields: &mut Fields,
        key: &str,
    ) -> Option<Option<T>> {
        match fields.map.remove(key) {
            None | Some(Value::Null) => Some(None),
            Some(value) => self.decode(value, &fields.field_path(key)).map(Some),
        }
    }

    /// A field that takes its default value when missing (but not when
    /// null, as with serde's `#[serde(default)]`).
    pub(super) fn defaulted<T: DeserializeOwned + Default>(
        &mut self,
        fields: &mut Fields,
        key: &str,
    ) -> Option<T> {
        match fields.map.remove(key) {
            None => Some(T::default()),
            Some(value) => self.decode(value, &fields.field_path(key)),
        }
    }

    /// An array field that is empty when missing.
    pub(super) fn defaulted_list<T>(
        &mut self,
        fields: &mut Fields,
        key: &str,
        element: impl FnMut(&mut Self, usize, Fields) -> Option<T>,
    ) -> Option<Vec<T>> {
        if fields.map.contains_key(key) {
            self.list(fields, key, element)
        } else {
            Some(Vec::new())
        }
    }

    /// A required string that must not be blank, on one line: no control
    /// character at all.
    pub(super) fn name(&mut self, fields: &mut Fields, key: &str) -> Option<String> {
        let value = self.line(fields, key)?;
        if value.trim().is_empty() {
            self.problem(fields.field_path(key), "must not be empty");
            return None;
        }
        Some(value)
    }

    /// A required string, possibly empty, without any control character.
    pub(super) fn line(&mut self, fields: &mut Fields, key: &str) -> Option<String> {
        let value = self.required::<String>(fields, key)?;
        self.no_control(fields, key, value, &[])
    }

    /// A string that may be missing or null and is otherwise a [`Self::name`].
    pub(super) fn optional_name(
        &mut self,
        fields: &mut Fields,
        key: &str,
    ) -> Option<Option<String>> {
        match self.optional::<String>(fields, key)? {
            None => Some(None),
            Some(value) => self.no_control(fields, key, value, &[]).map(Some),
        }
    }

    /// Free text, empty when missing: lines and tabs are allowed, no other
    /// control character.
    pub(super) fn free_text(&mut self, fields: &mut Fields, key: &str) -> Option<String> {
        let value = self.defaulted::<String>(fields, key)?;
        self.no_control(fields, key, value, FREE_TEXT_CONTROLS)
    }

    /// Free text that may be missing or null.
    pub(super) fn optional_free_text(
        &mut self,
        fields: &mut Fields,
        key: &str,
    ) -> Option<Option<String>> {
        match self.optional::<String>(fields, key)? {
            None => Some(None),
            Some(value) => self
                .no_control(fields, key, value, FREE_TEXT_CONTROLS)
                .map(Some),
        }
    }

    /// `value` of `key` unless it holds a control character other than
    /// those `allowed`, which is reported.
    pub(super) fn no_control(
        &mut self,
        fields: &Fields,
        key: &str,
        value: String,
        allowed: &[char],
    ) -> Option<String> {
        match control_char(&value, allowed) {
            None => Some(value),
            Some((at, c)) => {
                let which = if allowed.is_empty() {
                    "control characters"
                } else {
                    "control characters other than newline and tab"
                };
                let message = format!(
                    "must not contain {which} (found U+{:04X} at character {})",
                    u32::from(c),
                    at + 1
                );
                self.problem(fields.field_path(key), message);
                None
            }
        }
    }

    /// A required code or identifier (see [`check_code`]); `what` names it
    /// in messages. A code that is only badly formed is still returned, so
    /// that the references to it resolve and are not reported as well.
    pub(super) fn code(&mut self, fields: &mut Fields, key: &str, what: &str) -> Option<String> {
        let value = self.name(fields, key)?;
        if let Err(reason) = check_code(&value) {
            self.problem(fields.field_path(key), format!("{what} {value:?} {reason}"));
        }
        Some(value)
    }

    pub(super) fn uai(&mut self, fields: &mut Fields, key: &str) -> Option<Uai> {
        let value = self.required::<String>(fields, key)?;
        match Uai::parse(&value) {
            Ok(uai) => Some(uai),
            Err(error) => {
                self.problem(fields.field_path(key), error.to_string());
                None
            }
        }
    }

    /// Reports the fields nobody took.
    pub(super) fn finish(&mut self, fields: Fields) {
        for key in fields.map.keys() {
            self.problem(fields.field_path(key), "unknown field");
        }
    }
}
