//! Encryption at rest for patient fields, and the blind index that lets an
//! encrypted e-mail address still be looked up.
//!
//! Every sensitive column is stored as an *envelope* (binary, `bytea` /
//! `BLOB`):
//!
//! ```text
//! [version = 1][key id length n][key id: n bytes][nonce: 12 bytes][ciphertext + 16-byte tag]
//! ```
//!
//! sealed with AES-256-GCM under the key the key id names. The associated
//! data is `"<table>.<column>:<row id>"`, so a ciphertext copied into another
//! row or column fails to decrypt instead of silently showing someone else's
//! data. Nonces are 96 random bits per encryption: with far fewer than 2^32
//! encryptions per key the collision risk is negligible, and rotating to a
//! new key resets the count.
//!
//! Keys never live in the database: they come from configuration
//! (`security.encryption_keys`, `security.active_encryption_key`,
//! `security.blind_index_key`) or, in the embedded single-node mode with
//! nothing configured, from a key file beside the database.
//!
//! The blind index is HMAC-SHA256 under a separate key of the normalised
//! (trimmed, lower-cased) address: equal addresses give equal digests, so a
//! unique index and the login lookup work, while the digest reveals nothing
//! without the key. It is deliberately a different key from the encryption
//! keys: rotating those must not change the index.

use std::{collections::BTreeMap, fmt, path::Path};

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::config::SecuritySettings;

/// The envelope format this build writes.
const VERSION: u8 = 1;
/// AES-GCM standard nonce length.
const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;

/// Why a field could not be sealed or opened, or the keys not loaded.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The bytes are not an envelope (truncated, or not written by DocSpot).
    #[error("malformed ciphertext envelope")]
    Malformed,
    /// An envelope format this build does not know.
    #[error("unknown ciphertext envelope version {0}")]
    UnknownVersion(u8),
    /// The envelope names a key that is not configured.
    #[error("ciphertext is under key {0:?}, which is not configured")]
    UnknownKey(String),
    /// Wrong key material, tampered bytes, or the ciphertext belongs to
    /// another row or column (associated data mismatch).
    #[error("ciphertext failed authentication")]
    Authentication,
    /// The plaintext of a text field is not UTF-8.
    #[error("decrypted text is not UTF-8")]
    NotText,
    /// The key configuration is unusable.
    #[error("encryption keys: {0}")]
    Config(String),
    /// The embedded key file could not be read or written.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// Which file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// A key id: 1 to 32 of `a-z 0-9 _ -`. Lower case only, because
/// configuration from environment variables arrives lower-cased.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Parses a key id.
    pub fn parse(s: &str) -> Result<Self, CryptoError> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(CryptoError::Config(format!(
                "key id {s:?} must be 1-32 characters of a-z, 0-9, _ and -"
            )))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Ids order and hash exactly like their text, so maps keyed by id can be
// searched with the id an envelope names.
impl std::borrow::Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Associated data binding a ciphertext to one column of one row.
#[derive(Debug, Clone, Copy)]
pub struct FieldAad {
    /// `"table.column"`.
    pub column: &'static str,
    /// The row's primary key.
    pub row: Uuid,
}

impl FieldAad {
    /// The field `column` (`"table.column"`) of row `row`.
    pub fn new(column: &'static str, row: Uuid) -> Self {
        Self { column, row }
    }

    fn bytes(&self) -> Vec<u8> {
        format!("{}:{}", self.column, self.row).into_bytes()
    }
}

/// Seals and opens encrypted fields, and computes the e-mail blind index.
/// Cheap to share (`Arc`); holds key material, so its `Debug` shows ids only.
pub struct FieldCipher {
    keys: BTreeMap<KeyId, Aes256Gcm>,
    active: KeyId,
    blind: Hmac<Sha256>,
}

impl fmt::Debug for FieldCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldCipher")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// Raw key material: data keys by id, which one encrypts, the blind-index
/// key. Also the format of the embedded key file (base64 values).
#[derive(Serialize, Deserialize)]
struct KeyMaterial {
    active_encryption_key: String,
    encryption_keys: BTreeMap<String, String>,
    blind_index_key: String,
}

