//! Talking to the kernel: which backend, writing a family's rules, removing ours, sysctls.

use kproxy_dataplane::{
    iptables::{Backend, Family, Iptables, IptablesError, RestoreInput, Table},
    netns::Netns,
    sysctl::Sysctl,
};

use super::{
    MODE,
    existing::Existing,
    names::CANARY,
    render::{
        FamilyWrite, Options,
        ctx::FamilyCtx,
        input::{flush_then_delete, restore_input},
    },
};
use crate::{ModeError, iptables::names::is_ours, model::DesiredState};

/// The tools of `backend` and `family`, in the named namespace if any.
pub fn tools(backend: Backend, family: Family, netns: Option<&str>) -> Iptables {
    let ipt = Iptables::new(backend, family);
    match netns {
        Some(ns) => ipt.in_netns(ns),
        None => ipt,
    }
}

/// Picks the backend the node already uses, cheapest evidence first: our own canary chain (a
/// restart adopts its chains in place); the kubelet's hint chains in mangle (what upstream's
/// image, iptables-wrapper, looks for first); else the backend with more rule lines in both
/// families' saves. On a tie (a fresh node, a test namespace) nft, the default of current
/// distributions.
pub fn detect(netns: Option<&str>) -> Backend {
    let installed = |b| tools(b, Family::V4, netns).is_installed();
    let has_chain = |backend, table, chain: &str| {
        installed(backend)
            && Family::ALL.into_iter().any(|f| {
                matches!(
                    tools(backend, f, netns).list_chain(table, chain),
                    Ok(Some(_))
                )
            })
    };
    let holding = |table, chain: &str| {
        let found: Vec<Backend> = Backend::ALL
            .into_iter()
            .filter(|b| has_chain(*b, table, chain))
            .collect();
        (found.len() == 1).then(|| found[0])
    };
    let evidence = [
        (Table::Nat, CANARY),
        (Table::Mangle, "KUBE-IPTABLES-HINT"),
        (Table::Mangle, "KUBE-KUBELET-CANARY"),
    ];
    if let Some(backend) = evidence.iter().find_map(|(t, c)| holding(*t, c)) {
        return backend;
    }
    let lines = |backend| -> usize {
        Family::ALL
            .into_iter()
            .map(|f| tools(backend, f, netns))
            .filter(Iptables::is_installed)
            .filter_map(|ipt| ipt.save_all().ok())
            .flat_map(|tables| tables.into_iter().map(|t| t.rules.len()))
            .sum()
    };
    if !installed(Backend::Nft) || lines(Backend::Legacy) > lines(Backend::Nft) {
        Backend::Legacy
    } else {
        Backend::Nft
    }
}

/// Writes one family: for a full sync, after reading what it must know of the kernel (stale
/// chains of ours, jumps; see [`Existing`]).
pub fn write(
    ipt: &Iptables,
    w: &FamilyWrite,
    full: bool,
    netns: Option<&str>,
) -> Result<(), ModeError> {
    let existing = match full {
        true => Some(Existing::read(ipt, netns)?),
        false => None,
    };
    for input in restore_input(w, existing.as_ref()) {
        let text = input.to_string();
        tracing::debug!(program = %ipt.program("restore"), lines = text.lines().count(), "iptables-restore --noflush");
        ipt.restore(&input).map_err(|e| {
            let e = RestoreFailed::new(e, &text);
            tracing::warn!(error = %e, "iptables-restore failed; nothing of its table changed; the next sync is full");
            ModeError::kernel(MODE, "applying the rules", e)
        })?;
    }
    Ok(())
}

/// A failed restore as logged (by the agent too): the tool's message on one line
/// (iptables-nft-restore puts its version banner and the message on two; a log line must stay
/// one), then the input line the tool names, if any.
#[derive(Debug, thiserror::Error)]
#[error("{message}{}", line.as_ref().map(|l| format!(" (refused input line: {l})")).unwrap_or_default())]
pub struct RestoreFailed {
    message: String,
    line: Option<String>,
    #[source]
    source: IptablesError,
}

impl RestoreFailed {
    pub fn new(source: IptablesError, input: &str) -> Self {
        let message = source.to_string();
        Self {
            line: failing_line(&message, input).map(str::to_owned),
            message: message.split_whitespace().collect::<Vec<_>>().join(" "),
            source,
        }
    }
}

/// The input line the tool names in `error`, counted from 1: "Error occurred at line: N" (a
/// line it could not parse), else "line N failed" (legacy: the kernel refused the commit, or a
/// rule) or "line N: ..." (nft: the same). The nft backend may name the table's COMMIT, where
/// the commit failed.
pub fn failing_line<'a>(error: &str, input: &'a str) -> Option<&'a str> {
    let after = match error.split_once("Error occurred at line: ") {
        Some((_, after)) => after,
        None => {
            (error.split("line ").skip(1)).find(|a| a.starts_with(|c: char| c.is_ascii_digit()))?
        }
    };
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    let n: usize = digits.parse().ok()?;
    input.lines().nth(n.checked_sub(1)?)
}

