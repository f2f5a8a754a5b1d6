//! Registration and the OAuth 2.0 token endpoint (RFC 6749: password and
//! refresh_token grants).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::State;
use crate::{
    audit::{Action, Actor, Audit, NewEntry, Outcome},
    auth::{hash_password_blocking, new_refresh_token, refresh_digest, verify_password},
    domain::{Email, Password, Role},
    error::ApiError,
    ratelimit::RateLimits,
    store::{NewUser, RefreshOutcome, UserRecord},
};

/// `POST /api/v1/auth/register` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RegisterIn {
    /// Login e-mail.
    #[schema(format = Email)]
    pub email: String,
    /// 8 to 1024 characters.
    pub password: String,
    /// Display name.
    pub name: String,
}

/// A created account.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountOut {
    /// User id.
    pub id: Uuid,
    /// E-mail.
    pub email: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
}

impl From<UserRecord> for AccountOut {
    fn from(u: UserRecord) -> Self {
        AccountOut {
            id: u.id.0,
            email: u.email,
            name: u.name,
            role: u.role,
        }
    }
}

/// Validates a name for an account or a catalogue entry.
pub fn parse_name(field: &str, s: &str) -> Result<String, ApiError> {
    let s = s.trim();
    if s.is_empty() || s.chars().count() > 200 {
        return Err(ApiError::unprocessable(
            "invalid_name",
            format!("{field} must be 1 to 200 characters"),
        ));
    }
    Ok(s.to_string())
}

/// Registers a patient account.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterIn,
    responses((status = 201, body = AccountOut), (status = 409, body = crate::error::Problem, description = "email_taken"),
        (status = 422, body = crate::error::Problem)))]
pub async fn register(
    state: State,
    audit: Audit,
    body: web::Json<RegisterIn>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let email = Email::parse(&body.email)?;
    let password = Password::parse(&body.password)?;
    let name = parse_name("name", &body.name)?;
    let password_hash = hash_password_blocking(password.expose().to_string()).await?;
    let user = state
        .store
        .create_user(NewUser {
            email,
            name,
            role: Role::Patient,
            doctor_id: None,
            clinic_id: None,
            password_hash,
        })
        .await?;
    audit
        .record(account_entry(
            &audit,
            Actor::ANONYMOUS,
            Action::AuthRegister,
            Some(&user),
            Outcome::Success,
        ))
        .await?;
    Ok(HttpResponse::Created().json(AccountOut::from(user)))
}

/// `POST /api/v1/auth/token` form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TokenIn {
    /// `password` or `refresh_token`.
    pub grant_type: Option<String>,
    /// E-mail (password grant).
    pub username: Option<String>,
    /// Password (password grant).
    pub password: Option<String>,
    /// Refresh token (refresh_token grant).
    pub refresh_token: Option<String>,
    /// Ignored: DocSpot tokens carry the account's role.
    pub scope: Option<String>,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenOut {
    /// JWT access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Access token lifetime in seconds.
    pub expires_in: i64,
    /// Opaque, single-use refresh token.
    pub refresh_token: String,
}

/// An OAuth error response (RFC 6749 §5.2).
fn oauth_error(error: &str, description: &str) -> HttpResponse {
    let status = if error == "invalid_client" {
        actix_web::http::StatusCode::UNAUTHORIZED
    } else {
        actix_web::http::StatusCode::BAD_REQUEST
    };
    HttpResponse::build(status)
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({"error": error, "error_description": description}))
}

/// Issues tokens (OAuth 2.0 password and refresh_token grants).
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "auth",
    request_body(content = TokenIn, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenOut), (status = 400, description = "OAuth error: invalid_request, invalid_grant, unsupported_grant_type"),
        (status = 429, body = crate::error::Problem, description = "rate_limited or too_many_failed_logins; see Retry-After")))]
