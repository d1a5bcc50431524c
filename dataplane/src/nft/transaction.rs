//! [`NftTransaction`]: an ordered list of `nft -f` statements.
//!
//! Statements use the `verb object family table ...` command form, one per line, because nft
//! 1.0.6 mis-handles some block forms: `add chain t c { rule }` does not load the set cache, so a
//! rule there cannot reference an existing named set; `add rule` lines can.

use std::fmt;

/// An nftables address family (only those kproxy uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ip,
    Ip6,
    Inet,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Inet => "inet",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

/// The hook of a base chain. Priorities are numeric: nft 1.0.6 rejects `priority dstnat` on
/// the output hook, and numbers read the same everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseChain {
    pub chain_type: ChainType,
    pub hook: Hook,
    pub priority: i32,
}

impl fmt::Display for BaseChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = match self.chain_type {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        };
        let h = match self.hook {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        };
        write!(
            f,
            "type {t} hook {h} priority {}; policy accept;",
            self.priority
        )
    }
}

/// Most elements written per `add element` line: keeps lines readable and bounds nft's
/// per-statement memory, without changing atomicity (the whole text is one transaction).
const ELEMENTS_PER_LINE: usize = 500;

/// Statements for one `nft -f` run, all scoped to one table. `Display` is the exact input text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NftTransaction {
    lines: Vec<String>,
}

/// Names one table; every statement below carries it.
fn scope(family: Family, table: &str) -> String {
    format!("{family} {table}")
}

impl NftTransaction {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Number of statements (lines) in the transaction.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    /// Appends another transaction's statements after this one's.
    pub fn extend(&mut self, other: NftTransaction) {
        self.lines.extend(other.lines);
    }

    /// A comment line: nft ignores it; it makes golden files and logs readable. The text is
    /// made safe ([`comment_text`]): a line break in it would end the comment.
    pub fn comment(&mut self, text: &str) {
        self.lines.push(format!("# {}", comment_text(text)));
    }

    pub fn add_table(&mut self, family: Family, table: &str, comment: Option<&str>) {
        match comment {
            Some(c) => self.lines.push(format!(
                "add table {} {{ comment \"{}\"; }}",
                scope(family, table),
                comment_text(c)
            )),
            None => self
                .lines
                .push(format!("add table {}", scope(family, table))),
        }
    }

    pub fn delete_table(&mut self, family: Family, table: &str) {
        self.lines
            .push(format!("delete table {}", scope(family, table)));
    }

    /// `add chain`: creates the chain, or does nothing if it exists with the same hook.
    pub fn add_chain(&mut self, family: Family, table: &str, chain: &str, base: Option<BaseChain>) {
        let s = scope(family, table);
        match base {
            Some(b) => self.lines.push(format!("add chain {s} {chain} {{ {b} }}")),
            None => self.lines.push(format!("add chain {s} {chain}")),
        }
    }

    pub fn flush_chain(&mut self, family: Family, table: &str, chain: &str) {
        self.lines
            .push(format!("flush chain {} {chain}", scope(family, table)));
    }

    pub fn delete_chain(&mut self, family: Family, table: &str, chain: &str) {
        self.lines
            .push(format!("delete chain {} {chain}", scope(family, table)));
    }

    /// Appends a rule; `rule` is nft rule syntax (matches, then statements).
    pub fn add_rule(&mut self, family: Family, table: &str, chain: &str, rule: &str) {
        self.lines
            .push(format!("add rule {} {chain} {rule}", scope(family, table)));
    }

    /// `add set NAME { SPEC }`; `spec` is the body, e.g. `type ipv4_addr; flags interval;`.
    pub fn add_set(&mut self, family: Family, table: &str, set: &str, spec: &str) {
        self.lines.push(format!(
            "add set {} {set} {{ {spec} }}",
            scope(family, table)
        ));
    }

