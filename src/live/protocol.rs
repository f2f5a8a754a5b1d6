//! The live protocol: what watchers send and receive over the WebSocket.
//! See `docs/realtime.md` for the full description with example frames.
//!
//! The same messages travel as JSON text frames (`docspot.json.v1`) or as
//! MessagePack binary frames (`docspot.msgpack.v1`, maps with field names).

use chrono::{DateTime, Utc};
use docspot_actors::{
    calendar::{BoardLine, SlotState},
    domain::{ClinicId, DoctorId},
    events::{ChangeKind, ChangedAppointment},
};
use serde::{Deserialize, Serialize};

use crate::{routes::AppointmentOut, store::ProviderAlert};

/// WebSocket subprotocol for JSON text frames (the default).
pub const JSON_PROTOCOL: &str = "docspot.json.v1";
/// WebSocket subprotocol for MessagePack binary frames.
pub const MSGPACK_PROTOCOL: &str = "docspot.msgpack.v1";

/// Frame encoding of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// JSON text frames.
    Json,
    /// MessagePack binary frames.
    MsgPack,
}

/// A message from a watcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Start watching a topic.
    Subscribe {
        /// `doctor:{id}`, `clinic:{id}`, `provider:{doctor_id}` or `me`.
        topic: String,
        /// For `doctor:` topics: the first instant of interest (default now).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<DateTime<Utc>>,
        /// For `doctor:` topics: the end of interest (default from + 7 days).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<DateTime<Utc>>,
        /// The last sequence number received before a disconnect.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_seq: Option<u64>,
        /// The epoch that sequence number belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
    },
    /// Stop watching a topic.
    Unsubscribe {
        /// The topic as subscribed.
        topic: String,
    },
    /// Sign in on an open connection.
    Auth {
        /// An access token (as for `Authorization: Bearer`).
        token: String,
    },
}

/// A parsed topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Public availability of a doctor.
    Doctor(DoctorId),
    /// A clinic's wall display.
    Clinic(ClinicId),
    /// Alerts for a doctor (the doctor or a clinic admin).
    Provider(DoctorId),
    /// The signed-in patient's own appointments.
    Me,
}

impl Topic {
    /// Parses the wire form.
    pub fn parse(s: &str) -> Option<Topic> {
        if s == "me" {
            return Some(Topic::Me);
        }
        let (kind, id) = s.split_once(':')?;
        match kind {
            "doctor" => DoctorId::parse(id).ok().map(Topic::Doctor),
            "clinic" => ClinicId::parse(id).ok().map(Topic::Clinic),
            "provider" => DoctorId::parse(id).ok().map(Topic::Provider),
            _ => None,
        }
    }
}

/// What a topic's snapshot contains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SnapshotData {
    /// `doctor:` — every slot in the range with its state.
    Slots {
        /// Range start.
        from: DateTime<Utc>,
        /// Range end.
        to: DateTime<Utc>,
        /// Slots, by start.
        slots: Vec<SlotState>,
    },
    /// `clinic:` — one line per doctor.
    Board {
        /// Lines, by doctor name.
        doctors: Vec<BoardEntry>,
    },
    /// `provider:` — alerts after `resume_seq` (or the latest few).
    Alerts {
        /// Oldest first; `seq` is the last one's id.
        alerts: Vec<ProviderAlert>,
    },
    /// `me` — the patient's appointments, newest first.
    Appointments {
        /// The appointments.
        appointments: Vec<AppointmentOut>,
    },
}

/// A wall-display line with the doctor's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardEntry {
    /// Doctor's name.
    pub name: String,
    /// The line.
    #[serde(flatten)]
    pub line: BoardLine,
}

/// A public availability change (no patient data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotChange {
    /// What happened.
    pub kind: ChangeKind,
    /// Start of the affected slot (after a reschedule: the new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTime<Utc>>,
    /// End of the affected slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTime<Utc>>,
    /// The slot's state now: `free`, `held` or `booked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<docspot_actors::calendar::SlotStatus>,
    /// After a reschedule: the start that became free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_start: Option<DateTime<Utc>>,
    /// After a reschedule: the end that became free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_end: Option<DateTime<Utc>>,
    /// When the change committed, by the clock of the node that committed
    /// it (RFC 3339, UTC). Relayed changes keep the committing node's
    /// instant.
    pub at: DateTime<Utc>,
}

