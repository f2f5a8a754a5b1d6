//! DocSpot's integration tests: real HTTP against a real server and a real
//! PostgreSQL (a fresh database per test).

mod admin;
mod auth;
mod booking;
mod concurrency;
mod health;
mod helpers;
mod holds;
