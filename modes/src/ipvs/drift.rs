//! Drift: what another program removed of ours, found by a cheap check every syncPeriod: the
//! VIPs on kube-ipvs0 (one address dump), our virtual servers (one service dump, no real
//! servers), and the rule count of each fixed chain of the nftables table (one small dump per
//! chain, whatever the sets hold). Anything found makes the next sync full, which restores it.

use kproxy_dataplane::{
    ipvs::{Ipvs, IpvsTable},
    nft::{Exec, Family, NftClient, NftTransaction, monitor::RuleCounter},
};

use super::{Applied, IpvsMode, MODE, nft};
use crate::{Drift, ModeError, model::IpFamily};

/// How many rules each fixed chain gets in `tx` (a full render), per family.
pub fn rule_counts(tx: &NftTransaction) -> Vec<(IpFamily, &'static str, usize)> {
    let mut out = Vec::new();
    for fam in [IpFamily::V4, IpFamily::V6] {
        let prefix = format!("add rule {} {} ", nft::nft_family(fam), nft::TABLE);
        let lines: Vec<&str> = tx.lines().filter_map(|l| l.strip_prefix(&prefix)).collect();
        if lines.is_empty() {
            continue; // the family is not served
        }
        for chain in nft::CHAINS {
            let n = lines
                .iter()
                .filter(|l| l.split(' ').next() == Some(chain))
                .count();
            out.push((fam, chain, n));
        }
    }
    out
}

pub fn check(mode: &IpvsMode, applied: &Applied) -> Result<Vec<Drift>, ModeError> {
    let mut out = Vec::new();
    let (local, vips) = mode.addresses()?;
    if local != applied.local {
        // Not drift of ours, but the NodePort virtual servers follow the node's addresses: the
        // full sync this causes re-reads them.
        out.push(Drift {
            kind: "node address",
            what: "the node's addresses changed since the last full sync".to_owned(),
        });
    }
    let missing: Vec<String> = applied
        .vips()
        .difference(&vips)
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        out.push(Drift {
            kind: "address",
            what: format!(
                "{} VIPs missing from kube-ipvs0: {}",
                missing.len(),
                sample(&missing)
            ),
        });
    }
    let mut ipvs =
        Ipvs::open(&mode.netns).map_err(|e| ModeError::kernel(MODE, "opening IPVS", e))?;
    let listed = ipvs
        .list_services()
        .map_err(|e| ModeError::kernel(MODE, "listing virtual servers", e))?;
    let have: std::collections::BTreeSet<_> = listed.iter().map(|s| s.key()).collect();
    let gone: Vec<String> = (applied.table.keys())
        .filter(|k| !have.contains(k))
        .map(|k| format!("{:?} {}:{}", k.protocol, k.address, k.port))
        .collect();
    if !gone.is_empty() {
        out.push(Drift {
            kind: "virtual server",
            what: format!("{} virtual servers deleted: {}", gone.len(), sample(&gone)),
        });
    }
    let mut counter = RuleCounter::open(&mode.netns)
        .map_err(|e| ModeError::kernel(MODE, "counting our rules", e))?;
    for &(fam, chain, want) in &applied.rules {
        let num = match fam {
            IpFamily::V4 => 2,
            IpFamily::V6 => 10,
        };
        let have = counter
            .count(num, nft::TABLE, chain)
            .map_err(|e| ModeError::kernel(MODE, "counting our rules", e))?;
        if have != want {
            out.push(Drift {
                kind: "rule",
                what: format!(
                    "chain {} {} {chain} holds {have} rules, kproxy wrote {want}",
                    nft::nft_family(fam),
                    nft::TABLE
                ),
            });
        }
    }
    Ok(out)
}

fn sample(items: &[String]) -> String {
    let mut s = items.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > 5 {
        s.push_str(", ...");
    }
    s
}

/// Deletes our nftables tables (both families); says which existed.
pub fn delete_tables(client: &Exec) -> Result<Vec<String>, ModeError> {
    let mut removed = Vec::new();
    let mut tx = NftTransaction::new();
    for family in [Family::Ip, Family::Ip6] {
        match client.list_table(family, nft::TABLE) {
            Ok(_) => removed.push(format!("nftables table {family} {}", nft::TABLE)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(ModeError::kernel(MODE, "listing our tables", e)),
        }
        // `add` first so `delete` cannot fail on a missing table: only our tables are named.
        tx.add_table(family, nft::TABLE, None);
        tx.delete_table(family, nft::TABLE);
    }
    client
        .run(&tx)
        .map_err(|e| ModeError::kernel(MODE, "deleting our tables", e))?;
    Ok(removed)
}
