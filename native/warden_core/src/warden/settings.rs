//! The run-time settings the core takes from vernemq.conf (the Erlang side
//! validates and forwards them): parsed whole, unknown names refused, then
//! applied at once by `Warden::configure`.

use crate::firewall::{DefaultDecision, FirewallConfig, UnknownUser};

use super::WardenError;

/// A setting's value as the NIF decodes it from the term.
#[derive(Clone, Debug, PartialEq)]
pub enum SettingValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Atom(String),
}

/// Every setting of one `configure` call; a missing one keeps its default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub firewall: FirewallConfig,
    pub history_size: Option<usize>,
    pub pending_ttl_ms: Option<u64>,
    /// Applied by the NIF's logger bridge, which lives outside the core.
    pub log_level: Option<String>,
}

const LOG_LEVELS: [&str; 5] = ["debug", "info", "notice", "warning", "error"];

impl Settings {
    pub fn parse<I, K>(pairs: I) -> Result<Settings, WardenError>
    where
        I: IntoIterator<Item = (K, SettingValue)>,
        K: AsRef<str>,
    {
        let mut s = Settings::default();
        for (key, value) in pairs {
            s.set(key.as_ref(), value)?;
        }
        Ok(s)
    }

    fn set(&mut self, key: &str, v: SettingValue) -> Result<(), WardenError> {
        let cfg = &mut self.firewall;
        match key {
            "unknown_user" => {
                cfg.unknown_user = match atom(&v, "unknown_user", "next | deny")? {
                    "deny" => UnknownUser::Deny,
                    "next" => UnknownUser::Next,
                    _ => return Err(bad("unknown_user", "next | deny")),
                }
            }
            "default_decision" => {
                cfg.default_decision = match atom(&v, "default_decision", "allow | deny | next")? {
                    "allow" => DefaultDecision::Allow,
                    "deny" => DefaultDecision::Deny,
                    "next" => DefaultDecision::Next,
                    _ => return Err(bad("default_decision", "allow | deny | next")),
                }
            }
            "allow_anonymous" => cfg.allow_anonymous = boolean(&v, "allow_anonymous")?,
            "ban_users" => cfg.ban_users = boolean(&v, "ban_users")?,
            "auth_cache_size" => cfg.cache_size = count(&v, "auth_cache_size")? as usize,
            "auth_cache_ttl" => cfg.cache_ok_ttl_ms = count(&v, "auth_cache_ttl")?,
            "auth_fail_ttl" => cfg.cache_fail_ttl_ms = count(&v, "auth_fail_ttl")?,
            "rate_per_peer" => cfg.rate_per_peer = rate(&v, "rate_per_peer")?,
            "burst_per_peer" => cfg.burst_per_peer = small(&v, "burst_per_peer")?,
            "rate_per_user" => cfg.rate_per_user = rate(&v, "rate_per_user")?,
            "burst_per_user" => cfg.burst_per_user = small(&v, "burst_per_user")?,
            "ban_threshold" => cfg.ban_threshold = small(&v, "ban_threshold")?,
            "ban_window" => cfg.ban_window_ms = count(&v, "ban_window")?,
            "ban_duration" => cfg.ban_duration_ms = count(&v, "ban_duration")?,
            "history_size" => self.history_size = Some(count(&v, "history_size")? as usize),
            "pending_ttl" => self.pending_ttl_ms = Some(count(&v, "pending_ttl")?),
            "log_level" => {
                let level = atom(&v, "log_level", "debug | info | notice | warning | error")?;
                if !LOG_LEVELS.contains(&level) {
                    return Err(bad("log_level", "debug | info | notice | warning | error"));
                }
                self.log_level = Some(level.to_string());
            }
            other => return Err(WardenError::UnknownSetting(other.to_string())),
        }
        Ok(())
    }
}

fn bad(key: &'static str, expected: &'static str) -> WardenError {
    WardenError::BadSetting { key, expected }
}

fn atom<'v>(v: &'v SettingValue, key: &'static str, expected: &'static str) -> Result<&'v str, WardenError> {
    match v {
        SettingValue::Atom(a) => Ok(a),
        _ => Err(bad(key, expected)),
    }
}

fn boolean(v: &SettingValue, key: &'static str) -> Result<bool, WardenError> {
    match v {
        SettingValue::Bool(b) => Ok(*b),
        _ => Err(bad(key, "true | false")),
    }
}

fn count(v: &SettingValue, key: &'static str) -> Result<u64, WardenError> {
    match v {
        SettingValue::Int(i) if *i >= 0 => Ok(*i as u64),
        _ => Err(bad(key, "a non-negative integer")),
    }
}

fn small(v: &SettingValue, key: &'static str) -> Result<u32, WardenError> {
    count(v, key).and_then(|n| u32::try_from(n).map_err(|_| bad(key, "an integer below 2^32")))
}

fn rate(v: &SettingValue, key: &'static str) -> Result<f64, WardenError> {
    match v {
        SettingValue::Int(i) if *i >= 0 => Ok(*i as f64),
        SettingValue::Float(f) if f.is_finite() && *f >= 0.0 => Ok(*f),
        _ => Err(bad(key, "a non-negative number")),
    }
}
