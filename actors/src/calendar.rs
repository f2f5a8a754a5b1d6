//! The per-doctor calendar actor.
//!
//! # Why an actor
//! Every claim on one doctor's time goes through this actor's mailbox, so
//! claims are decided one at a time, first come first served, against an
//! in-memory picture of the doctor's busy time. A claim that collides with
//! what the actor already knows is answered at once, without touching the
//! database: under a rush for one slot, only the winner pays for a commit.
//!
//! # Why the actor never waits for the database
//! An accepted claim is *reserved* in memory immediately (so the next claim
//! for the same time is refused) and queued. While no batch is in flight, the
//! queue is handed to the store as one transaction; while one is in flight,
//! new claims keep queueing and go out together in the next one. This is group
//! commit: the busier the doctor, the more claims share a transaction. The
//! commit runs as a spawned future, so the mailbox keeps flowing meanwhile;
//! each waiting request is answered when its own write has committed.
//!
//! # Why the database still decides
//! Another server node may hold its own actor for the same doctor. PostgreSQL's
//! exclusion constraint is the arbiter: a write it rejects becomes
//! `slot_taken` here, and the actor reloads its picture from the store.

use std::{
    cell::{Cell, RefCell},
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Instant,
};

use actix::prelude::*;
use chrono::{DateTime, Duration, Utc};
use tokio::sync::oneshot;

use crate::{
    domain::{
        Appointment, AppointmentId, AppointmentStatus, DoctorId, DoctorSchedule, Slot, TimeRange,
        UserId, VisitTypeId,
    },
    events::{CalendarChange, ChangeKind, ChangeSink, ChangedAppointment},
    slots::{self, Bookable, BusyIndex},
    store::{AuditNote, CalendarStore, OpError, StoreError, Write, WriteOp},
};

/// Tunables of every calendar actor.
#[derive(Debug, Clone)]
pub struct CalendarConfig {
    /// How long a hold reserves a slot before it lapses.
    pub hold_ttl: std::time::Duration,
    /// An actor with nothing to do for this long stops (and frees memory).
    pub idle_timeout: std::time::Duration,
    /// How often an actor re-reads its doctor from the store, to pick up
    /// changes made by other nodes.
    pub refresh_interval: std::time::Duration,
    /// Most writes in one group-committed transaction.
    pub batch_max: usize,
    /// Earliest bookable start, as a distance from now.
    pub min_notice: Duration,
    /// How many alternatives a `slot_taken` answer offers.
    pub alternatives: usize,
    /// How far back the actor keeps appointments in memory (for marking
    /// recent visits completed or no-show without a store round trip).
    pub memory_lookback: Duration,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        Self {
            hold_ttl: std::time::Duration::from_secs(300),
            idle_timeout: std::time::Duration::from_secs(600),
            refresh_interval: std::time::Duration::from_secs(10),
            batch_max: 256,
            min_notice: Duration::zero(),
            alternatives: 3,
            memory_lookback: Duration::days(31),
        }
    }
}

/// Why a calendar request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookingError {
    /// No such doctor (or not active).
    #[error("doctor not found")]
    DoctorNotFound,
    /// The doctor offers no such visit type.
    #[error("this doctor offers no such visit type")]
    UnknownVisitType,
    /// The start is not one of the doctor's slots (off the grid, outside
    /// opening hours, in the past or beyond the booking horizon).
    #[error("the doctor offers no slot starting at that time")]
    SlotNotOffered,
    /// Somebody else has that time; here are the nearest free ones.
    #[error("the slot is already taken")]
    SlotTaken {
        /// Up to a few nearest free slots of the same visit type.
        alternatives: Vec<Slot>,
    },
    /// No such appointment (for this doctor).
    #[error("appointment not found")]
    AppointmentNotFound,
    /// The appointment's status does not allow this change.
    #[error("the appointment is {0}")]
    InvalidTransition(AppointmentStatus),
    /// Too close to the start for a patient to change it.
    #[error("the cancellation cut-off has passed")]
    CutoffPassed,
    /// Completed / no-show can only be recorded once the visit has started.
    #[error("the visit has not started yet")]
    NotStarted,
    /// The hold lapsed before it was confirmed.
    #[error("the hold has expired")]
    HoldExpired,
    /// The patient already holds as many slots as allowed.
    #[error("at most {0} held slots at a time; confirm or release one first")]
    TooManyHolds(u32),
    /// Another change to the same appointment is being committed.
    #[error("another change to this appointment is in progress")]
    Busy,
    /// The store failed; nothing was changed.
    #[error("calendar unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for BookingError {
    fn from(e: StoreError) -> Self {
        BookingError::Unavailable(e.0)
    }
}

/// Result of a calendar request.
pub type Reply<T> = Result<T, BookingError>;

type Waiter = oneshot::Sender<Reply<Appointment>>;

type AlternativesCache = HashMap<(Option<VisitTypeId>, DateTime<Utc>), (u64, Instant, Vec<Slot>)>;

/// What a queued write does to the in-memory picture once it settles.
#[derive(Debug, Clone, Copy)]
enum Effect {
    Insert { block: TimeRange },
    Reschedule { old: TimeRange, new: TimeRange },
    Status,
}

struct Queued {
    id: AppointmentId,
    op: WriteOp,
    /// Written with the op, in its transaction (see [`AuditNote`]).
    audit: Option<AuditNote>,
    effect: Effect,
}

enum Phase {
    Loading,
    Ready(Box<DoctorSchedule>),
    Missing,
    Failed(String),
}

