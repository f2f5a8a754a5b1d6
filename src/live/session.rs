//! One WebSocket connection = one actor (actix-web-actors, which the product
//! asked for; upstream now recommends actix-ws, and only this file would
//! change).
//!
//! The session parses client frames, checks who may watch what, and writes
//! what the hub delivers. It owns no task and no buffer beyond its small
//! mailbox, so an idle watcher costs little memory.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use chrono::Utc;
use docspot_actors::domain::TimeRange;

use super::{
    hub::{Deliver, Join, Key, Leave, LiveHub, SessionId},
    protocol::{
        ClientMsg, Encoding, Frame, JSON_PROTOCOL, MSGPACK_PROTOCOL, ServerMsg, Topic,
        decode_binary, decode_text, encode,
    },
};
use crate::{
    audit::{Action, Actor as AuditActor, Audit, Outcome},
    auth::{AuthUser, TokenKeys},
    domain::Role,
    routes::State,
};

/// Close code: the client sent something the protocol forbids repeatedly.
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: no pong within the idle timeout.
pub const CLOSE_IDLE: u16 = 4000;
/// Close code: the connection kept falling behind even after snapshots.
pub const CLOSE_TOO_SLOW: u16 = 4001;

/// Limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Ping interval.
    pub heartbeat: Duration,
    /// Close after this long without any frame from the client.
    pub idle_timeout: Duration,
    /// Largest client frame.
    pub max_frame: usize,
    /// Most topics one connection may watch.
    pub max_subscriptions: usize,
    /// Most frames waiting to be written before the hub treats the
    /// connection as lagging.
    pub queue: usize,
    /// Longest range a `doctor:` subscription may ask for, in days.
    pub max_range_days: i64,
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A WebSocket watcher.
pub struct WsSession {
    id: SessionId,
    hub: Addr<LiveHub>,
    keys: Arc<TokenKeys>,
    state: State,
    encoding: Encoding,
    user: Option<AuthUser>,
    /// When `user`'s token runs out (Unix seconds). A token is checked once,
    /// when it arrives, so the session itself ends private topics at this
    /// instant: a socket left open must not outlive the sign-in that opened
    /// it (automatic log-off; a logged-out or erased user's token is short).
    token_expires: i64,
    /// Who signed this connection in first, kept after expiry: only the
    /// same user may sign it in again (a shared kiosk cannot switch users).
    owner: Option<docspot_actors::domain::UserId>,
    /// The timer that ends the sign-in at `token_expires` (replaced by a
    /// fresh `auth`).
    expiry: Option<SpawnHandle>,
    topics: HashSet<Key>,
    limits: SessionLimits,
    last_heard: Instant,
    /// Records private subscriptions: one that streams a patient's
    /// appointments or a doctor's alerts (patient ids) is a read.
    audit: Audit,
}

impl WsSession {
    fn send(&self, ctx: &mut ws::WebsocketContext<Self>, msg: &ServerMsg) {
        write(ctx, &encode(msg, self.encoding));
    }

    fn error(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        code: &str,
        text: impl Into<String>,
        topic: Option<&str>,
    ) {
        self.send(ctx, &ServerMsg::error(code, text, topic));
    }

