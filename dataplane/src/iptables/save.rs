//! `iptables-save` output, read minimally: tables, chain declarations, and rules as the
//! `-A CHAIN ...` lines the tool prints. A rule's text is kept as printed, because that is the
//! exact form `iptables-restore` accepts back (e.g. in a `-D` line).

use super::Table;

/// One `*table` ... `COMMIT` block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedTable {
    /// As printed (`nat`, `filter`, `mangle`, `raw`, `security`).
    pub name: String,
    pub chains: Vec<SavedChain>,
    pub rules: Vec<SavedRule>,
}

/// A `:NAME POLICY [packets:bytes]` line; the policy is `-` for a user-defined chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedChain {
    pub name: String,
    pub policy: Option<String>,
}

/// An `-A CHAIN SPEC` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedRule {
    pub chain: String,
    /// Everything after `-A CHAIN `, exactly as printed.
    pub spec: String,
}

#[derive(Debug, thiserror::Error)]
#[error("iptables-save line {line}: {message}: {text}")]
pub struct ParseError {
    pub line: usize,
    pub message: &'static str,
    pub text: String,
}

impl SavedTable {
    pub fn table(&self) -> Option<Table> {
        Table::from_name(&self.name)
    }

    pub fn has_chain(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c.name == name)
    }

    pub fn rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a SavedRule> + 'a {
        self.rules.iter().filter(move |r| r.chain == chain)
    }
}

impl SavedRule {
    /// The rule's words, quotes removed.
    pub fn words(&self) -> Vec<String> {
        split_words(&self.spec)
    }

    /// The chain or target the rule jumps or goes to (`-j X`, `-g X`), if any.
    pub fn target(&self) -> Option<String> {
        let words = self.words();
        let at = words
            .iter()
            .position(|w| matches!(w.as_str(), "-j" | "--jump" | "-g" | "--goto"))?;
        words.get(at + 1).cloned()
    }
}

/// Parses the output of `iptables-save` (one table or all of them).
pub fn parse_save(text: &str) -> Result<Vec<SavedTable>, ParseError> {
    let mut tables = Vec::new();
    let mut current: Option<SavedTable> = None;
    for (i, line) in text.lines().enumerate() {
        let err = |message| ParseError {
            line: i + 1,
            message,
            text: line.to_owned(),
        };
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if current.is_some() {
                return Err(err("table starts before the previous one's COMMIT"));
            }
            current = Some(SavedTable {
                name: name.to_owned(),
                ..SavedTable::default()
            });
            continue;
        }
        let table = current
            .as_mut()
            .ok_or_else(|| err("line outside a table"))?;
        if line == "COMMIT" {
            tables.extend(current.take());
        } else if let Some(decl) = line.strip_prefix(':') {
            table
                .chains
                .push(parse_chain(decl).ok_or_else(|| err("bad chain line"))?);
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            table.rules.push(SavedRule {
                chain: chain.to_owned(),
                spec: spec.to_owned(),
            });
        } else {
            return Err(err("unexpected line"));
        }
    }
    match current {
        Some(t) => Err(ParseError {
            line: text.lines().count(),
            message: "table without COMMIT",
            text: t.name,
        }),
        None => Ok(tables),
    }
}

fn parse_chain(decl: &str) -> Option<SavedChain> {
    let mut words = decl.split_whitespace();
    let name = words.next()?.to_owned();
    let policy = words.next().filter(|p| *p != "-").map(str::to_owned);
    Some(SavedChain { name, policy })
}

/// Splits a rule into words as `iptables-restore` does: double quotes group words, and a
/// backslash takes the next character literally (`iptables-save` quotes comments that way).
pub fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                word.extend(chars.next());
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests;