/// One doctor's calendar. Start it through [`crate::CalendarDirectory`].
pub struct CalendarActor {
    doctor: DoctorId,
    store: Arc<dyn CalendarStore>,
    sink: Arc<dyn ChangeSink>,
    cfg: CalendarConfig,
    phase: Phase,
    /// Announce `ScheduleChanged` once the pending reload completes.
    announce_schedule: bool,
    /// Changes from other nodes to relay to local watchers once the pending
    /// reload completes.
    relay_after_reload: Vec<CalendarChange>,
    /// Committed active appointments (and recent past ones), by id.
    entries: HashMap<AppointmentId, Appointment>,
    /// Appointments whose insert is queued or in flight.
    pending_new: HashMap<AppointmentId, Appointment>,
    /// Busy blocks: committed, pending, and the target of pending reschedules.
    busy: BusyIndex<AppointmentId>,
    /// (patient, Idempotency-Key) → appointment, for active and pending ones.
    idempotency: HashMap<(UserId, String), AppointmentId>,
    /// Appointments with a write queued or in flight (one at a time each),
    /// with the requests waiting for that write's outcome.
    in_progress: HashMap<AppointmentId, Vec<Waiter>>,
    /// Writes not yet handed to the store.
    queue: VecDeque<Queued>,
    /// Whether a batch is being committed right now.
    flushing: bool,
    /// A reload was asked for while writes were outstanding.
    refresh_wanted: bool,
    /// `slot_taken` alternatives by (visit type, start), valid for one
    /// version of the busy index.
    alternatives: RefCell<AlternativesCache>,
    /// Last request; a `Cell` so read-only handlers can touch it too.
    last_activity: Cell<Instant>,
    last_refresh: Instant,
}

impl CalendarActor {
    /// A calendar for `doctor`; it loads itself from `store` when started.
    pub fn new(
        doctor: DoctorId,
        store: Arc<dyn CalendarStore>,
        sink: Arc<dyn ChangeSink>,
        cfg: CalendarConfig,
    ) -> Self {
        Self {
            doctor,
            store,
            sink,
            cfg,
            phase: Phase::Loading,
            announce_schedule: false,
            relay_after_reload: Vec::new(),
            entries: HashMap::new(),
            pending_new: HashMap::new(),
            busy: BusyIndex::new(),
            idempotency: HashMap::new(),
            in_progress: HashMap::new(),
            queue: VecDeque::new(),
            flushing: false,
            refresh_wanted: false,
            alternatives: RefCell::new(HashMap::new()),
            last_activity: Cell::new(Instant::now()),
            last_refresh: Instant::now(),
        }
    }

    fn bookable(&self) -> Bookable {
        Bookable {
            now: Utc::now(),
            min_notice: self.cfg.min_notice,
        }
    }

    /// The schedule, or the error every request gets while there is none.
    fn ready(&self) -> Reply<&DoctorSchedule> {
        self.last_activity.set(Instant::now());
        match &self.phase {
            Phase::Ready(s) => Ok(s),
            Phase::Missing => Err(BookingError::DoctorNotFound),
            Phase::Failed(e) => Err(BookingError::Unavailable(e.clone())),
            Phase::Loading => Err(BookingError::Unavailable("calendar is loading".into())),
        }
    }

    /// Reads the doctor from the store and rebuilds the in-memory picture.
    ///
    /// Runs under `ctx.wait`, so no message is handled until it is done,
    /// and only when no batch is in flight (its outcome could otherwise land
    /// on a picture that does not know its reservation); queued writes keep
    /// their reservations, re-made after the rebuild.
    fn reload(&mut self, ctx: &mut Context<Self>) {
        debug_assert!(!self.flushing);
        self.refresh_wanted = false;
        self.last_refresh = Instant::now();
        let store = self.store.clone();
        let doctor = self.doctor;
        let since = Utc::now() - self.cfg.memory_lookback;
        let load = async move {
            let schedule = store.load_schedule(doctor).await?;
            let active = match schedule {
                Some(_) => store.load_active(doctor, since).await?,
                None => Vec::new(),
            };
            Ok::<_, StoreError>((schedule, active))
        };
        ctx.wait(load.into_actor(self).map(|res, act, ctx| match res {
            Ok((None, _)) => {
                // The doctor was deactivated (or removed): watchers must
                // hear of it too, so announce under the clinic we knew
                // before forgetting the schedule.
                if std::mem::take(&mut act.announce_schedule) {
                    act.announce(ChangeKind::ScheduleChanged, None);
                }
                act.phase = Phase::Missing;
            }
            Ok((Some(schedule), active)) => {
                act.phase = Phase::Ready(Box::new(schedule));
                act.rebuild(active, ctx);
                act.reserve_queued();
                if std::mem::take(&mut act.announce_schedule) {
                    act.announce(ChangeKind::ScheduleChanged, None);
                }
                for change in std::mem::take(&mut act.relay_after_reload) {
                    act.sink.relay(change);
                }
                act.flush(ctx);
            }
            Err(e) if matches!(act.phase, Phase::Ready(_)) => {
                // Keep serving from the picture we have (the database still
                // decides every write) and try again shortly.
                tracing::warn!(doctor = %act.doctor, error = %e, "calendar reload failed; retrying");
                for change in std::mem::take(&mut act.relay_after_reload) {
                    act.sink.relay(change);
                }
                ctx.run_later(std::time::Duration::from_secs(1), |act, ctx| {
                    act.request_refresh(ctx)
                });
                act.flush(ctx);
            }
            Err(e) => {
                tracing::warn!(doctor = %act.doctor, error = %e, "calendar could not load");
                act.phase = Phase::Failed(e.0);
                // Stop so the next request starts a fresh actor that tries again.
                ctx.stop();
            }
        }));
    }