pub async fn token(
    state: State,
    req: HttpRequest,
    audit: Audit,
    form: web::Form<TokenIn>,
) -> Result<HttpResponse, ApiError> {
    let form = form.into_inner();
    let limits = req.app_data::<web::Data<RateLimits>>();
    let user = match form.grant_type.as_deref() {
        Some("password") => {
            let (Some(username), Some(password)) = (form.username, form.password) else {
                return Ok(oauth_error(
                    "invalid_request",
                    "username and password are required",
                ));
            };
            // Throttled before the password is looked at, so a locked-out
            // guesser learns nothing, right or wrong.
            // Refused and malformed attempts are recorded too (as failures
            // with no account: none is looked up for them), so the log
            // shows every attempt, guessing against a lock-out included.
            let anonymous_failure = || {
                account_entry(
                    &audit,
                    Actor::ANONYMOUS,
                    Action::AuthLoginFailed,
                    None,
                    Outcome::Denied,
                )
            };
            if let Some(l) = limits
                && let Err(e) = l.before_login(&req, &username)
            {
                audit.record(anonymous_failure()).await?;
                return Err(e);
            }
            let Ok(email) = Email::parse(&username) else {
                if let Some(l) = limits {
                    l.login_failed(&req, &username);
                }
                audit.record(anonymous_failure()).await?;
                return Ok(oauth_error("invalid_grant", "invalid username or password"));
            };
            let found = state.store.user_by_email(&email).await?;
            // Verify against a dummy hash when the account does not exist, so
            // response time does not reveal which e-mails are registered.
            let hash = found
                .as_ref()
                .map(|u| u.password_hash.clone())
                .unwrap_or_else(|| DUMMY_HASH.to_string());
            let ok = web::block(move || verify_password(&password, &hash))
                .await
                .unwrap_or(false);
            match found {
                Some(u) if ok => {
                    if let Some(l) = limits {
                        l.login_succeeded(&username);
                    }
                    audit
                        .record(account_entry(
                            &audit,
                            actor_of(&u),
                            Action::AuthLogin,
                            Some(&u),
                            Outcome::Success,
                        ))
                        .await?;
                    u
                }
                // The account tried (if it exists) is recorded by id: the
                // e-mail typed is personal data and stays out of the log.
                other => {
                    if let Some(l) = limits {
                        l.login_failed(&req, &username);
                    }
                    audit
                        .record(account_entry(
                            &audit,
                            Actor::ANONYMOUS,
                            Action::AuthLoginFailed,
                            other.as_ref(),
                            Outcome::Denied,
                        ))
                        .await?;
                    return Ok(oauth_error("invalid_grant", "invalid username or password"));
                }
            }
        }
        Some("refresh_token") => {
            let Some(token) = form.refresh_token else {
                return Ok(oauth_error("invalid_request", "refresh_token is required"));
            };
            let (next, next_digest) = new_refresh_token();
            let next_expires = Utc::now() + Duration::seconds(state.keys.refresh_ttl);
            let outcome = state
                .store
                .use_refresh_token(&refresh_digest(&token), &next_digest, next_expires)
                .await?;
            match outcome {
                RefreshOutcome::Rotated { user, .. } => {
                    audit
                        .record(account_entry(
                            &audit,
                            actor_of(&user),
                            Action::AuthRefresh,
                            Some(&user),
                            Outcome::Success,
                        ))
                        .await?;
                    return token_response(&state, &user, next);
                }
                refused @ (RefreshOutcome::Reused | RefreshOutcome::Invalid) => {
                    audit
                        .record(account_entry(
                            &audit,
                            Actor::ANONYMOUS,
                            Action::AuthRefreshFailed,
                            None,
                            Outcome::Denied,
                        ))
                        .await?;
                    if matches!(refused, RefreshOutcome::Reused) {
                        tracing::warn!("refresh token replayed; its family was revoked");
                        return Ok(oauth_error("invalid_grant", "refresh token already used"));
                    }
                    return Ok(oauth_error(
                        "invalid_grant",
                        "refresh token is invalid or expired",
                    ));
                }
            }
        }
        Some(_) => {
            return Ok(oauth_error(
                "unsupported_grant_type",
                "grant_type must be password or refresh_token",
            ));
        }
        None => return Ok(oauth_error("invalid_request", "grant_type is required")),
    };
    issue(&state, user, Uuid::now_v7()).await
}

