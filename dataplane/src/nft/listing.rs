//! A table as the kernel holds it, read from `nft -j list table`: the rules of each chain and the
//! elements of each set and map, in a canonical text form that two listings can be compared in.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Chains (rule expressions) and sets/maps (elements) of one table. Handles, and elements of
/// sets the data path fills itself (`dynamic` / `timeout`, e.g. session affinity), are left out:
/// they differ between any two tables without meaning anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableListing {
    pub chains: BTreeMap<String, Vec<String>>,
    pub sets: BTreeMap<String, BTreeSet<String>>,
}

/// One thing present in one listing and not the other.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Difference {
    /// `chain NAME`, `set NAME` or `map NAME`.
    pub object: String,
    /// A rule or element in compact JSON; empty when the whole object differs.
    pub item: String,
    /// True: expected but missing from the kernel; false: in the kernel but not expected.
    pub missing: bool,
}

impl TableListing {
    /// Parses `nft -j list table` output (an empty string is an absent table).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let mut out = Self::default();
        if text.trim().is_empty() {
            return Ok(out);
        }
        let doc: Value = serde_json::from_str(text)?;
        for obj in doc["nftables"].as_array().into_iter().flatten() {
            if let Some(chain) = obj.get("chain") {
                out.chains.entry(name(chain)).or_default();
            } else if let Some(rule) = obj.get("rule") {
                let expr = rule.get("expr").map(Value::to_string).unwrap_or_default();
                out.chains
                    .entry(str_field(rule, "chain"))
                    .or_default()
                    .push(expr);
            } else if let Some((kind, set)) = ["set", "map"]
                .iter()
                .find_map(|k| obj.get(*k).map(|s| (*k, s)))
            {
                let flags = set.get("flags").map(Value::to_string).unwrap_or_default();
                let dynamic = flags.contains("dynamic") || flags.contains("timeout");
                let elems = set.get("elem").and_then(Value::as_array);
                let items = elems
                    .into_iter()
                    .flatten()
                    .filter(|_| !dynamic)
                    .map(Value::to_string)
                    .collect();
                out.sets.insert(format!("{kind} {}", name(set)), items);
            }
        }
        Ok(out)
    }

    /// What `expected` has that `self` lacks (missing) and what `self` has beyond it.
    pub fn diff(&self, expected: &TableListing) -> Vec<Difference> {
        let mut out = Vec::new();
        let chain_names: BTreeSet<&String> =
            self.chains.keys().chain(expected.chains.keys()).collect();
        for name in chain_names {
            let empty = Vec::new();
            let have = self.chains.get(name);
            let want = expected.chains.get(name);
            let object = format!("chain {name}");
            if have.is_none() || want.is_none() {
                out.push(Difference {
                    object: object.clone(),
                    item: String::new(),
                    missing: have.is_none(),
                });
            }
            let (have, want) = (have.unwrap_or(&empty), want.unwrap_or(&empty));
            if have != want {
                push_set_diff(
                    &mut out,
                    &object,
                    have.iter().collect(),
                    want.iter().collect(),
                );
            }
        }
        let set_names: BTreeSet<&String> = self.sets.keys().chain(expected.sets.keys()).collect();
        for name in set_names {
            let empty = BTreeSet::new();
            let have = self.sets.get(name);
            let want = expected.sets.get(name);
            if have.is_none() || want.is_none() {
                out.push(Difference {
                    object: name.clone(),
                    item: String::new(),
                    missing: have.is_none(),
                });
            }
            push_set_diff(
                &mut out,
                name,
                have.unwrap_or(&empty).iter().collect(),
                want.unwrap_or(&empty).iter().collect(),
            );
        }
        out
    }
}

fn push_set_diff(
    out: &mut Vec<Difference>,
    object: &str,
    have: BTreeSet<&String>,
    want: BTreeSet<&String>,
) {
    for item in want.difference(&have) {
        out.push(Difference {
            object: object.to_owned(),
            item: (*item).clone(),
            missing: true,
        });
    }
    for item in have.difference(&want) {
        out.push(Difference {
            object: object.to_owned(),
            item: (*item).clone(),
            missing: false,
        });
    }
}

fn name(v: &Value) -> String {
    str_field(v, "name")
}

fn str_field(v: &Value, field: &str) -> String {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"{"nftables": [{"metainfo": {}}, {"table": {"name": "kproxy"}},
      {"chain": {"name": "services", "handle": 1}},
      {"rule": {"chain": "services", "handle": 9, "expr": [{"accept": null}]}},
      {"map": {"name": "service-ips", "handle": 2, "elem": [[{"concat": ["10.0.0.1", "tcp", 80]}, {"goto": {"target": "pick-tcp-1"}}]]}},
      {"set": {"name": "affinity", "flags": ["dynamic", "timeout"], "elem": [{"elem": {"val": "10.1.1.1", "expires": 3}}]}}]}"#;

    #[test]
    fn a_listing_compares_equal_to_itself_and_names_each_difference() {
        let a = TableListing::from_json(LISTING).unwrap();
        assert!(a.diff(&a).is_empty());
        assert_eq!(
            a.sets["set affinity"].len(),
            0,
            "dynamic sets' elements are runtime state"
        );
        let mut b = a.clone();
        b.sets.get_mut("map service-ips").unwrap().clear();
        b.chains.insert("extra".into(), vec![]);
        let d = b.diff(&a);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d.iter()
                .any(|x| x.object == "map service-ips" && x.missing && x.item.contains("10.0.0.1"))
        );
        assert!(d.iter().any(|x| x.object == "chain extra" && !x.missing));
    }
}
