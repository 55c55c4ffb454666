//! Hostile JSON for the registry adapters' property tests (issue 20): a valid answer with one
//! value swapped for a hostile one (wrong type, huge or negative number, control characters,
//! deep nesting), or its bytes mangled (bit flips, bytes dropped or added, cut short).

use proptest::prelude::*;
use serde_json::Value;

/// A value a registry should never send where it is put.
pub(crate) fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(Value::from(-1)),
        Just(Value::from(1e308)),
        Just(Value::from(0.5)),
        any::<String>().prop_map(Value::String),
        "[\\x00-\\x1f]{0,3}".prop_map(Value::String),
        (1usize..20_000).prop_map(|n| Value::String("x".repeat(n))),
        Just(Value::Array(Vec::new())),
        Just(serde_json::json!({})),
        Just(serde_json::json!([{"instanceId": ""}])),
        // Deeper than serde_json's recursion limit (128): refused, not a stack overflow.
        (100usize..300).prop_map(|depth| {
            (0..depth).fold(Value::Null, |inner, _| Value::Array(vec![inner]))
        }),
    ]
}

/// Every JSON pointer into `value`, the root included.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let key = key.replace('~', "~0").replace('/', "~1");
                pointers(child, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (n, child) in items.iter().enumerate() {
                pointers(child, format!("{at}/{n}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// `valid` with the value at one place replaced by `hostile`, or with a key added there.
pub(crate) fn swap_value(
    valid: &str,
    at: prop::sample::Index,
    hostile: Value,
    add: bool,
) -> Vec<u8> {
    let mut root: Value = serde_json::from_str(valid).unwrap_or_else(|e| panic!("sample: {e}"));
    let mut all = Vec::new();
    pointers(&root, String::new(), &mut all);
    let pointer = &all[at.index(all.len())];
    if let Some(place) = root.pointer_mut(pointer) {
        match place {
            Value::Object(map) if add => {
                map.insert("unknownKey".into(), hostile);
            }
            _ => *place = hostile,
        }
    }
    serde_json::to_vec(&root).unwrap_or_default()
}

/// One edit of the raw bytes.
pub(crate) type Edit = (u8, prop::sample::Index, u8);

pub(crate) fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec((0u8..5, any::<prop::sample::Index>(), any::<u8>()), 1..5)
}

/// `bytes` with `edits` applied: a bit flipped, a byte dropped, a byte (often JSON
/// punctuation) inserted, or cut short.
pub(crate) fn mangle(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    const PUNCTUATION: &[u8] = b"{}[]\":,0-.e\\n";
    for &(op, at, byte) in edits {
        if bytes.is_empty() {
            break;
        }
        let at = at.index(bytes.len());
        match op {
            0 => bytes[at] ^= 1 << (byte % 8),
            1 => {
                bytes.remove(at);
            }
            2 => bytes.insert(at, PUNCTUATION[usize::from(byte) % PUNCTUATION.len()]),
            3 => bytes.insert(at, byte),
            _ => bytes.truncate(at),
        }
    }
    bytes
}

/// A body to feed a parser: a valid sample with a hostile value, its bytes mangled, or
/// arbitrary bytes.
pub(crate) fn hostile_body(samples: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let sample = any::<prop::sample::Index>().prop_map(move |i| samples[i.index(samples.len())]);
    prop_oneof![
        4 => (sample.clone(), any::<prop::sample::Index>(), hostile_value(), any::<bool>())
            .prop_map(|(s, at, v, add)| swap_value(s, at, v, add)),
        3 => (sample, edits()).prop_map(|(s, e)| mangle(s.as_bytes().to_vec(), &e)),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
}
