//! vmq_warden's core: everything the plugin decides and remembers, with no
//! dependency on Rustler or the BEAM, so it is unit-tested with `cargo test`.
//!
//! The NIF crate (`warden_nif`) only converts Erlang terms into the types of
//! [`types`] and back.
#![forbid(unsafe_code)]

pub mod calltime;
pub mod cluster;
pub mod credentials;
pub mod events;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod registry;
pub mod striped;
pub mod firewall;
pub mod limits;
pub mod loglimit;
pub mod logqueue;
pub mod obfuscation;
pub mod policy;
pub mod types;
pub mod warden;

pub use ipnet::IpNet;

/// What the unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    /// A fixed-seed xorshift generator: each call gives a number below its
    /// argument, the same sequence on every run.
    pub fn below(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut x = seed;
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        }
    }
}
