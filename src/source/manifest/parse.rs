//! One manifest file's bytes -> typed objects, plus a [`ManifestProblem`] for everything that
//! could not be used. Nothing here touches the file system.

use std::path::Path;

use k8s_openapi::api::{
    core::v1::Node, core::v1::Service, discovery::v1::EndpointSlice, networking::v1::ServiceCIDR,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::{ManifestProblem, fields};
use crate::source::Object;

/// An object of a watched kind, already normalised (namespace defaulted or cleared).
pub(super) struct Located {
    /// The 0-based index of the document it came from.
    pub document: usize,
    pub object: Object,
    /// Of the object's text as written: a reload sends only objects whose fingerprint changed.
    pub fingerprint: u64,
}

/// Parses one file. JSON files (by extension) hold exactly one document; everything else is
/// read as a YAML stream.
pub(super) fn parse_file(
    file: &Path,
    bytes: &[u8],
    problems: &mut Vec<ManifestProblem>,
) -> Vec<Located> {
    let mut out = Vec::new();
    let text = match std::str::from_utf8(bytes) {
        // Editors on some platforms write a BOM; neither parser wants it in front of the document.
        Ok(text) => text.strip_prefix('\u{feff}').unwrap_or(text),
        Err(e) => {
            problem(problems, file, None, format!("file is not UTF-8: {e}"));
            return out;
        }
    };
    let is_json = file.extension().is_some_and(|ext| ext == "json");
    if is_json {
        if !text.trim().is_empty() {
            match serde_json::from_str::<Value>(text) {
                Ok(value) => classify(file, 0, "", value, &mut out, problems),
                Err(e) => problem(problems, file, Some(0), format!("JSON syntax error: {e}")),
            }
        }
        return out;
    }
    for doc in split_yaml(text) {
        if is_blank(doc.text) {
            continue;
        }
        // Padding with the lines before the document makes the parser's line numbers match the
        // file's, so a reason can be followed to the right line.
        let padded = "\n".repeat(doc.first_line) + doc.text;
        let options = serde_saphyr::options! { with_snippet: false };
        match serde_saphyr::from_str_with_options::<Value>(&padded, options) {
            Ok(value) => classify(file, doc.index, "", value, &mut out, problems),
            Err(e) => problem(problems, file, Some(doc.index), format!("YAML error: {e}")),
        }
    }
    out
}

struct YamlDoc<'a> {
    index: usize,
    first_line: usize,
    text: &'a str,
}

/// Splits a YAML stream at its `---` markers ourselves instead of letting the parser iterate
/// documents: the parser stops at the first syntax error (losing every later document) and skips
/// empty documents without telling us (so its count would not match what a reader counts).
/// A `---` at column 0 always starts a document: YAML does not allow it inside a scalar there.
fn split_yaml(text: &str) -> Vec<YamlDoc<'_>> {
    let mut docs = Vec::new();
    let mut start = 0; // byte offset of the current document's text
    let mut first_line = 0;
    let mut offset = 0;
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let body = line.trim_end_matches(['\n', '\r']);
        let is_marker = body
            .strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']));
        if is_marker {
            docs.push((first_line, &text[start..offset]));
            // Content may follow the marker on the same line (`--- |`), so it stays in the text.
            start = offset + 3;
            first_line = line_no;
        }
        offset += line.len();
    }
    docs.push((first_line, &text[start..]));
    // The text before the first marker only counts as a document when it has content: a file
    // that starts with `---` has its first document after the marker.
    let skip_preamble = docs.len() > 1 && is_blank(docs[0].1);
    docs.into_iter()
        .skip(usize::from(skip_preamble))
        .enumerate()
        .map(|(index, (first_line, text))| YamlDoc {
            index,
            first_line,
            text,
        })
        .collect()
}

/// Only blank lines, comments and directives: an empty document, skipped silently.
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l.starts_with('%')
    })
}