    fn handle_client(&mut self, msg: ClientMsg, ctx: &mut ws::WebsocketContext<Self>) {
        // Nothing is done on an expired sign-in, even a moment before the
        // timer fires.
        self.expire_sign_in(ctx);
        match msg {
            ClientMsg::Auth { token } => match self.keys.verify(&token) {
                // Private subscriptions belong to who opened them: no
                // switching users on one connection (a shared kiosk).
                Ok(c) if self.owner.is_some_and(|o| o != c.sub) => self.error(
                    ctx,
                    "already_authenticated",
                    "this connection belongs to another user; open a new one",
                    None,
                ),
                Ok(c) => {
                    let user = AuthUser::from(&c);
                    self.token_expires = c.exp;
                    self.owner = Some(user.id);
                    self.schedule_expiry(ctx);
                    self.send(
                        ctx,
                        &ServerMsg::Authenticated {
                            user_id: user.id.to_string(),
                            role: user.role,
                        },
                    );
                    self.user = Some(user);
                }
                Err(_) => self.error(ctx, "unauthorized", "invalid or expired token", None),
            },
            ClientMsg::Subscribe {
                topic,
                from,
                to,
                resume_seq,
                epoch,
            } => self.subscribe(topic, from, to, resume_seq.map(|s| (s, epoch)), ctx),
            ClientMsg::Unsubscribe { topic } => {
                let key = Topic::parse(&topic).and_then(|t| self.key_of(t));
                match key {
                    Some(k) if self.topics.remove(&k) => self.hub.do_send(Leave {
                        session: self.id,
                        key: Some(k),
                    }),
                    _ => self.error(ctx, "not_subscribed", "no such subscription", Some(&topic)),
                }
            }
        }
    }

    fn key_of(&self, topic: Topic) -> Option<Key> {
        Some(match topic {
            Topic::Doctor(d) => Key::Doctor(d),
            Topic::Clinic(c) => Key::Clinic(c),
            Topic::Provider(d) => Key::Provider(d),
            Topic::Me => Key::Me(self.user.as_ref()?.id),
        })
    }

    /// Arms (or re-arms, after a fresh `auth`) the timer that ends the
    /// sign-in the moment its token expires.
    fn schedule_expiry(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if let Some(old) = self.expiry.take() {
            ctx.cancel_future(old);
        }
        let left = (self.token_expires - Utc::now().timestamp()).max(0);
        let left = Duration::from_secs(u64::try_from(left).unwrap_or(0));
        self.expiry = Some(ctx.run_later(left, |act, ctx| {
            act.expiry = None;
            act.expire_sign_in(ctx);
        }));
    }

    /// Ends the sign-in once its token has expired: private topics (`me`,
    /// `provider:`) are left and the client is told, so it can send a fresh
    /// token and subscribe again (resuming from its last `seq`, nothing is
    /// lost). Public topics go on. Runs from the expiry timer, and before
    /// every client message.
    fn expire_sign_in(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.user.is_none() || Utc::now().timestamp() < self.token_expires {
            return;
        }
        self.user = None;
        let private: Vec<Key> = self
            .topics
            .iter()
            .filter(|k| matches!(k, Key::Me(_) | Key::Provider(_)))
            .copied()
            .collect();
        for key in private {
            self.topics.remove(&key);
            self.hub.do_send(Leave {
                session: self.id,
                key: Some(key),
            });
        }
        self.error(
            ctx,
            "token_expired",
            "your sign-in has expired and private topics were closed; send an auth message with a fresh token and subscribe again",
            None,
        );
    }

