//! How each statement changes a [`Ruleset`], refusing what the kernel refuses.

use super::{
    ruleset::{
        Chain, Errno, Ref, Rejection, Ruleset, Set, Shape, Table, reject, rule_refs, verdict_target,
    },
    statement::{SetKind, Statement, TableId, split_element},
};

impl Ruleset {
    /// Applies one statement; on error `self` may be half-changed, so callers apply a whole
    /// transaction to a copy and keep it only if every statement succeeded.
    pub(super) fn apply(&mut self, stmt: Statement) -> Result<(), Rejection> {
        match stmt {
            // `add` of an existing table is a no-op, as in nft (its comment stays).
            Statement::AddTable { table, comment } => {
                self.tables.entry(table).or_insert_with(|| Table {
                    comment,
                    ..Table::default()
                });
                Ok(())
            }
            Statement::DeleteTable { table } => match self.tables.remove(&table) {
                Some(_) => Ok(()),
                None => reject(Errno::NoEnt, format!("table {} {}", table.0, table.1)),
            },
            Statement::AddChain { table, chain, base } => {
                self.table(&table)?.add_chain(chain, base)
            }
            Statement::FlushChain { table, chain } => {
                self.table(&table)?.chain(&chain)?.rules.clear();
                Ok(())
            }
            Statement::DeleteChain { table, chain } => self.table(&table)?.delete_chain(&chain),
            Statement::AddRule { table, chain, rule } => self.table(&table)?.add_rule(&chain, rule),
            Statement::AddSet {
                table,
                set,
                kind,
                spec,
            } => self.table(&table)?.add_set(set, kind, spec),
            // nft 1.0.6 refuses `flush set` on a map (ENOENT); `flush map` is another form.
            Statement::FlushSet { table, set } => {
                let s = self.table(&table)?.set(&set)?;
                if s.kind != SetKind::Set {
                    return reject(Errno::NoEnt, format!("set {set} (a map)"));
                }
                s.elements.clear();
                Ok(())
            }
            Statement::DeleteSet { table, set } => self.table(&table)?.delete_set(&set),
            Statement::AddElements {
                table,
                set,
                elements,
            } => self.table(&table)?.add_elements(&set, &elements),
            Statement::DeleteElements { table, set, keys } => {
                self.table(&table)?.delete_elements(&set, &keys)
            }
        }
    }

    fn table(&mut self, id: &TableId) -> Result<&mut Table, Rejection> {
        match self.tables.get_mut(id) {
            Some(t) => Ok(t),
            None => reject(Errno::NoEnt, format!("table {} {}", id.0, id.1)),
        }
    }
}

impl Table {
    fn chain(&mut self, name: &str) -> Result<&mut Chain, Rejection> {
        match self.chains.get_mut(name) {
            Some(c) => Ok(c),
            None => reject(Errno::NoEnt, format!("chain {name}")),
        }
    }

    fn set(&mut self, name: &str) -> Result<&mut Set, Rejection> {
        match self.sets.get_mut(name) {
            Some(s) => Ok(s),
            None => reject(Errno::NoEnt, format!("set {name}")),
        }
    }

    /// `add` of an existing chain is a no-op (also without a hook on a base chain), unless it
    /// asks for another hook: EOPNOTSUPP, as the kernel.
    fn add_chain(&mut self, name: String, base: Option<String>) -> Result<(), Rejection> {
        match self.chains.get(&name) {
            Some(c) if base.is_some() && c.base != base => {
                reject(Errno::NotSupp, format!("chain {name}: other hook"))
            }
            Some(_) => Ok(()),
            None => {
                self.chains.insert(
                    name,
                    Chain {
                        base,
                        rules: vec![],
                    },
                );
                Ok(())
            }
        }
    }

    /// The kernel deletes a chain with its rules, but refuses (EBUSY) while a rule of another
    /// chain or a verdict map element still jumps to it.
    fn delete_chain(&mut self, name: &str) -> Result<(), Rejection> {
        self.chain(name)?;
        if let Some(by) = self.chain_user(name) {
            return reject(Errno::Busy, format!("chain {name} is used by {by}"));
        }
        self.chains.remove(name);
        Ok(())
    }

