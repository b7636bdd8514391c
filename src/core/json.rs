//! Strict JSON reading for untrusted documents (token headers and payloads, configuration).
//!
//! `serde_json::Value` silently keeps the last of duplicate member names; for a security
//! document that is an ambiguity an attacker can exploit (two parsers, two meanings), so
//! duplicates are refused here. Nesting depth is bounded before any other work.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not UTF-8 or not JSON; the message is serde_json's (position, never content).
    Syntax(String),
    /// The same member name twice in one object.
    DuplicateKey,
    /// Arrays/objects nested deeper than allowed.
    TooDeep,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Syntax(m) => write!(f, "invalid JSON: {m}"),
            JsonError::DuplicateKey => f.write_str("duplicate member name"),
            JsonError::TooDeep => f.write_str("JSON nested too deeply"),
        }
    }
}

/// Parses `bytes` as one JSON value, refusing duplicate member names and nesting deeper
/// than `max_depth` (a scalar has depth 0, `{}` depth 1).
pub fn parse_strict(bytes: &[u8], max_depth: usize) -> Result<Value, JsonError> {
    let flag = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = StrictSeed {
        depth_left: max_depth,
        flag: &flag,
    };
    let value = match seed.deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => {
            return Err(flag
                .take()
                .unwrap_or_else(|| JsonError::Syntax(syntax_message(&e))))
        }
    };
    match de.end() {
        Ok(()) => Ok(value),
        Err(e) => Err(JsonError::Syntax(syntax_message(&e))),
    }
}

/// serde_json messages may quote input for some errors; keep only the category and position.
fn syntax_message(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "unexpected end of input",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

#[derive(Clone, Copy)]
struct StrictSeed<'f> {
    depth_left: usize,
    flag: &'f Cell<Option<JsonError>>,
}

impl StrictSeed<'_> {
    fn fail<E: de::Error>(&self, err: JsonError) -> E {
        self.flag.set(Some(err));
        E::custom("refused")
    }
    fn nested<E: de::Error>(&self) -> Result<Self, E> {
        match self.depth_left.checked_sub(1) {
            Some(depth_left) => Ok(StrictSeed {
                depth_left,
                flag: self.flag,
            }),
            None => Err(self.fail(JsonError::TooDeep)),
        }
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(self.fail(JsonError::DuplicateKey));
            }
            let v = map.next_value_seed(inner)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_documents() {
        let v = parse_strict(br#"{"a":[1,2,{"b":null}],"c":"x"}"#, 8).unwrap();
        assert_eq!(v["a"][2]["b"], Value::Null);
        assert_eq!(v["c"], "x");
    }

    #[test]
    fn refuses_duplicate_members_at_any_depth() {
        assert_eq!(
            parse_strict(br#"{"a":1,"a":2}"#, 8),
            Err(JsonError::DuplicateKey)
        );
        assert_eq!(
            parse_strict(br#"{"x":{"a":1,"b":{"c":1,"c":1}}}"#, 8),
            Err(JsonError::DuplicateKey)
        );
        // Escapes that decode to the same name are the same name.
        assert_eq!(
            parse_strict(br#"{"exp":1,"\u0065xp":2}"#, 8),
            Err(JsonError::DuplicateKey)
        );
    }

    #[test]
    fn bounds_depth() {
        assert!(parse_strict(b"[[[]]]", 3).is_ok());
        assert_eq!(parse_strict(b"[[[[]]]]", 3), Err(JsonError::TooDeep));
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert_eq!(parse_strict(deep.as_bytes(), 16), Err(JsonError::TooDeep));
    }

    #[test]
    fn refuses_trailing_data_and_bad_utf8() {
        assert!(matches!(
            parse_strict(b"{} {}", 8),
            Err(JsonError::Syntax(_))
        ));
        assert!(matches!(
            parse_strict(b"{\"a\":\"\xff\"}", 8),
            Err(JsonError::Syntax(_))
        ));
    }
}