/// Sorts one document (or one item of a `List`, when `item` names it) into a watched kind,
/// an ignored kind or a problem.
fn classify(
    file: &Path,
    document: usize,
    item: &str,
    value: Value,
    out: &mut Vec<Located>,
    problems: &mut Vec<ManifestProblem>,
) {
    let report = |problems: &mut Vec<ManifestProblem>, reason: String| {
        problem(problems, file, Some(document), item_reason(item, reason));
    };
    let mut map = match value {
        Value::Object(map) => map,
        Value::Null => return, // `~` or an empty List item: nothing to load
        other => {
            let reason = format!("document is not a mapping but {}", type_name(&other));
            return report(problems, reason);
        }
    };
    let Some(api_version) = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return report(problems, "missing apiVersion (or not a string)".to_owned());
    };
    let Some(kind) = map.get("kind").and_then(Value::as_str).map(str::to_owned) else {
        return report(problems, "missing kind (or not a string)".to_owned());
    };
    let fingerprint = fields::fingerprint(&map);
    let parsed = match (api_version.as_str(), kind.as_str()) {
        ("v1", "List") => {
            match map.remove("items") {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for (i, entry) in items.into_iter().enumerate() {
                        let item = format!("{item}items[{i}].");
                        classify(file, document, &item, entry, out, problems);
                    }
                }
                Some(other) => {
                    let reason = format!("List items is {}, not a list", type_name(&other));
                    report(problems, reason);
                }
            }
            return;
        }
        ("v1", "Service") => decode::<Service>(map, "Service", (file, document)).map(|mut s| {
            default_namespace(&mut s.metadata);
            Object::Service(Box::new(s))
        }),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            decode::<EndpointSlice>(map, "EndpointSlice", (file, document)).map(|mut s| {
                default_namespace(&mut s.metadata);
                Object::EndpointSlice(Box::new(s))
            })
        }
        ("v1", "Node") => decode::<Node>(map, "Node", (file, document)).map(|mut n| {
            // Cluster-scoped: the API server drops a namespace given to a Node, and so do we,
            // so that a stray one cannot make two entries for the same Node.
            n.metadata.namespace = None;
            Object::Node(Box::new(n))
        }),
        ("networking.k8s.io/v1", "ServiceCIDR") => {
            decode::<ServiceCIDR>(map, "ServiceCIDR", (file, document)).map(|mut c| {
                c.metadata.namespace = None;
                Object::ServiceCidr(Box::new(c))
            })
        }
        // A watched kind under another version is almost certainly a mistake worth a warning
        // (e.g. the long-gone discovery.k8s.io/v1beta1), not a kind to ignore quietly.
        (_, "Service" | "EndpointSlice" | "Node" | "List") => Err(format!(
            "{kind} with unsupported apiVersion {api_version:?} (want {:?})",
            if kind == "EndpointSlice" {
                "discovery.k8s.io/v1"
            } else {
                "v1"
            }
        )),
        _ => {
            tracing::info!(
                file = %file.display(),
                document,
                item = item.trim_end_matches('.'),
                kind = %kind,
                api_version = %api_version,
                "ignoring manifest of a kind kproxy does not watch",
            );
            return;
        }
    };
    match parsed {
        Ok(object) => out.push(Located {
            document,
            object,
            fingerprint,
        }),
        Err(reason) => report(problems, reason),
    }
}

/// Checks metadata.name first: the typed decode would accept its absence, and a nameless object
/// cannot be tracked. Fields the type does not know are warned (the object is still used), as
/// kubectl's strict field validation warns.
fn decode<T: serde::de::DeserializeOwned + serde::Serialize>(
    map: serde_json::Map<String, Value>,
    kind: &str,
    (file, document): (&Path, usize),
) -> Result<T, String> {
    let value = Value::Object(map);
    let name = value.pointer("/metadata/name").and_then(Value::as_str);
    let Some(name) = name.filter(|n| !n.is_empty()).map(str::to_owned) else {
        return Err(format!("{kind} is missing metadata.name"));
    };
    // serde_json's messages name the wrong value but not where it is, hence the object's name.
    let typed = T::deserialize(&value).map_err(|e| format!("{kind} {name:?} is invalid: {e}"))?;
    if let Ok(back) = serde_json::to_value(&typed) {
        for field in fields::unknown(&value, &back) {
            // Named as it will be stored: cluster-scoped, or in its namespace (default if none).
            let namespace = value.pointer("/metadata/namespace").and_then(Value::as_str);
            let id = match (kind, namespace) {
                ("Node" | "ServiceCIDR", _) => name.clone(),
                (_, Some(ns)) if !ns.is_empty() => format!("{ns}/{name}"),
                _ => format!("default/{name}"),
            };
            tracing::warn!(file = %file.display(), document, kind, object = %id, "unknown field {field:?}: ignored, the rest of the object is used");
        }
    }
    Ok(typed)
}

/// `kubectl apply` puts namespaced objects without a namespace into "default"; so do we.
fn default_namespace(meta: &mut ObjectMeta) {
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".to_owned());
    }
}

fn item_reason(item: &str, reason: String) -> String {
    if item.is_empty() {
        reason
    } else {
        format!("{}: {reason}", item.trim_end_matches('.'))
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Records a problem and logs it once, at the place it was found.
pub(super) fn problem(
    problems: &mut Vec<ManifestProblem>,
    file: &Path,
    document: Option<usize>,
    reason: String,
) {
    match document {
        Some(document) => {
            tracing::warn!(file = %file.display(), document, "skipping manifest document: {reason}")
        }
        None => tracing::warn!(file = %file.display(), "skipping manifest file: {reason}"),
    }
    problems.push(ManifestProblem {
        file: file.to_owned(),
        document,
        reason,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<(usize, usize, &str)> {
        split_yaml(text)
            .into_iter()
            .map(|d| (d.index, d.first_line, d.text))
            .collect()
    }

    #[test]
    fn a_leading_marker_does_not_create_an_empty_first_document() {
        assert_eq!(
            split("---\na: 1\n---\nb: 2\n"),
            [(0, 0, "\na: 1\n"), (1, 2, "\nb: 2\n")]
        );
    }

    #[test]
    fn text_before_the_first_marker_is_document_zero() {
        assert_eq!(
            split("a: 1\n--- \nb: 2"),
            [(0, 0, "a: 1\n"), (1, 1, " \nb: 2")]
        );
    }

    #[test]
    fn a_marker_needs_to_stand_alone_at_column_zero() {
        assert_eq!(split("a: ---\n----\n ---\n").len(), 1);
    }
}
