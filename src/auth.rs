//! Accounts and tokens: argon2id password hashes, short-lived JWT access
//! tokens carrying the role, and rotating refresh tokens.

use std::{future::Future, pin::Pin, sync::Arc};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use base64::Engine;
use chrono::Utc;
use docspot_actors::domain::{ClinicId, DoctorId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{config::AuthSettings, domain::Role, error::ApiError, store::UserRecord};

/// Hashes a password with argon2id (OWASP-recommended defaults). CPU-heavy:
/// call it from a blocking thread.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks a password against a stored hash. CPU-heavy, like hashing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Runs argon2 off the async workers.
pub async fn hash_password_blocking(password: String) -> Result<String, ApiError> {
    web::block(move || hash_password(&password))
        .await
        .map_err(|e| {
            ApiError::new(
                actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                e.to_string(),
            )
        })?
        .map_err(|e| {
            ApiError::new(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "hash_failed",
                e.to_string(),
            )
        })
}

/// The claims inside an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: UserId,
    /// Role.
    pub role: Role,
    /// For doctors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doctor_id: Option<DoctorId>,
    /// For clinic admins (absent: every clinic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clinic_id: Option<ClinicId>,
    /// Issuer.
    pub iss: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires (Unix seconds).
    pub exp: i64,
}

/// One HMAC key of the key set.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// Why the token keys could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The embedded key file could not be read or created.
    #[error("token key file: {0}")]
    Io(#[from] std::io::Error),
    /// The key settings contradict themselves.
    #[error("auth: {0}")]
    Config(String),
}

/// Issues and checks access tokens.
///
/// Keys are identified by the `kid` in each token's header. One key signs
/// new tokens; the others (previous keys during a rotation) are still
/// accepted for verification until they are removed from the set, so a
/// rotation logs nobody out: add the new key, make it active, and drop the
/// old one after an access-token lifetime.
pub struct TokenKeys {
    /// Index of the signing key in `keys`.
    active: usize,
    keys: Vec<SigningKey>,
    issuer: String,
    /// Access token lifetime in seconds.
    pub access_ttl: i64,
    /// Refresh token lifetime in seconds.
    pub refresh_ttl: i64,
}