impl FieldCipher {
    /// A cipher from 32-byte data keys by id, the active id, and the
    /// blind-index key (at least 32 bytes).
    pub fn new(
        keys: impl IntoIterator<Item = (KeyId, [u8; 32])>,
        active: KeyId,
        blind_index_key: &[u8],
    ) -> Result<Self, CryptoError> {
        let keys: BTreeMap<KeyId, Aes256Gcm> = keys
            .into_iter()
            .map(|(id, k)| (id, Aes256Gcm::new(&k.into())))
            .collect();
        if !keys.contains_key(&active) {
            return Err(CryptoError::Config(format!(
                "the active key {active:?} is not among the configured keys"
            )));
        }
        if blind_index_key.len() < 32 {
            return Err(CryptoError::Config(
                "the blind-index key must be at least 32 bytes".into(),
            ));
        }
        let blind = <Hmac<Sha256> as Mac>::new_from_slice(blind_index_key)
            .map_err(|e| CryptoError::Config(e.to_string()))?;
        Ok(Self {
            keys,
            active,
            blind,
        })
    }

    /// The keys from settings. With no keys configured at all, `key_file`
    /// (the embedded mode) is read, or created with fresh random keys;
    /// without a key file that is an error: a server must not invent keys
    /// that other nodes, and its own next start, would not have.
    pub fn from_settings(
        s: &SecuritySettings,
        key_file: Option<&Path>,
    ) -> Result<Self, CryptoError> {
        let blind = s.blind_index_key.expose_secret().trim();
        if s.encryption_keys.is_empty() && blind.is_empty() {
            return match key_file {
                Some(path) => Self::from_material(&load_or_create_key_file(path)?),
                None => Err(CryptoError::Config(
                    "no encryption keys are configured. With PostgreSQL set \
                     security.encryption_keys (key id -> base64 of 32 random bytes), \
                     security.active_encryption_key and security.blind_index_key, e.g. \
                     DOCSPOT_SECURITY__ENCRYPTION_KEYS__K1=$(openssl rand -base64 32), \
                     DOCSPOT_SECURITY__ACTIVE_ENCRYPTION_KEY=k1, \
                     DOCSPOT_SECURITY__BLIND_INDEX_KEY=$(openssl rand -base64 32)"
                        .into(),
                )),
            };
        }
        let mut m = KeyMaterial {
            active_encryption_key: s.active_encryption_key.trim().to_string(),
            encryption_keys: s
                .encryption_keys
                .iter()
                .map(|(k, v)| (k.clone(), v.expose_secret().to_string()))
                .collect(),
            blind_index_key: blind.to_string(),
        };
        // Embedded mode with keys configured on top of a generated key file
        // (e.g. a new key to rotate to): the file's keys stay available, so
        // data sealed under them remains readable; configured values win.
        if let Some(path) = key_file
            && path.exists()
        {
            let file = load_or_create_key_file(path)?;
            for (id, key) in file.encryption_keys {
                m.encryption_keys.entry(id).or_insert(key);
            }
            if m.blind_index_key.is_empty() {
                m.blind_index_key = file.blind_index_key;
            }
        }
        Self::from_material(&m)
    }

    fn from_material(m: &KeyMaterial) -> Result<Self, CryptoError> {
        if m.encryption_keys.is_empty() {
            return Err(CryptoError::Config(
                "security.encryption_keys is empty".into(),
            ));
        }
        if m.blind_index_key.trim().is_empty() {
            return Err(CryptoError::Config(
                "security.blind_index_key is empty".into(),
            ));
        }
        let active = KeyId::parse(m.active_encryption_key.trim()).map_err(|_| {
            CryptoError::Config(format!(
                "security.active_encryption_key {:?} must name one of the configured keys",
                m.active_encryption_key
            ))
        })?;
        let mut keys = Vec::new();
        for (id, b64) in &m.encryption_keys {
            let id = KeyId::parse(id)?;
            let bytes = STANDARD
                .decode(b64.trim())
                .map_err(|_| CryptoError::Config(format!("key {id}: not base64")))?;
            let key: [u8; 32] = bytes.try_into().map_err(|_| {
                CryptoError::Config(format!("key {id}: must be exactly 32 bytes (AES-256)"))
            })?;
            keys.push((id, key));
        }
        let blind = STANDARD
            .decode(m.blind_index_key.trim())
            .map_err(|_| CryptoError::Config("security.blind_index_key: not base64".into()))?;
        Self::new(keys, active, &blind)
    }

