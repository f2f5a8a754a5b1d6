//! The live hub: one actor per node that keeps, for every watched topic, a
//! sequence counter, a bounded replay buffer and the watching sessions.
//!
//! # Ordering
//! Changes reach the hub in commit order per doctor (a calendar actor
//! publishes after each commit, from one thread). The hub numbers them per
//! topic and sends each delta to every session with `try_send`, so a slow
//! session can never hold the hub — or the calendar behind it — up.
//!
//! # Snapshots without gaps
//! A new subscriber first gets a snapshot computed by the calendar actor.
//! The hub notes the topic's sequence number when the subscription arrives
//! and buffers deltas for that subscriber until the snapshot is sent; the
//! snapshot carries the noted number and the buffered deltas follow it. A
//! change that committed while the snapshot was computed may be both in the
//! snapshot and in a delta: deltas assign state (slot X is now booked), so
//! applying one twice is harmless, and none is ever missed.
//!
//! # Slow consumers
//! A session's mailbox is small. When it is full the session has fallen
//! behind (its socket is not draining): the hub stops sending it deltas for
//! that topic and, shortly after, sends a fresh snapshot flagged `reset`.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use actix::prelude::*;
use chrono::Utc;
use docspot_actors::{
    CalendarDirectory,
    calendar::{Availability, Board, SlotStatus},
    domain::{ClinicId, DoctorId, TimeRange, UserId},
    events::{CalendarChange, ChangeKind},
};

use super::protocol::{
    BoardEntry, DeltaData, Encoding, Frame, ServerMsg, SlotChange, SnapshotData, encode,
};
use crate::{routes::AppointmentOut, store::Store};

/// Identifies a session within the hub.
pub type SessionId = u64;

/// A message encoded once for every encoding.
#[derive(Debug)]
pub struct Encoded {
    json: Frame,
    msgpack: Frame,
}

impl Encoded {
    /// Encodes `msg` both ways.
    pub fn new(msg: &ServerMsg) -> Arc<Self> {
        Arc::new(Encoded {
            json: encode(msg, Encoding::Json),
            msgpack: encode(msg, Encoding::MsgPack),
        })
    }

    /// The frame for an encoding.
    pub fn frame(&self, enc: Encoding) -> &Frame {
        match enc {
            Encoding::Json => &self.json,
            Encoding::MsgPack => &self.msgpack,
        }
    }
}

/// An instruction for a session: write a frame, forget a topic the hub
/// dropped, or close because it cannot keep up.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct Deliver {
    /// The topic `frame` belongs to: a session that has left it since
    /// (unsubscribed, or its sign-in expired) drops the frame.
    pub key: Option<Key>,
    /// A frame to write.
    pub frame: Option<Arc<Encoded>>,
    /// The hub no longer sends this topic (its snapshot failed).
    pub forget: Option<Key>,
    /// Close the connection: it fell behind again and again.
    pub close: bool,
}

impl Deliver {
    fn frame(key: Key, e: Arc<Encoded>) -> Self {
        Deliver {
            key: Some(key),
            frame: Some(e),
            forget: None,
            close: false,
        }
    }
}

/// A connection that needed this many reset snapshots in a row without
/// taking a single delta in between is closed (close code 4001).
const MAX_RESETS: u32 = 3;

/// What the hub keys topics by (`me` is per patient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// `doctor:{id}`
    Doctor(DoctorId),
    /// `clinic:{id}`
    Clinic(ClinicId),
    /// `provider:{doctor_id}`
    Provider(DoctorId),
    /// `me` of one patient
    Me(UserId),
}

impl Key {
    /// The canonical wire name.
    pub fn wire(&self) -> String {
        match self {
            Key::Doctor(d) => format!("doctor:{d}"),
            Key::Clinic(c) => format!("clinic:{c}"),
            Key::Provider(d) => format!("provider:{d}"),
            Key::Me(_) => "me".into(),
        }
    }
}

struct Sub {
    addr: Recipient<Deliver>,
    range: Option<TimeRange>,
    /// Bumped for every snapshot started, so only the latest one counts.
    generation: u64,
    /// Reset snapshots since the last delta that went through.
    resets: u32,
    /// Deltas up to this seq are in the subscriber's snapshot already.
    floor: u64,
    /// Deltas (with their seq) held back until this subscriber's snapshot
    /// is out.
    pending: Option<Vec<(u64, Arc<Encoded>)>>,
}

