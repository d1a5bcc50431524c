//! The fake's ruleset as text: a canonical dump for comparing rulesets, and `nft list table`
//! look-alikes (text and JSON) for the [`NftClient`](super::super::NftClient) trait.

use std::fmt::Write;

use serde_json::{Value, json};

use super::ruleset::{Ruleset, Set, Table};

/// Every table, chain, set and element in one canonical order: tables by family and name,
/// chains then sets by name, elements sorted, rules in their chain's order. Two rulesets
/// compare equal as dumps iff they hold the same objects, however they were built.
pub(super) fn dump(rs: &Ruleset) -> String {
    let mut out = String::new();
    for ((family, name), table) in &rs.tables {
        let _ = writeln!(out, "table {family} {name}");
        if let Some(c) = &table.comment {
            let _ = writeln!(out, "  comment \"{c}\"");
        }
        for (name, chain) in &table.chains {
            let _ = writeln!(out, "  chain {name}");
            if let Some(base) = &chain.base {
                let _ = writeln!(out, "    {{ {base} }}");
            }
            for rule in &chain.rules {
                let _ = writeln!(out, "    rule {rule}");
            }
        }
        for (name, set) in &table.sets {
            let _ = writeln!(out, "  {} {name} {{ {} }}", set.kind.word(), set.spec);
            for elem in elements(set) {
                let _ = writeln!(out, "    {elem}");
            }
        }
    }
    out
}

/// A set's elements as written in `add element`, sorted by key.
fn elements(set: &Set) -> impl Iterator<Item = String> + '_ {
    set.elements.iter().map(|(k, v)| match v {
        Some(v) => format!("{k} : {v}"),
        None => k.clone(),
    })
}

/// The table in `nft list table`'s layout (close enough to read; not byte-exact nft output).
pub(super) fn list(family: &str, name: &str, table: &Table) -> String {
    let mut out = format!("table {family} {name} {{\n");
    if let Some(c) = &table.comment {
        let _ = writeln!(out, "\tcomment \"{c}\"");
    }
    for (name, set) in &table.sets {
        let _ = writeln!(out, "\t{} {name} {{", set.kind.word());
        for clause in set.spec.split(';').map(str::trim).filter(|c| !c.is_empty()) {
            let _ = writeln!(out, "\t\t{clause}");
        }
        let elems: Vec<String> = elements(set).collect();
        if !elems.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", elems.join(", "));
        }
        out.push_str("\t}\n");
    }
    for (name, chain) in &table.chains {
        let _ = writeln!(out, "\tchain {name} {{");
        if let Some(base) = &chain.base {
            let _ = writeln!(out, "\t\t{base}");
        }
        for rule in &chain.rules {
            let _ = writeln!(out, "\t\t{rule}");
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}

/// The table as `nft -j list table` shapes it, enough for
/// [`TableListing::from_json`](super::super::TableListing::from_json): rule expressions and
/// elements are their nft text as JSON strings, not nft's structured JSON.
pub(super) fn list_json(family: &str, name: &str, table: &Table) -> String {
    let mut items = vec![
        json!({"metainfo": {"json_schema_version": 1}}),
        json!({"table": {"family": family, "name": name}}),
    ];
    for (chain, c) in &table.chains {
        items.push(json!({"chain": {"family": family, "table": name, "name": chain}}));
        for rule in &c.rules {
            items.push(
                json!({"rule": {"family": family, "table": name, "chain": chain, "expr": rule}}),
            );
        }
    }
    for (set_name, set) in &table.sets {
        let mut body = json!({"family": family, "table": name, "name": set_name});
        if let Some(flags) = flags(&set.spec) {
            body["flags"] = flags;
        }
        let elems: Vec<String> = elements(set).collect();
        if !elems.is_empty() {
            body["elem"] = json!(elems);
        }
        items.push(json!({ set.kind.word(): body }));
    }
    json!({ "nftables": items }).to_string()
}

/// `flags a,b;` of a set spec as a JSON array.
fn flags(spec: &str) -> Option<Value> {
    let clause = spec
        .split(';')
        .find_map(|c| c.trim().strip_prefix("flags "))?;
    Some(json!(clause.split(',').map(str::trim).collect::<Vec<_>>()))
}