    fn subscribe(
        &mut self,
        topic: String,
        from: Option<chrono::DateTime<Utc>>,
        to: Option<chrono::DateTime<Utc>>,
        resume: Option<(u64, Option<String>)>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let Some(parsed) = Topic::parse(&topic) else {
            return self.error(
                ctx,
                "invalid_topic",
                "topics are doctor:{id}, clinic:{id}, provider:{doctor_id} or me",
                Some(&topic),
            );
        };
        let Some(key) = self.key_of(parsed) else {
            return self.error(
                ctx,
                "unauthorized",
                "sign in (auth message or ?access_token=) to watch your appointments",
                Some(&topic),
            );
        };
        if let Key::Provider(doctor) = key {
            let state = self.state.clone();
            let user = self.user.clone();
            let audit = self.audit.clone();
            // Whether an admin may watch depends on the doctor's clinic: ask
            // the store, then continue in the actor. The subscription starts
            // only once its audit entry is committed.
            let check = async move {
                let Some(user) = user else {
                    return Err("unauthorized");
                };
                match user.role {
                    Role::Doctor if user.doctor_id == Some(doctor) => {}
                    Role::ClinicAdmin => match state.store.doctor(doctor).await {
                        Ok(Some(d)) if user.administers(d.clinic_id) => {}
                        Ok(Some(_)) => return Err("forbidden"),
                        Ok(None) => return Err("doctor_not_found"),
                        Err(_) => return Err("store_unavailable"),
                    },
                    _ => return Err("forbidden"),
                }
                audit
                    .doctor(&state, &user, Action::LiveSubscribe, doctor)
                    .await
                    .map_err(|_| "audit_unavailable")
            };
            ctx.wait(check.into_actor(self).map(move |res, act, ctx| match res {
                Ok(()) => act.join(key, topic, None, resume, ctx),
                Err(code) => act.error(
                    ctx,
                    code,
                    "only this doctor or an admin of their clinic may watch these alerts",
                    Some(&topic),
                ),
            }));
            return;
        }
        let range = match key {
            Key::Doctor(_) => {
                let from = from.unwrap_or_else(Utc::now);
                let to = to.unwrap_or(from + chrono::Duration::days(7));
                match TimeRange::new(from, to) {
                    Ok(r) if r.duration() <= chrono::Duration::days(self.limits.max_range_days) => {
                        Some(r)
                    }
                    Ok(_) => {
                        return self.error(
                            ctx,
                            "range_too_long",
                            format!("watch at most {} days", self.limits.max_range_days),
                            Some(&topic),
                        );
                    }
                    Err(e) => return self.error(ctx, "invalid_range", e.to_string(), Some(&topic)),
                }
            }
            _ => None,
        };
        if let (Key::Me(patient), Some(user)) = (key, &self.user) {
            let audit = self.audit.clone();
            let actor = AuditActor::user(user);
            let record = async move {
                audit
                    .own(actor, Action::LiveSubscribe, patient, Outcome::Success)
                    .await
            };
            ctx.wait(record.into_actor(self).map(move |res, act, ctx| match res {
                Ok(()) => act.join(key, topic, range, resume, ctx),
                Err(_) => act.error(
                    ctx,
                    "audit_unavailable",
                    "the audit log could not be written; try again",
                    Some(&topic),
                ),
            }));
            return;
        }
        self.join(key, topic, range, resume, ctx);
    }

    fn join(
        &mut self,
        key: Key,
        topic: String,
        range: Option<TimeRange>,
        resume: Option<(u64, Option<String>)>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        if self.topics.contains(&key) {
            return self.error(
                ctx,
                "already_subscribed",
                "already watching this topic",
                Some(&topic),
            );
        }
        if self.topics.len() >= self.limits.max_subscriptions {
            return self.error(
                ctx,
                "too_many_subscriptions",
                format!(
                    "at most {} topics per connection",
                    self.limits.max_subscriptions
                ),
                Some(&topic),
            );
        }
        self.topics.insert(key);
        self.hub.do_send(Join {
            session: self.id,
            addr: ctx.address().recipient(),
            key,
            range,
            resume,
        });
    }
}

fn write(ctx: &mut ws::WebsocketContext<WsSession>, frame: &Frame) {
    match frame {
        Frame::Text(t) => ctx.text(t.clone()),
        Frame::Binary(b) => ctx.binary(b.clone()),
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A small mailbox is the outgoing queue: when the socket stops
        // draining, the hub sees it full and switches to a snapshot.
        ctx.set_mailbox_capacity(self.limits.queue);
        let idle = self.limits.idle_timeout;
        if self.user.is_some() {
            self.schedule_expiry(ctx);
        }
        ctx.run_interval(self.limits.heartbeat, move |act, ctx| {
            if act.last_heard.elapsed() > idle {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Other(CLOSE_IDLE),
                    description: Some("idle timeout".into()),
                }));
                ctx.stop();
                return;
            }
            ctx.ping(b"");
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.hub.do_send(Leave {
            session: self.id,
            key: None,
        });
    }
}

