//! Patient profile, appointment details, data export and erasure.

use chrono::{Duration, Utc};
use docspot::domain::Role;
use serde_json::json;
use uuid::Uuid;

use crate::{
    encryption::{login, oauth_error, put},
    helpers::{Options, RawAppointment, expect, spawn_app, spawn_app_with, tomorrow_at},
};

#[actix_web::test]
async fn patients_keep_a_profile_with_phone_and_date_of_birth() {
    let app = spawn_app().await;
    let (_, token) = app.patient().await;
    let empty = expect(app.get(&token, "/api/v1/me/profile").await, 200).await;
    assert!(empty["phone"].is_null() && empty["date_of_birth"].is_null());

    let body = json!({"phone": "+1 (555) 010-9999", "date_of_birth": "1990-05-17"});
    let saved = expect(put(&app, &token, "/api/v1/me/profile", body).await, 200).await;
    assert_eq!(saved["phone"], "+1 (555) 010-9999");
    assert_eq!(saved["date_of_birth"], "1990-05-17");
    let read = expect(app.get(&token, "/api/v1/me/profile").await, 200).await;
    assert_eq!(read, saved);

    for (body, code) in [
        (json!({"phone": "call me maybe"}), "invalid_phone"),
        (json!({"phone": "12"}), "invalid_phone"),
        (
            json!({"date_of_birth": "17.05.1990"}),
            "invalid_date_of_birth",
        ),
        (
            json!({"date_of_birth": "2999-01-01"}),
            "invalid_date_of_birth",
        ),
    ] {
        let r = put(&app, &token, "/api/v1/me/profile", body).await;
        assert_eq!(expect(r, 422).await["code"], code);
    }
    let r = put(&app, &token, "/api/v1/me/profile", json!({"phone": 5})).await;
    expect(r, 400).await;
    // PUT replaces: absent fields are cleared.
    let cleared = expect(
        put(&app, &token, "/api/v1/me/profile", json!({})).await,
        200,
    )
    .await;
    assert!(cleared["phone"].is_null() && cleared["date_of_birth"].is_null());

    let f = app.fixture().await;
    let (_, doctor) = app.user(Role::Doctor, Some(&f.doctor), None).await;
    expect(app.get(&doctor, "/api/v1/me/profile").await, 403).await;
    expect(app.get("not-a-token", "/api/v1/me/profile").await, 401).await;
}

