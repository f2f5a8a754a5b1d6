//! Server-side value types parsed at the edge: e-mail addresses, passwords,
//! roles.

use std::{fmt, str::FromStr};

use docspot_actors::domain::ParseError;
use serde::{Deserialize, Serialize};

/// A syntactically plausible, lower-cased e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Parses an address: one `@`, a dot in the domain, no spaces, ≤ 254 bytes.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        let err = |why: &str| ParseError {
            what: "email",
            why: why.to_string(),
        };
        if s.len() > 254 {
            return Err(err("is longer than 254 characters"));
        }
        let (local, domain) = s.split_once('@').ok_or_else(|| err("has no @"))?;
        if local.is_empty() || domain.contains('@') || !domain.contains('.') {
            return Err(err("is not of the form name@domain.tld"));
        }
        if domain.starts_with('.') || domain.ends_with('.') {
            return Err(err("has an invalid domain"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("contains spaces or control characters"));
        }
        Ok(Self(s.to_lowercase()))
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password good enough to hash: 8 to 1024 characters.
pub struct Password(String);

impl Password {
    /// Checks length only; strength meters belong in the client.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let n = s.chars().count();
        if !(8..=1024).contains(&n) {
            return Err(ParseError {
                what: "password",
                why: "must be 8 to 1024 characters long".into(),
            });
        }
        Ok(Self(s.to_string()))
    }

    /// The secret itself, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Books and manages own appointments.
    Patient,
    /// Sees and manages own calendar.
    Doctor,
    /// Manages a clinic (or, without a clinic, every clinic).
    ClinicAdmin,
}

impl Role {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Doctor => "doctor",
            Role::ClinicAdmin => "clinic_admin",
        }
    }
}

impl FromStr for Role {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "patient" => Ok(Role::Patient),
            "doctor" => Ok(Role::Doctor),
            "clinic_admin" => Ok(Role::ClinicAdmin),
            other => Err(ParseError {
                what: "role",
                why: format!("unknown role {other:?}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse(" Ann@Example.ORG ").unwrap().as_str(),
            "ann@example.org"
        );
        for bad in [
            "",
            "ann",
            "@x.org",
            "ann@x",
            "a b@x.org",
            "ann@@x.org",
            "ann@.org",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn passwords() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("long enough").is_ok());
        assert_eq!(
            format!("{:?}", Password::parse("long enough").unwrap()),
            "Password(***)"
        );
    }
}
