//! Upstream's nftables mode: its tables `ip kube-proxy` and `ip6 kube-proxy`, whole.

use kproxy_dataplane::nft::{Exec, Family, NftClient, NftTransaction};

use super::{LeftoverError, Leftovers, Removed};

/// Upstream's table name in both families (`kubeProxyTable`).
const TABLE: &str = "kube-proxy";

pub(super) fn remove(netns: Option<&str>, out: &mut Leftovers) {
    let mut client = Exec::new();
    if let Some(ns) = netns {
        client = client.in_netns(ns);
    }
    for family in [Family::Ip, Family::Ip6] {
        // A bare delete, as upstream's cleanup does: "not found" means there was none, and
        // nothing is created. Listing first would cost seconds on a large leftover table.
        let mut tx = NftTransaction::new();
        tx.delete_table(family, TABLE);
        match client.run(&tx) {
            Ok(()) => out.removed.push(Removed::NftTable { family }),
            Err(e) if e.is_not_found() => {}
            Err(source) => out.failed.push(LeftoverError::Nft { family, source }),
        }
    }
}
