//! `kproxy debug dump` on the bundled example cluster, run as the real binary.

use std::process::Command;

fn dump(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kproxy"))
        .args([
            "debug",
            "dump",
            "--manifests",
            concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples"),
        ])
        .args(args)
        .output()
        .expect("run kproxy");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The JSON output lists every example Service port in each family with its endpoint sets.
#[test]
fn json_dump_of_the_examples_has_every_service_port_and_its_endpoints() {
    let (ok, stdout, stderr) = dump(&["--hostname-override", "node-a", "-o", "json"]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("valid JSON");
    let mut ports = Vec::new();
    for fam in v["families"].as_array().unwrap() {
        for p in fam["services"].as_array().unwrap() {
            let n = &p["name"];
            let cluster: Vec<&str> = p["endpoints"]["cluster"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["addr"].as_str().unwrap())
                .collect();
            ports.push(format!(
                "{} {}/{}:{}/{} {}",
                fam["family"].as_str().unwrap(),
                n["namespace"].as_str().unwrap(),
                n["name"].as_str().unwrap(),
                n["port"].as_str().unwrap(),
                n["protocol"].as_str().unwrap(),
                cluster.join(",")
            ));
        }
    }
    assert_eq!(
        ports,
        [
            "IPv4 default/api-ds:http/TCP 10.244.1.70:8080,10.244.2.70:8080",
            "IPv4 default/echo:tcp/TCP 10.244.1.30:7000,10.244.2.30:7000",
            "IPv4 ingress/ingress:https/TCP 10.244.1.50:8443,10.244.2.50:8443",
            "IPv4 kube-system/kube-dns:dns/UDP 10.244.1.53:53,10.244.2.53:53",
            "IPv4 kube-system/kube-dns:dns-tcp/TCP 10.244.1.53:53,10.244.2.53:53",
            "IPv4 shop/orders:http/TCP 10.244.1.90:8080",
            "IPv4 shop/session:http/TCP 10.244.1.60:8080,10.244.2.60:8080,10.244.2.61:8080",
            "IPv4 shop/storefront:http/TCP 10.244.1.40:8080,10.244.2.40:8080",
            "IPv4 shop/web:http/TCP 10.244.1.10:8080,10.244.2.10:8080",
            "IPv4 shop/web:metrics/TCP 10.244.1.10:9090,10.244.2.10:9090",
            "IPv6 default/api-ds:http/TCP [fd00:244:1::70]:8080,[fd00:244:2::70]:8080",
        ]
    );
    let ingress = &v["families"][0]["services"][2];
    assert_eq!(ingress["endpoints"]["local"][0]["addr"], "10.244.1.50:8443");
    assert_eq!(ingress["external_policy"], "Local");
}

/// The table names why each excluded endpoint was left out.
#[test]
fn table_dump_gives_the_reason_for_each_excluded_endpoint() {
    let (ok, stdout, stderr) = dump(&["--hostname-override", "node-a"]);
    assert!(ok, "{stderr}");
    for needle in [
        "10.244.2.50:8443 (remote under a Local policy)",
        "10.244.2.90:8080 (terminating (ready endpoints exist))",
        "10.244.2.91:8080 (not ready or serving)",
        "192.168.60.10:80 (load balancer)",
        "*:30443 (node port)",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
    assert!(
        !stdout.contains("shop/db"),
        "headless Services are not proxied"
    );
    assert!(
        !stdout.contains("payments"),
        "ExternalName Services are not proxied"
    );
}

/// A bad flag value fails with the field and value named, and a non-zero exit.
#[test]
fn an_invalid_flag_value_names_the_field_and_exits_non_zero() {
    let (ok, _, stderr) = dump(&[
        "--hostname-override",
        "node-a",
        "--iptables-masquerade-bit",
        "40",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("masqueradeBit") && stderr.contains("40"),
        "{stderr}"
    );
}

/// The per-path facts the compute decided are shown: each external path, its masquerading and
/// short-circuit, and the allowed LB sources (`allowFromNode`: the node's 192.168.50.2 is in
/// storefront's range, so its LB IP is allowed too).
#[test]
fn dump_shows_the_paths_and_allowed_sources() {
    // iptables' nodePortAddresses default (every local address; nftables' is [primary]): the
    // dump computes without building the mode, so a mode this build lacks is fine here.
    let flags = ["--hostname-override", "node-a", "--proxy-mode", "iptables"];
    let (ok, stdout, stderr) = dump(&flags);
    assert!(ok, "{stderr}");
    for needle in [
        "external traffic keeps its source (the node's own is masqueraded)",
        "external traffic is masqueraded",
        "load balancer IPs only from: 192.168.50.0/24, 192.168.60.10",
        "node ports on: all local addresses",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
    let (ok, stdout, stderr) = dump(&[&flags[..], &["-o", "json"]].concat());
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("valid JSON");
    let ingress = &v["families"][0]["services"][2];
    assert_eq!(ingress["internal"]["set"], "Cluster");
    assert_eq!(ingress["external"]["set"], "Local");
    assert_eq!(ingress["external"]["short_circuit_local_traffic"], true);
    assert_eq!(ingress["external"]["masquerade"], "node-origin-only");
    assert_eq!(
        v["families"][0]["node"]["node_port_ips"]["mode"],
        "all-local"
    );
}