impl Handler<Deliver> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        // Frames of a topic this session has left were queued before the
        // hub heard of it: drop them.
        let left = msg.key.is_some_and(|k| !self.topics.contains(&k));
        if let Some(f) = &msg.frame
            && !left
        {
            write(ctx, f.frame(self.encoding));
        }
        if let Some(k) = msg.forget {
            self.topics.remove(&k);
        }
        if msg.close {
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Other(CLOSE_TOO_SLOW),
                description: Some("connection cannot keep up".into()),
            }));
            ctx.stop();
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        let msg = match item {
            Ok(m) => m,
            Err(ws::ProtocolError::Overflow) => {
                // Oversized frame: say so, keep the connection.
                self.error(
                    ctx,
                    "frame_too_large",
                    format!("frames are limited to {} bytes", self.limits.max_frame),
                    None,
                );
                return;
            }
            Err(e) => {
                ctx.close(Some(ws::CloseReason {
                    code: ws::CloseCode::Protocol,
                    description: Some(e.to_string()),
                }));
                ctx.stop();
                return;
            }
        };
        let decoded = match msg {
            ws::Message::Text(t) => decode_text(&t),
            ws::Message::Binary(b) => decode_binary(&b),
            ws::Message::Ping(p) => {
                ctx.pong(&p);
                return;
            }
            ws::Message::Pong(_) => return,
            ws::Message::Close(reason) => {
                ctx.close(reason);
                ctx.stop();
                return;
            }
            ws::Message::Continuation(_) | ws::Message::Nop => return,
        };
        match decoded {
            Ok(m) => self.handle_client(m, ctx),
            Err(e) => self.error(ctx, "malformed_message", e, None),
        }
    }
}

/// Query string of the upgrade request.
#[derive(Debug, serde::Deserialize)]
pub struct UpgradeQuery {
    /// A bearer token, for clients that cannot set headers (browsers).
    pub access_token: Option<String>,
}

/// `GET /api/v1/live`: upgrades to a WebSocket.
pub async fn live(
    req: HttpRequest,
    stream: web::Payload,
    state: State,
    hub: web::Data<Addr<LiveHub>>,
    limits: web::Data<SessionLimits>,
    audit: Audit,
    q: web::Query<UpgradeQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    let keys = state.keys.clone();
    let offered: Vec<String> = req
        .headers()
        .get_all("sec-websocket-protocol")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    let encoding = if offered.iter().any(|p| p == MSGPACK_PROTOCOL)
        && !offered.iter().any(|p| p == JSON_PROTOCOL)
    {
        Encoding::MsgPack
    } else {
        Encoding::Json
    };
    // A token on the upgrade (header or query) signs the connection in.
    let header_token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let token = header_token.or_else(|| q.access_token.clone());
    let (user, token_expires) = match token {
        Some(t) => match keys.verify(&t) {
            Ok(c) => (Some(AuthUser::from(&c)), c.exp),
            Err(e) => return Err(e.into()),
        },
        None => (None, 0),
    };
    let session = WsSession {
        id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
        hub: hub.get_ref().clone(),
        keys,
        state,
        encoding,
        owner: user.as_ref().map(|u| u.id),
        user,
        token_expires,
        expiry: None,
        topics: HashSet::new(),
        limits: **limits,
        last_heard: Instant::now(),
        audit,
    };
    let protocols: &[&str] = match encoding {
        Encoding::MsgPack => &[MSGPACK_PROTOCOL],
        Encoding::Json if offered.iter().any(|p| p == JSON_PROTOCOL) => &[JSON_PROTOCOL],
        Encoding::Json => &[],
    };
    ws::WsResponseBuilder::new(session, &req, stream)
        .protocols(protocols)
        .frame_size(limits.max_frame)
        .start()
}
