//! `GET /api/v1/appointments/{id}/ics`: one appointment as an iCalendar file
//! (RFC 5545) a patient can add to any calendar app.
//!
//! The file is rendered here rather than in the browser so every client gets
//! the same, correct text: escaped TEXT values (§3.3.11), lines folded at 75
//! octets without splitting a UTF-8 character (§3.1), CRLF line ends, and
//! times in UTC (`…Z`, §3.3.5 form #2) so no VTIMEZONE block is needed.
//!
//! A visit that was moved or cancelled exports with a higher `SEQUENCE` and
//! a later `LAST-MODIFIED` (§3.8.7.4, §3.8.7.3): downloaded again, it
//! replaces the copy a calendar app already has (same `UID`) instead of
//! being ignored as an older or equal revision.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use docspot_actors::domain::AppointmentStatus;

use crate::{
    audit::Audit,
    auth::AuthUser,
    error::ApiError,
    routes::{State, booking::read_appointment},
};

/// What goes into one VEVENT.
#[derive(Debug, Clone)]
pub struct IcsEvent {
    /// Globally unique, stable across downloads (calendar apps update the
    /// event instead of duplicating it).
    pub uid: String,
    /// When the file was made.
    pub stamp: DateTime<Utc>,
    /// The revision: how often the visit was moved or cancelled (0 as
    /// booked).
    pub sequence: u32,
    /// When the visit last changed.
    pub last_modified: DateTime<Utc>,
    /// Visit start.
    pub start: DateTime<Utc>,
    /// Visit end.
    pub end: DateTime<Utc>,
    /// Title.
    pub summary: String,
    /// Where.
    pub location: String,
    /// Free text.
    pub description: String,
    /// Cancelled visits are exported as `STATUS:CANCELLED`.
    pub cancelled: bool,
}

/// Escapes a TEXT value: backslash, semicolon, comma and newlines (§3.3.11).
/// Carriage returns are dropped: a bare CR is not a line break in iCalendar.
/// A TAB stays as it is (TEXT allows it: TSAFE-CHAR includes WSP).
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            '\t' => out.push('\t'),
            // Other control characters are not allowed in TEXT (§3.3.11).
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Folds one content line: at most 75 octets per physical line, each
/// continuation starting with a space, never inside a UTF-8 sequence (§3.1).
pub fn fold_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + line.len() / 70 * 3);
    // The first line holds 75 octets; a continuation 74 plus its leading space.
    let mut room = 75;
    let mut used = 0;
    for c in line.chars() {
        let n = c.len_utf8();
        if used + n > room {
            out.push_str("\r\n ");
            room = 74;
            used = 0;
        }
        out.push(c);
        used += n;
    }
    out.push_str("\r\n");
    out
}

/// A UTC date-time in iCalendar's basic form, `20261126T083000Z`.
pub fn utc_stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Renders the whole calendar file.
pub fn render(e: &IcsEvent) -> String {
    let lines = [
        "BEGIN:VCALENDAR".to_string(),
        "VERSION:2.0".to_string(),
        "PRODID:-//DocSpot//Appointments//EN".to_string(),
        "CALSCALE:GREGORIAN".to_string(),
        "METHOD:PUBLISH".to_string(),
        "BEGIN:VEVENT".to_string(),
        format!("UID:{}", escape_text(&e.uid)),
        format!("DTSTAMP:{}", utc_stamp(e.stamp)),
        format!("SEQUENCE:{}", e.sequence),
        format!("LAST-MODIFIED:{}", utc_stamp(e.last_modified)),
        format!("DTSTART:{}", utc_stamp(e.start)),
        format!("DTEND:{}", utc_stamp(e.end)),
        format!("SUMMARY:{}", escape_text(&e.summary)),
        format!("LOCATION:{}", escape_text(&e.location)),
        format!("DESCRIPTION:{}", escape_text(&e.description)),
        format!(
            "STATUS:{}",
            if e.cancelled {
                "CANCELLED"
            } else {
                "CONFIRMED"
            }
        ),
        "TRANSP:OPAQUE".to_string(),
        "END:VEVENT".to_string(),
        "END:VCALENDAR".to_string(),
    ];
    lines.iter().map(|l| fold_line(l)).collect()
}

/// Downloads an appointment as an iCalendar file (the patient, the doctor or
/// a clinic admin; others get 404 so ids leak nothing).
#[utoipa::path(get, path = "/api/v1/appointments/{id}/ics", tag = "appointments",
    security(("bearer" = [])),
    responses((status = 200, content_type = "text/calendar", body = String, description = "RFC 5545 file"),
        (status = 401, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem, description = "not_exportable: a hold")))]
