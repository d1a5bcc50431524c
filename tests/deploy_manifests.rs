//! The deploy manifests parse into their k8s-openapi types, and the ConfigMap's configuration is
//! a valid KubeProxyConfiguration.

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{ConfigMap, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding},
};
use kproxy::config::KubeProxyConfiguration;
use serde_json::Value;

fn docs(file: &str) -> Vec<Value> {
    let path = format!("{}/deploy/kubernetes/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("manifest");
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{}: {e}", v["kind"]))
}

/// Every document of every manifest parses into the type its kind names; nothing unknown.
#[test]
fn every_deploy_manifest_parses_into_its_kubernetes_type() {
    let mut kinds = Vec::new();
    for file in ["rbac.yaml", "configmap.yaml", "daemonset.yaml"] {
        for doc in docs(file) {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            match kind.as_str() {
                "ServiceAccount" => drop(typed::<ServiceAccount>(&doc)),
                "ClusterRole" => drop(typed::<ClusterRole>(&doc)),
                "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(&doc)),
                "ConfigMap" => drop(typed::<ConfigMap>(&doc)),
                "DaemonSet" => drop(typed::<DaemonSet>(&doc)),
                other => panic!("unexpected kind {other} in {file}"),
            }
            kinds.push(kind);
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "ServiceAccount"
        ]
    );
}

/// The ClusterRole grants reads of what kproxy watches and event writes, nothing more.
#[test]
fn the_cluster_role_grants_only_reads_and_event_writes() {
    let role: ClusterRole = typed(
        &docs("rbac.yaml")
            .into_iter()
            .find(|d| d["kind"] == "ClusterRole")
            .unwrap(),
    );
    for rule in role.rules.unwrap() {
        let resources = rule.resources.unwrap_or_default();
        let verbs = rule.verbs;
        if resources == ["events"] {
            assert_eq!(verbs, ["create", "patch"]);
        } else {
            assert_eq!(verbs, ["get", "list", "watch"], "{resources:?}");
            for r in resources {
                assert!(
                    ["services", "nodes", "endpointslices", "servicecidrs"].contains(&r.as_str()),
                    "{r}"
                );
            }
        }
    }
}

/// The DaemonSet runs in the host network with the capability it needs, reading the ConfigMap,
/// after a privileged `--init-only` init container with the same config.
#[test]
fn the_daemonset_runs_on_the_host_network_with_its_config() {
    let ds: DaemonSet = typed(&docs("daemonset.yaml")[0]);
    let spec = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(spec.host_network, Some(true));
    let c = &spec.containers[0];
    let caps = c
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap()
        .add
        .clone()
        .unwrap();
    assert!(caps.contains(&"NET_ADMIN".to_string()));
    assert!(
        c.command
            .as_ref()
            .unwrap()
            .iter()
            .any(|a| a == "--config=/var/lib/kproxy/config.conf")
    );
    // The conntrack set-up needs a writable /proc/sys: a privileged init container does it
    // with the same config, so the agent's own set-up finds nothing left to write.
    let init = &spec.init_containers.as_ref().unwrap()[0];
    let init_args = init.command.as_ref().unwrap();
    assert!(
        init_args.iter().any(|a| a == "--init-only"),
        "{init_args:?}"
    );
    let config_arg = |args: &[String]| args.iter().find(|a| a.starts_with("--config=")).cloned();
    assert_eq!(
        config_arg(init_args),
        config_arg(c.command.as_ref().unwrap())
    );
    assert_eq!(init.image, c.image);
    assert_eq!(
        init.security_context.as_ref().unwrap().privileged,
        Some(true)
    );
    let cm: ConfigMap = typed(&docs("configmap.yaml")[0]);
    let cfg = KubeProxyConfiguration::from_yaml_str(&cm.data.unwrap()["config.conf"])
        .expect("config parses");
    cfg.validate().expect("config is valid");
    assert_eq!(cfg.mode, "nftables");
}