impl TokenKeys {
    /// From settings.
    ///
    /// The key set is `auth.jwt_keys` plus, when `auth.jwt_secret` is set,
    /// that secret under `auth.jwt_kid`; `auth.active_kid` (default
    /// `auth.jwt_kid`) names the signing key. With neither, the single key
    /// is kept in `key_file` (created on first use, readable by the owner
    /// only) when one is given — the embedded single-node mode — and
    /// otherwise is random per process.
    pub fn from_settings(
        s: &AuthSettings,
        key_file: Option<&std::path::Path>,
    ) -> Result<Self, KeyError> {
        let mut set: Vec<(String, Vec<u8>)> = Vec::new();
        for k in &s.jwt_keys {
            let kid = k.kid.trim();
            if kid.is_empty() {
                return Err(KeyError::Config("a jwt_keys entry has an empty kid".into()));
            }
            let secret = k.secret.expose_secret();
            if secret.is_empty() {
                return Err(KeyError::Config(format!(
                    "jwt_keys entry {kid:?} has an empty secret"
                )));
            }
            set.push((kid.to_string(), secret.as_bytes().to_vec()));
        }
        let single = s.jwt_secret.expose_secret();
        if !single.is_empty() {
            set.push((s.jwt_kid.clone(), single.as_bytes().to_vec()));
        } else if set.is_empty() {
            let secret = if let Some(path) = key_file {
                load_or_create_key(path)?
            } else {
                tracing::warn!(
                    "auth.jwt_secret is empty: using a random key; tokens will not survive a \
                     restart and other nodes will not accept them (set DOCSPOT_AUTH__JWT_SECRET)"
                );
                random_key()
            };
            set.push((s.jwt_kid.clone(), secret));
        }
        for (i, (kid, _)) in set.iter().enumerate() {
            if set[..i].iter().any(|(k, _)| k == kid) {
                return Err(KeyError::Config(format!(
                    "key id {kid:?} appears twice (jwt_keys and jwt_kid must not repeat)"
                )));
            }
        }
        let active_kid = if s.active_kid.trim().is_empty() {
            s.jwt_kid.as_str()
        } else {
            s.active_kid.trim()
        };
        let active = set
            .iter()
            .position(|(k, _)| k == active_kid)
            .ok_or_else(|| {
                KeyError::Config(format!(
                    "active_kid {active_kid:?} is not in the key set ({})",
                    set.iter()
                        .map(|(k, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let keys = set
            .into_iter()
            .map(|(kid, secret)| SigningKey {
                kid,
                encoding: EncodingKey::from_secret(&secret),
                decoding: DecodingKey::from_secret(&secret),
            })
            .collect();
        Ok(Self {
            active,
            keys,
            issuer: s.issuer.clone(),
            access_ttl: s.access_token_ttl_secs as i64,
            refresh_ttl: s.refresh_token_ttl_secs as i64,
        })
    }

    /// The key id new tokens are signed with.
    pub fn active_kid(&self) -> &str {
        &self.keys[self.active].kid
    }

    /// A signed access token for `user`.
    pub fn issue(&self, user: &UserRecord) -> Result<String, ApiError> {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user.id,
            role: user.role,
            doctor_id: user.doctor_id,
            clinic_id: user.clinic_id,
            iss: self.issuer.clone(),
            iat: now,
            exp: now + self.access_ttl,
        };
        let key = &self.keys[self.active];
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|e| {
            ApiError::new(
                actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
                "token_signing_failed",
                e.to_string(),
            )
        })
    }

    /// Checks the key id, signature, issuer and expiry. A token whose `kid`
    /// is not (or no longer) in the key set gets its own code,
    /// `unknown_token_key`, so clients know to sign in again.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| ApiError::unauthorized(format!("invalid access token: {e}")))?;
        // Only HS256 is ever issued: refusing anything else up front rules
        // out algorithm-confusion tricks.
        if header.alg != Algorithm::HS256 {
            return Err(ApiError::unauthorized(
                "invalid access token: unsupported algorithm",
            ));
        }
        let kid = header.kid.unwrap_or_default();
        let key = self.keys.iter().find(|k| k.kid == kid).ok_or_else(|| {
            ApiError::new(
                actix_web::http::StatusCode::UNAUTHORIZED,
                "unknown_token_key",
                "the access token was signed with a key that is no longer accepted; sign in again",
            )
        })?;
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[&self.issuer]);
        v.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &key.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| ApiError::unauthorized(format!("invalid access token: {e}")))
    }
}

fn random_key() -> Vec<u8> {
    let mut k = vec![0u8; 32];
    rand::rng().fill_bytes(&mut k);
    k
}

/// Reads the signing key kept beside the embedded database, creating it
/// (mode 0600) on first start so tokens survive restarts.
fn load_or_create_key(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use base64::engine::general_purpose::STANDARD;
    match std::fs::read_to_string(path) {
        Ok(text) => STANDARD.decode(text.trim()).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_key();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(path)?;
            std::io::Write::write_all(&mut f, STANDARD.encode(&key).as_bytes())?;
            f.sync_all()?;
            tracing::info!(path = %path.display(), "created the token signing key");
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// A fresh opaque refresh token and the digest stored for it.
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let digest = refresh_digest(&token);
    (token, digest)
}

/// The stored form of a refresh token: its SHA-256 digest.
pub fn refresh_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The signed-in caller, from `Authorization: Bearer …`.
#[derive(Debug, Clone)]
pub struct AuthUser {
    /// User id.
    pub id: UserId,
    /// Role.
    pub role: Role,
    /// For doctors.
    pub doctor_id: Option<DoctorId>,
    /// For clinic admins (`None`: all clinics).
    pub clinic_id: Option<ClinicId>,
}

impl From<&Claims> for AuthUser {
    /// Who a verified token speaks for.
    fn from(c: &Claims) -> Self {
        AuthUser {
            id: c.sub,
            role: c.role,
            doctor_id: c.doctor_id,
            clinic_id: c.clinic_id,
        }
    }
}

impl AuthUser {
    /// Whether the caller administers `clinic`.
    pub fn administers(&self, clinic: ClinicId) -> bool {
        self.role == Role::ClinicAdmin && self.clinic_id.is_none_or(|c| c == clinic)
    }

    /// Whether the caller is a platform-wide admin (no clinic restriction).
    pub fn is_platform_admin(&self) -> bool {
        self.role == Role::ClinicAdmin && self.clinic_id.is_none()
    }
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = (|| {
            let keys = req
                .app_data::<web::Data<Arc<TokenKeys>>>()
                .ok_or_else(|| ApiError::unauthorized("authentication is not configured"))?;
            let value = req
                .headers()
                .get(header::AUTHORIZATION)
                .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
            let value = value
                .to_str()
                .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or_else(|| ApiError::unauthorized("expected a Bearer token"))?;
            Ok(AuthUser::from(&keys.verify(token.trim())?))
        })();
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn tokens_round_trip_and_reject_tampering() {
        let keys = TokenKeys::from_settings(&settings(""), None).unwrap();
        let other = TokenKeys::from_settings(&settings("s3cret"), None).unwrap();
        let user = UserRecord {
            id: UserId::new(),
            email: "a@b.org".into(),
            name: "A".into(),
            role: Role::Doctor,
            doctor_id: Some(DoctorId::new()),
            clinic_id: None,
            password_hash: String::new(),
        };
        let t = keys.issue(&user).unwrap();
        let c = keys.verify(&t).unwrap();
        assert_eq!(c.sub, user.id);
        assert_eq!(c.role, Role::Doctor);
        assert_eq!(c.doctor_id, user.doctor_id);
        let mut bad = t.clone();
        bad.pop();
        bad.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert!(keys.verify(&bad).is_err());
        assert!(other.verify(&t).is_err(), "another key refuses the token");
    }

    fn settings(secret: &str) -> AuthSettings {
        AuthSettings {
            jwt_secret: secret.to_string().into(),
            jwt_kid: "k1".into(),
            jwt_keys: Vec::new(),
            active_kid: String::new(),
            issuer: "docspot".into(),
            access_token_ttl_secs: 60,
            refresh_token_ttl_secs: 60,
        }
    }

    fn key(kid: &str, secret: &str) -> crate::config::JwtKey {
        crate::config::JwtKey {
            kid: kid.into(),
            secret: secret.to_string().into(),
        }
    }

    #[test]
    fn key_sets_sign_with_the_active_key_and_verify_with_any() {
        let user = UserRecord {
            id: UserId::new(),
            email: "a@b.org".into(),
            name: "A".into(),
            role: Role::Patient,
            doctor_id: None,
            clinic_id: None,
            password_hash: String::new(),
        };
        let old = TokenKeys::from_settings(&settings("old secret"), None).unwrap();
        assert_eq!(old.active_kid(), "k1", "the single secret keeps its kid");
        let old_token = old.issue(&user).unwrap();
        // The single secret joins the set under jwt_kid.
        let rotated = TokenKeys::from_settings(
            &AuthSettings {
                jwt_keys: vec![key("k2", "new secret")],
                active_kid: "k2".into(),
                ..settings("old secret")
            },
            None,
        )
        .unwrap();
        assert_eq!(rotated.active_kid(), "k2");
        assert!(rotated.verify(&old_token).is_ok());
        let new_token = rotated.issue(&user).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&new_token)
                .unwrap()
                .kid
                .as_deref(),
            Some("k2")
        );
        let only_new = TokenKeys::from_settings(
            &AuthSettings {
                jwt_keys: vec![key("k2", "new secret")],
                active_kid: "k2".into(),
                ..settings("")
            },
            None,
        )
        .unwrap();
        assert_eq!(
            only_new.verify(&old_token).unwrap_err().code(),
            "unknown_token_key"
        );
        assert!(only_new.verify(&new_token).is_ok());
    }

