//! `kproxy debug dump --kernel` against a real kernel table: the agent programs the example
//! cluster in a network namespace made here, the dump finds no difference, and after the table
//! is changed behind kproxy's back it names the difference under the Service it concerns.
//! Needs root (network namespaces, nftables).

mod support;

use support::netns::{Agent, Netns};

const BIN: &str = env!("CARGO_BIN_EXE_kproxy");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");

fn config(dir: &std::path::Path) -> String {
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n\
         clusterCIDR: 10.244.0.0/16\nhealthzBindAddress: 127.0.0.1:10256\nmetricsBindAddress: 127.0.0.1:10249\n",
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

fn dump(ns: &Netns, cfg: &str) -> String {
    let out = ns.run(&[
        BIN,
        "debug",
        "dump",
        "--kernel",
        "--config",
        cfg,
        "--manifests",
        EXAMPLES,
        "--hostname-override",
        "node-a",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_kernel_view_matches_after_a_sync_and_names_a_difference_under_its_service() {
    let ns = Netns::new("dk");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let _agent = Agent::start(
        &ns,
        &[
            BIN,
            "--config",
            &cfg,
            "--manifests",
            EXAMPLES,
            "--hostname-override",
            "node-a",
        ],
    );

    let text = dump(&ns, &cfg);
    assert!(text.contains("kernel: table ip kproxy"), "{text}");
    assert_eq!(
        text.matches("the kernel matches the desired state").count(),
        2,
        "{text}"
    );
    assert!(text.contains("10.96.0.20:80/tcp -> goto"), "{text}");

    let del = ns.run(&[
        "nft",
        "delete",
        "element",
        "ip",
        "kproxy",
        "service-ips",
        "{ 10.96.0.20 . tcp . 80 }",
    ]);
    assert!(del.status.success());
    let text = dump(&ns, &cfg);
    let web = text
        .split("shop/web:http/TCP")
        .nth(2)
        .expect("the kernel section lists shop/web");
    let web = web.split("shop/web:metrics").next().unwrap();
    assert!(web.contains("10.96.0.20:80/tcp -> (no entry)"), "{web}");
    assert!(
        web.contains("DIFFERENCE: map service-ips") && web.contains("missing from the kernel"),
        "{web}"
    );
}
