//! Where Kubernetes objects come from: a directory of manifests, or the API server.
//! Every source speaks the same [`Event`]s to the tracker.

use k8s_openapi::api::{
    core::v1::Node, core::v1::Service, discovery::v1::EndpointSlice, networking::v1::ServiceCIDR,
};

pub mod api;
pub mod manifest;

/// The kinds kproxy watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Service,
    EndpointSlice,
    Node,
    /// Service CIDRs (networking.k8s.io/v1): an unallocated IP inside one is dropped. Optional:
    /// readiness does not wait for it.
    ServiceCidr,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
            Kind::ServiceCidr => "ServiceCIDR",
        })
    }
}

/// One object of a watched kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    Node(Box<Node>),
    ServiceCidr(Box<ServiceCIDR>),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Node(_) => Kind::Node,
            Object::ServiceCidr(_) => Kind::ServiceCidr,
        }
    }
}

/// What a source tells the tracker.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// An object was added or changed.
    Apply(Object),
    /// An object was deleted (the last known state of it).
    Delete(Object),
    /// The complete current list of one kind: an initial list or a relist. Objects of that kind
    /// missing from it are deleted, and the kind counts as synced from now on.
    Replace(Kind, Vec<Object>),
    /// The same as one `Replace`, streamed: a list of this kind begins (any list of it in
    /// progress is abandoned), ...
    ListBegin(Kind),
    /// ... one object of it, ...
    Listed(Object),
    /// ... and it is complete: only now does it take effect, as a whole.
    ListEnd(Kind),
}