    /// A cipher with fresh random keys (id `k1`), for tests and for the
    /// embedded key file.
    pub fn generate() -> Self {
        #[allow(clippy::unwrap_used)] // freshly generated material is always valid
        Self::from_material(&KeyMaterial::random()).unwrap()
    }

    /// The key new ciphertexts are sealed under.
    pub fn active_key(&self) -> &KeyId {
        &self.active
    }

    /// Seals `plaintext` for the field `aad` under the active key.
    pub fn encrypt(&self, aad: FieldAad, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let cipher = self
            .keys
            .get(&self.active)
            .ok_or_else(|| CryptoError::UnknownKey(self.active.0.clone()))?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = aad.bytes();
        let sealed = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Authentication)?;
        let kid = self.active.0.as_bytes();
        let mut out = Vec::with_capacity(2 + kid.len() + NONCE_LEN + sealed.len());
        out.push(VERSION);
        // KeyId::parse caps ids at 32 bytes, so the length fits a byte.
        out.push(kid.len() as u8);
        out.extend_from_slice(kid);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens an envelope written for the field `aad`.
    pub fn decrypt(&self, aad: FieldAad, envelope: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let parts = Envelope::parse(envelope)?;
        let cipher = self
            .keys
            .get(parts.kid)
            .ok_or_else(|| CryptoError::UnknownKey(parts.kid.to_string()))?;
        let aad = aad.bytes();
        let nonce: [u8; NONCE_LEN] = parts.nonce.try_into().map_err(|_| CryptoError::Malformed)?;
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: parts.sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Authentication)
    }

    /// [`Self::encrypt`] for text.
    pub fn encrypt_str(&self, aad: FieldAad, plaintext: &str) -> Result<Vec<u8>, CryptoError> {
        self.encrypt(aad, plaintext.as_bytes())
    }

    /// [`Self::decrypt`] for text.
    pub fn decrypt_str(&self, aad: FieldAad, envelope: &[u8]) -> Result<String, CryptoError> {
        String::from_utf8(self.decrypt(aad, envelope)?).map_err(|_| CryptoError::NotText)
    }

    /// The key id an envelope names.
    pub fn key_id_of(envelope: &[u8]) -> Result<&str, CryptoError> {
        Envelope::parse(envelope).map(|e| e.kid)
    }

    /// Re-seals an envelope under the active key; `None` if it already is
    /// (so a rerun of a rotation skips it). Every envelope is opened, even
    /// one to be skipped: a rotation thereby also checks that all data is
    /// readable (e.g. a key id reused for other key material is an error,
    /// not a silent skip).
    pub fn reencrypt(
        &self,
        aad: FieldAad,
        envelope: &[u8],
    ) -> Result<Option<Vec<u8>>, CryptoError> {
        let plain = self.decrypt(aad, envelope)?;
        if Self::key_id_of(envelope)? == self.active.as_str() {
            return Ok(None);
        }
        self.encrypt(aad, &plain).map(Some)
    }

    /// The blind index of an e-mail address: HMAC-SHA256 of its trimmed,
    /// lower-cased form.
    pub fn email_index(&self, email: &str) -> Vec<u8> {
        let mut mac = self.blind.clone();
        mac.update(email.trim().to_lowercase().as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// The parts of a parsed envelope.
struct Envelope<'a> {
    kid: &'a str,
    nonce: &'a [u8],
    sealed: &'a [u8],
}

impl<'a> Envelope<'a> {
    fn parse(b: &'a [u8]) -> Result<Self, CryptoError> {
        let (&version, rest) = b.split_first().ok_or(CryptoError::Malformed)?;
        if version != VERSION {
            return Err(CryptoError::UnknownVersion(version));
        }
        let (&n, rest) = rest.split_first().ok_or(CryptoError::Malformed)?;
        let n = n as usize;
        if n == 0 || rest.len() < n + NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        let (kid, rest) = rest.split_at(n);
        let kid = std::str::from_utf8(kid).map_err(|_| CryptoError::Malformed)?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        Ok(Self { kid, nonce, sealed })
    }
}

impl KeyMaterial {
    fn random() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let mut blind = [0u8; 32];
        rand::rng().fill_bytes(&mut blind);
        Self {
            active_encryption_key: "k1".into(),
            encryption_keys: BTreeMap::from([("k1".to_string(), STANDARD.encode(key))]),
            blind_index_key: STANDARD.encode(blind),
        }
    }
}