    fn rebuild(&mut self, active: Vec<Appointment>, ctx: &mut Context<Self>) {
        self.entries.clear();
        self.busy.clear();
        self.idempotency.clear();
        let now = Utc::now();
        for a in active {
            if a.status.is_active() {
                self.busy.insert(a.block, a.id);
            }
            if let Some(key) = &a.idempotency_key {
                self.idempotency.insert((a.patient_id, key.clone()), a.id);
            }
            if a.status == AppointmentStatus::Held {
                // A hold left by a crashed node (or by this actor's previous
                // life) still expires on time.
                let left = a.hold_expires_at.map_or(Duration::zero(), |t| t - now);
                self.schedule_expiry(a.id, left, ctx);
            }
            self.entries.insert(a.id, a);
        }
    }

    /// Re-makes the reservations of writes still queued after a rebuild
    /// cleared the picture.
    fn reserve_queued(&mut self) {
        for q in &self.queue {
            match q.effect {
                Effect::Insert { block } => {
                    self.busy.insert(block, q.id);
                    if let Some(a) = self.pending_new.get(&q.id)
                        && let Some(key) = &a.idempotency_key
                    {
                        self.idempotency.insert((a.patient_id, key.clone()), q.id);
                    }
                }
                Effect::Reschedule { new, .. } => self.busy.insert(new, q.id),
                Effect::Status => {}
            }
        }
    }

    /// Reloads now, or right after the batch in flight (ahead of the next
    /// one, so a steady stream of claims cannot postpone it forever).
    fn request_refresh(&mut self, ctx: &mut Context<Self>) {
        if self.flushing {
            self.refresh_wanted = true;
        } else {
            self.reload(ctx);
        }
    }

    fn schedule_expiry(&mut self, id: AppointmentId, after: Duration, ctx: &mut Context<Self>) {
        let after = after.to_std().unwrap_or_default();
        ctx.run_later(after, move |act, ctx| act.expire_hold(id, ctx));
    }

    fn expire_hold(&mut self, id: AppointmentId, ctx: &mut Context<Self>) {
        let Some(a) = self.entries.get(&id) else {
            return;
        };
        if a.status != AppointmentStatus::Held {
            return; // confirmed or cancelled meanwhile
        }
        if self.in_progress.contains_key(&id) {
            // A change is on its way (a confirm, a move): look again once
            // it has settled, so the hold cannot outlive its time.
            ctx.run_later(std::time::Duration::from_secs(1), move |act, ctx| {
                act.expire_hold(id, ctx)
            });
            return;
        }
        let op = WriteOp::SetStatus {
            id,
            from: vec![AppointmentStatus::Held],
            to: AppointmentStatus::Cancelled,
            by: None,
            reason: Some("hold_expired".into()),
            sealed_reason: None,
            starts_after: None,
            hold_valid_at: None,
        };
        self.enqueue(id, op, None, Effect::Status, Vec::new(), ctx);
    }

    fn enqueue(
        &mut self,
        id: AppointmentId,
        op: WriteOp,
        audit: Option<AuditNote>,
        effect: Effect,
        waiters: Vec<Waiter>,
        ctx: &mut Context<Self>,
    ) {
        let clinic = match &self.phase {
            Phase::Ready(s) => Some(s.clinic_id),
            _ => None,
        };
        let audit = audit.map(|n| AuditNote {
            clinic_id: n.clinic_id.or(clinic),
            ..n
        });
        self.in_progress.insert(id, waiters);
        self.queue.push_back(Queued {
            id,
            op,
            audit,
            effect,
        });
        self.flush(ctx);
    }