#[actix_web::test]
async fn appointment_details_are_written_by_their_owners_and_shown_with_the_appointment() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, patient) = app.patient().await;
    let (_, stranger) = app.patient().await;
    let (_, doctor) = app.user(Role::Doctor, Some(&f.doctor), None).await;
    let (_, admin) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;
    let other_clinic = app.clinic("UTC", 0).await;
    let (_, other_admin) = app.user(Role::ClinicAdmin, None, Some(other_clinic)).await;
    let a = expect(
        app.book(&patient, f.doctor.id, tomorrow_at(9, 0), None)
            .await,
        201,
    )
    .await;
    let id = a["id"].as_str().unwrap();
    let path = format!("/api/v1/appointments/{id}/details");

    let r = put(&app, &patient, &path, json!({"reason": "  Knee pain  "})).await;
    assert_eq!(expect(r, 200).await["details"]["reason"], "Knee pain");
    expect(
        put(&app, &patient, &path, json!({"notes": "self-diagnosis"})).await,
        403,
    )
    .await;
    let r = put(
        &app,
        &doctor,
        &path,
        json!({"notes": "Refer to orthopaedics"}),
    )
    .await;
    let v = expect(r, 200).await;
    assert_eq!(v["details"]["reason"], "Knee pain", "the reason stays");
    assert_eq!(v["details"]["notes"], "Refer to orthopaedics");
    assert_eq!(v["status"], "booked");
    expect(put(&app, &doctor, &path, json!({"reason": "x"})).await, 403).await;
    let r = put(
        &app,
        &admin,
        &path,
        json!({"notes": "Admin: insurance checked"}),
    )
    .await;
    assert_eq!(
        expect(r, 200).await["details"]["notes"],
        "Admin: insurance checked"
    );
    expect(
        put(&app, &stranger, &path, json!({"reason": "x"})).await,
        404,
    )
    .await;
    expect(
        put(&app, &other_admin, &path, json!({"notes": "x"})).await,
        404,
    )
    .await;
    let r = put(&app, &patient, &path, json!({})).await;
    assert_eq!(expect(r, 422).await["code"], "nothing_to_change");
    let long = "x".repeat(2001);
    let r = put(&app, &patient, &path, json!({ "reason": long })).await;
    assert_eq!(expect(r, 422).await["code"], "too_long");
    let r = put(
        &app,
        &patient,
        "/api/v1/appointments/nope/details",
        json!({"reason": "x"}),
    )
    .await;
    expect(r, 404).await;

    for token in [&patient, &doctor, &admin] {
        let v = expect(
            app.get(token, &format!("/api/v1/appointments/{id}")).await,
            200,
        )
        .await;
        assert_eq!(v["id"], id);
        assert_eq!(v["details"]["reason"], "Knee pain");
        assert_eq!(v["details"]["notes"], "Admin: insurance checked");
    }
    // An empty string clears a field.
    let r = put(&app, &patient, &path, json!({"reason": ""})).await;
    assert!(expect(r, 200).await["details"]["reason"].is_null());
    // Without details, none are shown.
    let b = expect(
        app.book(&patient, f.doctor.id, tomorrow_at(10, 0), None)
            .await,
        201,
    )
    .await;
    let v = expect(
        app.get(
            &patient,
            &format!("/api/v1/appointments/{}", b["id"].as_str().unwrap()),
        )
        .await,
        200,
    )
    .await;
    assert!(v.get("details").is_none());
}

#[actix_web::test]
async fn the_export_holds_everything_kept_about_the_patient() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    expect(
        app.register("export.me@example.org", "password-123", "Exa Port")
            .await,
        201,
    )
    .await;
    let token = login(&app, "export.me@example.org", "password-123").await;
    let profile = json!({"phone": "+44 20 7946 0000", "date_of_birth": "1985-12-24"});
    expect(put(&app, &token, "/api/v1/me/profile", profile).await, 200).await;
    let a = expect(
        app.book(&token, f.doctor.id, tomorrow_at(9, 0), None).await,
        201,
    )
    .await;
    let id = a["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/appointments/{id}/details");
    expect(
        put(&app, &token, &path, json!({"reason": "Check-up"})).await,
        200,
    )
    .await;
    let b = expect(
        app.book(&token, f.doctor.id, tomorrow_at(11, 0), None)
            .await,
        201,
    )
    .await;
    let cancel = format!("/api/v1/appointments/{}/cancel", b["id"].as_str().unwrap());
    let why = json!({"reason": "Found a nearer practice"});
    expect(app.post(&token, &cancel, why).await, 200).await;
    let from = (Utc::now() + Duration::days(1)).to_rfc3339();
    let r = app
        .client
        .get(app.url(&format!("/api/v1/doctors/{}/suggestions", f.doctor.id)))
        .bearer_auth(&token)
        .query(&[("from", from)])
        .send()
        .await
        .unwrap();
    expect(r, 200).await;

    let r = app.get(&token, "/api/v1/me/export").await;
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let x = expect(r, 200).await;
    assert_eq!(x["account"]["email"], "export.me@example.org");
    assert_eq!(x["account"]["name"], "Exa Port");
    assert_eq!(x["account"]["role"], "patient");
    assert_eq!(x["profile"]["phone"], "+44 20 7946 0000");
    assert_eq!(x["profile"]["date_of_birth"], "1985-12-24");
    let appts = x["appointments"].as_array().unwrap();
    assert_eq!(appts.len(), 2);
    let booked = appts.iter().find(|a| a["id"] == id.as_str()).unwrap();
    assert_eq!(booked["status"], "booked");
    assert_eq!(booked["details"]["reason"], "Check-up");
    assert_eq!(booked["history"][0]["action"], "book");
    let cancelled = appts.iter().find(|a| a["id"] != id.as_str()).unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["history"].as_array().unwrap().len(), 2);
    assert_eq!(
        cancelled["details"]["cancel_reason"],
        "Found a nearer practice"
    );
    assert!(cancelled["details"]["reason"].is_null());
    let logs = x["suggestion_logs"].as_array().unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["doctor_id"], f.doctor.id.to_string());

    let (_, doctor) = app.user(Role::Doctor, Some(&f.doctor), None).await;
    expect(app.get(&doctor, "/api/v1/me/export").await, 403).await;
}

