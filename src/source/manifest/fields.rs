//! Two looks at a document's JSON value beside its typed decoding: the fields the typed object
//! does not know (kubectl's strict field validation: `prots:` for `ports:` is warned, not
//! silently dropped), and a fingerprint that tells a reload which objects changed.
//!
//! Unknown fields are found by comparing the document with the typed object serialized back:
//! a key of the input missing from the round trip was not understood. (serde's
//! `deny_unknown_fields` is not available on k8s-openapi's types, and would reject the object
//! where kubectl's default, `--validate=warn` on older servers, keeps it.)

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::Value;

/// The dotted paths (`spec.prots`, `spec.ports[0].prot`) of keys in `input` that `typed` (the
/// decoded object serialized back) lacks. A `null` input is not reported: it means "unset",
/// which the round trip leaves out too.
pub(super) fn unknown(input: &Value, typed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(input, typed, "", &mut out);
    out
}

fn walk(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(have), Value::Object(known)) => {
            for (key, value) in have {
                let here = match path {
                    "" => key.clone(),
                    _ => format!("{path}.{key}"),
                };
                match known.get(key) {
                    Some(back) => walk(value, back, &here, out),
                    None if value.is_null() => {}
                    None => out.push(here),
                }
            }
        }
        (Value::Array(have), Value::Array(known)) => {
            for (i, (value, back)) in have.iter().zip(known).enumerate() {
                walk(value, back, &format!("{path}[{i}]"), out);
            }
        }
        // Scalars, or a shape the type reinterprets (IntOrString, Quantity): nothing to name.
        _ => {}
    }
}

/// A fingerprint of a document's value: equal documents, equal fingerprints. (Should the map
/// keep the file's key order, a reordered map reads as a change: one needless update at most.)
pub(super) fn fingerprint(document: &serde_json::Map<String, Value>) -> u64 {
    let mut h = DefaultHasher::new();
    feed_map(document, &mut h);
    h.finish()
}

fn feed_map(map: &serde_json::Map<String, Value>, h: &mut DefaultHasher) {
    (5u8, map.len()).hash(h);
    for (k, v) in map {
        k.hash(h);
        feed(v, h);
    }
}

fn feed(value: &Value, h: &mut DefaultHasher) {
    // A tag per variant keeps `"1"` and `1`, `[]` and `{}` apart.
    match value {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => (2u8, n.to_string()).hash(h),
        Value::String(s) => (3u8, s).hash(h),
        Value::Array(items) => {
            (4u8, items.len()).hash(h);
            items.iter().for_each(|v| feed(v, h));
        }
        Value::Object(map) => feed_map(map, h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_the_round_trip_lost_are_named_with_their_path_and_nulls_are_not() {
        let input = json!({"spec": {"prots": [], "ports": [{"port": 80, "prot": 1}], "x": null}});
        let typed = json!({"spec": {"ports": [{"port": 80}]}});
        assert_eq!(
            unknown(&input, &typed),
            // In the map's key order.
            ["spec.ports[0].prot", "spec.prots"]
        );
    }

    #[test]
    fn the_fingerprint_follows_content_and_type() {
        let print = |v: Value| fingerprint(v.as_object().unwrap());
        let a = print(json!({"port": 80}));
        assert_eq!(a, print(json!({"port": 80})));
        assert_ne!(a, print(json!({"port": 81})));
        assert_ne!(a, print(json!({"port": "80"})));
    }
}