struct TopicState {
    /// Names this incarnation of the topic's numbering: a resume is only
    /// honoured against the same epoch.
    epoch: String,
    seq: u64,
    /// `provider:` topics: `seq` has been set from the stored alerts.
    ready: bool,
    buffer: VecDeque<(u64, Arc<Encoded>)>,
    subs: HashMap<SessionId, Sub>,
    /// `provider:` topics: an alert fetch is running / another is wanted.
    fetching: bool,
    fetch_again: bool,
    /// When the last watcher left (topics nobody watches are dropped after
    /// a while, so replay buffers do not pile up).
    unwatched_since: Option<std::time::Instant>,
}

/// The hub actor.
pub struct LiveHub {
    epoch: String,
    incarnations: u64,
    calendars: Arc<CalendarDirectory>,
    store: Arc<dyn Store>,
    replay: usize,
    topics: HashMap<Key, TopicState>,
    /// Board lines being computed, per doctor: the number of the latest ask.
    board_asks: HashMap<DoctorId, u64>,
}

impl LiveHub {
    /// A hub for this node. `epoch` names this node's sequence numbers.
    pub fn new(
        epoch: String,
        calendars: Arc<CalendarDirectory>,
        store: Arc<dyn Store>,
        replay: usize,
    ) -> Self {
        Self {
            epoch,
            incarnations: 0,
            calendars,
            store,
            replay: replay.max(1),
            topics: HashMap::new(),
            board_asks: HashMap::new(),
        }
    }

    /// Numbers a delta, keeps it for resumes and sends it to every watcher.
    fn emit(&mut self, key: Key, data: DeltaData, seq: Option<u64>, ctx: &mut Context<Self>) {
        let replay = self.replay;
        let Some(t) = self.topics.get_mut(&key) else {
            return;
        };
        let seq = seq.unwrap_or(t.seq + 1);
        if seq <= t.seq {
            return; // already sent (provider alerts fetched twice)
        }
        t.seq = seq;
        let msg = Encoded::new(&ServerMsg::Delta {
            topic: key.wire(),
            seq,
            data,
        });
        t.buffer.push_back((seq, msg.clone()));
        while t.buffer.len() > replay {
            t.buffer.pop_front();
        }
        let mut lagging = Vec::new();
        let mut gone = Vec::new();
        for (id, sub) in t.subs.iter_mut() {
            if seq <= sub.floor {
                continue; // already in this subscriber's snapshot
            }
            if let Some(p) = &mut sub.pending {
                p.push((seq, msg.clone()));
                continue;
            }
            match sub.addr.try_send(Deliver::frame(key, msg.clone())) {
                Ok(()) => sub.resets = 0,
                Err(SendError::Full(_)) => lagging.push(*id),
                Err(SendError::Closed(_)) => gone.push(*id),
            }
        }
        for id in gone {
            t.subs.remove(&id);
        }
        for id in lagging {
            let Some(sub) = t.subs.get_mut(&id) else {
                continue;
            };
            sub.resets += 1;
            if sub.resets > MAX_RESETS {
                // Snapshots do not help a socket that never drains: give up
                // on it rather than queue without bound.
                sub.addr.do_send(Deliver {
                    key: None,
                    frame: None,
                    forget: None,
                    close: true,
                });
                t.subs.remove(&id);
                continue;
            }
            // Hold its deltas back and resend the whole state once the
            // session has had a moment to drain.
            sub.pending = Some(Vec::new());
            ctx.run_later(Duration::from_millis(200), move |hub, ctx| {
                hub.snapshot(key, id, true, ctx);
            });
        }
    }

    /// Computes and sends `session`'s snapshot of `key`, then its held-back
    /// deltas.
    fn snapshot(&mut self, key: Key, session: SessionId, reset: bool, ctx: &mut Context<Self>) {
        let Some(t) = self.topics.get_mut(&key) else {
            return;
        };
        let Some(sub) = t.subs.get_mut(&session) else {
            return;
        };
        let range = sub.range;
        // Deltas from here on are held for this subscriber; anything older
        // is covered by the snapshot, which reflects the calendar as of now.
        sub.pending = Some(Vec::new());
        sub.generation += 1;
        let generation = sub.generation;
        let seq = t.seq;
        let epoch = t.epoch.clone();
        let fut = snapshot_data(self.calendars.clone(), self.store.clone(), key, range, seq);
        ctx.spawn(fut.into_actor(self).map(move |res, hub, ctx| {
            hub.finish_snapshot(key, session, generation, epoch, reset, res, ctx);
        }));
    }

