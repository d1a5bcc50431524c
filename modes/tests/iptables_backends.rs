//! The iptables mode on both backends, in throwaway namespaces: `--iptables-backend` writes where
//! it says and nowhere else; detection adopts the backend whose chains of ours are there (a
//! restart), and a full sync after a restart neither duplicates jumps nor leaves stale chains.
//! Needs root (skipped otherwise).

use std::{process::Command, sync::Arc};

use kproxy_modes::{
    Mode, ModeContext,
    iptables::IptablesMode,
    model::ChangeSet,
    registry::{Backend, IptablesSettings},
    testing::fixtures,
};
use kproxy_testbed::netns::Netns;

fn mode(ns: &Netns, backend: Option<Backend>) -> IptablesMode {
    let settings = IptablesSettings {
        localhost_node_ports: true,
        backend,
    };
    let mut m = IptablesMode::new(Some(ns.name().to_owned()), settings);
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let ctx = ModeContext {
        runtime: rt.handle().clone(),
        drift: Arc::new(tokio::sync::Notify::new()),
    };
    m.start(&ctx).expect("start");
    m
}

/// `iptables-<backend>-save` of the namespace, nat and filter.
fn save(ns: &Netns, backend: Backend) -> String {
    let tool = format!("iptables-{backend}-save");
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), &tool])
        .output()
        .expect("iptables-save runs");
    assert!(out.status.success(), "{tool}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lines_with<'a>(text: &'a str, what: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(what)).collect()
}

#[test]
fn a_forced_backend_holds_our_chains_and_the_other_none() {
    for (backend, other) in [
        (Backend::Nft, Backend::Legacy),
        (Backend::Legacy, Backend::Nft),
    ] {
        let Some(ns) = Netns::scratch() else { return };
        let mut m = mode(&ns, Some(backend));
        assert_eq!(m.backend(), backend);
        m.sync(&fixtures::external_mix(), &ChangeSet::full())
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let ours = save(&ns, backend);
        assert!(ours.contains(":KPROXY-SERVICES"), "{backend}: {ours}");
        assert!(lines_with(&ours, "-j KPROXY-SP").len() > 5, "{backend}");
        assert!(!save(&ns, other).contains("KPROXY-"), "{other} holds ours");
    }
}

#[test]
fn a_restart_adopts_its_backend_and_its_chains_in_place() {
    for backend in [Backend::Nft, Backend::Legacy] {
        let Some(ns) = Netns::scratch() else { return };
        let desired = fixtures::external_mix();
        mode(&ns, Some(backend))
            .sync(&desired, &ChangeSet::full())
            .expect("first sync");
        let before = save(&ns, backend);
        // A new process: no applied state, backend detected.
        let mut again = mode(&ns, None);
        assert_eq!(again.backend(), backend, "detected by our canary");
        let mut fewer = desired.clone();
        let gone = fewer.families[0].services.keys().next().unwrap().clone();
        fewer.families[0].services.remove(&gone);
        again.sync(&fewer, &ChangeSet::full()).expect("full sync");
        let after = save(&ns, backend);
        let jumps = |t: &str| lines_with(t, "-A PREROUTING").len();
        assert_eq!(
            jumps(&after),
            jumps(&before),
            "{backend}: jumps not duplicated"
        );
        let chains = |t: &str| lines_with(t, ":KPROXY-SP").len();
        assert!(
            chains(&after) < chains(&before),
            "{backend}: the removed port's chains are deleted"
        );
    }
}
