//! The in-memory ruleset and how each statement changes it, with the kernel's refusals that
//! matter to kproxy: missing objects (ENOENT), references to missing chains or sets, deleting
//! what is still referenced or non-empty (EBUSY), clashing redefinitions (EEXIST).

use std::collections::BTreeMap;

use super::statement::{SetKind, TableId, split_element};

/// Why the kernel (or nft) refused a statement, as errno-like classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Errno {
    NoEnt,
    Exist,
    Busy,
    Inval,
    NotSupp,
}

impl Errno {
    pub(super) fn strerror(self) -> &'static str {
        match self {
            Errno::NoEnt => "No such file or directory",
            Errno::Exist => "File exists",
            Errno::Busy => "Device or resource busy",
            Errno::Inval => "Invalid argument",
            Errno::NotSupp => "Operation not supported",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Rejection {
    pub errno: Errno,
    pub detail: String,
}

pub(super) fn reject<T>(errno: Errno, detail: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection {
        errno,
        detail: detail.into(),
    })
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Ruleset {
    pub tables: BTreeMap<TableId, Table>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Table {
    pub comment: Option<String>,
    pub chains: BTreeMap<String, Chain>,
    pub sets: BTreeMap<String, Set>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Chain {
    /// A base chain's `type ... hook ... priority ...; policy ...;`.
    pub base: Option<String>,
    pub rules: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Set {
    pub kind: SetKind,
    /// The body of `add set/map NAME { ... }` as written.
    pub spec: String,
    pub shape: Shape,
    /// Key to value (`None` in a set).
    pub elements: BTreeMap<String, Option<String>>,
}

/// What the `type`/`typeof` clause says elements look like: enough to reject an element with
/// the wrong number of concatenated parts, or a map element without a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Shape {
    key_parts: usize,
    data: Data,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Data {
    None,
    Verdict,
    Parts(usize),
}

fn parts(s: &str) -> usize {
    s.split(" . ").count()
}

impl Shape {
    pub(super) fn parse(kind: SetKind, spec: &str) -> Result<Shape, Rejection> {
        let clause = spec.split(';').map(str::trim).find_map(|c| {
            c.strip_prefix("typeof ")
                .or_else(|| c.strip_prefix("type "))
        });
        let Some(clause) = clause else {
            return reject(Errno::Inval, format!("no type in `{spec}`"));
        };
        let (key, data) = split_element(clause);
        let data = match (kind, data) {
            (SetKind::Set, None) => Data::None,
            (SetKind::Map, Some("verdict")) => Data::Verdict,
            (SetKind::Map, Some(d)) => Data::Parts(parts(d)),
            _ => {
                return reject(
                    Errno::Inval,
                    format!("{} with type `{clause}`", kind.word()),
                );
            }
        };
        Ok(Shape {
            key_parts: parts(key),
            data,
        })
    }

    pub(super) fn check(&self, key: &str, value: Option<&str>) -> Result<(), Rejection> {
        let ok = parts(key) == self.key_parts
            && match (self.data, value) {
                (Data::None, None) => true,
                (Data::Verdict, Some(v)) => verdict_target(v).is_some() || is_plain_verdict(v),
                (Data::Parts(n), Some(v)) => parts(v) == n,
                _ => false,
            };
        if ok {
            Ok(())
        } else {
            reject(
                Errno::Inval,
                format!("element `{key}` does not fit the type"),
            )
        }
    }
}

fn is_plain_verdict(v: &str) -> bool {
    matches!(v, "accept" | "drop" | "return" | "continue")
}

/// The chain a `goto X` / `jump X` verdict names.
pub(super) fn verdict_target(v: &str) -> Option<&str> {
    let (word, target) = v.split_once(' ')?;
    matches!(word, "goto" | "jump").then_some(target.trim())
}

/// A reference a rule makes: to a chain (`jump X`, `goto X`, also inside an inline
/// `vmap { ... }`) or to a named set or map (`@name`).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ref<'a> {
    Chain(&'a str),
    Set(&'a str),
}

pub(super) fn rule_refs(rule: &str) -> Vec<Ref<'_>> {
    // Inside an inline vmap a name is followed by `,` or `}`: not part of it.
    let strip = |t: &str| t.trim_end_matches([',', '}', ';']).len();
    let mut out = Vec::new();
    let mut words = rule.split_whitespace();
    while let Some(w) = words.next() {
        if let Some(set) = w.strip_prefix('@') {
            out.push(Ref::Set(&set[..strip(set)]));
        } else if matches!(w, "jump" | "goto")
            && let Some(target) = words.next()
        {
            out.push(Ref::Chain(&target[..strip(target)]));
        }
    }
    out
}
