//! Serde pieces that make our output look like upstream's Go encoder and accept what its
//! decoder accepts: nil lists written as `null`, sorted keys, component-base's logging block.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::GoDuration;

/// Go writes a nil slice as `null` and reads `null` as nil; we keep an empty Vec for both.
pub mod null_as_empty {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        if v.is_empty() {
            s.serialize_none()
        } else {
            v.serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
    }
}

/// Go's encoder writes a whole float32 as `5`, not `5.0`.
pub fn go_float<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f32(*v)
    }
}

/// For apiVersion/kind errors: the value as written, or "" when missing.
pub fn describe(v: Option<serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
    }
}

/// Recursively sorts object keys (upstream's YAML is sorted), whatever serde_json's map order is.
pub fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

/// component-base's LoggingConfiguration (`logging:`). kproxy only acts on `verbosity`
/// (and `format`); the rest is kept so files round-trip.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LoggingConfiguration {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub format: String,
    /// Go accepts nanoseconds as a number or a duration string here.
    #[serde(deserialize_with = "flush_frequency")]
    pub flush_frequency: GoDuration,
    pub verbosity: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vmodule: Vec<VModuleItem>,
    pub options: LoggingFormatOptions,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VModuleItem {
    pub file_pattern: String,
    pub verbosity: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingFormatOptions {
    pub json: OutputRouting,
    pub text: OutputRouting,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutputRouting {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub split_stream: bool,
    pub info_buffer_size: Quantity,
}

/// A Kubernetes resource quantity ("0", "64Ki"), kept as written; numbers are accepted too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Quantity(pub String);

impl Default for Quantity {
    fn default() -> Self {
        Quantity("0".to_string())
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    String(String),
    Number(serde_json::Number),
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Quantity(match StringOrNumber::deserialize(d)? {
            StringOrNumber::String(s) => s,
            StringOrNumber::Number(n) => n.to_string(),
        }))
    }
}

fn flush_frequency<'de, D: Deserializer<'de>>(d: D) -> Result<GoDuration, D::Error> {
    match StringOrNumber::deserialize(d)? {
        StringOrNumber::String(s) => s.parse().map_err(serde::de::Error::custom),
        StringOrNumber::Number(n) => n
            .as_u64()
            .map(|ns| GoDuration(std::time::Duration::from_nanos(ns)))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid duration {n} (must be non-negative nanoseconds)"
                ))
            }),
    }
}
