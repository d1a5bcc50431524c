//! kproxy's data-plane modes. Each mode turns a [`model::DesiredState`] into kernel state behind
//! the one [`Mode`] trait (`mode.rs`: the contract every mode keeps); modes never see Kubernetes
//! objects and never decide a Service rule: the desired state already says what each path does.
//!
//! A new mode is one folder here plus one entry in [`registry`].

pub mod conntrack;
pub mod error;
pub mod iptables;
pub mod leftovers;
mod mode;
pub mod model;
pub mod names;
pub mod nftables;
pub mod quarantine;
pub mod registry;
pub mod testing;
pub mod view;

pub use error::ModeError;
pub use mode::{Counter, Drift, Gauge, Mode, ModeContext, SyncError, SyncStats};
