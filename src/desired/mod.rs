//! The pure compute: Services + EndpointSlices + Node + options -> desired state. Every
//! Kubernetes Service semantic kproxy implements is decided in this module and nowhere else.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{Node, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kproxy_modes::model::{
    DesiredState, FamilyState, IpFamily, ServicePort, ServicePortName, SkippedObject,
};

pub mod collisions;
pub mod context;
pub mod endpoints;
pub mod node_ports;
pub mod paths;
pub mod service;
pub mod slice;
pub mod validate;

pub use context::{DetectLocal, NodeContext, NodeFacts, ProxyOptions};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Service an EndpointSlice belongs to, as `(namespace, service name)`.
pub fn slice_service(slice: &EndpointSlice) -> Option<(String, String)> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    if name.is_empty() {
        return None;
    }
    Some((namespace_of(&slice.metadata), name.clone()))
}

pub fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned())
}

/// An empty desired state with the node's families, to fill with Service ports.
pub fn empty_state(ctx: &NodeContext) -> DesiredState {
    DesiredState {
        node_name: ctx.node_name.clone(),
        zone: ctx.zone.clone(),
        families: ctx
            .families
            .iter()
            .map(|(family, node)| FamilyState {
                family: *family,
                node: node.clone(),
                services: BTreeMap::new(),
            })
            .collect(),
        skipped: Vec::new(),
    }
}

/// Files Service ports under their family.
pub fn insert_ports(state: &mut DesiredState, ports: impl IntoIterator<Item = ServicePort>) {
    for port in ports {
        let family = IpFamily::of(&port.cluster_ip);
        if let Some(f) = state.families.iter_mut().find(|f| f.family == family) {
            f.services.insert(port.name.clone(), port);
        }
    }
}

/// The Node object that describes this node, if the list has it.
pub fn own_node<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    node_name: &str,
) -> Option<&'a Node> {
    nodes
        .into_iter()
        .find(|n| n.metadata.name.as_deref() == Some(node_name))
}

/// Computes the whole desired state from scratch. The tracker keeps the same result up to date
/// incrementally; this is the reference it is tested against, and what `debug dump` uses.
pub fn compute(
    opts: &ProxyOptions,
    services: &[Service],
    slices: &[EndpointSlice],
    node: Option<&Node>,
) -> DesiredState {
    compute_with_local_addresses(opts, services, slices, node, &[])
}

/// [`compute`] on a node with these local addresses (they resolve nodePortAddresses CIDRs to
/// the addresses NodePorts are served on; without them, a CIDR matches no address).
pub fn compute_with_local_addresses(
    opts: &ProxyOptions,
    services: &[Service],
    slices: &[EndpointSlice],
    node: Option<&Node>,
    local_addresses: &[std::net::IpAddr],
) -> DesiredState {
    let mut facts = node.map(NodeFacts::from_node).unwrap_or_default();
    facts.local_addresses = local_addresses.to_vec();
    let ctx = NodeContext::new(opts, &facts);
    let mut names = slice::Names::default();
    let mut by_service: BTreeMap<(String, String), Vec<slice::Slice>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for s in slices {
        let converted = slice::Slice::convert(s, &mut names);
        skipped.extend(converted.skipped);
        if let Some(service) = &converted.slice.service {
            let key = (namespace_of(&s.metadata), service.to_string());
            by_service.entry(key).or_default().push(converted.slice);
        }
    }
    let mut state = empty_state(&ctx);
    let mut created = BTreeMap::new();
    for svc in services {
        let key = (
            namespace_of(&svc.metadata),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        let svc_slices: Vec<&slice::Slice> = by_service.get(&key).into_iter().flatten().collect();
        let stored = service::StoredService::from_api(svc);
        match &stored.spec {
            Ok(spec) => {
                insert_ports(
                    &mut state,
                    service::compute(&ctx, (&key.0, &key.1), spec, &svc_slices),
                );
                skipped.extend(service::refused_node_ports(&ctx, (&key.0, &key.1), spec));
            }
            Err(outcome) => skipped.extend(skipped_service(&key.0, &key.1, outcome)),
        }
        created.insert(key, stored.created);
    }
    // From scratch nobody held anything before: age and name decide.
    let mut losers = collisions::Losers::default();
    let rank = collisions::Rank {
        prior: &Default::default(),
        fresh: &|_| true,
        created: &|n| created_of(&created, n),
    };
    collisions::resolve(&mut state, &mut losers, &rank);
    skipped.extend(losers.skipped().cloned());
    skipped.sort();
    state.skipped = skipped;
    state
}

/// The creationTimestamp of a Service port's Service.
pub fn created_of(
    created: &BTreeMap<(String, String), Option<Time>>,
    name: &ServicePortName,
) -> Option<Time> {
    let key = (name.namespace.clone(), name.name.clone());
    created.get(&key).cloned().flatten()
}

/// The skip record for a Service that produced no ports, if it was invalid (ignored Services,
/// such as headless ones, are not problems).
pub fn skipped_service(
    namespace: &str,
    name: &str,
    outcome: &service::Outcome,
) -> Option<SkippedObject> {
    match outcome {
        service::Outcome::Ignored(_) => None,
        service::Outcome::Invalid(reason) => {
            Some(skip_record("Service", namespace, name, reason.clone()))
        }
    }
}

/// A skip record. The names are shown escaped and shortened: a skipped object's names are
/// often the invalid text itself, and the record is logged and printed by `debug dump`.
pub fn skip_record(kind: &str, namespace: &str, name: &str, reason: String) -> SkippedObject {
    SkippedObject {
        kind: kind.into(),
        namespace: validate::shown(namespace),
        name: validate::shown(name),
        reason,
    }
}

/// Logs a skip record: once per change of the object (the tracker calls it when a changed
/// object is stored), never per sync.
pub fn log_skipped(s: &SkippedObject) {
    tracing::warn!(
        kind = %s.kind,
        object = %format!("{}/{}", s.namespace, s.name),
        reason = %s.reason,
        "skipping invalid input"
    );
}