/// The acting account.
fn actor_of(u: &UserRecord) -> Actor {
    Actor {
        id: Some(u.id.0),
        role: u.role.as_str(),
    }
}

/// An account event: the account as the resource, as the patient when it
/// is a patient's, and its clinic (staff) so clinic admins see their staff's
/// logins.
fn account_entry(
    audit: &Audit,
    actor: Actor,
    action: Action,
    account: Option<&UserRecord>,
    outcome: Outcome,
) -> NewEntry {
    NewEntry {
        patient_id: account.filter(|u| u.role == Role::Patient).map(|u| u.id.0),
        resource: account.map(|u| ("user", u.id.0)),
        clinic_id: account.and_then(|u| u.clinic_id).map(|c| c.0),
        outcome,
        ..audit.entry(actor, action)
    }
}

/// `POST /api/v1/auth/logout` form.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LogoutIn {
    /// The refresh token of the session to end.
    pub refresh_token: String,
}

/// Signs out: revokes the refresh token and every token rotated from the
/// same login, so the session cannot be renewed. Access tokens already
/// issued stay valid until they expire (`auth.access_token_ttl_secs`, 15
/// minutes by default): they are not looked up per request. Answers 204
/// for unknown tokens too (RFC 7009 §2.2): there is nothing to reveal.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    request_body(content = LogoutIn, content_type = "application/x-www-form-urlencoded"),
    responses((status = 204, description = "The session is ended (or never existed)"),
        (status = 400, body = crate::error::Problem, description = "invalid_form"),
        (status = 429, body = crate::error::Problem, description = "rate_limited")))]
pub async fn logout(state: State, form: web::Form<LogoutIn>) -> Result<HttpResponse, ApiError> {
    let revoked = state
        .store
        .revoke_refresh_family(&refresh_digest(&form.refresh_token))
        .await?;
    if revoked {
        tracing::info!("signed out: refresh token family revoked");
    }
    Ok(HttpResponse::NoContent()
        .insert_header(("Cache-Control", "no-store"))
        .finish())
}

/// A new login: a fresh refresh-token family.
async fn issue(state: &State, user: UserRecord, family: Uuid) -> Result<HttpResponse, ApiError> {
    let (refresh_token, digest) = new_refresh_token();
    let expires = Utc::now() + Duration::seconds(state.keys.refresh_ttl);
    state
        .store
        .insert_refresh_token(user.id, &digest, family, expires)
        .await?;
    token_response(state, &user, refresh_token)
}

fn token_response(
    state: &State,
    user: &UserRecord,
    refresh_token: String,
) -> Result<HttpResponse, ApiError> {
    let access_token = state.keys.issue(user)?;
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(TokenOut {
            access_token,
            token_type: "Bearer",
            expires_in: state.keys.access_ttl,
            refresh_token,
        }))
}

/// argon2id hash of a random string nobody knows.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2fQ3mQ5vYtq0cC6ZzP1nq1oQyJm1S6mJ4V7Xb0b9QmI";

#[cfg(test)]
mod tests {
    use argon2::{Argon2, PasswordHash};

    use super::*;

    /// An unknown e-mail must cost what a known one costs, or the answer
    /// time tells who has an account: the dummy hash has to be a valid
    /// argon2id hash with the very parameters real hashes get.
    #[test]
    fn the_dummy_hash_costs_what_a_real_one_does() {
        let dummy = PasswordHash::new(DUMMY_HASH).expect("a valid PHC string");
        let real_hash = crate::auth::hash_password("correct horse").unwrap();
        let real = PasswordHash::new(&real_hash).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
        let defaults = Argon2::default();
        assert_eq!(
            dummy.params.get_decimal("m"),
            Some(defaults.params().m_cost())
        );
        assert!(!verify_password("correct horse", DUMMY_HASH));
    }
}
