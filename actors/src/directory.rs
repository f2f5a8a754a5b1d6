//! Finds (or starts) the calendar actor of a doctor.

use std::{collections::HashMap, sync::Arc, sync::Mutex, time::Duration};

use actix::{Actor, Addr, Arbiter, ArbiterHandle, Handler, MailboxError, Message};

use crate::{
    calendar::{BookingError, CalendarActor, CalendarConfig},
    domain::DoctorId,
    events::ChangeSink,
    store::CalendarStore,
};

/// The registry of live calendar actors, shared by all HTTP workers.
///
/// Actors run on a few dedicated arbiters (threads with their own event loop),
/// chosen by doctor, so calendar work never competes with request parsing on
/// the HTTP workers and a doctor's actor always lives on the same thread.
pub struct CalendarDirectory {
    store: Arc<dyn CalendarStore>,
    sink: Arc<dyn ChangeSink>,
    cfg: CalendarConfig,
    arbiters: Vec<ArbiterHandle>,
    actors: Mutex<HashMap<DoctorId, Addr<CalendarActor>>>,
    request_timeout: Duration,
}

impl CalendarDirectory {
    /// Starts `threads` arbiters. Must be called inside a running actix
    /// `System`.
    pub fn new(
        store: Arc<dyn CalendarStore>,
        sink: Arc<dyn ChangeSink>,
        cfg: CalendarConfig,
        threads: usize,
        request_timeout: Duration,
    ) -> Self {
        let arbiters = (0..threads.max(1))
            .map(|_| Arbiter::new().handle())
            .collect();
        Self {
            store,
            sink,
            cfg,
            arbiters,
            actors: Mutex::new(HashMap::new()),
            request_timeout,
        }
    }

    /// The doctor's actor, started if it is not running (or stopped idle).
    pub fn get(&self, doctor: DoctorId) -> Addr<CalendarActor> {
        // The lock is held only for a map lookup or insert, never across an
        // await, so a plain mutex is right here.
        let mut actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(addr) = actors.get(&doctor)
            && addr.connected()
        {
            return addr.clone();
        }
        let arbiter = &self.arbiters[(doctor.0.as_u128() % self.arbiters.len() as u128) as usize];
        // Stopped actors leave their address behind; sweep those now and
        // then so the map stays as small as the set of live calendars.
        if actors.len() >= 1024 && actors.len().is_power_of_two() {
            actors.retain(|_, a| a.connected());
        }
        let store = self.store.clone();
        let sink = self.sink.clone();
        let cfg = self.cfg.clone();
        let addr = CalendarActor::start_in_arbiter(arbiter, move |_| {
            CalendarActor::new(doctor, store, sink, cfg)
        });
        actors.insert(doctor, addr.clone());
        addr
    }

    /// Sends `msg` to the doctor's actor and waits for the answer.
    ///
    /// An actor that stopped between lookup and send (idle timeout, failed
    /// load) is restarted once.
    pub async fn ask<M, T>(&self, doctor: DoctorId, msg: M) -> Result<T, BookingError>
    where
        M: Message<Result = Result<T, BookingError>> + Clone + Send + 'static,
        T: Send + 'static,
        CalendarActor: Handler<M>,
    {
        for attempt in 0..2 {
            let addr = self.get(doctor);
            match addr.send(msg.clone()).timeout(self.request_timeout).await {
                Ok(reply) => return reply,
                Err(MailboxError::Closed) if attempt == 0 => continue,
                Err(MailboxError::Closed) => break,
                Err(MailboxError::Timeout) => {
                    return Err(BookingError::Unavailable("calendar timed out".into()));
                }
            }
        }
        Err(BookingError::Unavailable("calendar could not start".into()))
    }

    /// Tells the doctor's actor, if running, to reload from the store.
    pub fn refresh(&self, doctor: DoctorId) {
        let actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(addr) = actors.get(&doctor) {
            addr.do_send(crate::calendar::Refresh);
        }
    }

    /// Tells the doctor's actor (starting it if needed) that the schedule
    /// changed, so it reloads and announces the change to watchers.
    pub fn schedule_changed(&self, doctor: DoctorId) {
        self.get(doctor).do_send(crate::calendar::ScheduleChanged);
    }

    /// Hands a change committed on another node to the doctor's running
    /// actor, which updates its memory and relays it to local watchers.
    /// `false` when no actor runs for the doctor (nothing to update).
    pub fn apply_remote(&self, change: crate::events::CalendarChange) -> bool {
        let actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        match actors.get(&change.doctor_id).filter(|a| a.connected()) {
            Some(addr) => {
                addr.do_send(crate::calendar::ApplyRemote(change));
                true
            }
            None => false,
        }
    }

    /// Tells every running actor to reload (after missed remote changes).
    pub fn refresh_all(&self) {
        let actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        for addr in actors.values().filter(|a| a.connected()) {
            addr.do_send(crate::calendar::Refresh);
        }
    }

    /// How many actors are running.
    pub fn running(&self) -> usize {
        let actors = self.actors.lock().unwrap_or_else(|p| p.into_inner());
        actors.values().filter(|a| a.connected()).count()
    }
}

impl Drop for CalendarDirectory {
    fn drop(&mut self) {
        for a in &self.arbiters {
            a.stop();
        }
    }
}
