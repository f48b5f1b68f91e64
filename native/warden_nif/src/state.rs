//! The one `Warden` per loaded library, and the clock it reads.

use std::time::{SystemTime, UNIX_EPOCH};

use once_cell::sync::Lazy;
use warden_core::types::Millis;
use warden_core::warden::Warden;

pub static WARDEN: Lazy<Warden> = Lazy::new(Warden::default);

pub fn now() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}