    /// Hands the queue to the store, unless a batch is already in flight
    /// (then the queue waits and goes out with the next batch).
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.queue.is_empty() {
            return;
        }
        self.flushing = true;
        let n = self.queue.len().min(self.cfg.batch_max.max(1));
        let batch: Vec<Queued> = self.queue.drain(..n).collect();
        let writes: Vec<Write> = batch
            .iter()
            .map(|q| Write {
                op: q.op.clone(),
                audit: q.audit.clone(),
            })
            .collect();
        let store = self.store.clone();
        let doctor = self.doctor;
        // `spawn`, not `wait`: the mailbox keeps being served while the
        // transaction commits, and new claims gather into the next batch.
        ctx.spawn(
            async move { store.commit_batch(doctor, writes).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.settle(batch, res, ctx);
                    act.flushing = false;
                    if act.refresh_wanted {
                        act.reload(ctx); // flushes the queue when done
                    } else {
                        act.flush(ctx);
                    }
                }),
        );
    }

    /// Applies a committed (or failed) batch to memory and answers waiters.
    fn settle(
        &mut self,
        batch: Vec<Queued>,
        res: Result<Vec<Result<Appointment, OpError>>, StoreError>,
        ctx: &mut Context<Self>,
    ) {
        let outcomes: Vec<Result<Appointment, OpError>> = match res {
            Ok(o) if o.len() == batch.len() => o,
            Ok(_) => {
                let e = OpError::Other("store returned a wrong number of outcomes".into());
                batch.iter().map(|_| Err(e.clone())).collect()
            }
            Err(e) => {
                tracing::warn!(doctor = %self.doctor, error = %e, "batch commit failed");
                self.refresh_wanted = true;
                batch
                    .iter()
                    .map(|_| Err(OpError::Other(e.0.clone())))
                    .collect()
            }
        };
        for (q, outcome) in batch.into_iter().zip(outcomes) {
            let waiters = self.in_progress.remove(&q.id).unwrap_or_default();
            let reply = match outcome {
                Ok(a) => {
                    self.apply_committed(&q, &a, ctx);
                    Ok(a)
                }
                Err(e) => {
                    self.undo_reservation(&q);
                    self.op_failed(&q, e)
                }
            };
            for w in waiters {
                // A waiter that gave up (client went away) is fine to ignore.
                let _ = w.send(reply.clone());
            }
        }
    }

    fn apply_committed(&mut self, q: &Queued, a: &Appointment, ctx: &mut Context<Self>) {
        let before = self.entries.get(&q.id);
        let kind = match q.effect {
            Effect::Reschedule { .. } => ChangeKind::Rescheduled,
            _ => CalendarChange::kind_of(before.map(|b| b.status), a.status),
        };
        let changed = ChangedAppointment::new(a, before);
        self.announce(kind, Some(changed));
        match q.effect {
            Effect::Insert { .. } => {
                self.pending_new.remove(&q.id);
                if a.status == AppointmentStatus::Held {
                    let left = a
                        .hold_expires_at
                        .map_or(Duration::zero(), |t| t - Utc::now());
                    self.schedule_expiry(a.id, left, ctx);
                }
            }
            Effect::Reschedule { old, .. } => self.busy.remove(old, q.id),
            Effect::Status => {
                if a.status.is_active() {
                    // Known here or not (written by another node a moment
                    // ago), an active appointment occupies its block.
                    self.busy.insert(a.block, q.id);
                } else {
                    if let Some(prev) = self.entries.get(&q.id) {
                        self.busy.remove(prev.block, q.id);
                    }
                    if let Some(key) = &a.idempotency_key {
                        self.idempotency.remove(&(a.patient_id, key.clone()));
                    }
                }
            }
        }
        self.entries.insert(a.id, a.clone());
    }

    /// Publishes a committed change (fire-and-forget: never blocks).
    fn announce(&self, kind: ChangeKind, appointment: Option<ChangedAppointment>) {
        if let Phase::Ready(s) = &self.phase {
            self.sink.publish(CalendarChange {
                doctor_id: self.doctor,
                clinic_id: s.clinic_id,
                kind,
                appointment,
                at: Utc::now(),
            });
        }
    }

    fn undo_reservation(&mut self, q: &Queued) {
        match q.effect {
            Effect::Insert { block } => {
                self.busy.remove(block, q.id);
                if let Some(a) = self.pending_new.remove(&q.id)
                    && let Some(key) = a.idempotency_key
                {
                    self.idempotency.remove(&(a.patient_id, key));
                }
            }
            Effect::Reschedule { new, .. } => self.busy.remove(new, q.id),
            Effect::Status => {}
        }
    }

    fn op_failed(&mut self, q: &Queued, e: OpError) -> Reply<Appointment> {
        match e {
            OpError::SlotTaken => {
                // The database knows something this actor does not (another
                // node wrote it): answer now, reload before the next claim.
                self.refresh_wanted = true;
                Err(self.slot_taken(&q.op))
            }
            OpError::Duplicate(existing) => {
                self.refresh_wanted = true;
                Ok(*existing)
            }
            OpError::NotFound => {
                self.refresh_wanted = true;
                Err(BookingError::AppointmentNotFound)
            }
            OpError::InvalidTransition(s) => {
                self.refresh_wanted = true;
                Err(BookingError::InvalidTransition(s))
            }
            OpError::CutoffPassed => Err(BookingError::CutoffPassed),
            OpError::HoldExpired => Err(BookingError::HoldExpired),
            OpError::TooManyHolds(cap) => Err(BookingError::TooManyHolds(cap)),
            OpError::Other(m) => Err(BookingError::Unavailable(m)),
        }
    }

    fn slot_taken(&self, op: &WriteOp) -> BookingError {
        let (visit_type, start) = match op {
            WriteOp::Insert { appointment, .. } => {
                (Some(appointment.visit_type_id), appointment.time.start())
            }
            WriteOp::Reschedule { id, time, .. } => {
                (self.entries.get(id).map(|a| a.visit_type_id), time.start())
            }
            WriteOp::SetStatus { .. } => (None, Utc::now()),
        };
        self.taken_at(visit_type, start)
    }

    fn taken_at(&self, visit_type: Option<VisitTypeId>, start: DateTime<Utc>) -> BookingError {
        // In a rush for one slot every loser asks for the same
        // alternatives: answer from a cache that lives until the busy
        // index changes (or a second passes, as "now" moves on).
        let key = (visit_type, start);
        let version = self.busy.version();
        if let Some((v, at, alts)) = self.alternatives.borrow().get(&key)
            && *v == version
            && at.elapsed() < std::time::Duration::from_secs(1)
        {
            return BookingError::SlotTaken {
                alternatives: alts.clone(),
            };
        }
        let alternatives = match &self.phase {
            Phase::Ready(s) => s
                .visit_type(visit_type)
                .map(|vt| {
                    slots::nearest_free(
                        s,
                        vt,
                        start,
                        &self.busy,
                        self.bookable(),
                        self.cfg.alternatives,
                    )
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let mut cache = self.alternatives.borrow_mut();
        if cache.len() > 1024 {
            cache.clear();
        }
        cache.insert(key, (version, Instant::now(), alternatives.clone()));
        BookingError::SlotTaken { alternatives }
    }

    /// The committed appointment `id`, if no other change to it is underway.
    fn settled(&self, id: AppointmentId) -> Reply<Option<&Appointment>> {
        if self.in_progress.contains_key(&id) {
            return Err(BookingError::Busy);
        }
        Ok(self.entries.get(&id))
    }
}

fn wait_for(rx: oneshot::Receiver<Reply<Appointment>>) -> ResponseFuture<Reply<Appointment>> {
    Box::pin(async move {
        rx.await
            .unwrap_or_else(|_| Err(BookingError::Unavailable("calendar stopped".into())))
    })
}

fn answer(r: Reply<Appointment>) -> ResponseFuture<Reply<Appointment>> {
    Box::pin(async move { r })
}

impl Actor for CalendarActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Requests may queue up at the mailbox already; they are handled once
        // the load completes because `reload` uses `ctx.wait`.
        // Room for a morning rush: `send` waits (backpressure) only past this.
        ctx.set_mailbox_capacity(1 << 16);
        self.reload(ctx);

        let every = self.cfg.refresh_interval;
        ctx.run_interval(every, |act, ctx| {
            if act.last_refresh.elapsed() >= act.cfg.refresh_interval
                && matches!(act.phase, Phase::Ready(_))
            {
                act.request_refresh(ctx);
            }
        });

        let idle = self.cfg.idle_timeout;
        ctx.run_interval(idle / 2, |act, ctx| {
            let holds = act
                .entries
                .values()
                .any(|a| a.status == AppointmentStatus::Held);
            if act.last_activity.get().elapsed() >= act.cfg.idle_timeout
                && !act.flushing
                && act.queue.is_empty()
                && !holds
            {
                tracing::debug!(doctor = %act.doctor, "calendar idle, stopping");
                ctx.stop();
            }
        });
    }
}

