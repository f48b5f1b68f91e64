//! The one error type of the core's API; the NIF has one encoder for it.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WardenError {
    /// A setting name the plugin does not have.
    UnknownSetting(String),
    /// A known setting with a value of the wrong kind or range.
    BadSetting { key: &'static str, expected: &'static str },
    /// An auth step for a token that is unknown, expired, or started by
    /// another process.
    UnknownAuth,
    /// The decision needs a password, and the one given is no MQTT string.
    BadPassword,
    /// Every auth-context slot is taken (a flood of half-done logins).
    AuthTableFull,
    /// A session filter no record can match, with what is wrong.
    BadFilter(&'static str),
    /// A list cursor this registry never handed out.
    BadCursor,
    /// Slow-verification slots out of 1..=1024.
    BadSlots,
    /// A policy or password file was refused; the running one stays.
    LoadFailed(String),
}

impl WardenError {
    /// The atom the NIF encodes the kind as.
    pub fn kind(&self) -> &'static str {
        match self {
            WardenError::UnknownSetting(_) => "unknown_setting",
            WardenError::BadSetting { .. } => "bad_setting",
            WardenError::UnknownAuth => "unknown_auth",
            WardenError::BadPassword => "bad_password",
            WardenError::AuthTableFull => "auth_table_full",
            WardenError::BadFilter(_) => "bad_filter",
            WardenError::BadCursor => "bad_cursor",
            WardenError::BadSlots => "bad_slots",
            WardenError::LoadFailed(_) => "load_failed",
        }
    }
}

impl fmt::Display for WardenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WardenError::UnknownSetting(k) => write!(f, "unknown setting {k:?}"),
            WardenError::BadSetting { key, expected } => write!(f, "setting {key}: expected {expected}"),
            WardenError::UnknownAuth => f.write_str("no auth in progress under this token for this process"),
            WardenError::BadPassword => f.write_str("the password is longer than an MQTT string"),
            WardenError::AuthTableFull => f.write_str("too many logins in progress"),
            WardenError::BadFilter(msg) => f.write_str(msg),
            WardenError::BadCursor => f.write_str("not a cursor of this registry"),
            WardenError::BadSlots => f.write_str("slow-verification slots must be 1..1024"),
            WardenError::LoadFailed(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for WardenError {}