#[actix_web::test]
async fn erasure_anonymises_the_patient_cancels_future_visits_and_keeps_past_ones() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, admin) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;
    let email = "erase.me@example.org";
    expect(app.register(email, "password-123", "Erin Erase").await, 201).await;
    let r = app
        .token(&[
            ("grant_type", "password"),
            ("username", email),
            ("password", "password-123"),
        ])
        .await;
    let tokens = expect(r, 200).await;
    let token = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let profile = json!({"phone": "+1 555 0100", "date_of_birth": "1975-07-07"});
    expect(put(&app, &token, "/api/v1/me/profile", profile).await, 200).await;
    let me = expect(app.get(&token, "/api/v1/me/export").await, 200).await;
    let patient: Uuid = me["account"]["id"].as_str().unwrap().parse().unwrap();

    let future = expect(
        app.book(&token, f.doctor.id, tomorrow_at(10, 0), None)
            .await,
        201,
    )
    .await;
    let future_id: Uuid = future["id"].as_str().unwrap().parse().unwrap();
    let details = format!("/api/v1/appointments/{future_id}/details");
    expect(
        put(&app, &token, &details, json!({"reason": "Migraine"})).await,
        200,
    )
    .await;
    let past_id = Uuid::now_v7();
    app.insert_raw(RawAppointment {
        id: past_id,
        doctor: f.doctor.id.0,
        patient,
        visit_type: f.visit_type.0,
        start: Utc::now() - Duration::days(3),
        minutes: 30,
        status: "completed",
        hold_expires_at: None,
    })
    .await;
    let past_details = format!("/api/v1/appointments/{past_id}/details");
    expect(
        put(
            &app,
            &admin,
            &past_details,
            json!({"notes": "Prescribed rest"}),
        )
        .await,
        200,
    )
    .await;
    // A visit the patient cancelled, saying why.
    let gone = expect(
        app.book(&token, f.doctor.id, tomorrow_at(12, 0), None)
            .await,
        201,
    )
    .await;
    let gone_id = gone["id"].as_str().unwrap().to_string();
    let why = "Started chemotherapy at another hospital";
    expect(
        app.post(
            &token,
            &format!("/api/v1/appointments/{gone_id}/cancel"),
            json!({ "reason": why }),
        )
        .await,
        200,
    )
    .await;
    let seen = expect(
        app.get(&admin, &format!("/api/v1/appointments/{gone_id}"))
            .await,
        200,
    )
    .await;
    assert_eq!(seen["details"]["cancel_reason"], why);
    let day = tomorrow_at(0, 0);
    assert!(
        !app.slots(f.doctor.id, day, day + Duration::days(1))
            .await
            .contains(&tomorrow_at(10, 0))
    );

    let r = app
        .post(
            &token,
            "/api/v1/me/erase",
            json!({"password": "wrong-password"}),
        )
        .await;
    assert_eq!(expect(r, 401).await["code"], "wrong_password");
    expect(app.post(&token, "/api/v1/me/erase", json!({})).await, 400).await;
    let r = app
        .post(
            &token,
            "/api/v1/me/erase",
            json!({"password": "password-123"}),
        )
        .await;
    let report = expect(r, 200).await;
    assert_eq!(
        report["cancelled_appointments"],
        json!([future_id.to_string()])
    );
    assert_eq!(report["kept_appointments"], 2);
    assert_eq!(report["details_deleted"], 3);
    assert_eq!(report["tokens_revoked"], 1);

    // The future visit was cancelled through the calendar: its slot is free.
    assert!(
        app.slots(f.doctor.id, day, day + Duration::days(1))
            .await
            .contains(&tomorrow_at(10, 0))
    );
    assert_eq!(app.raw_status(future_id).await.0, "cancelled");
    // The past one stays for the clinic's records, without its notes.
    let past = expect(
        app.get(&admin, &format!("/api/v1/appointments/{past_id}"))
            .await,
        200,
    )
    .await;
    assert_eq!(past["status"], "completed");
    assert_eq!(past["patient_id"], patient.to_string());
    assert_eq!(past["doctor_id"], f.doctor.id.to_string());
    assert!(past.get("details").is_none());
    let history = expect(
        app.get(&admin, &format!("/api/v1/appointments/{future_id}/history"))
            .await,
        200,
    )
    .await;
    let last = history["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], "cancel");
    assert_eq!(last["note"], "patient data erased");
    // The cancellation reason went with the details, and no copy of it is
    // left anywhere (the row, its history).
    let gone = expect(
        app.get(&admin, &format!("/api/v1/appointments/{gone_id}"))
            .await,
        200,
    )
    .await;
    assert_eq!(gone["status"], "cancelled");
    assert!(gone.get("details").is_none() && gone.get("cancel_reason").is_none());
    let history = expect(
        app.get(&admin, &format!("/api/v1/appointments/{gone_id}/history"))
            .await,
        200,
    )
    .await;
    assert!(!history.to_string().contains("chemotherapy"));
    assert!(
        !crate::encryption::raw_dump(&app)
            .await
            .contains("chemotherapy")
    );

    // No way back in, and nothing personal left.
    let r = app
        .token(&[
            ("grant_type", "password"),
            ("username", email),
            ("password", "password-123"),
        ])
        .await;
    assert_eq!(oauth_error(r).await, "invalid_grant");
    let r = app
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
        .await;
    assert_eq!(oauth_error(r).await, "invalid_grant");
    let left = expect(app.get(&token, "/api/v1/me/profile").await, 200).await;
    assert_eq!(left["email"], "");
    assert_eq!(left["name"], "erased patient");
    assert!(left["phone"].is_null() && left["date_of_birth"].is_null());
    // The address may register again, as a new account.
    let again = expect(app.register(email, "password-456", "Erin Again").await, 201).await;
    assert_ne!(again["id"], patient.to_string());
    login(&app, email, "password-456").await;
}