    /// Who still refers to chain `name`, if anyone.
    fn chain_user(&self, name: &str) -> Option<String> {
        let mut others = self.chains.iter().filter(|(c, _)| *c != name);
        let by_rule = others.find_map(|(c, chain)| {
            let uses = |r: &String| rule_refs(r).contains(&Ref::Chain(name));
            chain.rules.iter().any(uses).then(|| format!("chain {c}"))
        });
        by_rule.or_else(|| {
            self.sets.iter().find_map(|(s, set)| {
                let uses = |v: &Option<String>| v.as_deref().and_then(verdict_target) == Some(name);
                set.elements.values().any(uses).then(|| format!("map {s}"))
            })
        })
    }

    /// A rule may only name chains and sets that exist (ENOENT), as the kernel checks.
    fn add_rule(&mut self, chain: &str, rule: String) -> Result<(), Rejection> {
        self.chain(chain)?;
        for r in rule_refs(&rule) {
            match r {
                Ref::Chain(c) => self.jump_target(c, chain)?,
                Ref::Set(s) if !self.sets.contains_key(s) => {
                    return reject(Errno::NoEnt, format!("set {s} (in a rule of {chain})"));
                }
                _ => {}
            }
        }
        self.chain(chain)?.rules.push(rule);
        Ok(())
    }

    /// A `jump`/`goto` in `from` may only name an existing (ENOENT) regular (EOPNOTSUPP) chain.
    fn jump_target(&self, target: &str, from: &str) -> Result<(), Rejection> {
        match self.chains.get(target) {
            None => reject(Errno::NoEnt, format!("chain {target} (named in {from})")),
            Some(c) if c.base.is_some() => reject(
                Errno::NotSupp,
                format!("jump to base chain {target} (in {from})"),
            ),
            Some(_) => Ok(()),
        }
    }

    /// `add` of an existing set is a no-op if it is the same set (its comment aside), and
    /// EEXIST if its kind, type or flags differ.
    fn add_set(&mut self, name: String, kind: SetKind, spec: String) -> Result<(), Rejection> {
        let shape = Shape::parse(kind, &spec)?;
        if let Some(old) = self.sets.get(&name) {
            if old.kind != kind || without_comment(&old.spec) != without_comment(&spec) {
                return reject(
                    Errno::Exist,
                    format!("{} {name} with another type", kind.word()),
                );
            }
            return Ok(());
        }
        let set = Set {
            kind,
            spec,
            shape,
            elements: Default::default(),
        };
        self.sets.insert(name, set);
        Ok(())
    }

    /// EBUSY while a rule still names it. `delete set` and `delete map` go by name alone: nft
    /// deletes a map named with `delete set` and the other way round (checked).
    fn delete_set(&mut self, name: &str) -> Result<(), Rejection> {
        self.set(name)?;
        let used = self.chains.iter().find(|(_, c)| {
            c.rules
                .iter()
                .any(|r| rule_refs(r).contains(&Ref::Set(name)))
        });
        if let Some((c, _)) = used {
            return reject(Errno::Busy, format!("set {name} is used by chain {c}"));
        }
        self.sets.remove(name);
        Ok(())
    }

    /// Each element must fit the set's type; a verdict may only name an existing chain; an
    /// existing key may be added again only with the same value (else EEXIST).
    fn add_elements(&mut self, set: &str, elements: &[String]) -> Result<(), Rejection> {
        self.set(set)?;
        for elem in elements {
            let (key, value) = split_element(elem);
            if let Some(c) = value.and_then(verdict_target) {
                self.jump_target(c, set)?;
            }
            let s = self.set(set)?;
            s.shape.check(key, value)?;
            let value = value.map(str::to_owned);
            match s.elements.get(key) {
                Some(old) if *old != value => {
                    return reject(Errno::Exist, format!("element {key} in {set}"));
                }
                Some(_) => {}
                None => {
                    s.elements.insert(key.to_owned(), value);
                }
            }
        }
        Ok(())
    }

    /// Deleting an element that is not there is ENOENT.
    fn delete_elements(&mut self, set: &str, keys: &[String]) -> Result<(), Rejection> {
        let s = self.set(set)?;
        for key in keys {
            let (key, _) = split_element(key);
            if s.elements.remove(key).is_none() {
                return reject(Errno::NoEnt, format!("element {key} in {set}"));
            }
        }
        Ok(())
    }
}

fn without_comment(spec: &str) -> Vec<&str> {
    spec.split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.starts_with("comment "))
        .collect()
}
