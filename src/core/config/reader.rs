//! Reading a JSON document with every error collected at its path: the building blocks of
//! the policy reader.

use serde_json::{Map, Value};

use super::{ConfigError, ConfigWarning};
use crate::core::syntax::is_scope_token;

#[derive(Default)]
pub(super) struct Errors {
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<ConfigWarning>,
}

impl Errors {
    pub(super) fn push(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.to_owned(),
            message: message.into(),
        });
    }
    pub(super) fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(ConfigWarning {
            path: path.to_owned(),
            message: message.into(),
        });
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if key.is_empty() {
        path.to_owned()
    } else if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// An object being read: tracks which members were consumed to report unknown ones.
pub(super) struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    pub(super) fn new(v: &'a Value, path: &str, errs: &mut Errors) -> Option<Obj<'a>> {
        match v {
            Value::Object(map) => Some(Obj {
                path: path.to_owned(),
                map,
                known: Vec::new(),
            }),
            _ => {
                errs.push(path, "must be an object");
                None
            }
        }
    }
    /// The member `key` (marking it known), with its path.
    pub(super) fn get(&mut self, key: &'static str) -> (Option<&'a Value>, String) {
        self.known.push(key);
        (self.map.get(key), join(&self.path, key))
    }
    pub(super) fn required(
        &mut self,
        key: &'static str,
        errs: &mut Errors,
    ) -> (Option<&'a Value>, String) {
        let (v, p) = self.get(key);
        if v.is_none() {
            errs.push(&p, "is required");
        }
        (v, p)
    }
    pub(super) fn finish(self, errs: &mut Errors) {
        for k in self.map.keys() {
            if !self.known.contains(&k.as_str()) {
                errs.push(
                    &join(&self.path, k),
                    format!("unknown field (expected one of: {})", self.known.join(", ")),
                );
            }
        }
    }
}

pub(super) fn string(v: Option<&Value>, path: &str, errs: &mut Errors) -> Option<String> {
    match v? {
        Value::String(s) if s.is_empty() => {
            errs.push(path, "must not be empty");
            None
        }
        Value::String(s) if s.chars().any(char::is_control) => {
            errs.push(path, "must not contain control characters");
            None
        }
        Value::String(s) => Some(s.clone()),
        _ => {
            errs.push(path, "must be a string");
            None
        }
    }
}

pub(super) fn integer(
    v: Option<&Value>,
    path: &str,
    min: u64,
    max: u64,
    errs: &mut Errors,
) -> Option<u64> {
    match v?.as_u64() {
        Some(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            errs.push(path, format!("must be an integer between {min} and {max}"));
            None
        }
    }
}

/// A JSON number between `min` and `max` (inclusive).
pub(super) fn number(
    v: Option<&Value>,
    path: &str,
    min: f64,
    max: f64,
    errs: &mut Errors,
) -> Option<f64> {
    match v?.as_f64() {
        Some(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            errs.push(path, format!("must be a number between {min} and {max}"));
            None
        }
    }
}

pub(super) fn boolean(v: Option<&Value>, path: &str, errs: &mut Errors) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        _ => {
            errs.push(path, "must be true or false");
            None
        }
    }
}

/// A list of non-empty strings, each checked by `check` (which returns a message on error).
pub(super) fn string_list(
    v: Option<&Value>,
    path: &str,
    errs: &mut Errors,
    check: impl Fn(&str) -> Option<String>,
) -> Option<Vec<String>> {
    let items = match v? {
        Value::Array(items) => items,
        _ => {
            errs.push(path, "must be an array of strings");
            return None;
        }
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        match string(Some(item), &p, errs) {
            Some(s) => {
                if let Some(msg) = check(&s) {
                    errs.push(&p, msg);
                    ok = false;
                } else if out.contains(&s) {
                    errs.push(&p, format!("duplicate value {s:?}"));
                    ok = false;
                } else {
                    out.push(s);
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

pub(super) fn any(_: &str) -> Option<String> {
    None
}

pub(super) fn scope_check(s: &str) -> Option<String> {
    (!is_scope_token(s)).then(|| "is not a valid scope token (RFC 6749 §3.3)".to_owned())
}

pub(super) fn non_empty(
    list: Option<Vec<String>>,
    path: &str,
    errs: &mut Errors,
) -> Option<Vec<String>> {
    match list {
        Some(l) if l.is_empty() => {
            errs.push(path, "must not be empty");
            None
        }
        other => other,
    }
}