#[actix_web::test]
async fn clinic_admins_erase_patients_of_their_own_clinic_only() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, admin) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;
    let other_clinic = app.clinic("UTC", 0).await;
    let (_, other_admin) = app.user(Role::ClinicAdmin, None, Some(other_clinic)).await;
    let (patient, token) = app.patient().await;
    expect(
        app.book(&token, f.doctor.id, tomorrow_at(9, 0), None).await,
        201,
    )
    .await;
    let path = format!("/api/v1/patients/{}/erase", patient.id);

    expect(app.post(&other_admin, &path, json!({})).await, 404).await;
    expect(app.post(&token, &path, json!({})).await, 403).await;
    expect(
        app.post(&admin, "/api/v1/patients/nope/erase", json!({}))
            .await,
        404,
    )
    .await;
    let report = expect(app.post(&admin, &path, json!({})).await, 200).await;
    assert_eq!(
        report["cancelled_appointments"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        app.state
            .store
            .user(patient.id)
            .await
            .unwrap()
            .unwrap()
            .name,
        "erased patient"
    );
    // Erasing again is harmless.
    let again = expect(app.post(&admin, &path, json!({})).await, 200).await;
    assert_eq!(again["cancelled_appointments"], json!([]));
    // Staff accounts are not patients.
    let (doctor_user, _) = app.user(Role::Doctor, Some(&f.doctor), None).await;
    let (_, platform) = app.user(Role::ClinicAdmin, None, None).await;
    let path = format!("/api/v1/patients/{}/erase", doctor_user.id);
    expect(app.post(&platform, &path, json!({})).await, 404).await;
}

