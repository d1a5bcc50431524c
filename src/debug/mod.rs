//! `kproxy debug ...`: what kproxy sees and would program, for people and tools.

pub mod command;
pub mod dump;
pub mod kernel;
pub mod record;
