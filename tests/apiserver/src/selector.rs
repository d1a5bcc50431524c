//! Label and field selectors as the API server evaluates them (the subset kube-proxy and tests
//! use): `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`; fields
//! `metadata.name` and `metadata.namespace` with `=`, `==`, `!=`.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Term {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector`; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<Term>);

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        split_top_level(s)
            .into_iter()
            .map(|t| parse_label_term(t.trim()))
            .collect::<Result<_, _>>()
            .map(LabelSelector)
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels: BTreeMap<String, String> = obj
            .pointer("/metadata/labels")
            .and_then(|l| serde_json::from_value(l.clone()).ok())
            .unwrap_or_default();
        self.0.iter().all(|t| match t {
            Term::Eq(k, v) => labels.get(k) == Some(v),
            // As upstream: `!=` and `notin` also match objects without the key.
            Term::NotEq(k, v) => labels.get(k) != Some(v),
            Term::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Term::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Term::Exists(k) => labels.contains_key(k),
            Term::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// Commas inside `(...)` separate set members, not terms.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().filter(|t| !t.trim().is_empty()).collect()
}

fn parse_set(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected (values), got {s:?}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

fn parse_label_term(t: &str) -> Result<Term, String> {
    if let Some(k) = t.strip_prefix('!') {
        return Ok(Term::NotExists(k.trim().to_string()));
    }
    if let Some((k, set)) = t.split_once(" notin ") {
        return Ok(Term::NotIn(k.trim().to_string(), parse_set(set)?));
    }
    if let Some((k, set)) = t.split_once(" in ") {
        return Ok(Term::In(k.trim().to_string(), parse_set(set)?));
    }
    if let Some((k, v)) = t.split_once("!=") {
        return Ok(Term::NotEq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
        return Ok(Term::Eq(k.trim().into(), v.trim().into()));
    }
    if t.contains(['(', ')', ' ']) {
        return Err(format!("unparsable label selector term {t:?}"));
    }
    Ok(Term::Exists(t.to_string()))
}

/// A parsed `fieldSelector`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = t.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                (f, true, v)
            } else {
                return Err(format!("unparsable field selector term {t:?}"));
            };
            if !["metadata.name", "metadata.namespace"].contains(&field.trim()) {
                return Err(format!("field label not supported: {}", field.trim()));
            }
            terms.push((field.trim().to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = obj.pointer(&pointer).and_then(Value::as_str).unwrap_or("");
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn label_selectors_cover_equality_existence_and_sets() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&obj);
        assert!(m("") && m("app=web") && m("app==web") && m("app") && m("!other"));
        assert!(m("tier in (front, back),app notin (db)") && m("app!=db") && m("x!=y"));
        assert!(!m("app=db") && !m("!app") && !m("zone") && !m("tier in (back)"));
        assert!(!m("app notin (web)") && !m("app=web,!tier"));
    }

    #[test]
    fn field_selectors_match_name_and_namespace_and_reject_other_fields() {
        let obj = json!({"metadata": {"name": "a", "namespace": "ns"}});
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&obj);
        assert!(m("metadata.name=a") && m("metadata.namespace==ns,metadata.name!=b"));
        assert!(!m("metadata.name=b") && !m("metadata.namespace!=ns"));
        assert!(FieldSelector::parse("spec.nodeName=x").is_err());
    }
}