/// Free slots of one visit type in a range, from memory (no database trip).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Vec<Slot>>")]
pub struct FreeSlots {
    /// The visit type; `None` for the doctor's default.
    pub visit_type: Option<VisitTypeId>,
    /// Slots starting in this range.
    pub range: TimeRange,
}

impl Handler<FreeSlots> for CalendarActor {
    type Result = Reply<Vec<Slot>>;

    fn handle(&mut self, msg: FreeSlots, _ctx: &mut Context<Self>) -> Self::Result {
        let bookable = self.bookable();
        let schedule = self.ready()?;
        let vt = schedule
            .visit_type(msg.visit_type)
            .ok_or(BookingError::UnknownVisitType)?;
        Ok(slots::free_slots(
            schedule, vt, msg.range, &self.busy, bookable,
        ))
    }
}

/// The doctor's schedule as the calendar sees it (rules, visit types, zone).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<DoctorSchedule>")]
pub struct GetSchedule;

impl Handler<GetSchedule> for CalendarActor {
    type Result = Reply<DoctorSchedule>;

    fn handle(&mut self, _msg: GetSchedule, _ctx: &mut Context<Self>) -> Self::Result {
        self.ready().cloned()
    }
}

/// Claim a slot: book it outright, or hold it for a short time.
///
/// Answered at once with `SlotTaken` when the time collides with anything the
/// calendar knows (booked, held or being committed); otherwise reserved in
/// memory and answered when the write commits.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Appointment>")]
pub struct Claim {
    /// The id the new appointment gets: fresh ([`AppointmentId::new`]),
    /// chosen by the caller so it can tell the appointment its claim made
    /// from one an idempotent retry is answered with.
    pub id: AppointmentId,
    /// Who the appointment is for (and who asks).
    pub patient: UserId,
    /// The visit type; `None` for the doctor's default.
    pub visit_type: Option<VisitTypeId>,
    /// Requested start.
    pub start: DateTime<Utc>,
    /// `true` for a hold, `false` for a booking.
    pub hold: bool,
    /// Retries with the same key return the same appointment.
    pub idempotency_key: Option<String>,
    /// For a hold: the most live holds the patient may have, this one
    /// included; enforced by the store in the write's transaction
    /// ([`WriteOp::Insert`]). Ignored for bookings.
    pub max_live_holds: Option<u32>,
    /// The change's audit record, written in its transaction.
    pub audit: Option<AuditNote>,
}

impl Handler<Claim> for CalendarActor {
    type Result = ResponseFuture<Reply<Appointment>>;

    fn handle(&mut self, msg: Claim, ctx: &mut Context<Self>) -> Self::Result {
        let bookable = self.bookable();
        let hold_ttl = Duration::from_std(self.cfg.hold_ttl).unwrap_or(Duration::minutes(5));
        let schedule = match self.ready() {
            Ok(s) => s,
            Err(e) => return answer(Err(e)),
        };
        let Some(vt) = schedule.visit_type(msg.visit_type).cloned() else {
            return answer(Err(BookingError::UnknownVisitType));
        };
        let offered = slots::is_offered(schedule, &vt, msg.start, bookable);

        // An idempotent retry gets the original outcome, even while the
        // original is still being committed.
        if let Some(key) = &msg.idempotency_key
            && let Some(id) = self.idempotency.get(&(msg.patient, key.clone())).copied()
        {
            if let Some(a) = self.entries.get(&id) {
                return answer(Ok(a.clone()));
            }
            if let Some(waiters) = self.in_progress.get_mut(&id) {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                return wait_for(rx);
            }
        }

        if !offered {
            return answer(Err(BookingError::SlotNotOffered));
        }
        let block = vt.block_at(msg.start);
        if self.busy.conflict(block, None).is_some() {
            return answer(Err(self.taken_at(Some(vt.id), msg.start)));
        }

        let now = Utc::now();
        let appointment = Appointment {
            id: msg.id,
            doctor_id: self.doctor,
            patient_id: msg.patient,
            visit_type_id: vt.id,
            time: vt.visit_at(msg.start),
            block,
            status: if msg.hold {
                AppointmentStatus::Held
            } else {
                AppointmentStatus::Booked
            },
            hold_expires_at: msg.hold.then(|| now + hold_ttl),
            idempotency_key: msg.idempotency_key.clone(),
            cancel_reason: None,
            created_at: now,
        };
        let id = appointment.id;
        self.busy.insert(block, id);
        if let Some(key) = msg.idempotency_key {
            self.idempotency.insert((msg.patient, key), id);
        }
        self.pending_new.insert(id, appointment.clone());
        let (tx, rx) = oneshot::channel();
        let op = WriteOp::Insert {
            appointment,
            by: msg.patient,
            max_live_holds: msg.max_live_holds.filter(|_| msg.hold),
        };
        self.enqueue(id, op, msg.audit, Effect::Insert { block }, vec![tx], ctx);
        wait_for(rx)
    }
}