    #[test]
    fn contradictory_key_sets_are_refused() {
        let with = |keys: Vec<crate::config::JwtKey>, active: &str, secret: &str| {
            TokenKeys::from_settings(
                &AuthSettings {
                    jwt_keys: keys,
                    active_kid: active.into(),
                    ..settings(secret)
                },
                None,
            )
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
        };
        assert!(with(vec![key("a", "x")], "b", "").contains("active_kid"));
        assert!(with(vec![key("k1", "x")], "k1", "y").contains("twice"));
        assert!(with(vec![key("a", "")], "a", "").contains("empty secret"));
        assert!(with(vec![key(" ", "x")], "a", "").contains("empty kid"));
    }

    #[test]
    fn the_embedded_key_file_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("docspot-key-{}", uuid::Uuid::new_v4()));
        let path = dir.join("jwt.key");
        let first = TokenKeys::from_settings(&settings(""), Some(&path)).unwrap();
        let second = TokenKeys::from_settings(&settings(""), Some(&path)).unwrap();
        let user = UserRecord {
            id: UserId::new(),
            email: "a@b.org".into(),
            name: "A".into(),
            role: Role::Patient,
            doctor_id: None,
            clinic_id: None,
            password_hash: String::new(),
        };
        let t = first.issue(&user).unwrap();
        assert!(second.verify(&t).is_ok(), "tokens survive a restart");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