    /// Sends a finished snapshot (unless a newer one for the same
    /// subscriber superseded it), then the deltas held back meanwhile.
    #[allow(clippy::too_many_arguments)]
    fn finish_snapshot(
        &mut self,
        key: Key,
        session: SessionId,
        generation: u64,
        epoch: String,
        reset: bool,
        res: Result<(SnapshotData, u64), SnapError>,
        ctx: &mut Context<Self>,
    ) {
        let Some(t) = self.topics.get_mut(&key) else {
            return;
        };
        if let Ok((_, newest)) = &res
            && matches!(key, Key::Provider(_))
            && !t.ready
        {
            // Alert ids are the topic's numbering: live fetching starts
            // after the newest alert the first snapshot knew of.
            t.seq = t.seq.max(*newest);
            t.ready = true;
        }
        let Some(sub) = t.subs.get_mut(&session) else {
            return;
        };
        if sub.generation != generation {
            return; // a newer snapshot for this subscriber is on its way
        }
        let held = sub.pending.take().unwrap_or_default();
        match res {
            Ok((data, since)) => {
                sub.floor = since;
                // `do_send`: a snapshot must not be dropped like a delta may.
                sub.addr.do_send(Deliver::frame(
                    key,
                    Encoded::new(&ServerMsg::Snapshot {
                        topic: key.wire(),
                        seq: since,
                        epoch,
                        reset,
                        data,
                    }),
                ));
                for (s, d) in held {
                    if s > since {
                        sub.addr.do_send(Deliver::frame(key, d));
                    }
                }
            }
            Err(e) => {
                sub.addr.do_send(Deliver {
                    key: None,
                    frame: Some(Encoded::new(&ServerMsg::error(
                        &e.0,
                        e.1,
                        Some(&key.wire()),
                    ))),
                    forget: Some(key),
                    close: false,
                });
                t.subs.remove(&session);
            }
        }
        if let Key::Provider(d) = key
            && self.topics.get(&key).is_some_and(|t| t.fetch_again)
        {
            self.provider_fetch(d, ctx);
        }
    }

