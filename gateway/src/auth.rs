//! Who may change state: one check for REST and gRPC.
//!
//! - Admin calls (repository load and unload, sync, rollback) need the admin token (`VANE_ADMIN_TOKEN`).
//! - Feedback (labels for earlier predictions) needs the feedback token (`VANE_FEEDBACK_TOKEN`, so applications can
//!   post labels without admin rights) or the admin token.
//! - With no token configured for a call, it is taken only when the server listens on a loopback address (the demo,
//!   a developer's machine); on any other address it is refused with 403 naming the variable to set. A server
//!   reachable from the network never changes state for an anonymous caller.
//!
//! Tokens are compared in constant time and never printed: [`Secret`]'s `Debug` is redacted.

use std::fmt;

use http::HeaderMap;

use crate::errors::ApiError;

/// A credential from the environment; its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// The tokens the server checks, and whether calls without one are taken (loopback listener only).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// `VANE_ADMIN_TOKEN`.
    pub admin: Option<Secret>,
    /// `VANE_FEEDBACK_TOKEN`.
    pub feedback: Option<Secret>,
    /// True when every listener is on a loopback address: calls with no token configured are then taken.
    pub loopback: bool,
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Repository load and unload, sync, rollback.
    Admin,
    /// Posting labels.
    Feedback,
}

// === impl Secret ===

impl Secret {
    /// A secret; `None` for an empty value (an unset variable and an empty one mean the same).
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into();
        (!value.is_empty()).then_some(Self(value))
    }

    /// The secret from environment variable `name`, if set and not empty.
    pub fn from_env(name: &str) -> Option<Self> {
        std::env::var(name).ok().and_then(Self::new)
    }

    /// The value, for the one place that compares or sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with what a caller sent.
    pub fn matches(&self, given: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), given.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Whether two byte strings are equal, in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// === impl Tokens ===

impl Tokens {
    /// Checks a call that needs `gate`, given the caller's bearer token if any.
    pub fn check(&self, gate: Gate, bearer: Option<&str>) -> Result<(), ApiError> {
        let (accepted, what, variable): (&[Option<&Secret>], _, _) = match gate {
            Gate::Admin => (&[self.admin.as_ref()], "this admin call", "VANE_ADMIN_TOKEN"),
            Gate::Feedback => (
                &[self.feedback.as_ref(), self.admin.as_ref()],
                "posting feedback",
                "VANE_FEEDBACK_TOKEN (or VANE_ADMIN_TOKEN)",
            ),
        };
        let configured: Vec<&Secret> = accepted.iter().flatten().copied().collect();
        if configured.is_empty() {
            return if self.loopback { Ok(()) } else { Err(ApiError::TokenNotConfigured { what, variable }) };
        }
        match bearer {
            Some(given) if configured.iter().any(|secret| secret.matches(given)) => Ok(()),
            Some(_) => Err(ApiError::Unauthorized { what: "wrong token (Authorization: Bearer <token>)" }),
            None => Err(ApiError::Unauthorized { what: "token missing (send Authorization: Bearer <token>)" }),
        }
    }

    /// Checks a REST call by its `Authorization` header.
    pub fn check_headers(&self, gate: Gate, headers: &HeaderMap) -> Result<(), ApiError> {
        self.check(gate, bearer(headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())))
    }
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn bearer(value: Option<&str>) -> Option<&str> {
    value.and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))).map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_gate_calls_and_loopback_takes_calls_only_when_none_is_set() {
        let open = Tokens { loopback: true, ..Tokens::default() };
        assert!(open.check(Gate::Admin, None).is_ok());
        assert!(open.check(Gate::Feedback, None).is_ok());
        let exposed = Tokens { loopback: false, ..Tokens::default() };
        let refused = exposed.check(Gate::Admin, None).unwrap_err();
        assert_eq!(refused.status(), http::StatusCode::FORBIDDEN);
        assert!(refused.to_string().contains("set VANE_ADMIN_TOKEN"), "{refused}");
        assert!(exposed.check(Gate::Feedback, None).unwrap_err().to_string().contains("VANE_FEEDBACK_TOKEN"));

        let both = Tokens { admin: Secret::new("adm"), feedback: Secret::new("fb"), loopback: true };
        assert_eq!(both.check(Gate::Admin, None).unwrap_err().status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(both.check(Gate::Admin, Some("fb")).unwrap_err().status(), http::StatusCode::UNAUTHORIZED);
        assert!(both.check(Gate::Admin, Some("adm")).is_ok());
        assert!(both.check(Gate::Feedback, Some("fb")).is_ok());
        assert!(both.check(Gate::Feedback, Some("adm")).is_ok());
        assert!(both.check(Gate::Feedback, Some("nope")).is_err());
        // Only a feedback token: admin calls stay as configured (loopback here), feedback needs its token.
        let labels_only = Tokens { feedback: Secret::new("fb"), loopback: false, ..Tokens::default() };
        assert_eq!(labels_only.check(Gate::Admin, Some("fb")).unwrap_err().status(), http::StatusCode::FORBIDDEN);
        assert!(labels_only.check(Gate::Feedback, Some("fb")).is_ok());
    }

    #[test]
    fn secrets_are_never_printed() {
        let tokens = Tokens { admin: Secret::new("hunter2"), ..Tokens::default() };
        assert!(!format!("{tokens:?}").contains("hunter2"));
        assert!(Secret::new("").is_none());
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
    }
}
