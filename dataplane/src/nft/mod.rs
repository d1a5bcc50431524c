//! A thin typed client for nftables: a transaction that renders to `nft -f` text, and a client
//! that runs that text as one atomic kernel transaction.
//!
//! The rendered text is the single source of truth: it is what `nft` reads, what golden tests
//! compare and what debug output shows.

mod exec;
mod fake;
mod listing;
pub mod monitor;
mod transaction;
pub mod wire;

pub use exec::{Exec, NftClient, NftError, NftErrorKind, SpawnLog};
pub use fake::FakeNft;
pub use listing::{Difference, TableListing};
pub use transaction::{BaseChain, ChainType, Family, Hook, NftTransaction};