/// Reads the embedded mode's key file, creating it (mode 0600, fresh random
/// keys) on first start so `cargo run` needs no configuration and data stays
/// readable across restarts. Losing this file loses the encrypted data: back
/// it up with the database, but not in the same place.
fn load_or_create_key_file(path: &Path) -> Result<KeyMaterial, CryptoError> {
    let io = |source| CryptoError::KeyFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let material = KeyMaterial::random();
            if let Some(dir) = path.parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(path).map_err(io)?;
            let text = serde_json::to_string_pretty(&material)
                .map_err(|e| io(std::io::Error::other(e)))?;
            std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            tracing::info!(path = %path.display(), "created the field encryption key file");
            Ok(material)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kid(s: &str) -> KeyId {
        KeyId::parse(s).unwrap()
    }

    fn cipher(keys: &[(&str, u8)], active: &str) -> FieldCipher {
        FieldCipher::new(
            keys.iter().map(|(id, b)| (kid(id), [*b; 32])),
            kid(active),
            &[9u8; 32],
        )
        .unwrap()
    }

    fn aad(row: u128) -> FieldAad {
        FieldAad::new("users.email", Uuid::from_u128(row))
    }

    #[test]
    fn round_trip_names_the_active_key_and_uses_fresh_nonces() {
        let c = cipher(&[("a", 1)], "a");
        let e1 = c.encrypt_str(aad(1), "pat@example.org").unwrap();
        let e2 = c.encrypt_str(aad(1), "pat@example.org").unwrap();
        assert_ne!(e1, e2, "random nonces: equal plaintexts do not show");
        assert_eq!(FieldCipher::key_id_of(&e1).unwrap(), "a");
        assert_eq!(c.decrypt_str(aad(1), &e1).unwrap(), "pat@example.org");
        assert!(
            !e1.windows(7).any(|w| w == b"example"),
            "no plaintext in the envelope"
        );
        let empty = c.encrypt(aad(1), b"").unwrap();
        assert_eq!(c.decrypt(aad(1), &empty).unwrap(), b"");
    }

    #[test]
    fn an_unknown_key_id_is_an_error() {
        let a = cipher(&[("a", 1)], "a");
        let b = cipher(&[("b", 2)], "b");
        let e = a.encrypt_str(aad(1), "x").unwrap();
        assert!(matches!(b.decrypt(aad(1), &e), Err(CryptoError::UnknownKey(k)) if k == "a"));
    }

    #[test]
    fn the_same_id_with_other_key_material_fails_authentication() {
        let a = cipher(&[("a", 1)], "a");
        let impostor = cipher(&[("a", 2)], "a");
        let e = a.encrypt_str(aad(1), "x").unwrap();
        assert!(matches!(
            impostor.decrypt(aad(1), &e),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn tampering_anywhere_is_detected() {
        let c = cipher(&[("a", 1)], "a");
        let e = c.encrypt_str(aad(1), "secret").unwrap();
        for i in 0..e.len() {
            let mut bad = e.clone();
            bad[i] ^= 0x01;
            assert!(
                c.decrypt(aad(1), &bad).is_err(),
                "flipped byte {i} accepted"
            );
        }
        for n in 0..e.len() {
            assert!(c.decrypt(aad(1), &e[..n]).is_err(), "truncated to {n}");
        }
        assert!(matches!(
            c.decrypt(aad(1), &[7, 1, b'a']),
            Err(CryptoError::UnknownVersion(7))
        ));
        assert!(matches!(
            c.decrypt(aad(1), &[]),
            Err(CryptoError::Malformed)
        ));
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_or_column_does_not_open() {
        let c = cipher(&[("a", 1)], "a");
        let e = c.encrypt_str(aad(1), "secret").unwrap();
        assert!(matches!(
            c.decrypt(aad(2), &e),
            Err(CryptoError::Authentication)
        ));
        assert!(matches!(
            c.decrypt(FieldAad::new("users.name", Uuid::from_u128(1)), &e),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn reencrypt_moves_old_ciphertexts_to_the_active_key_only() {
        let old = cipher(&[("a", 1)], "a");
        let both = cipher(&[("a", 1), ("b", 2)], "b");
        let e = old.encrypt_str(aad(1), "secret").unwrap();
        let moved = both.reencrypt(aad(1), &e).unwrap().unwrap();
        assert_eq!(FieldCipher::key_id_of(&moved).unwrap(), "b");
        assert_eq!(both.decrypt_str(aad(1), &moved).unwrap(), "secret");
        assert!(both.reencrypt(aad(1), &moved).unwrap().is_none());
        // The same id with other key material is an error, not a skip.
        let impostor = cipher(&[("a", 1), ("b", 3)], "b");
        assert!(matches!(
            impostor.reencrypt(aad(1), &moved),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn the_blind_index_normalises_and_depends_on_its_key() {
        let c = cipher(&[("a", 1)], "a");
        assert_eq!(
            c.email_index("Pat@Example.org "),
            c.email_index("pat@example.org")
        );
        assert_ne!(
            c.email_index("pat@example.org"),
            c.email_index("pet@example.org")
        );
        let other = FieldCipher::new([(kid("a"), [1; 32])], kid("a"), &[8u8; 32]).unwrap();
        assert_ne!(
            c.email_index("pat@example.org"),
            other.email_index("pat@example.org")
        );
        assert_eq!(c.email_index("x").len(), 32);
    }

    #[test]
    fn settings_are_parsed_strictly() {
        let b64 = STANDARD.encode([3u8; 32]);
        let mut s = SecuritySettings {
            cors_origins: vec![],
            max_holds_per_patient: 1,
            encryption_keys: [("k1".to_string(), b64.clone().into())].into(),
            active_encryption_key: "k1".into(),
            blind_index_key: b64.clone().into(),
        };
        assert!(FieldCipher::from_settings(&s, None).is_ok());
        s.active_encryption_key = "k2".into();
        assert!(
            FieldCipher::from_settings(&s, None).is_err(),
            "active not configured"
        );
        s.active_encryption_key = "k1".into();
        s.encryption_keys = [("k1".to_string(), STANDARD.encode([3u8; 16]).into())].into();
        assert!(
            FieldCipher::from_settings(&s, None).is_err(),
            "a 16-byte key"
        );
        s.encryption_keys = [("K 1".to_string(), b64.clone().into())].into();
        assert!(
            FieldCipher::from_settings(&s, None).is_err(),
            "a bad key id"
        );
        s.encryption_keys = [("k1".to_string(), b64.into())].into();
        s.blind_index_key = String::new().into();
        assert!(
            FieldCipher::from_settings(&s, None).is_err(),
            "no blind-index key"
        );
        s.encryption_keys.clear();
        let err = FieldCipher::from_settings(&s, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("DOCSPOT_SECURITY__ENCRYPTION_KEYS")
        );
    }

    #[test]
    fn the_embedded_key_file_is_created_once_and_reused() {
        let dir = std::env::temp_dir().join(format!("docspot-fk-{}", Uuid::new_v4()));
        let path = dir.join("docspot.keys");
        let s = SecuritySettings {
            cors_origins: vec![],
            max_holds_per_patient: 1,
            encryption_keys: Default::default(),
            active_encryption_key: String::new(),
            blind_index_key: String::new().into(),
        };
        let first = FieldCipher::from_settings(&s, Some(&path)).unwrap();
        let second = FieldCipher::from_settings(&s, Some(&path)).unwrap();
        let e = first.encrypt_str(aad(1), "kept").unwrap();
        assert_eq!(second.decrypt_str(aad(1), &e).unwrap(), "kept");
        assert_eq!(first.email_index("a@b.c"), second.email_index("a@b.c"));
        // Configuring a new active key on top keeps the generated ones.
        let mut rotated = s.clone();
        rotated.encryption_keys = [("k2".to_string(), STANDARD.encode([5u8; 32]).into())].into();
        rotated.active_encryption_key = "k2".into();
        let third = FieldCipher::from_settings(&rotated, Some(&path)).unwrap();
        assert_eq!(third.active_key().as_str(), "k2");
        assert_eq!(third.decrypt_str(aad(1), &e).unwrap(), "kept");
        assert_eq!(first.email_index("a@b.c"), third.email_index("a@b.c"));
        let moved = third.reencrypt(aad(1), &e).unwrap().unwrap();
        assert_eq!(FieldCipher::key_id_of(&moved).unwrap(), "k2");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