pub async fn appointment_ics(
    state: State,
    user: AuthUser,
    audit: Audit,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = crate::routes::booking::appointment_id(&path)?;
    let a = read_appointment(&state, &user, &audit, id).await?;
    if a.status == AppointmentStatus::Held {
        return Err(ApiError::conflict(
            "not_exportable",
            "a hold is not an appointment yet: confirm it first",
        ));
    }
    let doctor = state.store.doctor(a.doctor_id).await?;
    // Its history: every move or cancellation is a new revision.
    let changes = state.store.appointment_alerts(a.doctor_id, a.id).await?;
    let sequence = changes
        .iter()
        .filter(|c| c.kind == "rescheduled" || c.kind == "cancelled")
        .count() as u32;
    let last_modified = changes
        .iter()
        .map(|c| c.at)
        .max()
        .unwrap_or(a.created_at)
        .max(a.created_at);
    let clinic = match &doctor {
        Some(d) => state.store.clinic(d.clinic_id).await?,
        None => None,
    };
    let doctor_name = doctor.map(|d| d.name).unwrap_or_default();
    let (clinic_name, address) = clinic.map(|c| (c.name, c.address)).unwrap_or_default();
    let event = IcsEvent {
        uid: format!("{}@docspot", a.id.0),
        stamp: Utc::now(),
        sequence,
        last_modified,
        start: a.time.start(),
        end: a.time.end(),
        summary: format!("Appointment with {doctor_name}"),
        location: [clinic_name, address]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(", "),
        description: format!("DocSpot appointment {}", a.id.0),
        cancelled: a.status == AppointmentStatus::Cancelled,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/calendar; charset=utf-8")
        .insert_header((
            "Content-Disposition",
            format!("attachment; filename=\"docspot-{}.ics\"", a.id.0),
        ))
        .body(render(&event)))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn text_values_escape_the_four_specials_and_drop_cr() {
        assert_eq!(
            escape_text("a\\b;c,d\r\ne"),
            "a\\\\b\\;c\\,d\\ne",
            "backslash first so escapes are not doubled"
        );
        assert_eq!(escape_text("plain"), "plain");
        assert_eq!(escape_text("bell\u{7}"), "bell");
        assert_eq!(escape_text("a\tb"), "a\tb", "TAB is allowed in TEXT");
    }

    #[test]
    fn short_lines_are_not_folded() {
        assert_eq!(fold_line("SUMMARY:x"), "SUMMARY:x\r\n");
        let exactly_75 = "X".repeat(75);
        assert_eq!(fold_line(&exactly_75), format!("{exactly_75}\r\n"));
    }

    #[test]
    fn long_lines_fold_at_75_octets_with_a_leading_space() {
        let line = format!("DESCRIPTION:{}", "a".repeat(200));
        let folded = fold_line(&line);
        let physical: Vec<&str> = folded.trim_end_matches("\r\n").split("\r\n").collect();
        assert!(physical.len() > 2);
        assert_eq!(physical[0].len(), 75);
        for p in &physical[1..] {
            assert!(p.starts_with(' '));
            assert!(p.len() <= 75);
        }
        // Unfolding (§3.1: drop CRLF + one space) gives the original back.
        assert_eq!(folded.replace("\r\n ", "").trim_end_matches("\r\n"), line);
    }

    #[test]
    fn folding_never_splits_a_utf8_character() {
        // "ü" is two octets: a naive 75-byte cut would land inside one.
        let line = format!("SUMMARY:{}", "ü".repeat(100));
        let folded = fold_line(&line);
        for p in folded.split("\r\n") {
            assert!(p.len() <= 75, "{} octets", p.len());
        }
        assert_eq!(folded.replace("\r\n ", "").trim_end_matches("\r\n"), line);
    }

    #[test]
    fn renders_a_complete_calendar_in_utc() {
        // 09:30 in Berlin is 08:30 UTC: the file carries UTC with a Z.
        let start = Utc.with_ymd_and_hms(2026, 11, 26, 8, 30, 0).unwrap();
        let e = IcsEvent {
            uid: "abc@docspot".into(),
            stamp: Utc.with_ymd_and_hms(2026, 11, 20, 7, 0, 5).unwrap(),
            sequence: 2,
            last_modified: Utc.with_ymd_and_hms(2026, 11, 19, 18, 4, 0).unwrap(),
            start,
            end: start + chrono::Duration::minutes(30),
            summary: "Appointment with Dr. Okafor, MD".into(),
            location: "Clinic; Berlin".into(),
            description: "line1\nline2".into(),
            cancelled: false,
        };
        let s = render(&e);
        assert!(s.starts_with("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"));
        assert!(s.ends_with("END:VEVENT\r\nEND:VCALENDAR\r\n"));
        assert!(s.contains("\r\nDTSTART:20261126T083000Z\r\n"));
        assert!(s.contains("\r\nDTEND:20261126T090000Z\r\n"));
        assert!(s.contains("\r\nDTSTAMP:20261120T070005Z\r\n"));
        assert!(s.contains("\r\nSEQUENCE:2\r\n"));
        assert!(s.contains("\r\nLAST-MODIFIED:20261119T180400Z\r\n"));
        assert!(s.contains("\r\nSUMMARY:Appointment with Dr. Okafor\\, MD\r\n"));
        assert!(s.contains("\r\nLOCATION:Clinic\\; Berlin\r\n"));
        assert!(s.contains("\r\nDESCRIPTION:line1\\nline2\r\n"));
        assert!(s.contains("\r\nSTATUS:CONFIRMED\r\n"));
        // No bare LF anywhere.
        assert_eq!(s.matches('\n').count(), s.matches("\r\n").count());
        let cancelled = render(&IcsEvent {
            cancelled: true,
            ..e
        });
        assert!(cancelled.contains("\r\nSTATUS:CANCELLED\r\n"));
    }
}