/// Turn a hold into a booking.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Appointment>")]
pub struct Confirm {
    /// The hold.
    pub hold_id: AppointmentId,
    /// Who confirms.
    pub by: UserId,
    /// The change's audit record, written in its transaction.
    pub audit: Option<AuditNote>,
}

impl Handler<Confirm> for CalendarActor {
    type Result = ResponseFuture<Reply<Appointment>>;

    fn handle(&mut self, msg: Confirm, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.ready() {
            return answer(Err(e));
        }
        let now = Utc::now();
        match self.settled(msg.hold_id) {
            Err(e) => return answer(Err(e)),
            Ok(Some(a)) if a.status == AppointmentStatus::Booked => return answer(Ok(a.clone())),
            Ok(Some(a)) if a.status != AppointmentStatus::Held => {
                return answer(Err(BookingError::InvalidTransition(a.status)));
            }
            Ok(Some(a)) if a.hold_expires_at.is_some_and(|t| t <= now) => {
                return answer(Err(BookingError::HoldExpired));
            }
            _ => {}
        }
        let op = WriteOp::SetStatus {
            id: msg.hold_id,
            from: vec![AppointmentStatus::Held],
            to: AppointmentStatus::Booked,
            by: Some(msg.by),
            reason: None,
            sealed_reason: None,
            starts_after: None,
            hold_valid_at: Some(now),
        };
        let (tx, rx) = oneshot::channel();
        self.enqueue(msg.hold_id, op, msg.audit, Effect::Status, vec![tx], ctx);
        wait_for(rx)
    }
}

/// Move an appointment to another start time, atomically: the new time is
/// claimed and the old one released in one write; if the new time is taken
/// the appointment stays where it was.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Appointment>")]
pub struct Reschedule {
    /// Which appointment.
    pub id: AppointmentId,
    /// New start.
    pub start: DateTime<Utc>,
    /// Who asks.
    pub by: UserId,
    /// Apply the clinic's cut-off (patients yes, staff no).
    pub enforce_cutoff: bool,
    /// The change's audit record, written in its transaction.
    pub audit: Option<AuditNote>,
}

impl Handler<Reschedule> for CalendarActor {
    type Result = ResponseFuture<Reply<Appointment>>;

    fn handle(&mut self, msg: Reschedule, ctx: &mut Context<Self>) -> Self::Result {
        let bookable = self.bookable();
        let schedule = match self.ready() {
            Ok(s) => s.clone(),
            Err(e) => return answer(Err(e)),
        };
        let current = match self.settled(msg.id) {
            Err(e) => return answer(Err(e)),
            Ok(None) => return answer(Err(BookingError::AppointmentNotFound)),
            Ok(Some(a)) if !a.status.is_active() => {
                return answer(Err(BookingError::InvalidTransition(a.status)));
            }
            Ok(Some(a)) => a.clone(),
        };
        let now = Utc::now();
        if msg.enforce_cutoff && current.time.start() <= now + schedule.cancellation_cutoff {
            return answer(Err(BookingError::CutoffPassed));
        }
        let Some(vt) = schedule.visit_type(Some(current.visit_type_id)) else {
            return answer(Err(BookingError::UnknownVisitType));
        };
        if !slots::is_offered(&schedule, vt, msg.start, bookable) {
            return answer(Err(BookingError::SlotNotOffered));
        }
        let time = vt.visit_at(msg.start);
        let block = vt.block_at(msg.start);
        if self.busy.conflict(block, Some(msg.id)).is_some() {
            return answer(Err(self.taken_at(Some(vt.id), msg.start)));
        }
        if block == current.block {
            return answer(Ok(current));
        }
        // Reserve the new block under the same id; the old block stays busy
        // until the move commits, so nobody can grab it and then be undone.
        self.busy.insert(block, msg.id);
        let op = WriteOp::Reschedule {
            id: msg.id,
            time,
            block,
            by: msg.by,
            starts_after: msg
                .enforce_cutoff
                .then(|| now + schedule.cancellation_cutoff),
        };
        let (tx, rx) = oneshot::channel();
        let effect = Effect::Reschedule {
            old: current.block,
            new: block,
        };
        self.enqueue(msg.id, op, msg.audit, effect, vec![tx], ctx);
        wait_for(rx)
    }
}

