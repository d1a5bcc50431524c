//! Input for `iptables-restore --noflush`, built from tables, chains and rules. `Display`
//! renders the tool's text: it is what the tool reads, what tests compare and what logs show.
//!
//! With `--noflush` a table is changed only where the text says so: a `:CHAIN - [0:0]` line
//! creates the chain, or empties it if it exists; rules are added with `-A`, removed with `-D`;
//! `-X` deletes an (empty, unreferenced) chain. Each table's block is one kernel commit.
//!
//! Lines are written in the order given, declarations included: a chain must be declared before
//! a rule names it, and the order of names matters to the nft backend's speed (see kproxy's
//! iptables mode, `names.rs`).

use std::fmt;

use super::Table;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreInput {
    blocks: Vec<Block>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Block {
    table: Table,
    /// `:CHAIN - [0:0]`, `-A`, `-I`, `-D` and `-X` lines, in the order given.
    lines: Vec<String>,
}

impl RestoreInput {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Creates `chain` (user-defined), or empties it if it exists.
    pub fn declare_chain(&mut self, table: Table, chain: &str) -> &mut Self {
        self.line(table, format!(":{chain} - [0:0]"))
    }

    /// Appends a rule: `spec` is what follows `-A CHAIN` (as `iptables-save` prints it).
    pub fn append(&mut self, table: Table, chain: &str, spec: &str) -> &mut Self {
        self.line(table, format!("-A {chain} {spec}"))
    }

    /// Inserts a rule at the top of `chain` (`-I CHAIN 1 SPEC`).
    pub fn insert(&mut self, table: Table, chain: &str, spec: &str) -> &mut Self {
        self.line(table, format!("-I {chain} 1 {spec}"))
    }

    /// Deletes the first rule of `chain` that matches `spec` exactly.
    pub fn delete(&mut self, table: Table, chain: &str, spec: &str) -> &mut Self {
        self.line(table, format!("-D {chain} {spec}"))
    }

    /// Deletes a user-defined chain; it must be empty (or emptied above) and unreferenced.
    pub fn delete_chain(&mut self, table: Table, chain: &str) -> &mut Self {
        self.line(table, format!("-X {chain}"))
    }

    fn line(&mut self, table: Table, line: String) -> &mut Self {
        self.block(table).lines.push(line);
        self
    }

    fn block(&mut self, table: Table) -> &mut Block {
        let at = match self.blocks.iter().position(|b| b.table == table) {
            Some(at) => at,
            None => {
                self.blocks.push(Block {
                    table,
                    lines: Vec::new(),
                });
                self.blocks.len() - 1
            }
        };
        &mut self.blocks[at]
    }
}

impl fmt::Display for RestoreInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for block in &self.blocks {
            writeln!(f, "*{}", block.table)?;
            for line in &block.lines {
                writeln!(f, "{line}")?;
            }
            writeln!(f, "COMMIT")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_table_is_one_block_with_its_lines_in_order() {
        let mut input = RestoreInput::new();
        input
            .delete(Table::Nat, "PREROUTING", "-j KUBE-SERVICES")
            .declare_chain(Table::Nat, "KUBE-SERVICES")
            .delete_chain(Table::Nat, "KUBE-SERVICES")
            .declare_chain(Table::Filter, "X")
            .append(Table::Filter, "X", "-j ACCEPT")
            .insert(Table::Filter, "INPUT", "-j X")
            .declare_chain(Table::Nat, "KUBE-SVC-A");
        assert_eq!(
            input.to_string(),
            "*nat\n-D PREROUTING -j KUBE-SERVICES\n:KUBE-SERVICES - [0:0]\n-X KUBE-SERVICES\n\
             :KUBE-SVC-A - [0:0]\nCOMMIT\n*filter\n:X - [0:0]\n-A X -j ACCEPT\n-I INPUT 1 -j X\nCOMMIT\n"
        );
    }

    #[test]
    fn nothing_to_do_renders_nothing() {
        assert!(RestoreInput::new().is_empty());
        assert_eq!(RestoreInput::new().to_string(), "");
    }
}
