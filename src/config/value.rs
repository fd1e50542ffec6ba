//! A small, owned value tree: the shape a config arrives in before validation.
//!
//! The Node binding walks the JS object into this (with explicit depth and size
//! limits) and Rust callers build it from JSON, so validation is one code path
//! that `cargo test` exercises without Node.

/// Deepest nesting accepted from untrusted input. A valid config is 4 deep.
pub const MAX_DEPTH: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// JS `undefined`: treated as an absent field.
    Undefined,
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Value>),
    /// Members in source order.
    Object(Vec<(String, Value)>),
    /// A JS value with no JSON counterpart (function, symbol, bigint...), named by kind.
    Unsupported(&'static str),
}

impl Value {
    /// What the value is, as an error message shows it: its kind and, for
    /// scalars, the value itself (strings shortened).
    pub fn describe(&self) -> String {
        match self {
            Value::Undefined => "undefined".into(),
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            // As JavaScript prints it; JSON's `null` for these would hide what was given.
            Value::Number(n) if n.is_nan() => "NaN".into(),
            Value::Number(n) if n.is_infinite() => {
                if *n > 0.0 { "Infinity" } else { "-Infinity" }.into()
            }
            Value::Number(n) => crate::js_number::format_js_number(*n),
            Value::String(s) => {
                let short: String = s.chars().take(40).collect();
                let ell = if s.chars().count() > 40 { "..." } else { "" };
                format!("{:?}{ell} (string)", short)
            }
            Value::Array(a) => format!("an array of {} items", a.len()),
            Value::Object(_) => "an object".into(),
            Value::Unsupported(kind) => format!("a {kind}"),
        }
    }

    /// Builds a value from parsed JSON (used by Rust callers, tests and the CLI).
    pub fn from_json(v: &serde_json::Value) -> Value {
        Self::from_json_at(v, 0)
    }

    fn from_json_at(v: &serde_json::Value, depth: usize) -> Value {
        use serde_json::Value as J;
        if depth > MAX_DEPTH {
            return Value::Unsupported("structure nested too deeply");
        }
        match v {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            J::String(s) => Value::String(s.clone()),
            J::Array(a) => {
                Value::Array(a.iter().map(|x| Self::from_json_at(x, depth + 1)).collect())
            }
            J::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), Self::from_json_at(x, depth + 1)))
                    .collect(),
            ),
        }
    }
}
