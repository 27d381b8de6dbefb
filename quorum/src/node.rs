//! The identity of a node: [`NodeId`], shared with `synod-clocks`.
//!
//! Quorums count nodes, so they need a name for one. The project has one node identity,
//! defined by `synod-clocks` (hybrid timestamps and version vectors carry it too) and
//! re-exported here so that users of this crate, such as `synod-consensus`, need not depend
//! on `synod-clocks` for it. It is a newtype over `u64` (`NodeId::new(7)`, `get()`,
//! ordered, shown as `n7`): the caller chooses the numbers and this crate only compares
//! them.

pub use synod_clocks::NodeId;
