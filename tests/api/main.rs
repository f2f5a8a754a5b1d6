//! DocSpot's integration tests: real HTTP against a real server and a real
//! PostgreSQL (a fresh database per test).

// Tests state their expectations with unwrap: a failure is the report.
#![allow(clippy::unwrap_used)]

mod admin;
mod alerts;
mod audit;
mod auth;
mod booking;
mod browser;
mod concurrency;
mod durability;
mod encryption;
mod health;
mod helpers;
mod holds;
mod live;
mod privacy;
mod security;
mod suggestions;
mod web;
mod webdriver;
