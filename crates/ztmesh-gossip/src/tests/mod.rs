//! Tests of the gossip core through its public API, on a deterministic in-memory mesh
//! ([`util::Network`]) or a lone core fed hand-made frames ([`util::Pair`]).

mod bounds;
mod dissemination;
mod garbage;
mod refusals;
mod util;