/// What one delta carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DeltaData {
    /// `doctor:` — a slot changed state (or the schedule changed).
    Slot(SlotChange),
    /// `clinic:` — a doctor's line changed.
    Board {
        /// The new line.
        doctor: BoardEntry,
        /// When the change that prompted this line committed (the line is
        /// computed afterwards and reflects at least that change).
        at: DateTime<Utc>,
    },
    /// `provider:` — a new alert.
    Alert {
        /// The alert; the delta's `seq` is its id.
        alert: ProviderAlert,
    },
    /// `me` — one of the patient's appointments changed.
    Appointment {
        /// What happened.
        kind: ChangeKind,
        /// The appointment after the change.
        appointment: ChangedAppointment,
        /// When the change committed.
        at: DateTime<Utc>,
    },
}

/// A message to a watcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The full state of a topic; deltas continue from `seq`.
    Snapshot {
        /// The topic as subscribed.
        topic: String,
        /// Sequence number the next delta follows.
        seq: u64,
        /// Sequence numbers are only comparable within one epoch.
        epoch: String,
        /// `true` when a resume was asked for but the missed deltas are no
        /// longer available (or the connection fell behind): start over.
        reset: bool,
        /// The state.
        data: SnapshotData,
    },
    /// One change; `seq` is exactly one more than the previous for the topic
    /// (for `provider:` topics: the alert id, strictly increasing).
    Delta {
        /// The topic.
        topic: String,
        /// Sequence number.
        seq: u64,
        /// The change.
        data: DeltaData,
    },
    /// Signed in.
    Authenticated {
        /// Who.
        user_id: String,
        /// As what.
        role: crate::domain::Role,
    },
    /// A request was refused; the connection stays open.
    Error {
        /// Stable code (see docs/realtime.md).
        code: String,
        /// What went wrong.
        message: String,
        /// The topic concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
    },
}

impl ServerMsg {
    /// An error frame.
    pub fn error(code: &str, message: impl Into<String>, topic: Option<&str>) -> Self {
        ServerMsg::Error {
            code: code.into(),
            message: message.into(),
            topic: topic.map(str::to_string),
        }
    }
}

/// A frame ready to write.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

/// Encodes a message for a connection.
pub fn encode(msg: &ServerMsg, enc: Encoding) -> Frame {
    match enc {
        // Serializing these types cannot fail (no maps with non-string
        // keys); an empty frame would only signal a bug.
        Encoding::Json => Frame::Text(serde_json::to_string(msg).unwrap_or_default()),
        Encoding::MsgPack => Frame::Binary(rmp_serde::to_vec_named(msg).unwrap_or_default()),
    }
}

/// Decodes a client frame.
pub fn decode_text(s: &str) -> Result<ClientMsg, String> {
    serde_json::from_str(s).map_err(|e| e.to_string())
}