    fn provider_fetch(&mut self, doctor: DoctorId, ctx: &mut Context<Self>) {
        let key = Key::Provider(doctor);
        let Some(t) = self.topics.get_mut(&key) else {
            return;
        };
        if t.fetching || !t.ready {
            // Runs once the fetch in flight (or the first snapshot, which
            // sets where numbering starts) is done.
            t.fetch_again = true;
            return;
        }
        t.fetching = true;
        t.fetch_again = false;
        let after = t.seq as i64;
        let store = self.store.clone();
        let fut = async move { store.provider_alerts_after(doctor, after, 500).await };
        ctx.spawn(fut.into_actor(self).map(move |res, hub, ctx| {
            match res {
                Ok(alerts) => {
                    if alerts.len() >= 500
                        && let Some(t) = hub.topics.get_mut(&key)
                    {
                        t.fetch_again = true; // more behind this page
                    }
                    for a in alerts {
                        let seq = a.id as u64;
                        hub.emit(key, DeltaData::Alert { alert: a }, Some(seq), ctx);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not read provider alerts"),
            }
            if let Some(t) = hub.topics.get_mut(&key) {
                t.fetching = false;
                if std::mem::take(&mut t.fetch_again) {
                    hub.provider_fetch(doctor, ctx);
                }
            }
        }));
    }
}

/// Why a snapshot could not be made: (code, message).
struct SnapError(String, String);

async fn snapshot_data(
    calendars: Arc<CalendarDirectory>,
    store: Arc<dyn Store>,
    key: Key,
    range: Option<TimeRange>,
    seq: u64,
) -> Result<(SnapshotData, u64), SnapError> {
    let fail = |code: &str, e: &dyn std::fmt::Display| SnapError(code.into(), e.to_string());
    match key {
        Key::Doctor(d) => {
            let now = Utc::now();
            let range = match range {
                Some(r) => r,
                None => TimeRange::new(now, now + chrono::Duration::days(7))
                    .map_err(|e| fail("invalid_range", &e))?,
            };
            let slots = calendars
                .ask(
                    d,
                    Availability {
                        visit_type: None,
                        range,
                    },
                )
                .await
                .map_err(|e| fail(booking_code(&e), &e))?;
            Ok((
                SnapshotData::Slots {
                    from: range.start(),
                    to: range.end(),
                    slots,
                },
                seq,
            ))
        }
        Key::Clinic(c) => {
            let doctors = store
                .doctors(Some(c), None)
                .await
                .map_err(|e| fail("store_unavailable", &e))?;
            let mut lines = Vec::with_capacity(doctors.len());
            for doc in doctors {
                // A doctor without a visit type has no line, not an error.
                if let Ok(line) = calendars.ask(doc.id, Board).await {
                    lines.push(BoardEntry {
                        name: doc.name,
                        line,
                    });
                }
            }
            Ok((SnapshotData::Board { doctors: lines }, seq))
        }
        Key::Provider(d) => {
            let _ = seq;
            provider_snapshot(store.as_ref(), d, None).await
        }
        Key::Me(u) => {
            let list = store
                .patient_appointments(u)
                .await
                .map_err(|e| fail("store_unavailable", &e))?;
            Ok((
                SnapshotData::Appointments {
                    appointments: list.into_iter().map(AppointmentOut::from).collect(),
                },
                seq,
            ))
        }
    }
}

/// A `provider:` snapshot: the alerts after `resume` (else the latest 50),
/// and the id it is complete up to. That id is read first and nothing newer
/// is included, so live fetching from it neither misses nor repeats one.
async fn provider_snapshot(
    store: &dyn Store,
    doctor: DoctorId,
    resume: Option<u64>,
) -> Result<(SnapshotData, u64), SnapError> {
    let fail =
        |e: docspot_actors::store::StoreError| SnapError("store_unavailable".into(), e.to_string());
    let newest = store
        .latest_provider_alerts(doctor, 1)
        .await
        .map_err(fail)?
        .last()
        .map_or(0, |a| a.id);
    let mut alerts = match resume {
        None => store
            .latest_provider_alerts(doctor, 50)
            .await
            .map_err(fail)?,
        Some(seq) => {
            let mut all = Vec::new();
            let mut after = i64::try_from(seq).unwrap_or(i64::MAX);
            while after < newest && all.len() < 10_000 {
                let page = store
                    .provider_alerts_after(doctor, after, 500)
                    .await
                    .map_err(fail)?;
                let Some(last) = page.last() else { break };
                after = last.id;
                all.extend(page);
            }
            all
        }
    };
    alerts.retain(|a| a.id <= newest);
    Ok((SnapshotData::Alerts { alerts }, newest as u64))
}

fn booking_code(e: &docspot_actors::BookingError) -> &'static str {
    crate::error::ApiError::from(e.clone()).code()
}

/// How long a topic nobody watches keeps its replay buffer for resumes.
const UNWATCHED_TTL: Duration = Duration::from_secs(300);

impl Actor for LiveHub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Changes for every watcher of the node come through here.
        ctx.set_mailbox_capacity(1 << 16);
        ctx.run_interval(Duration::from_secs(30), |hub, _| {
            hub.topics.retain(|_, t| {
                !t.subs.is_empty()
                    || t.unwatched_since
                        .is_none_or(|at| at.elapsed() < UNWATCHED_TTL)
            });
        });
    }
}

/// Start watching a topic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    /// Who.
    pub session: SessionId,
    /// Where to deliver.
    pub addr: Recipient<Deliver>,
    /// What.
    pub key: Key,
    /// For doctor topics: the range of interest.
    pub range: Option<TimeRange>,
    /// Last seq seen and its epoch, when resuming.
    pub resume: Option<(u64, Option<String>)>,
}

impl Handler<Join> for LiveHub {
    type Result = ();

    fn handle(&mut self, msg: Join, ctx: &mut Context<Self>) {
        let key = msg.key;
        let (node, incarnations) = (&self.epoch, &mut self.incarnations);
        let t = self.topics.entry(key).or_insert_with(|| {
            *incarnations += 1;
            TopicState {
                epoch: format!("{node}-{incarnations}"),
                seq: 0,
                ready: false,
                buffer: VecDeque::new(),
                subs: HashMap::new(),
                fetching: false,
                fetch_again: false,
                unwatched_since: None,
            }
        });
        t.unwatched_since = None;
        let resumable = match (&msg.resume, key) {
            // Provider alerts are stored: handled by `snapshot_from`.
            (_, Key::Provider(_)) => false,
            (Some((seq, epoch)), _)
                if epoch.as_deref() == Some(t.epoch.as_str()) && *seq <= t.seq =>
            {
                *seq == t.seq || t.buffer.front().is_some_and(|(first, _)| *first <= seq + 1)
            }
            _ => false,
        };
        let sub = Sub {
            addr: msg.addr,
            range: msg.range,
            generation: 0,
            resets: 0,
            floor: 0,
            pending: None,
        };
        if resumable && let Some((seq, _)) = msg.resume {
            // Exactly the missed deltas, in order, then live ones.
            for (s, d) in &t.buffer {
                if *s > seq {
                    sub.addr.do_send(Deliver::frame(key, d.clone()));
                }
            }
            t.subs.insert(msg.session, sub);
            return;
        }
        let provider_resume = matches!(key, Key::Provider(_)) && msg.resume.is_some();
        t.subs.insert(msg.session, sub);
        let reset = msg.resume.is_some() && !provider_resume;
        if let (Key::Provider(_), Some((seq, _))) = (key, msg.resume) {
            // Snapshot from the client's own position.
            self.snapshot_from(key, msg.session, seq, ctx);
        } else {
            self.snapshot(key, msg.session, reset, ctx);
        }
    }
}