/// Cancel an appointment or release a hold.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Appointment>")]
pub struct Cancel {
    /// Which appointment.
    pub id: AppointmentId,
    /// Who asks.
    pub by: UserId,
    /// Why, as a fixed code, kept in plaintext with the appointment and in
    /// its history (see [`WriteOp::SetStatus`]).
    pub reason: Option<String>,
    /// The canceller's free-text reason, already sealed for the store.
    pub sealed_reason: Option<Vec<u8>>,
    /// Apply the clinic's cut-off (patients yes, staff no). Releasing a
    /// hold is never subject to it.
    pub enforce_cutoff: bool,
    /// Only release a hold: refuse if it has become a booking meanwhile.
    pub holds_only: bool,
    /// The change's audit record, written in its transaction.
    pub audit: Option<AuditNote>,
}

impl Handler<Cancel> for CalendarActor {
    type Result = ResponseFuture<Reply<Appointment>>;

    fn handle(&mut self, msg: Cancel, ctx: &mut Context<Self>) -> Self::Result {
        let cutoff = match self.ready() {
            Ok(s) => s.cancellation_cutoff,
            Err(e) => return answer(Err(e)),
        };
        let now = Utc::now();
        let is_hold = match self.settled(msg.id) {
            Err(e) => return answer(Err(e)),
            Ok(Some(a)) if !a.status.is_active() => {
                return answer(Err(BookingError::InvalidTransition(a.status)));
            }
            Ok(Some(a)) => a.status == AppointmentStatus::Held,
            // Not in memory (long past, or written by another node moments
            // ago): the store checks status and cut-off itself.
            Ok(None) => false,
        };
        let starts_after = (msg.enforce_cutoff && !is_hold).then(|| now + cutoff);
        if let (Some(limit), Some(a)) = (starts_after, self.entries.get(&msg.id))
            && a.time.start() <= limit
        {
            return answer(Err(BookingError::CutoffPassed));
        }
        if msg.holds_only
            && let Ok(Some(a)) = self.settled(msg.id)
            && a.status != AppointmentStatus::Held
        {
            return answer(Err(BookingError::InvalidTransition(a.status)));
        }
        let from = if msg.holds_only {
            vec![AppointmentStatus::Held]
        } else {
            vec![AppointmentStatus::Held, AppointmentStatus::Booked]
        };
        let op = WriteOp::SetStatus {
            id: msg.id,
            from,
            to: AppointmentStatus::Cancelled,
            by: Some(msg.by),
            reason: msg.reason,
            sealed_reason: msg.sealed_reason,
            starts_after,
            hold_valid_at: None,
        };
        let (tx, rx) = oneshot::channel();
        self.enqueue(msg.id, op, msg.audit, Effect::Status, vec![tx], ctx);
        wait_for(rx)
    }
}

/// Record how a visit went: `completed` or `no_show`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Appointment>")]
pub struct RecordOutcome {
    /// Which appointment.
    pub id: AppointmentId,
    /// `Completed` or `NoShow`.
    pub status: AppointmentStatus,
    /// Who records it (the doctor or a clinic admin).
    pub by: UserId,
    /// The change's audit record, written in its transaction.
    pub audit: Option<AuditNote>,
}

impl Handler<RecordOutcome> for CalendarActor {
    type Result = ResponseFuture<Reply<Appointment>>;

    fn handle(&mut self, msg: RecordOutcome, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(e) = self.ready() {
            return answer(Err(e));
        }
        if !matches!(
            msg.status,
            AppointmentStatus::Completed | AppointmentStatus::NoShow
        ) {
            return answer(Err(BookingError::InvalidTransition(msg.status)));
        }
        let now = Utc::now();
        match self.settled(msg.id) {
            Err(e) => return answer(Err(e)),
            Ok(Some(a)) if a.time.start() > now => return answer(Err(BookingError::NotStarted)),
            _ => {}
        }
        // Both outcomes may be corrected into each other (a late arrival).
        let op = WriteOp::SetStatus {
            id: msg.id,
            from: vec![
                AppointmentStatus::Booked,
                AppointmentStatus::Completed,
                AppointmentStatus::NoShow,
            ],
            to: msg.status,
            by: Some(msg.by),
            reason: None,
            sealed_reason: None,
            starts_after: None,
            hold_valid_at: None,
        };
        let (tx, rx) = oneshot::channel();
        self.enqueue(msg.id, op, msg.audit, Effect::Status, vec![tx], ctx);
        wait_for(rx)
    }
}

/// Re-read the doctor from the store: sent after an admin changes rules,
/// exceptions or visit types, and used when another node changed the doctor.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Refresh;

impl Handler<Refresh> for CalendarActor {
    type Result = ();

    fn handle(&mut self, _msg: Refresh, ctx: &mut Context<Self>) {
        self.request_refresh(ctx);
    }
}

/// The doctor's opening hours, exceptions or visit types changed: reload and
/// tell watchers to recompute.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ScheduleChanged;

impl Handler<ScheduleChanged> for CalendarActor {
    type Result = ();

    fn handle(&mut self, _msg: ScheduleChanged, ctx: &mut Context<Self>) {
        self.announce_schedule = true;
        self.request_refresh(ctx);
    }
}

/// Whether a slot is free, held or booked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotStatus {
    /// Bookable.
    Free,
    /// Held by someone (or being committed).
    Held,
    /// Booked.
    Booked,
}

/// A slot of the grid with its current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlotState {
    /// Visit start.
    pub start: DateTime<Utc>,
    /// Visit end.
    pub end: DateTime<Utc>,
    /// Free, held or booked.
    pub status: SlotStatus,
}

/// Every slot of the grid in a range with its state: the snapshot a live
/// availability view starts from.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<Vec<SlotState>>")]
pub struct Availability {
    /// The visit type; `None` for the doctor's default.
    pub visit_type: Option<VisitTypeId>,
    /// Slots starting in this range.
    pub range: TimeRange,
}

