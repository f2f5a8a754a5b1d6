//! What a calendar tells the world after a change has committed.
//!
//! The calendar actor publishes one [`CalendarChange`] per committed write
//! into a [`ChangeSink`]; the server's live layer fans it out to WebSocket
//! watchers on this node and, through Redis, on every other node. Publishing
//! is fire-and-forget: a slow or absent watcher never slows the calendar.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    Appointment, AppointmentId, AppointmentStatus, ClinicId, DoctorId, TimeRange, UserId,
    VisitTypeId,
};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A slot was held (no longer free).
    Held,
    /// A slot was booked outright.
    Booked,
    /// A hold became a booking.
    HoldConfirmed,
    /// A hold was released or lapsed (the slot is free again).
    Released,
    /// A booking was cancelled (the slot is free again).
    Cancelled,
    /// An appointment moved: the old time is free, the new one taken.
    Rescheduled,
    /// The visit took place.
    Completed,
    /// The patient did not come.
    NoShow,
    /// Opening hours, exceptions or visit types changed: recompute.
    ScheduleChanged,
}

/// The appointment a change is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedAppointment {
    /// Identity.
    pub id: AppointmentId,
    /// Whose (never shown on public topics).
    pub patient_id: UserId,
    /// Visit type.
    pub visit_type_id: VisitTypeId,
    /// Visit start after the change.
    pub start: DateTime<Utc>,
    /// Visit end after the change.
    pub end: DateTime<Utc>,
    /// Status after the change.
    pub status: AppointmentStatus,
    /// Visit start before a reschedule.
    pub previous_start: Option<DateTime<Utc>>,
    /// Visit end before a reschedule.
    pub previous_end: Option<DateTime<Utc>>,
    /// The doctor's busy block after the change (visit plus buffers).
    pub block: TimeRange,
}

impl ChangedAppointment {
    /// From the appointment after the change, and where it was before.
    pub fn new(a: &Appointment, before: Option<&Appointment>) -> Self {
        let moved = before.filter(|b| b.time != a.time);
        ChangedAppointment {
            id: a.id,
            patient_id: a.patient_id,
            visit_type_id: a.visit_type_id,
            start: a.time.start(),
            end: a.time.end(),
            status: a.status,
            previous_start: moved.map(|b| b.time.start()),
            previous_end: moved.map(|b| b.time.end()),
            block: a.block,
        }
    }
}

/// One committed change to a doctor's calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarChange {
    /// Whose calendar.
    pub doctor_id: DoctorId,
    /// Their clinic.
    pub clinic_id: ClinicId,
    /// What happened.
    pub kind: ChangeKind,
    /// The appointment, unless the schedule itself changed.
    pub appointment: Option<ChangedAppointment>,
    /// When it committed.
    pub at: DateTime<Utc>,
}

impl CalendarChange {
    /// Classifies a committed status change from `before` to `after`.
    pub fn kind_of(before: Option<AppointmentStatus>, after: AppointmentStatus) -> ChangeKind {
        use AppointmentStatus as S;
        match (before, after) {
            (Some(S::Held), S::Booked) => ChangeKind::HoldConfirmed,
            (_, S::Booked) => ChangeKind::Booked,
            (_, S::Held) => ChangeKind::Held,
            (Some(S::Held), S::Cancelled) => ChangeKind::Released,
            (_, S::Cancelled) => ChangeKind::Cancelled,
            (_, S::Completed) => ChangeKind::Completed,
            (_, S::NoShow) => ChangeKind::NoShow,
        }
    }
}

/// Where calendars publish their changes. Neither method may block: both are
/// called from the calendar actor.
pub trait ChangeSink: Send + Sync + 'static {
    /// A change committed on this node: for watchers here and on every
    /// other node.
    fn publish(&self, change: CalendarChange);

    /// A change another node committed, now applied to this node's
    /// calendar: for watchers on this node only.
    fn relay(&self, change: CalendarChange);
}

/// A sink that drops everything (tools and tests without live push).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSink;

impl ChangeSink for NoSink {
    fn publish(&self, _change: CalendarChange) {}
    fn relay(&self, _change: CalendarChange) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use AppointmentStatus as S;

    #[test]
    fn status_changes_are_classified() {
        assert_eq!(
            CalendarChange::kind_of(Some(S::Held), S::Booked),
            ChangeKind::HoldConfirmed
        );
        assert_eq!(CalendarChange::kind_of(None, S::Booked), ChangeKind::Booked);
        assert_eq!(CalendarChange::kind_of(None, S::Held), ChangeKind::Held);
        assert_eq!(
            CalendarChange::kind_of(Some(S::Held), S::Cancelled),
            ChangeKind::Released
        );
        assert_eq!(
            CalendarChange::kind_of(Some(S::Booked), S::Cancelled),
            ChangeKind::Cancelled
        );
        assert_eq!(
            CalendarChange::kind_of(Some(S::Booked), S::NoShow),
            ChangeKind::NoShow
        );
        assert_eq!(
            CalendarChange::kind_of(Some(S::NoShow), S::Completed),
            ChangeKind::Completed
        );
    }
}
