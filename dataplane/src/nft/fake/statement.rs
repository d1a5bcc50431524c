//! Parses the statement lines [`NftTransaction`](super::super::NftTransaction) emits back into
//! typed statements. Only those forms are understood: anything else is a syntax error, so a new
//! statement form in the builder fails loudly here instead of being silently ignored.

use super::super::Family;

/// `family table`: the table a statement names.
pub(super) type TableId = (Family, String);

/// A set or a map (nft keeps them apart in its syntax: `add set` vs `add map`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SetKind {
    Set,
    Map,
}

impl SetKind {
    pub(super) fn word(self) -> &'static str {
        match self {
            SetKind::Set => "set",
            SetKind::Map => "map",
        }
    }
}

/// One statement of a transaction, with the table it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Statement {
    AddTable {
        table: TableId,
        comment: Option<String>,
    },
    DeleteTable {
        table: TableId,
    },
    /// `base` is the body of a base chain's `{ ... }` (type, hook, priority, policy).
    AddChain {
        table: TableId,
        chain: String,
        base: Option<String>,
    },
    FlushChain {
        table: TableId,
        chain: String,
    },
    DeleteChain {
        table: TableId,
        chain: String,
    },
    AddRule {
        table: TableId,
        chain: String,
        rule: String,
    },
    AddSet {
        table: TableId,
        set: String,
        kind: SetKind,
        spec: String,
    },
    FlushSet {
        table: TableId,
        set: String,
    },
    /// `delete set` or `delete map`: the same to nft.
    DeleteSet {
        table: TableId,
        set: String,
    },
    /// Elements as written: `key` or `key : value`.
    AddElements {
        table: TableId,
        set: String,
        elements: Vec<String>,
    },
    /// Keys only.
    DeleteElements {
        table: TableId,
        set: String,
        keys: Vec<String>,
    },
}

/// Parses one line; `Ok(None)` for comments and blank lines, `Err` (a message) for anything the
/// transaction builder does not emit.
pub(super) fn parse(line: &str) -> Result<Option<Statement>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut words = line.splitn(4, ' ');
    let (verb, object) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let family = parse_family(words.next().unwrap_or(""))?;
    let rest = words.next().unwrap_or("");
    let (table, rest) = split_word(rest);
    if table.is_empty() {
        return Err("missing table name".into());
    }
    let table = (family, table.to_owned());
    let stmt = match (verb, object) {
        ("add", "table") => Statement::AddTable {
            comment: parse_table_body(rest)?,
            table,
        },
        ("delete", "table") => no_rest(rest, Statement::DeleteTable { table })?,
        _ => return parse_in_table(verb, object, table, rest).map(Some),
    };
    Ok(Some(stmt))
}

/// Statements naming an object inside a table: `verb object family table NAME ...`.
fn parse_in_table(
    verb: &str,
    object: &str,
    table: TableId,
    rest: &str,
) -> Result<Statement, String> {
    let (name, rest) = split_word(rest);
    if name.is_empty() {
        return Err(format!("{verb} {object}: missing name"));
    }
    let name = name.to_owned();
    let kind = |o| {
        if o == "map" {
            SetKind::Map
        } else {
            SetKind::Set
        }
    };
    Ok(match (verb, object) {
        ("add", "chain") => Statement::AddChain {
            table,
            chain: name,
            base: (!rest.is_empty()).then(|| braced(rest)).transpose()?,
        },
        ("flush", "chain") => no_rest(rest, Statement::FlushChain { table, chain: name })?,
        ("delete", "chain") => no_rest(rest, Statement::DeleteChain { table, chain: name })?,
        ("add", "rule") if !rest.is_empty() => Statement::AddRule {
            table,
            chain: name,
            rule: rest.to_owned(),
        },
        ("add", "set" | "map") => Statement::AddSet {
            table,
            set: name,
            kind: kind(object),
            spec: braced(rest)?,
        },
        ("flush", "set") => no_rest(rest, Statement::FlushSet { table, set: name })?,
        ("delete", "set" | "map") => no_rest(rest, Statement::DeleteSet { table, set: name })?,
        ("add", "element") => Statement::AddElements {
            table,
            set: name,
            elements: split_elements(&braced(rest)?),
        },
        ("delete", "element") => Statement::DeleteElements {
            table,
            set: name,
            keys: split_elements(&braced(rest)?),
        },
        _ => return Err(format!("unsupported statement `{verb} {object}`")),
    })
}

fn parse_family(word: &str) -> Result<Family, String> {
    match word {
        "ip" => Ok(Family::Ip),
        "ip6" => Ok(Family::Ip6),
        "inet" => Ok(Family::Inet),
        other => Err(format!("unknown family `{other}`")),
    }
}

/// The first word and the trimmed rest.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.split_once(' ') {
        Some((w, rest)) => (w, rest.trim()),
        None => (s, ""),
    }
}

fn no_rest(rest: &str, stmt: Statement) -> Result<Statement, String> {
    if rest.is_empty() {
        Ok(stmt)
    } else {
        Err(format!("unexpected `{rest}`"))
    }
}

/// The inside of `{ ... }`, trimmed.
fn braced(s: &str) -> Result<String, String> {
    s.strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .map(|s| s.trim().to_owned())
        .ok_or_else(|| format!("expected `{{ ... }}`, got `{s}`"))
}

/// `add table`'s optional body: only `comment "..."; ` is emitted.
fn parse_table_body(rest: &str) -> Result<Option<String>, String> {
    if rest.is_empty() {
        return Ok(None);
    }
    let body = braced(rest)?;
    body.strip_prefix("comment \"")
        .and_then(|s| s.strip_suffix("\";"))
        .map(|c| Some(c.to_owned()))
        .ok_or_else(|| format!("unsupported table body `{body}`"))
}

/// Splits an element list at top-level commas (a value could hold a `{ ... }` of its own).
fn split_elements(body: &str) -> Vec<String> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(body[start..i].trim().to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = body[start..].trim();
    if !last.is_empty() {
        out.push(last.to_owned());
    }
    out
}

/// Splits `key : value` (a map element) at its first top-level ` : `.
pub(super) fn split_element(elem: &str) -> (&str, Option<&str>) {
    match elem.split_once(" : ") {
        Some((k, v)) => (k.trim(), Some(v.trim())),
        None => (elem.trim(), None),
    }
}