    /// `add map NAME { SPEC }`; `spec` declares key and data, e.g. `type ipv4_addr : verdict;`.
    pub fn add_map(&mut self, family: Family, table: &str, map: &str, spec: &str) {
        self.lines.push(format!(
            "add map {} {map} {{ {spec} }}",
            scope(family, table)
        ));
    }

    pub fn flush_set(&mut self, family: Family, table: &str, set: &str) {
        self.lines
            .push(format!("flush set {} {set}", scope(family, table)));
    }

    pub fn delete_set(&mut self, family: Family, table: &str, set: &str) {
        self.lines
            .push(format!("delete set {} {set}", scope(family, table)));
    }

    pub fn delete_map(&mut self, family: Family, table: &str, map: &str) {
        self.lines
            .push(format!("delete map {} {map}", scope(family, table)));
    }

    /// Adds elements (`key` or `key : value` strings) to a set or map; nothing when empty.
    pub fn add_elements<S: AsRef<str>>(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        elements: &[S],
    ) {
        self.elements("add", family, table, set, elements);
    }

    /// Deletes elements by key from a set or map; nothing when empty.
    pub fn delete_elements<S: AsRef<str>>(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        keys: &[S],
    ) {
        self.elements("delete", family, table, set, keys);
    }

    fn elements<S: AsRef<str>>(
        &mut self,
        verb: &str,
        family: Family,
        table: &str,
        set: &str,
        elements: &[S],
    ) {
        for chunk in elements.chunks(ELEMENTS_PER_LINE) {
            let body: Vec<&str> = chunk.iter().map(AsRef::as_ref).collect();
            self.lines.push(format!(
                "{verb} element {} {set} {{ {} }}",
                scope(family, table),
                body.join(", ")
            ));
        }
    }
}

/// Comment text as nft may carry it whatever the caller passed: nft strings have no escape for
/// a quote, so quotes and backslashes are replaced, and control characters (a line break ends a
/// statement) become spaces. Callers pass fixed text; this keeps it so if one ever does not.
pub fn comment_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

impl fmt::Display for NftTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Comment text cannot end its string or its line, whatever it holds.
    #[test]
    fn comments_cannot_carry_statements() {
        let mut tx = NftTransaction::new();
        tx.add_table(
            Family::Ip,
            "t",
            Some("x\"; }\nadd table ip pwned { comment \"\\"),
        );
        tx.comment("note\nadd table ip pwned");
        assert_eq!(
            tx.to_string(),
            "add table ip t { comment \"x'; } add table ip pwned { comment ''\"; }\n\
             # note add table ip pwned\n"
        );
    }

    #[test]
    fn display_is_nft_input_text_in_statement_order() {
        let mut tx = NftTransaction::new();
        tx.add_table(Family::Ip, "kproxy", Some("rules for kproxy"));
        tx.add_chain(
            Family::Ip,
            "kproxy",
            "nat-output",
            Some(BaseChain {
                chain_type: ChainType::Nat,
                hook: Hook::Output,
                priority: -100,
            }),
        );
        tx.add_rule(Family::Ip, "kproxy", "nat-output", "jump services");
        tx.add_elements(Family::Ip6, "kproxy", "s", &["::1", "::2"]);
        tx.delete_elements::<&str>(Family::Ip6, "kproxy", "s", &[]);
        assert_eq!(
            tx.to_string(),
            "add table ip kproxy { comment \"rules for kproxy\"; }\n\
             add chain ip kproxy nat-output { type nat hook output priority -100; policy accept; }\n\
             add rule ip kproxy nat-output jump services\n\
             add element ip6 kproxy s { ::1, ::2 }\n"
        );
    }

    #[test]
    fn many_elements_are_split_into_lines() {
        let mut tx = NftTransaction::new();
        let elems: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
        tx.add_elements(Family::Ip, "t", "m", &elems);
        assert_eq!(tx.len(), 3);
        assert!(tx.lines().nth(2).unwrap().ends_with("{ 1000 }"));
    }
}
