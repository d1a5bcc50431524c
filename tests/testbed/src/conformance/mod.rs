//! The conformance runner: scenario files of tests/conformance/FORMAT.md run against kproxy with
//! real packets in a test bed.

pub mod agent;
pub mod case;
pub mod differences;
pub mod judge;
pub mod run;

pub use case::Case;
pub use run::{Options, Tally, run_files};