impl LiveHub {
    /// A `provider:` resume: every stored alert after `seq`, from any node.
    fn snapshot_from(&mut self, key: Key, session: SessionId, seq: u64, ctx: &mut Context<Self>) {
        let Key::Provider(doctor) = key else { return };
        let Some(t) = self.topics.get_mut(&key) else {
            return;
        };
        let Some(sub) = t.subs.get_mut(&session) else {
            return;
        };
        sub.pending = Some(Vec::new());
        sub.generation += 1;
        let generation = sub.generation;
        let epoch = t.epoch.clone();
        let store = self.store.clone();
        let fut = async move { provider_snapshot(store.as_ref(), doctor, Some(seq)).await };
        ctx.spawn(fut.into_actor(self).map(move |res, hub, ctx| {
            hub.finish_snapshot(key, session, generation, epoch, false, res, ctx);
        }));
    }
}

/// Stop watching one topic, or (`key: None`) everything: the session ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// Who.
    pub session: SessionId,
    /// What; `None` for every topic.
    pub key: Option<Key>,
}

impl Handler<Leave> for LiveHub {
    type Result = ();

    fn handle(&mut self, msg: Leave, _ctx: &mut Context<Self>) {
        match msg.key {
            Some(k) => {
                if let Some(t) = self.topics.get_mut(&k) {
                    t.subs.remove(&msg.session);
                }
            }
            None => {
                for t in self.topics.values_mut() {
                    t.subs.remove(&msg.session);
                }
            }
        }
        // Topics nobody watches keep their counters and buffers for a while
        // (for resumes); the periodic sweep drops them after UNWATCHED_TTL.
        for t in self.topics.values_mut() {
            if t.subs.is_empty() && t.unwatched_since.is_none() {
                t.unwatched_since = Some(std::time::Instant::now());
            }
        }
    }
}

/// A committed change (from this node or relayed from another).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Change(pub CalendarChange);

impl Handler<Change> for LiveHub {
    type Result = ();

    fn handle(&mut self, msg: Change, ctx: &mut Context<Self>) {
        let c = msg.0;
        if self.topics.contains_key(&Key::Doctor(c.doctor_id)) {
            self.emit(
                Key::Doctor(c.doctor_id),
                DeltaData::Slot(public_change(&c)),
                None,
                ctx,
            );
        }
        if let Some(a) = &c.appointment
            && self.topics.contains_key(&Key::Me(a.patient_id))
        {
            let data = DeltaData::Appointment {
                kind: c.kind,
                appointment: a.clone(),
                at: c.at,
            };
            self.emit(Key::Me(a.patient_id), data, None, ctx);
        }
        if matches!(
            c.kind,
            ChangeKind::Booked
                | ChangeKind::HoldConfirmed
                | ChangeKind::Cancelled
                | ChangeKind::Rescheduled
        ) && self.topics.contains_key(&Key::Provider(c.doctor_id))
        {
            self.provider_fetch(c.doctor_id, ctx);
        }
        let clinic = Key::Clinic(c.clinic_id);
        // Also while the topic is kept without watchers: a wall display that
        // lost its network resumes from its last `seq`, and must get the
        // lines that changed while it was away (found by the browser test).
        if self.topics.contains_key(&clinic) {
            let calendars = self.calendars.clone();
            let store = self.store.clone();
            let doctor = c.doctor_id;
            let at = c.at;
            // Asks for one doctor's line may finish out of order: only the
            // latest one asked is sent, so a stale line never wins.
            let asked = self.board_asks.entry(doctor).or_default();
            *asked += 1;
            let this_ask = *asked;
            let fut = async move {
                let line = calendars.ask(doctor, Board).await.ok()?;
                let name = store.doctor(doctor).await.ok().flatten()?.name;
                Some(BoardEntry { name, line })
            };
            ctx.spawn(fut.into_actor(self).map(move |entry, hub, ctx| {
                let latest = hub.board_asks.get(&doctor) == Some(&this_ask);
                if latest {
                    hub.board_asks.remove(&doctor);
                    if let Some(line) = entry {
                        hub.emit(clinic, DeltaData::Board { doctor: line, at }, None, ctx);
                    }
                }
            }));
        }
    }
}

