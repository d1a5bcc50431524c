//! Objects converted to the form the tracker keeps as soon as they arrive, so that no API object
//! outlives its event: not even the objects of a (re)list, which are held until the list is
//! complete (at 10k Services those were ~65 MiB of API objects at once).

use k8s_openapi::{api::core::v1::Node, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kproxy_modes::model::SkippedObject;

use super::Key;
use crate::{
    desired::{
        self,
        service::StoredService,
        slice::{Names, Slice},
    },
    source::Object,
};

/// One object in stored form, with its key.
#[derive(Debug)]
pub(super) enum Stored {
    Service(Key, Box<StoredService>),
    /// With what conversion left out of it, as skip records.
    Slice(Key, Box<Slice>, Vec<SkippedObject>),
    /// `None` for another node's Node (only this node's is kept).
    Node(Key, Option<Box<Node>>),
    ServiceCidr(Key, Vec<ipnet::IpNet>),
}

impl Stored {
    pub fn convert(obj: Object, names: &mut Names, node_name: &str) -> Stored {
        match obj {
            Object::Service(svc) => Stored::Service(
                key_of(&svc.metadata),
                Box::new(StoredService::from_api(&svc)),
            ),
            Object::EndpointSlice(slice) => {
                let converted = Slice::convert(&slice, names);
                Stored::Slice(
                    key_of(&slice.metadata),
                    Box::new(converted.slice),
                    converted.skipped,
                )
            }
            Object::Node(mut node) => {
                let own = node.metadata.name.as_deref() == Some(node_name);
                // Apply bookkeeping, often larger than the rest; nothing reads it (upstream's
                // informers drop it too).
                node.metadata.managed_fields = None;
                Stored::Node(key_of(&node.metadata), own.then_some(node))
            }
            Object::ServiceCidr(c) => {
                let cidrs = c
                    .spec
                    .as_ref()
                    .and_then(|s| s.cidrs.as_ref())
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.parse().ok())
                    .collect();
                Stored::ServiceCidr(key_of(&c.metadata), cidrs)
            }
        }
    }

    pub fn key(&self) -> &Key {
        match self {
            Stored::Service(k, _)
            | Stored::Slice(k, _, _)
            | Stored::Node(k, _)
            | Stored::ServiceCidr(k, _) => k,
        }
    }
}

/// `(namespace, name)`; cluster-scoped objects get the namespace `default`, consistently.
pub(super) fn key_of(meta: &ObjectMeta) -> Key {
    (
        desired::namespace_of(meta),
        meta.name.clone().unwrap_or_default(),
    )
}