impl CalendarActor {
    fn status_of(&self, block: TimeRange) -> SlotStatus {
        match self.busy.conflict(block, None) {
            None => SlotStatus::Free,
            Some(id) => match self.entries.get(&id).map(|a| a.status) {
                Some(AppointmentStatus::Booked) => SlotStatus::Booked,
                _ => SlotStatus::Held,
            },
        }
    }
}

impl Handler<Availability> for CalendarActor {
    type Result = Reply<Vec<SlotState>>;

    fn handle(&mut self, msg: Availability, _ctx: &mut Context<Self>) -> Self::Result {
        let bookable = self.bookable();
        let schedule = self.ready()?;
        let vt = schedule
            .visit_type(msg.visit_type)
            .ok_or(BookingError::UnknownVisitType)?;
        Ok(slots::candidate_slots(schedule, vt, msg.range, bookable)
            .into_iter()
            .map(|s| SlotState {
                start: s.start,
                end: s.end,
                status: self.status_of(vt.block_at(s.start)),
            })
            .collect())
    }
}

/// One doctor's line on a clinic wall display.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BoardLine {
    /// The doctor.
    pub doctor_id: DoctorId,
    /// The next free slot within two weeks, if any.
    pub next_free: Option<Slot>,
    /// Today's slots (clinic time zone) that are still free.
    pub today_free: usize,
    /// Today's held slots.
    pub today_held: usize,
    /// Today's booked slots.
    pub today_booked: usize,
    /// Today's slots in order, with their state: the day's schedule as a
    /// waiting room may see it (times only, never who).
    #[serde(default)]
    pub today: Vec<BoardSlot>,
}

/// One of today's slots on a wall display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BoardSlot {
    /// Visit start.
    pub start: chrono::DateTime<Utc>,
    /// `free`, `held` or `booked`.
    pub status: SlotStatus,
}

/// The doctor's wall-display line, from memory.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Reply<BoardLine>")]
pub struct Board;

impl Handler<Board> for CalendarActor {
    type Result = Reply<BoardLine>;

    fn handle(&mut self, _msg: Board, _ctx: &mut Context<Self>) -> Self::Result {
        let bookable = self.bookable();
        let schedule = self.ready()?;
        let vt = schedule
            .visit_type(None)
            .ok_or(BookingError::UnknownVisitType)?;
        let now = bookable.now;
        let two_weeks = TimeRange::new(now, now + Duration::days(14))
            .map_err(|e| BookingError::Unavailable(e.to_string()))?;
        let next_free = slots::free_slots(schedule, vt, two_weeks, &self.busy, bookable)
            .into_iter()
            .next();
        // Today in the clinic's zone, including slots already past.
        let tz = schedule.time_zone;
        let today = now.with_timezone(&tz).date_naive();
        let midnight = |d: chrono::NaiveDate| {
            slots::local_to_utc(tz, d.and_time(chrono::NaiveTime::MIN), false)
        };
        let day = TimeRange::new(midnight(today), midnight(today + Duration::days(1)))
            .map_err(|e| BookingError::Unavailable(e.to_string()))?;
        let all_day = Bookable {
            now: day.start(),
            min_notice: Duration::zero(),
        };
        let mut line = BoardLine {
            doctor_id: self.doctor,
            next_free,
            today_free: 0,
            today_held: 0,
            today_booked: 0,
            today: Vec::new(),
        };
        for s in slots::candidate_slots(schedule, vt, day, all_day) {
            let status = self.status_of(vt.block_at(s.start));
            match status {
                SlotStatus::Free => line.today_free += 1,
                SlotStatus::Held => line.today_held += 1,
                SlotStatus::Booked => line.today_booked += 1,
            }
            line.today.push(BoardSlot {
                start: s.start,
                status,
            });
        }
        Ok(line)
    }
}

/// A change another node committed for this doctor (from the bus). The
/// calendar brings its memory up to date, then relays the change to local
/// watchers, so a local snapshot never lags a delta it was sent.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ApplyRemote(pub CalendarChange);

impl Handler<ApplyRemote> for CalendarActor {
    type Result = ();

    fn handle(&mut self, msg: ApplyRemote, ctx: &mut Context<Self>) {
        let change = msg.0;
        let Some(a) = change.appointment.clone() else {
            // Rules changed elsewhere: reload everything, then relay.
            self.relay_after_reload.push(change);
            self.request_refresh(ctx);
            return;
        };
        if !matches!(self.phase, Phase::Ready(_)) {
            self.sink.relay(change);
            return;
        }
        // Should the other node's appointment collide with a local
        // reservation (both nodes accepted a claim; the database refuses
        // one), reload from the arbiter rather than guess.
        if a.status.is_active() && self.busy.conflict(a.block, Some(a.id)).is_some() {
            self.relay_after_reload.push(change);
            self.request_refresh(ctx);
            return;
        }
        // Drop what this calendar knew of the appointment and take the other
        // node's word for where it is now.
        if let Some(old) = self.entries.remove(&a.id) {
            self.busy.remove(old.block, a.id);
        }
        if a.status.is_active() {
            self.busy.insert(a.block, a.id);
            self.entries.insert(
                a.id,
                Appointment {
                    id: a.id,
                    doctor_id: self.doctor,
                    patient_id: a.patient_id,
                    visit_type_id: a.visit_type_id,
                    time: TimeRange::new(a.start, a.end).unwrap_or(a.block),
                    block: a.block,
                    status: a.status,
                    hold_expires_at: None,
                    idempotency_key: None,
                    cancel_reason: None,
                    created_at: change.at,
                },
            );
        }
        self.sink.relay(change);
    }
}
