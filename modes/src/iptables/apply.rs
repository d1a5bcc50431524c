//! Talking to the kernel: which backend, writing a family's rules, removing ours, sysctls.

use kproxy_dataplane::{
    iptables::{Backend, Family, Iptables, RestoreInput, SavedTable, Table},
    netns::Netns,
    sysctl::Sysctl,
};

use super::{
    MODE,
    existing::Existing,
    names::CANARY,
    render::{FamilyWrite, Options, ctx::FamilyCtx, input::restore_input},
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
            let line = failing_line(&e.to_string(), &text).unwrap_or("(not named)");
            tracing::warn!(error = %e, line, "iptables-restore failed; nothing of its table changed; the next sync is full");
            ModeError::kernel(MODE, "applying the rules", e)
        })?;
    }
    Ok(())
}

/// The input line the tool names in `error` ("Error occurred at line: N", counted from 1; the
/// nft backend may name the table's COMMIT, where the commit failed).
pub fn failing_line<'a>(error: &str, input: &'a str) -> Option<&'a str> {
    let (_, after) = error.split_once("Error occurred at line: ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    let n: usize = digits.parse().ok()?;
    input.lines().nth(n.checked_sub(1)?)
}

/// Removes every chain of ours from one backend's family, and the jumps to them; says what.
pub fn clean(ipt: &Iptables) -> Result<Vec<String>, ModeError> {
    let tables = ipt
        .save_all()
        .map_err(|e| ModeError::kernel(MODE, "reading the tables to clean them", e))?;
    let (input, removed) = cleanup_input(&tables, &ipt.program("save").replace("-save", ""));
    if !input.is_empty() {
        ipt.restore(&input)
            .map_err(|e| ModeError::kernel(MODE, "removing our chains", e))?;
    }
    Ok(removed)
}

/// Pure: the input that removes our chains from `tables` (jumps into them first), and what.
pub fn cleanup_input(tables: &[SavedTable], tool: &str) -> (RestoreInput, Vec<String>) {
    let mut input = RestoreInput::new();
    let mut removed = Vec::new();
    for table in [Table::Nat, Table::Filter] {
        let Some(saved) = tables.iter().find(|t| t.table() == Some(table)) else {
            continue;
        };
        for rule in &saved.rules {
            if !is_ours(&rule.chain) && rule.target().is_some_and(|t| is_ours(&t)) {
                input.delete(table, &rule.chain, &rule.spec);
                removed.push(format!(
                    "{tool} {table} rule -A {} {}",
                    rule.chain, rule.spec
                ));
            }
        }
        // All emptied before any is deleted: ours refer to each other.
        let ours: Vec<&str> = saved
            .chains
            .iter()
            .map(|c| c.name.as_str())
            .filter(|c| is_ours(c))
            .collect();
        for chain in &ours {
            input.declare_chain(table, chain);
        }
        for chain in ours {
            input.delete_chain(table, chain);
            removed.push(format!("{tool} {table} chain {chain}"));
        }
    }
    (input, removed)
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
    use super::failing_line;

    #[test]
    fn the_failing_line_is_found_by_its_number() {
        let input = "*nat\n:KPROXY-X - [0:0]\n-A KPROXY-X -j NOPE\nCOMMIT\n";
        let legacy = "iptables-restore v1.8.9 (legacy): Couldn't load target `NOPE'\n\n\
                      Error occurred at line: 3\nTry `iptables-restore -h' for more information.";
        assert_eq!(failing_line(legacy, input), Some("-A KPROXY-X -j NOPE"));
        assert_eq!(failing_line("exit status 1", input), None);
        assert_eq!(failing_line("Error occurred at line: 9", input), None);
    }
}
