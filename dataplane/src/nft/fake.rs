//! [`FakeNft`]: a semantic fake of nftables for tests, after kubernetes-sigs/knftables' `Fake`.
//!
//! It keeps the ruleset in memory and runs a transaction the way the kernel does: every
//! statement is applied in order to a copy, and the copy replaces the ruleset only if all of
//! them succeeded. It refuses what the kernel refuses and kproxy could get wrong: objects in a
//! missing table, rules in a missing chain, references to missing chains (`jump`, `goto`, also
//! inside an inline vmap or as a verdict map element) or sets (`@name`), elements of a missing
//! set, deleting something that is not there, and deleting a chain or set still in use. Those
//! refusals and their errno were checked against nft 1.0.6 on kernel 6.18 (e.g. a chain is
//! deleted with its rules, but not while another chain or a map element jumps to it).
//!
//! It understands exactly the statement forms [`NftTransaction`] emits and fails on any other,
//! so a new form must be taught to it (and thought about) before tests can pass.

mod apply;
mod ruleset;
mod statement;
#[cfg(test)]
mod tests;
mod text;

use std::sync::{Mutex, MutexGuard, PoisonError};

use self::{
    ruleset::{Errno, Rejection, Ruleset},
    statement::TableId,
};
use super::{Family, NftClient, NftError, NftErrorKind, NftTransaction};

/// An in-memory nftables; see the module docs. Methods take `&self` (as [`NftClient`] does), so
/// a test can inspect the fake while a mode owns it.
#[derive(Debug, Default)]
pub struct FakeNft {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    ruleset: Ruleset,
    runs: usize,
    /// Set by [`FakeNft::fail_next_run`]: the next `run` fails with it and changes nothing.
    fail_next: Option<String>,
}

impl FakeNft {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock left a consistent ruleset behind: every
        // change is a swap of a fully built copy.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The whole ruleset in a canonical text (sorted tables, chains, sets and elements; rules
    /// in chain order): equal dumps mean equal rulesets, whatever statements built them.
    pub fn dump(&self) -> String {
        text::dump(&self.lock().ruleset)
    }

    /// How many times `run` was called, failed runs included (`check` is not counted).
    pub fn runs(&self) -> usize {
        self.lock().runs
    }

    /// Makes the next `run` fail with `message` as nft's stderr, leaving the ruleset as it is;
    /// for testing what a caller does after a failed apply.
    pub fn fail_next_run(&self, message: impl Into<String>) {
        self.lock().fail_next = Some(message.into());
    }

    /// Whether a table exists.
    pub fn has_table(&self, family: Family, table: &str) -> bool {
        let id: TableId = (family, table.to_owned());
        self.lock().ruleset.tables.contains_key(&id)
    }
}

/// Applies `tx` to a copy of `rs`: the new ruleset, or the first refused statement as nft
/// reports it (`/dev/stdin:LINE:` then the error and the statement).
fn apply_all(rs: &Ruleset, tx: &NftTransaction) -> Result<Ruleset, NftError> {
    let mut next = rs.clone();
    for (n, line) in tx.lines().enumerate() {
        let result = match statement::parse(line) {
            Ok(None) => Ok(()),
            Ok(Some(stmt)) => next.apply(stmt),
            Err(syntax) => Err(Rejection {
                errno: Errno::Inval,
                detail: format!("syntax error, {syntax}"),
            }),
        };
        if let Err(r) = result {
            return Err(failure(n + 1, line, &r));
        }
    }
    Ok(next)
}

fn failure(line_no: usize, line: &str, r: &Rejection) -> NftError {
    let kind = match r.errno {
        Errno::NoEnt => NftErrorKind::NotFound,
        Errno::Exist => NftErrorKind::Exists,
        Errno::Busy | Errno::Inval | Errno::NotSupp => NftErrorKind::Other,
    };
    NftError::Failed {
        status: "exit status: 1".into(),
        stderr: format!(
            "/dev/stdin:{line_no}:1-{}: Error: Could not process rule: {} ({})\n{line}",
            line.len(),
            r.errno.strerror(),
            r.detail
        ),
        kind,
    }
}

fn table_not_found(family: Family, table: &str) -> NftError {
    NftError::Failed {
        status: "exit status: 1".into(),
        stderr: format!(
            "Error: No such file or directory\nlist table {family} {table}\n                 ^^^^^^^^^^"
        ),
        kind: NftErrorKind::NotFound,
    }
}

impl NftClient for FakeNft {
    /// All or nothing: the ruleset changes only if every statement succeeds.
    fn run(&self, tx: &NftTransaction) -> Result<(), NftError> {
        let mut inner = self.lock();
        inner.runs += 1;
        if let Some(stderr) = inner.fail_next.take() {
            return Err(NftError::Failed {
                status: "exit status: 1".into(),
                stderr,
                kind: NftErrorKind::Other,
            });
        }
        inner.ruleset = apply_all(&inner.ruleset, tx)?;
        Ok(())
    }

    fn check(&self, tx: &NftTransaction) -> Result<(), NftError> {
        apply_all(&self.lock().ruleset, tx).map(drop)
    }

    fn list_table(&self, family: Family, table: &str) -> Result<String, NftError> {
        let inner = self.lock();
        match inner.ruleset.tables.get(&(family, table.to_owned())) {
            Some(t) => Ok(text::list(&family.to_string(), table, t)),
            None => Err(table_not_found(family, table)),
        }
    }

    fn list_table_json(&self, family: Family, table: &str) -> Result<String, NftError> {
        let inner = self.lock();
        match inner.ruleset.tables.get(&(family, table.to_owned())) {
            Some(t) => Ok(text::list_json(&family.to_string(), table, t)),
            None => Err(table_not_found(family, table)),
        }
    }
}