#[actix_web::test]
async fn an_erased_account_cannot_refresh_even_with_a_live_token() {
    let app = spawn_app().await;
    let (patient, token) = app.patient().await;
    let r = app
        .post(
            &token,
            "/api/v1/me/erase",
            json!({"password": "password-123"}),
        )
        .await;
    expect(r, 200).await;
    // A token written after the erasure revoked the others (a refresh
    // racing with it): still refused, the account is erased.
    let (refresh, digest) = docspot::auth::new_refresh_token();
    app.state
        .store
        .insert_refresh_token(
            patient.id,
            &digest,
            Uuid::now_v7(),
            Utc::now() + Duration::days(1),
        )
        .await
        .unwrap();
    let r = app
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
        .await;
    assert_eq!(oauth_error(r).await, "invalid_grant");
}

#[actix_web::test]
async fn erasure_deletes_the_patients_suggestion_log() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (patient, token) = app.patient().await;
    let from = (Utc::now() + Duration::days(1)).to_rfc3339();
    let r = app
        .client
        .get(app.url(&format!("/api/v1/doctors/{}/suggestions", f.doctor.id)))
        .bearer_auth(&token)
        .query(&[("from", from)])
        .send()
        .await
        .unwrap();
    expect(r, 200).await;
    let before = app
        .state
        .store
        .suggestion_logs_of(patient.id)
        .await
        .unwrap();
    assert_eq!(before.len(), 1);
    let r = app
        .post(
            &token,
            "/api/v1/me/erase",
            json!({"password": "password-123"}),
        )
        .await;
    expect(r, 200).await;
    assert!(
        app.state
            .store
            .suggestion_logs_of(patient.id)
            .await
            .unwrap()
            .is_empty()
    );
    let x = expect(app.get(&token, "/api/v1/me/export").await, 200).await;
    assert_eq!(x["suggestion_logs"], json!([]));
}

#[actix_web::test]
async fn erasure_skips_what_is_gone_already_and_can_be_run_again() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (patient, token) = app.patient().await;
    let booked = expect(
        app.book(&token, f.doctor.id, tomorrow_at(10, 0), None)
            .await,
        201,
    )
    .await;
    let booked: Uuid = booked["id"].as_str().unwrap().parse().unwrap();
    // A hold that lapsed behind the calendar's back (its actor is loaded
    // already and does not know it): nothing left to cancel there.
    app.insert_raw(RawAppointment {
        id: Uuid::now_v7(),
        doctor: f.doctor.id.0,
        patient: patient.id.0,
        visit_type: f.visit_type.0,
        start: tomorrow_at(14, 0),
        minutes: 30,
        status: "held",
        hold_expires_at: Some(Utc::now() - Duration::minutes(5)),
    })
    .await;
    let r = app
        .post(
            &token,
            "/api/v1/me/erase",
            json!({"password": "password-123"}),
        )
        .await;
    let report = expect(r, 200).await;
    assert!(
        report["cancelled_appointments"]
            .as_array()
            .unwrap()
            .contains(&json!(booked.to_string())),
        "{report}"
    );
    assert_eq!(app.raw_status(booked).await.0, "cancelled");
    // Again: the password is gone with the account, and not asked for.
    let r = app
        .post(&token, "/api/v1/me/erase", json!({"password": "anything"}))
        .await;
    let again = expect(r, 200).await;
    assert_eq!(again["cancelled_appointments"], json!([]));
    // Each run is in the audit log.
    let (_, root) = app.user(Role::ClinicAdmin, None, None).await;
    let r = app
        .get(
            &root,
            &format!(
                "/api/v1/audit?action=patient.erase&patient_id={}",
                patient.id
            ),
        )
        .await;
    let logged = expect(r, 200).await;
    assert_eq!(logged["entries"].as_array().unwrap().len(), 2, "{logged}");
}

