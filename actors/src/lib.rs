//! DocSpot's calendar actors and the scheduling domain they decide with.
//!
//! No HTTP and no SQL live here: the actors talk to storage through the
//! [`store::CalendarStore`] trait, and all time arithmetic is pure.
//!
//! # Layout
//! - [`domain`]: ids, time ranges, appointments, schedules (plain data).
//! - [`slots`]: free-slot computation in the clinic's time zone (DST-safe).
//! - [`store`]: the storage trait and its batched write operations.
//! - [`calendar`]: the per-doctor actor and one message struct per request.
//! - [`directory`]: finds or starts the actor of a doctor.
//! - [`events`]: the changes calendars publish after each commit.

pub mod calendar;
pub mod directory;
pub mod domain;
pub mod events;
pub mod slots;
pub mod store;

pub use calendar::{BookingError, CalendarActor, CalendarConfig, Reply};
pub use directory::CalendarDirectory;
