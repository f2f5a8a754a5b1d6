//! Live availability: calendar changes → bus (in-process or Redis) → hub →
//! WebSocket sessions.
//!
//! # Layout
//! - [`protocol`]: the wire messages and their two encodings.
//! - [`bus`]: carries changes to this node's hub and to other nodes.
//! - [`hub`]: topics, sequence numbers, replay buffers, snapshots.
//! - [`session`]: one actor per WebSocket connection.

pub mod bus;
pub mod hub;
pub mod protocol;
pub mod session;