/// Decodes a client binary (MessagePack) frame.
pub fn decode_binary(b: &[u8]) -> Result<ClientMsg, String> {
    rmp_serde::from_slice(b).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use docspot_actors::{
        calendar::SlotStatus,
        domain::{AppointmentId, AppointmentStatus, TimeRange, UserId, VisitTypeId},
    };

    use super::*;

    fn t(m: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + Duration::days(20_000) + Duration::minutes(m)
    }

    fn decode_server(f: &Frame) -> ServerMsg {
        match f {
            Frame::Text(s) => serde_json::from_str(s).unwrap(),
            Frame::Binary(b) => rmp_serde::from_slice(b).unwrap(),
        }
    }

    fn every_server_message() -> Vec<ServerMsg> {
        let doctor = DoctorId::new();
        let line = BoardLine {
            doctor_id: doctor,
            next_free: Some(docspot_actors::domain::Slot {
                start: t(0),
                end: t(30),
            }),
            today_free: 3,
            today_held: 1,
            today_booked: 4,
            today: vec![docspot_actors::calendar::BoardSlot {
                start: t(0),
                status: docspot_actors::calendar::SlotStatus::Free,
            }],
        };
        let changed = ChangedAppointment {
            id: AppointmentId::new(),
            patient_id: UserId::new(),
            visit_type_id: VisitTypeId::new(),
            start: t(60),
            end: t(90),
            status: AppointmentStatus::Booked,
            previous_start: Some(t(0)),
            previous_end: Some(t(30)),
            block: TimeRange::new(t(55), t(95)).unwrap(),
        };
        let alert = ProviderAlert {
            id: 7,
            doctor_id: doctor,
            appointment_id: changed.id,
            patient_id: changed.patient_id,
            kind: "booked".into(),
            at: t(1),
            start: t(60),
            end: t(90),
            previous_start: None,
            status: AppointmentStatus::Booked,
        };
        let appt = AppointmentOut {
            id: changed.id.0,
            doctor_id: doctor.0,
            patient_id: changed.patient_id.0,
            visit_type_id: changed.visit_type_id.0,
            start: t(60),
            end: t(90),
            status: AppointmentStatus::Held,
            hold_expires_at: Some(t(5)),
            cancel_reason: None,
            created_at: t(0),
        };
        let topic = format!("doctor:{doctor}");
        vec![
            ServerMsg::Snapshot {
                topic: topic.clone(),
                seq: 3,
                epoch: "e".into(),
                reset: false,
                data: SnapshotData::Slots {
                    from: t(0),
                    to: t(600),
                    slots: vec![SlotState {
                        start: t(0),
                        end: t(30),
                        status: SlotStatus::Held,
                    }],
                },
            },
            ServerMsg::Snapshot {
                topic: "clinic:x".into(),
                seq: 0,
                epoch: "e".into(),
                reset: true,
                data: SnapshotData::Board {
                    doctors: vec![BoardEntry {
                        name: "Dr. A".into(),
                        line: line.clone(),
                    }],
                },
            },
            ServerMsg::Snapshot {
                topic: "provider:x".into(),
                seq: 7,
                epoch: "e".into(),
                reset: false,
                data: SnapshotData::Alerts {
                    alerts: vec![alert.clone()],
                },
            },
            ServerMsg::Snapshot {
                topic: "me".into(),
                seq: 1,
                epoch: "e".into(),
                reset: false,
                data: SnapshotData::Appointments {
                    appointments: vec![appt],
                },
            },
            ServerMsg::Delta {
                topic: topic.clone(),
                seq: 4,
                data: DeltaData::Slot(SlotChange {
                    kind: ChangeKind::Rescheduled,
                    start: Some(t(60)),
                    end: Some(t(90)),
                    status: Some(SlotStatus::Booked),
                    previous_start: Some(t(0)),
                    previous_end: Some(t(30)),
                    at: t(-1) + Duration::nanoseconds(123_456_789),
                }),
            },
            ServerMsg::Delta {
                topic: topic.clone(),
                seq: 5,
                data: DeltaData::Slot(SlotChange {
                    kind: ChangeKind::ScheduleChanged,
                    start: None,
                    end: None,
                    status: None,
                    previous_start: None,
                    previous_end: None,
                    at: t(-2) + Duration::microseconds(5),
                }),
            },
            ServerMsg::Delta {
                topic: "clinic:x".into(),
                seq: 1,
                data: DeltaData::Board {
                    doctor: BoardEntry {
                        name: "Dr. A".into(),
                        line,
                    },
                    at: t(-3),
                },
            },
            ServerMsg::Delta {
                topic: "provider:x".into(),
                seq: 7,
                data: DeltaData::Alert { alert },
            },
            ServerMsg::Delta {
                topic: "me".into(),
                seq: 2,
                data: DeltaData::Appointment {
                    kind: ChangeKind::Booked,
                    appointment: changed,
                    at: t(-4),
                },
            },
            ServerMsg::Authenticated {
                user_id: "u".into(),
                role: crate::domain::Role::Doctor,
            },
            ServerMsg::error("invalid_topic", "nope", Some("x")),
            ServerMsg::error("malformed_message", "bad", None),
        ]
    }

    #[test]
    fn every_server_message_round_trips_in_both_encodings() {
        for msg in every_server_message() {
            for enc in [Encoding::Json, Encoding::MsgPack] {
                let frame = encode(&msg, enc);
                assert!(matches!(
                    (&frame, enc),
                    (Frame::Text(_), Encoding::Json) | (Frame::Binary(_), Encoding::MsgPack)
                ));
                assert_eq!(decode_server(&frame), msg, "{enc:?}");
            }
        }
    }

    #[test]
    fn deltas_carry_the_commit_instant_as_rfc3339_utc() {
        let at = t(0) + Duration::microseconds(654_321);
        let delta = ServerMsg::Delta {
            topic: "doctor:x".into(),
            seq: 1,
            data: DeltaData::Slot(SlotChange {
                kind: ChangeKind::Booked,
                start: Some(t(60)),
                end: Some(t(90)),
                status: Some(SlotStatus::Booked),
                previous_start: None,
                previous_end: None,
                at,
            }),
        };
        for enc in [Encoding::Json, Encoding::MsgPack] {
            let frame = encode(&delta, enc);
            // What a client without this crate sees: a string field `at`.
            let v: serde_json::Value = match &frame {
                Frame::Text(s) => serde_json::from_str(s).unwrap(),
                Frame::Binary(b) => rmp_serde::from_slice(b).unwrap(),
            };
            let text = v["data"]["at"].as_str().expect("`at` is a string");
            assert!(text.ends_with('Z'), "UTC: {text}");
            assert_eq!(
                DateTime::parse_from_rfc3339(text).unwrap(),
                at,
                "{enc:?}: {text}"
            );
            match decode_server(&frame) {
                ServerMsg::Delta {
                    data: DeltaData::Slot(c),
                    ..
                } => assert_eq!(c.at, at, "{enc:?}"),
                other => panic!("{enc:?}: decoded as {other:?}"),
            }
        }
        // The documented example frame decodes; without `at` it is no slot
        // delta.
        let doc = r#"{"type":"delta","topic":"doctor:x","seq":42,"data":{"kind":"booked","start":"2026-11-26T08:00:00Z","end":"2026-11-26T08:30:00Z","status":"booked","at":"2026-11-25T14:03:12.481207Z"}}"#;
        let Ok(ServerMsg::Delta {
            data: DeltaData::Slot(c),
            ..
        }) = serde_json::from_str::<ServerMsg>(doc)
        else {
            panic!("the documented slot delta decodes");
        };
        assert_eq!(c.at.timestamp_subsec_micros(), 481_207);
        let old = doc.replace(r#","at":"2026-11-25T14:03:12.481207Z""#, "");
        assert!(!matches!(
            serde_json::from_str::<ServerMsg>(&old),
            Ok(ServerMsg::Delta {
                data: DeltaData::Slot(_),
                ..
            })
        ));
    }

    #[test]
    fn every_client_message_round_trips_in_both_encodings() {
        let msgs = vec![
            ClientMsg::Subscribe {
                topic: "doctor:x".into(),
                from: Some(t(0)),
                to: Some(t(60)),
                resume_seq: Some(4),
                epoch: Some("e".into()),
            },
            ClientMsg::Subscribe {
                topic: "me".into(),
                from: None,
                to: None,
                resume_seq: None,
                epoch: None,
            },
            ClientMsg::Unsubscribe { topic: "me".into() },
            ClientMsg::Auth {
                token: "abc".into(),
            },
        ];
        for m in msgs {
            assert_eq!(decode_text(&serde_json::to_string(&m).unwrap()).unwrap(), m);
            assert_eq!(
                decode_binary(&rmp_serde::to_vec_named(&m).unwrap()).unwrap(),
                m
            );
        }
        // The documented minimal JSON form.
        let m = decode_text(r#"{"type":"subscribe","topic":"me"}"#).unwrap();
        assert!(matches!(
            m,
            ClientMsg::Subscribe {
                resume_seq: None,
                ..
            }
        ));
        assert!(decode_text(r#"{"type":"dance"}"#).is_err());
        assert!(decode_binary(b"\xff\x00").is_err());
    }

    #[test]
    fn topics_parse() {
        let d = DoctorId::new();
        assert_eq!(Topic::parse(&format!("doctor:{d}")), Some(Topic::Doctor(d)));
        assert_eq!(
            Topic::parse(&format!("provider:{d}")),
            Some(Topic::Provider(d))
        );
        assert_eq!(Topic::parse("me"), Some(Topic::Me));
        assert_eq!(Topic::parse("doctor:nope"), None);
        assert_eq!(Topic::parse("weather:today"), None);
    }

    /// Fuzzing the client frame decoder: whatever a watcher sends, decoding
    /// answers `Ok` or `Err` and never panics; every message encodes and
    /// decodes back to itself.
    mod fuzz {
        use proptest::{collection, option, prelude::*};

        use super::*;

        fn time() -> impl Strategy<Value = DateTime<Utc>> {
            // Years 1..9999 with nanoseconds: anything chrono writes.
            (-62_135_596_800i64..253_402_300_799, 0u32..1_000_000_000)
                .prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap())
        }

        fn client_msg() -> impl Strategy<Value = ClientMsg> {
            prop_oneof![
                (
                    any::<String>(),
                    option::of(time()),
                    option::of(time()),
                    option::of(any::<u64>()),
                    option::of(any::<String>()),
                )
                    .prop_map(|(topic, from, to, resume_seq, epoch)| {
                        ClientMsg::Subscribe {
                            topic,
                            from,
                            to,
                            resume_seq,
                            epoch,
                        }
                    }),
                any::<String>().prop_map(|topic| ClientMsg::Unsubscribe { topic }),
                any::<String>().prop_map(|token| ClientMsg::Auth { token }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_binary_frames_never_panic(bytes in collection::vec(any::<u8>(), 0..256)) {
                let _ = decode_binary(&bytes);
            }

            #[test]
            fn arbitrary_text_frames_never_panic(text in any::<String>()) {
                let _ = decode_text(&text);
                let _ = Topic::parse(&text);
            }

            #[test]
            fn json_shaped_text_frames_never_panic(
                text in r#"[{}\[\]",:0-9a-z_\\ .eE+-]{0,64}"#,
            ) {
                let _ = decode_text(&text);
                let _ = decode_text(&format!(r#"{{"type":"subscribe","topic":"me",{text}"#));
            }

            #[test]
            fn client_messages_round_trip(m in client_msg()) {
                let json = serde_json::to_string(&m).unwrap();
                prop_assert_eq!(decode_text(&json).unwrap(), m.clone());
                let packed = rmp_serde::to_vec_named(&m).unwrap();
                prop_assert_eq!(decode_binary(&packed).unwrap(), m);
            }

            #[test]
            fn slot_deltas_round_trip_with_their_commit_instant(
                at in time(),
                start in option::of(time()),
                previous in option::of(time()),
                kind in prop::sample::select(vec![
                    ChangeKind::Held,
                    ChangeKind::Booked,
                    ChangeKind::Released,
                    ChangeKind::Rescheduled,
                    ChangeKind::ScheduleChanged,
                ]),
                seq in any::<u64>(),
            ) {
                let msg = ServerMsg::Delta {
                    topic: "doctor:x".into(),
                    seq,
                    data: DeltaData::Slot(SlotChange {
                        kind,
                        start,
                        end: start,
                        status: start.map(|_| SlotStatus::Booked),
                        previous_start: previous,
                        previous_end: previous,
                        at,
                    }),
                };
                for enc in [Encoding::Json, Encoding::MsgPack] {
                    let back = super::decode_server(&encode(&msg, enc));
                    let ServerMsg::Delta { data: DeltaData::Slot(c), .. } = &back else {
                        return Err(TestCaseError::fail(format!("{enc:?}: {back:?}")));
                    };
                    prop_assert_eq!(c.at, at);
                    prop_assert_eq!(&back, &msg);
                }
            }

            #[test]
            fn damaged_frames_never_panic(
                m in client_msg(),
                damage in collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
                cut in any::<prop::sample::Index>(),
            ) {
                let mut packed = rmp_serde::to_vec_named(&m).unwrap();
                let mut json = serde_json::to_string(&m).unwrap().into_bytes();
                for (at, byte) in &damage {
                    let i = at.index(packed.len());
                    packed[i] = *byte;
                    let j = at.index(json.len());
                    json[j] = *byte;
                }
                let _ = decode_binary(&packed);
                let _ = decode_binary(&packed[..cut.index(packed.len())]);
                let _ = decode_text(&String::from_utf8_lossy(&json));
            }
        }

        #[test]
        fn deeply_nested_frames_are_refused_not_overflowed() {
            // As large as a frame may be (live.max_frame_bytes): nesting
            // must hit a depth limit, not the stack.
            let json = "[".repeat(16 * 1024);
            assert!(decode_text(&json).is_err());
            let json = format!(r#"{{"type":"auth","token":{}"#, "[".repeat(16 * 1024));
            assert!(decode_text(&json).is_err());
            // MessagePack: a fixarray of one element, nested.
            let packed = vec![0x91u8; 16 * 1024];
            assert!(decode_binary(&packed).is_err());
            let mut packed = vec![0x82u8, 0xa4];
            packed.extend_from_slice(b"type");
            packed.extend(std::iter::repeat_n(0x81u8, 16 * 1024));
            assert!(decode_binary(&packed).is_err());
        }
    }
}