#[actix_web::test]
async fn a_clinic_admin_cannot_erase_a_patient_of_other_clinics_too() {
    let app = spawn_app().await;
    let f = app.fixture().await;
    let (_, admin) = app.user(Role::ClinicAdmin, None, Some(f.clinic)).await;
    let other_clinic = app.clinic("UTC", 0).await;
    let other = app
        .doctor_in(other_clinic, "Dr. Elsewhere", "08:00", "18:00")
        .await;
    let (patient, token) = app.patient().await;
    for doctor in [f.doctor.id, other.doctor.id] {
        expect(app.book(&token, doctor, tomorrow_at(9, 0), None).await, 201).await;
    }
    let path = format!("/api/v1/patients/{}/erase", patient.id);
    let r = expect(app.post(&admin, &path, json!({})).await, 403).await;
    assert_eq!(r["code"], "cross_clinic_patient", "{r}");
    assert_eq!(
        app.state
            .store
            .user(patient.id)
            .await
            .unwrap()
            .unwrap()
            .name,
        patient.name,
        "nothing was erased"
    );
    // A platform admin may.
    let (_, root) = app.user(Role::ClinicAdmin, None, None).await;
    let report = expect(app.post(&root, &path, json!({})).await, 200).await;
    assert_eq!(
        report["cancelled_appointments"].as_array().unwrap().len(),
        2
    );

    // A mere hold at the admin's clinic does not make a patient theirs.
    let (patient, token) = app.patient().await;
    expect(app.hold(&token, f.doctor.id, tomorrow_at(11, 0)).await, 201).await;
    let path = format!("/api/v1/patients/{}/erase", patient.id);
    expect(app.post(&admin, &path, json!({})).await, 404).await;
}

#[actix_web::test]
async fn wrong_erasure_passwords_lock_out_like_failed_logins() {
    let app = spawn_app_with(Options {
        settings: Some(std::sync::Arc::new(|s: &mut docspot::config::Settings| {
            s.rate_limit.login_failures.max_per_account = 3;
            s.rate_limit.login_failures.lockout_secs = 600;
        })),
        ..Default::default()
    })
    .await;
    let (patient, token) = app.patient().await;
    for _ in 0..3 {
        let r = app
            .post(&token, "/api/v1/me/erase", json!({"password": "guess"}))
            .await;
        assert_eq!(expect(r, 401).await["code"], "wrong_password");
    }
    // Locked: even the right password is refused, here and at sign-in.
    let r = app
        .post(
            &token,
            "/api/v1/me/erase",
            json!({"password": "password-123"}),
        )
        .await;
    assert_eq!(expect(r, 429).await["code"], "too_many_failed_logins");
    let r = login_raw(&app, &patient.email, "password-123").await;
    assert_eq!(expect(r, 429).await["code"], "too_many_failed_logins");
    assert_ne!(
        app.state
            .store
            .user(patient.id)
            .await
            .unwrap()
            .unwrap()
            .name,
        "erased patient"
    );
}

async fn login_raw(
    app: &crate::helpers::TestApp,
    email: &str,
    password: &str,
) -> reqwest::Response {
    app.token(&[
        ("grant_type", "password"),
        ("username", email),
        ("password", password),
    ])
    .await
}