/// Removes every chain of ours from one backend's family, and the jumps to them; says what.
pub fn clean(ipt: &Iptables, netns: Option<&str>) -> Result<Vec<String>, ModeError> {
    let existing = Existing::read(ipt, netns)?;
    let (inputs, removed) = cleanup_input(&existing, &ipt.program("save").replace("-save", ""));
    for input in inputs {
        ipt.restore(&input)
            .map_err(|e| ModeError::kernel(MODE, "removing our chains", e))?;
    }
    Ok(removed)
}

/// Pure: the inputs that remove our chains (the jumps into them first), and what they remove.
pub fn cleanup_input(existing: &Existing, tool: &str) -> (Vec<RestoreInput>, Vec<String>) {
    let (mut flush, mut delete) = (RestoreInput::new(), RestoreInput::new());
    let mut removed = Vec::new();
    for table in [Table::Nat, Table::Filter] {
        let state = existing.table(table);
        for rule in &state.builtin_rules {
            if rule.target().is_some_and(|t| is_ours(&t)) {
                flush.delete(table, &rule.chain, &rule.spec);
                removed.push(format!(
                    "{tool} {table} rule -A {} {}",
                    rule.chain, rule.spec
                ));
            }
        }
        flush_then_delete(table, &state.ours, &mut flush, &mut delete);
        let chains = state.ours.iter();
        removed.extend(chains.map(|chain| format!("{tool} {table} chain {chain}")));
    }
    let inputs = [flush, delete].into_iter().filter(|i| !i.is_empty());
    (inputs.collect(), removed)
}

/// `route_localnet` lets packets to 127.0.0.1 be DNATed to a pod: needed (IPv4 only) when
/// NodePorts answer on loopback, as upstream sets it. A failure is logged: everything but
/// localhost NodePorts works without it.
pub fn route_localnet(desired: &DesiredState, localhost: bool, netns: Option<&str>) {
    let wanted = desired.families.iter().any(|f| {
        let options = Options {
            localhost_node_ports: localhost,
            ..Options::default()
        };
        FamilyCtx::new(f.family, &f.node, options).loopback_node_ports()
    });
    if !wanted {
        return;
    }
    let name = "net/ipv4/conf/all/route_localnet";
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let result = Netns::from_name(netns).run(|| -> Result<(), BoxError> {
        Sysctl::new().ensure(name, 1)?;
        Ok(())
    });
    if let Err(error) = result {
        tracing::warn!(%error, "cannot set {name}: localhost NodePorts will not answer");
    }
}

/// Whether the node sets `nf_conntrack_tcp_be_liberal` (read once at start, as upstream): then
/// out-of-window TCP packets are not INVALID and need no drop. Unreadable counts as not set.
pub fn tcp_be_liberal(netns: Option<&str>) -> bool {
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let read = Netns::from_name(netns).run(|| -> Result<i64, BoxError> {
        Ok(Sysctl::new()
            .file("net/netfilter/nf_conntrack_tcp_be_liberal")
            .read()?)
    });
    matches!(read, Ok(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failing_line_is_found_by_its_number() {
        let input = "*nat\n:KPROXY-X - [0:0]\n-A KPROXY-X -j NOPE\nCOMMIT\n";
        let legacy = "iptables-restore v1.8.9 (legacy): Couldn't load target `NOPE'\n\n\
                      Error occurred at line: 3\nTry `iptables-restore -h' for more information.";
        assert_eq!(failing_line(legacy, input), Some("-A KPROXY-X -j NOPE"));
        assert_eq!(failing_line("exit status 1", input), None);
        assert_eq!(failing_line("Error occurred at line: 9", input), None);
    }

    fn failed(stderr: &str) -> IptablesError {
        IptablesError::Failed {
            program: "iptables-restore".into(),
            status: "exit status: 1".into(),
            stderr: stderr.into(),
        }
    }

    /// Commit-time failures: the kernel refused a line the tool had parsed.
    #[test]
    fn a_failed_restore_is_one_line_naming_the_refused_input_line() {
        let input = "*nat\n:KPROXY-A - [0:0]\nCOMMIT\n*nat\n-X KPROXY-B\nCOMMIT\n";
        let legacy = RestoreFailed::new(failed("iptables-restore: line 5 failed"), input);
        assert_eq!(
            legacy.to_string(),
            "iptables-restore failed (exit status: 1): iptables-restore: line 5 failed \
             (refused input line: -X KPROXY-B)"
        );
        let nft = "iptables-nft-restore v1.8.9 (nf_tables): \nline 5: CHAIN_DEL failed \
                   (Device or resource busy): chain KPROXY-B";
        let nft = RestoreFailed::new(failed(nft), input).to_string();
        assert!(!nft.contains('\n'), "{nft}");
        assert!(
            nft.ends_with("chain KPROXY-B (refused input line: -X KPROXY-B)"),
            "{nft}"
        );
        // No line named (a held lock), or one beyond the input: the message alone.
        let lock = "Another app is currently holding the xtables lock.\nStopped waiting after 5s.";
        let lock = RestoreFailed::new(failed(lock), input).to_string();
        assert!(lock.ends_with("lock. Stopped waiting after 5s."), "{lock}");
        let beyond = RestoreFailed::new(failed("line 99 failed"), input).to_string();
        assert!(beyond.ends_with("line 99 failed"), "{beyond}");
    }
}
