//! The web app over plain HTTP: pages and assets with the page policy and
//! revalidation, and the API additions the pages use (.ics export, provider
//! statistics, doctor search by name).

use chrono::{Duration, DurationRound, Utc};
use docspot::domain::Role;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{RawAppointment, expect, spawn_app, tomorrow_at};

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[actix_web::test]
async fn pages_and_assets_are_served_with_the_page_policy_and_etags() {
    let app = spawn_app().await;
    for (path, ty) in [
        ("/", "text/html; charset=utf-8"),
        ("/provider", "text/html; charset=utf-8"),
        (
            "/display/0193d0c2-0000-7000-8000-000000000000",
            "text/html; charset=utf-8",
        ),
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/patient.js", "text/javascript; charset=utf-8"),
        ("/sw.js", "text/javascript; charset=utf-8"),
        ("/manifest.webmanifest", "application/manifest+json"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "content-type"), ty, "{path}");
        // The handler's policy wins over the API's `default-src 'none'`
        // (DefaultHeaders only adds headers that are missing).
        assert_eq!(
            header(&r, "content-security-policy"),
            docspot::web::PAGE_CSP,
            "{path}"
        );
        assert!(!header(&r, "content-security-policy").contains("unsafe"));
        assert_eq!(header(&r, "cache-control"), "no-cache", "{path}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{path}");
        let etag = header(&r, "etag");
        assert!(etag.starts_with('"') && etag.len() > 10, "{path}: {etag}");
        let again = app
            .client
            .get(app.url(path))
            .header("If-None-Match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.bytes().await.unwrap().is_empty());
    }
    let manifest: Value = app
        .client
        .get(app.url("/manifest.webmanifest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(manifest["start_url"], "/");
    assert_eq!(manifest["display"], "standalone");
    // PNG icons of the sizes installers ask for (192 and 512 px, one
    // maskable), and real PNGs of those sizes.
    let icons = manifest["icons"].as_array().unwrap();
    for (size, purpose) in [(192, "any"), (512, "any"), (512, "maskable")] {
        let icon = icons
            .iter()
            .find(|i| {
                i["type"] == "image/png"
                    && i["sizes"] == format!("{size}x{size}")
                    && i["purpose"] == purpose
            })
            .unwrap_or_else(|| panic!("no {size} px {purpose} PNG icon in {manifest}"));
        assert_png(&app, icon["src"].as_str().unwrap(), size).await;
    }
    // The home-screen icon iOS asks for, linked from every page.
    assert_png(&app, "/assets/apple-touch-icon.png", 180).await;
    for page in ["/", "/provider", "/display/x"] {
        let html = app
            .client
            .get(app.url(page))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            html.contains(r#"<link rel="apple-touch-icon" href="/assets/apple-touch-icon.png">"#),
            "{page}"
        );
    }

    // Unknown assets are a problem+json 404, and the API keeps its policy.
    let r = app
        .client
        .get(app.url("/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    let r = app
        .client
        .get(app.url("/api/v1/doctors"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "content-security-policy"),
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert_eq!(header(&r, "cache-control"), "no-store");
}

/// `path` is served as a PNG of `size`×`size` pixels (read from IHDR).
async fn assert_png(app: &crate::helpers::TestApp, path: &str, size: u32) {
    let r = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    assert_eq!(header(&r, "content-type"), "image/png", "{path}");
    let png = r.bytes().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{path}");
    assert_eq!(&png[12..16], b"IHDR", "{path}");
    let dim = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), (size, size), "{path}");
}

#[actix_web::test]
async fn an_appointment_downloads_as_an_rfc5545_file_for_those_who_may_see_it() {
    let app = spawn_app().await;
    let fx = app.fixture().await;
    let (_, token) = app.patient().await;
    let (_, stranger) = app.patient().await;
    let (_, doctor) = app.user(Role::Doctor, Some(&fx.doctor), None).await;
    let start = tomorrow_at(9, 30);
    let a = expect(app.book(&token, fx.doctor.id, start, None).await, 201).await;
    let path = format!("/api/v1/appointments/{}/ics", a["id"].as_str().unwrap());

    let r = app.get(&token, &path).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/calendar; charset=utf-8");
    assert!(header(&r, "content-disposition").starts_with("attachment; filename=\"docspot-"));
    let body = r.text().await.unwrap();
    assert!(
        body.starts_with("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"),
        "{body}"
    );
    assert!(body.contains(&format!(
        "\r\nDTSTART:{}\r\n",
        start.format("%Y%m%dT%H%M%SZ")
    )));
    assert!(body.contains(&format!(
        "\r\nDTEND:{}\r\n",
        (start + Duration::minutes(30)).format("%Y%m%dT%H%M%SZ")
    )));
    assert!(body.contains("\r\nSUMMARY:Appointment with Dr. Test\r\n"));
    // The address has a comma: escaped as TEXT requires.
    assert!(
        body.contains("\r\nLOCATION:Test Clinic\\, 1 Test Road\r\n"),
        "{body}"
    );
    assert!(body.contains("\r\nSTATUS:CONFIRMED\r\n"));
    assert!(body.contains("\r\nSEQUENCE:0\r\n"), "as booked: {body}");
    // (Long lines and their folding: see the reschedule test below.)

    // The doctor may export it too; another patient learns nothing.
    assert_eq!(app.get(&doctor, &path).await.status(), 200);
    let r = app.get(&stranger, &path).await;
    assert_eq!(r.status(), 404);
    assert_eq!(expect(r, 404).await["code"], "appointment_not_found");
    let r = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = app.get(&token, "/api/v1/appointments/not-a-uuid/ics").await;
    assert_eq!(expect(r, 404).await["code"], "appointment_not_found");

    // A hold is not exportable yet.
    let hold = expect(
        app.hold(&token, fx.doctor.id, tomorrow_at(11, 0)).await,
        201,
    )
    .await;
    let r = app
        .get(
            &token,
            &format!("/api/v1/appointments/{}/ics", hold["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(expect(r, 409).await["code"], "not_exportable");

    // A cancelled visit exports as cancelled (calendar apps remove it).
    expect(
        app.post(
            &token,
            &format!("/api/v1/appointments/{}/cancel", a["id"].as_str().unwrap()),
            serde_json::json!({}),
        )
        .await,
        200,
    )
    .await;
    let body = app.get(&token, &path).await.text().await.unwrap();
    assert!(body.contains("\r\nSTATUS:CANCELLED\r\n"));
}

#[actix_web::test]
async fn a_moved_visit_exports_a_newer_revision_with_long_lines_folded() {
    let app = spawn_app().await;
    // A long name and address (with a TAB, kept as TEXT allows): the
    // LOCATION line is far over 75 octets and must fold.
    let name = "Gemeinschaftspraxis für Allgemeinmedizin und Innere Medizin am Südbahnhof";
    let address = "Große Straße 123\tHinterhaus, 3. Obergeschoss; 60594 Frankfurt am Main";
    let clinic = app
        .state
        .store
        .create_clinic(docspot::store::ClinicFields {
            name: name.into(),
            address: address.into(),
            latitude: None,
            longitude: None,
            time_zone: "UTC".into(),
            cancellation_cutoff_minutes: 60,
            booking_horizon_days: 730,
        })
        .await
        .unwrap()
        .id;
    let fx = app.doctor_in(clinic, "Dr. Test", "08:00", "18:00").await;
    let (_, token) = app.patient().await;
    let a = expect(
        app.book(&token, fx.doctor.id, tomorrow_at(9, 30), None)
            .await,
        201,
    )
    .await;
    let id = a["id"].as_str().unwrap();
    let path = format!("/api/v1/appointments/{id}/ics");
    let first = app.get(&token, &path).await.text().await.unwrap();

    // Every physical line is at most 75 octets, continuation lines start
    // with a space, and unfolding (§3.1) gives the escaped value back.
    let physical: Vec<&str> = first.trim_end_matches("\r\n").split("\r\n").collect();
    for l in &physical {
        assert!(l.len() <= 75, "{} octets: {l:?}", l.len());
    }
    let start = physical
        .iter()
        .position(|l| l.starts_with("LOCATION:"))
        .unwrap();
    assert!(
        physical[start + 1].starts_with(' '),
        "LOCATION folds: {first}"
    );
    let unfolded = first.replace("\r\n ", "");
    let location = unfolded
        .split("\r\n")
        .find_map(|l| l.strip_prefix("LOCATION:"))
        .unwrap();
    assert_eq!(
        location,
        "Gemeinschaftspraxis für Allgemeinmedizin und Innere Medizin am Südbahnhof\\, \
         Große Straße 123\tHinterhaus\\, 3. Obergeschoss\\; 60594 Frankfurt am Main"
    );
    assert!(unfolded.contains("\r\nSEQUENCE:0\r\n"), "{unfolded}");
    let field = |ics: &str, key: &str| {
        ics.replace("\r\n ", "")
            .split("\r\n")
            .find_map(|l| l.strip_prefix(&format!("{key}:")).map(str::to_string))
            .unwrap_or_else(|| panic!("no {key} in {ics}"))
    };

    // Moved: the same UID with a higher SEQUENCE and a later LAST-MODIFIED,
    // so a calendar app replaces its copy.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    expect(
        app.post(
            &token,
            &format!("/api/v1/appointments/{id}/reschedule"),
            serde_json::json!({"start": tomorrow_at(11, 0)}),
        )
        .await,
        200,
    )
    .await;
    let moved = app.get(&token, &path).await.text().await.unwrap();
    assert_eq!(field(&moved, "UID"), field(&first, "UID"));
    assert_eq!(field(&moved, "SEQUENCE"), "1");
    assert!(
        field(&moved, "LAST-MODIFIED") > field(&first, "LAST-MODIFIED"),
        "{first}\n{moved}"
    );
    assert_eq!(
        field(&moved, "DTSTART"),
        tomorrow_at(11, 0).format("%Y%m%dT%H%M%SZ").to_string()
    );
    // Cancelled: one revision more.
    expect(
        app.post(
            &token,
            &format!("/api/v1/appointments/{id}/cancel"),
            serde_json::json!({}),
        )
        .await,
        200,
    )
    .await;
    let cancelled = app.get(&token, &path).await.text().await.unwrap();
    assert_eq!(field(&cancelled, "SEQUENCE"), "2");
    assert_eq!(field(&cancelled, "STATUS"), "CANCELLED");
}

#[actix_web::test]
async fn provider_stats_count_the_last_weeks_for_the_doctor_only() {
    let app = spawn_app().await;
    let fx = app.fixture().await; // UTC clinic, open 08:00–18:00 every day
    let (_, doctor) = app.user(Role::Doctor, Some(&fx.doctor), None).await;
    let other = app
        .doctor_in(fx.clinic, "Dr. Other", "08:00", "18:00")
        .await;
    let (_, other_doctor) = app.user(Role::Doctor, Some(&other.doctor), None).await;
    let (patient, patient_token) = app.patient().await;
    let (_, admin) = app.user(Role::ClinicAdmin, None, Some(fx.clinic)).await;

    // Past visits at 10:00 UTC, two and three days ago: one kept, one missed.
    let day = |n: i64| {
        (Utc::now() - Duration::days(n))
            .duration_trunc(Duration::days(1))
            .unwrap()
            + Duration::hours(10)
    };
    for (n, status) in [(2, "completed"), (3, "no_show"), (4, "cancelled")] {
        app.insert_raw(RawAppointment {
            id: Uuid::now_v7(),
            doctor: fx.doctor.id.0,
            patient: patient.id.0,
            visit_type: fx.visit_type.0,
            start: day(n),
            minutes: 30,
            status,
            hold_expires_at: None,
        })
        .await;
    }
    let path = format!("/api/v1/doctors/{}/stats?weeks=2", fx.doctor.id.0);
    let s = expect(app.get(&doctor, &path).await, 200).await;
    assert_eq!(s["time_zone"], "UTC");
    assert_eq!(s["completed"], 1);
    assert_eq!(s["no_show"], 1);
    assert_eq!(s["no_show_rate"], 0.5);
    let days = s["bookings_per_day"].as_array().unwrap();
    assert_eq!(days.len(), 14, "today and the 13 days before");
    let on = |n: i64| {
        let date = day(n).format("%Y-%m-%d").to_string();
        days.iter()
            .find(|d| d["date"] == date.as_str())
            .unwrap()
            .clone()
    };
    assert_eq!(on(2)["booked"], 1);
    assert_eq!(on(3)["booked"], 1);
    assert_eq!(on(4)["booked"], 0);
    assert_eq!(on(4)["cancelled"], 1);
    let hours = s["fill_by_hour"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    assert_eq!(hours[7]["fill_rate"], Value::Null, "closed at 07:00");
    // 10:00 was open on every past day (14×60 minutes, ± the current day);
    // two half hours of it were used.
    assert_eq!(hours[10]["booked_minutes"], 60);
    assert!(hours[10]["open_minutes"].as_u64().unwrap() >= 13 * 60);
    assert_eq!(s["no_show_by_week"].as_array().unwrap().len(), 2);

    // An admin of the clinic may look; the patient and another doctor not.
    assert_eq!(app.get(&admin, &path).await.status(), 200);
    let r = app.get(&patient_token, &path).await;
    assert_eq!(expect(r, 403).await["code"], "forbidden");
    assert_eq!(app.get(&other_doctor, &path).await.status(), 403);
    assert_eq!(
        app.client
            .get(app.url(&path))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    for bad in ["0", "27"] {
        let r = app
            .get(
                &doctor,
                &format!("/api/v1/doctors/{}/stats?weeks={bad}", fx.doctor.id.0),
            )
            .await;
        assert_eq!(expect(r, 422).await["code"], "invalid_weeks");
    }
    let r = app
        .get(
            &doctor,
            &format!("/api/v1/doctors/{}/stats?weeks=many", fx.doctor.id.0),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    let r = app.get(&doctor, "/api/v1/doctors/nobody/stats").await;
    assert_eq!(expect(r, 404).await["code"], "doctor_not_found");
}

#[actix_web::test]
async fn doctors_are_found_by_name_and_the_new_endpoints_are_documented() {
    let app = spawn_app().await;
    let fx = app.fixture().await;
    app.doctor_in(fx.clinic, "Dr. Amara Okafor", "08:00", "18:00")
        .await;
    let r = app
        .client
        .get(app.url("/api/v1/doctors?name=okaf"))
        .send()
        .await
        .unwrap();
    let v = expect(r, 200).await;
    let names: Vec<&str> = v["doctors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Dr. Amara Okafor"]);
    let r = app
        .client
        .get(app.url(&format!("/api/v1/doctors?name=%20&clinic={}", fx.clinic.0)))
        .send()
        .await
        .unwrap();
    assert_eq!(expect(r, 200).await["doctors"].as_array().unwrap().len(), 2);

    let doc = app.openapi().await;
    let paths = &doc["paths"];
    assert!(paths["/api/v1/appointments/{id}/ics"]["get"].is_object());
    assert!(paths["/api/v1/doctors/{id}/stats"]["get"].is_object());
    let params = paths["/api/v1/doctors"]["get"]["parameters"]
        .as_array()
        .unwrap();
    assert!(params.iter().any(|p| p["name"] == "name"));
    assert!(doc["components"]["schemas"]["ProviderStats"].is_object());
}

#[actix_web::test]
async fn a_wall_display_resuming_after_a_drop_gets_the_lines_that_changed_meanwhile() {
    let app = spawn_app().await;
    let fx = app.fixture().await;
    let (_, token) = app.patient().await;
    let topic = format!("clinic:{}", fx.clinic.0);
    let mut ws = app.ws_connect(None, false).await;
    let snap = ws
        .subscribe(serde_json::json!({"type": "subscribe", "topic": topic}))
        .await;
    let (seq, epoch) = (snap["seq"].as_u64().unwrap(), snap["epoch"].clone());
    let next_free = snap["data"]["doctors"][0]["next_free"]["start"]
        .as_str()
        .expect("a next free slot")
        .to_string();
    drop(ws);
    // Give the server a moment to see the socket gone: nobody watches now.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    expect(
        app.book(&token, fx.doctor.id, next_free.parse().unwrap(), None)
            .await,
        201,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let mut ws = app.ws_connect(None, false).await;
    ws.send(
        serde_json::json!({"type": "subscribe", "topic": topic, "resume_seq": seq, "epoch": epoch}),
    )
    .await;
    // The missed delta, or a fresh snapshot: never silence, never stale.
    let m = ws
        .recv_within(3)
        .await
        .expect("the resumed display hears of the booking");
    let line = match m["type"].as_str() {
        Some("delta") => m["data"]["doctor"].clone(),
        Some("snapshot") => m["data"]["doctors"][0].clone(),
        _ => panic!("{m}"),
    };
    assert_ne!(
        line["next_free"]["start"].as_str(),
        Some(next_free.as_str()),
        "{m}"
    );
}
