//! Reads an untrusted JS value into the crate's [`Value`] tree, with explicit
//! limits on depth, array length and member count, so a hostile or cyclic
//! object can neither overflow the stack nor make us copy megabytes.

use napi::bindgen_prelude::{Array, JsObjectValue, JsValue, Object, Unknown};
use napi::{JsString, Result, ValueType};

use crate::config::{Value, MAX_DEPTH};

/// Longest array copied; a valid config has at most 50 buckets.
const MAX_ITEMS: u32 = 1024;
/// Most members copied from one object; a valid config object has at most 7.
const MAX_MEMBERS: usize = 256;

pub fn to_value(v: &Unknown) -> Result<Value> {
    walk(v, 0)
}

fn walk(v: &Unknown, depth: usize) -> Result<Value> {
    if depth > MAX_DEPTH {
        return Ok(Value::Unsupported("structure nested too deeply"));
    }
    // SAFETY (all casts below): each cast matches the type napi just reported.
    Ok(match v.get_type()? {
        ValueType::Undefined => Value::Undefined,
        ValueType::Null => Value::Null,
        ValueType::Boolean => Value::Bool(unsafe { v.cast::<bool>()? }),
        ValueType::Number => Value::Number(unsafe { v.cast::<f64>()? }),
        ValueType::String => {
            // Read as UTF-16: a lone surrogate (valid in JS, which writes it as
            // `\udxxx` in JSON) has no Rust form, and silently replacing it
            // would change the key, so it is refused instead.
            let utf16 = unsafe { v.cast::<JsString>()? }.into_utf16()?;
            match utf16.as_str() {
                Ok(s) => Value::String(s),
                Err(_) => Value::Unsupported("string with an unpaired UTF-16 surrogate"),
            }
        }
        ValueType::Object => {
            let obj: Object = unsafe { v.cast()? };
            if obj.is_array()? {
                let arr: Array = unsafe { v.cast()? };
                if arr.len() > MAX_ITEMS {
                    return Ok(Value::Unsupported("array too long"));
                }
                let mut items = Vec::with_capacity(arr.len() as usize);
                for i in 0..arr.len() {
                    let item: Unknown = arr.get(i)?.expect("index below length");
                    items.push(walk(&item, depth + 1)?);
                }
                Value::Array(items)
            } else {
                let keys = Object::keys(&obj)?;
                if keys.len() > MAX_MEMBERS {
                    return Ok(Value::Unsupported("object with too many fields"));
                }
                let mut members = Vec::with_capacity(keys.len());
                for k in keys {
                    let item: Unknown = obj.get_named_property(&k)?;
                    members.push((k, walk(&item, depth + 1)?));
                }
                Value::Object(members)
            }
        }
        ValueType::Function => Value::Unsupported("function"),
        ValueType::Symbol => Value::Unsupported("symbol"),
        ValueType::BigInt => Value::Unsupported("bigint"),
        _ => Value::Unsupported("non-JSON value"),
    })
}