/// What everybody may see of a change: the slot, never the patient.
fn public_change(c: &CalendarChange) -> SlotChange {
    let status = |k: ChangeKind| match k {
        ChangeKind::Held => Some(SlotStatus::Held),
        ChangeKind::Booked | ChangeKind::HoldConfirmed | ChangeKind::Rescheduled => {
            Some(SlotStatus::Booked)
        }
        ChangeKind::Released | ChangeKind::Cancelled => Some(SlotStatus::Free),
        ChangeKind::Completed | ChangeKind::NoShow | ChangeKind::ScheduleChanged => None,
    };
    let a = c.appointment.as_ref();
    SlotChange {
        kind: c.kind,
        start: a.map(|a| a.start),
        end: a.map(|a| a.end),
        status: match (c.kind, a) {
            (ChangeKind::Rescheduled, Some(a))
                if a.status == docspot_actors::domain::AppointmentStatus::Held =>
            {
                Some(SlotStatus::Held)
            }
            (k, _) => status(k),
        },
        previous_start: a.and_then(|a| a.previous_start),
        previous_end: a.and_then(|a| a.previous_end),
        at: c.at,
    }
}

/// Resend every watcher a fresh snapshot (flagged `reset`): after the bus
/// reconnects, changes may have been missed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResyncAll;

impl Handler<ResyncAll> for LiveHub {
    type Result = ();

    fn handle(&mut self, _msg: ResyncAll, ctx: &mut Context<Self>) {
        let all: Vec<(Key, SessionId)> = self
            .topics
            .iter()
            .flat_map(|(k, t)| t.subs.keys().map(move |s| (*k, *s)))
            .collect();
        for (key, session) in all {
            if let Key::Provider(d) = key {
                self.provider_fetch(d, ctx);
            } else {
                self.snapshot(key, session, true, ctx);
            }
        }
    }
}

/// Counts for `/readyz` and the load test.
#[derive(Message)]
#[rtype(result = "HubStats")]
pub struct Stats;

/// Hub counters.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct HubStats {
    /// Topics with state.
    pub topics: usize,
    /// Subscriptions across topics.
    pub subscriptions: usize,
}

impl Handler<Stats> for LiveHub {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _msg: Stats, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(HubStats {
            topics: self.topics.len(),
            subscriptions: self.topics.values().map(|t| t.subs.len()).sum(),
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration};
    use docspot_actors::{
        domain::{AppointmentId, AppointmentStatus, VisitTypeId},
        events::ChangedAppointment,
    };

    use super::*;

    fn t(m: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + Duration::days(20_000) + Duration::minutes(m)
    }

    #[test]
    fn public_deltas_carry_the_commit_instant() {
        let at = t(-5) + Duration::microseconds(42);
        let moved = CalendarChange {
            doctor_id: DoctorId::new(),
            clinic_id: ClinicId::new(),
            kind: ChangeKind::Rescheduled,
            appointment: Some(ChangedAppointment {
                id: AppointmentId::new(),
                patient_id: UserId::new(),
                visit_type_id: VisitTypeId::new(),
                start: t(60),
                end: t(90),
                status: AppointmentStatus::Booked,
                previous_start: Some(t(0)),
                previous_end: Some(t(30)),
                block: TimeRange::new(t(60), t(90)).unwrap(),
            }),
            at,
        };
        let c = public_change(&moved);
        assert_eq!(c.at, at);
        assert_eq!(
            (c.start, c.status, c.previous_start),
            (Some(t(60)), Some(SlotStatus::Booked), Some(t(0)))
        );
        let schedule = CalendarChange {
            kind: ChangeKind::ScheduleChanged,
            appointment: None,
            at: t(7),
            ..moved
        };
        let c = public_change(&schedule);
        assert_eq!(
            (c.kind, c.start, c.at),
            (ChangeKind::ScheduleChanged, None, t(7))
        );
    }
}
