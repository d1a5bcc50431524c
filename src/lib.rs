//! kproxy: a kube-proxy reimplementation. Data flows one way:
//! source -> tracker -> desired state -> mode -> dataplane -> kernel.

pub mod agent;
pub mod cli;
pub mod config;
pub mod debug;
pub mod desired;
pub mod events;
pub mod health;
pub mod metrics;
pub mod options;
pub mod setup;
pub mod source;
pub mod tracker;
