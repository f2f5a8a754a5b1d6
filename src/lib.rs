//! DocSpot: a real-time doctor appointment booking server.
//!
//! A booking travels one way: HTTP handler ([`routes`]) → the doctor's
//! calendar actor (`docspot_actors`, decides in memory) → [`store`] (batched
//! commit, the database as the arbiter) → [`live::bus`] (in-process or Redis)
//! → [`live::hub`] → WebSocket sessions.
//!
//! # Layout
//! - [`config`]: layered settings (`config/base.toml` + env file + `DOCSPOT_…`).
//! - [`startup`]: builds the server from settings and a bound listener.
//! - [`routes`]: HTTP handlers and the OpenAPI document.
//! - [`audit`]: the append-only, hash-chained audit log of patient data access.
//! - [`auth`]: password hashing, access and refresh tokens, the caller extractor.
//! - [`error`]: the one mapping from errors to RFC 9457 problem+json.
//! - [`store`]: the storage trait; PostgreSQL and embedded SQLite backends.
//! - [`live`]: live push: bus (in-process / Redis), hub, WebSocket sessions.
//! - [`domain`]: server-side value types (e-mail, password, role).
//! - [`suggest`]: suggested times ranked by the `docspot-ml` model.
//! - [`demo`]: the demo clinic and its synthetic booking history.
//! - [`telemetry`]: logging set-up.
//! - [`web`]: the embedded web app (patient page, wall display, provider screen).
//! - [`ratelimit`]: request rate limits and failed-login lock-outs.
//! - [`tls`]: built-in HTTPS (rustls).
//! - [`crypto`]: encryption at rest of patient fields, the e-mail blind index.
//! - [`privacy`]: key rotation, data export and erasure of a patient.

pub mod audit;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod domain;
pub mod error;
pub mod live;
pub mod privacy;
pub mod ratelimit;
pub mod routes;
pub mod startup;
pub mod store;
pub mod suggest;
pub mod telemetry;
pub mod tls;
pub mod web;
