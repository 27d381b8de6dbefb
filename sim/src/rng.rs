//! Seeded pseudo-random numbers: the simulator draws every choice from `synod-node`'s
//! [`Rng`](synod_node::Rng), the one generator of the workspace, seeded from the run's seed.

/// The simulator's name for [`synod_node::Rng`]: the same type, so a node's protocol and the
/// simulator around it draw from one kind of generator.
pub use synod_node::Rng as SimRng;
pub use synod_node::{Probability, splitmix64};
