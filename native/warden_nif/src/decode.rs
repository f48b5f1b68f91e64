//! Erlang terms -> `warden_core` types. The Erlang side has already
//! normalised the hook arguments (`vmq_warden_hooks`); anything that still
//! does not fit is `badarg`, which the hook wrapper turns into the failure
//! decision. Nothing here panics on any input.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustler::types::tuple::get_tuple;
use rustler::{Binary, Error, LocalPid, NifResult, Term, TermType};
use warden_core::registry::KeyRef;
use warden_core::types::{Peer, ProcId, Protocol, SubscriberKey};

use crate::atoms;

/// MQTT strings are at most 65535 bytes; anything longer did not come from a
/// real CONNECT and is refused before it reaches the registry.
pub const MAX_FIELD: usize = 65_535;

/// A binary's bytes, borrowed from the term (no copy).
fn slice<'a>(term: Term<'a>) -> NifResult<&'a [u8]> {
    let bin = Binary::from_term(term)?;
    if bin.len() > MAX_FIELD {
        return Err(Error::BadArg);
    }
    Ok(bin.as_slice())
}

pub fn bytes(term: Term) -> NifResult<Vec<u8>> {
    slice(term).map(<[u8]>::to_vec)
}

/// A binary's bytes, borrowed, or `None` for `undefined`.
pub fn opt_slice<'a>(term: Term<'a>) -> NifResult<Option<&'a [u8]>> {
    if term == atoms::undefined().to_term(term.get_env()) {
        return Ok(None);
    }
    slice(term).map(Some)
}

pub fn opt_bytes(term: Term) -> NifResult<Option<Vec<u8>>> {
    Ok(opt_slice(term)?.map(<[u8]>::to_vec))
}

pub fn key(mountpoint: Term, client_id: Term) -> NifResult<SubscriberKey> {
    Ok(SubscriberKey::new(bytes(mountpoint)?, bytes(client_id)?))
}

/// The key borrowed from the terms (no copy): for events on existing
/// records, on_register and lookups.
pub fn key_ref<'a>(mountpoint: Term<'a>, client_id: Term<'a>) -> NifResult<KeyRef<'a>> {
    Ok(KeyRef { mountpoint: slice(mountpoint)?, client_id: slice(client_id)? })
}

/// A local pid's term is an immediate word that is unique while the process
/// lives, which is all the registry needs to tell two queues apart.
pub fn proc_id(term: Term) -> NifResult<ProcId> {
    let _: LocalPid = term.decode()?;
    let mut word = WordCapture(0);
    term.as_c_arg().hash(&mut word);
    Ok(ProcId(word.0))
}

/// Reads the term word out of `ErlNifTerm`, whose field is private but whose
/// derived `Hash` writes exactly that word: identity without `unsafe`.
struct WordCapture(u64);

impl Hasher for WordCapture {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_usize(&mut self, word: usize) {
        self.0 = word as u64;
    }
}

pub fn protocol(term: Term) -> NifResult<Protocol> {
    match term.decode::<u8>()? {
        5 => Ok(Protocol::Mqtt5),
        3 | 4 => Ok(Protocol::Mqtt3),
        _ => Err(Error::BadArg),
    }
}

pub fn ip(term: Term) -> NifResult<Option<IpAddr>> {
    if term.get_type() != TermType::Tuple {
        return Ok(None);
    }
    let parts = get_tuple(term)?;
    match parts.len() {
        4 => {
            let mut o = [0u8; 4];
            for (slot, t) in o.iter_mut().zip(parts) {
                *slot = t.decode()?;
            }
            Ok(Some(IpAddr::V4(Ipv4Addr::from(o))))
        }
        8 => {
            let mut w = [0u16; 8];
            for (slot, t) in w.iter_mut().zip(parts) {
                *slot = t.decode()?;
            }
            Ok(Some(IpAddr::V6(Ipv6Addr::from(w))))
        }
        _ => Err(Error::BadArg),
    }
}

pub fn port(term: Term) -> NifResult<Option<u16>> {
    if term.get_type() == TermType::Integer {
        term.decode().map(Some)
    } else {
        Ok(None)
    }
}

pub fn peer(ip_term: Term, port_term: Term) -> NifResult<Option<Peer>> {
    Ok(match (ip(ip_term)?, port(port_term)?) {
        (Some(ip), Some(port)) => Some(Peer { ip, port }),
        (Some(ip), None) => Some(Peer { ip, port: 0 }),
        _ => None,
    })
}

pub fn tuple<'a, const N: usize>(term: Term<'a>) -> NifResult<[Term<'a>; N]> {
    let parts = get_tuple(term)?;
    parts.try_into().map_err(|_| Error::BadArg)
}

/// A client certificate (DER) may be larger than an MQTT string.
pub fn opt_bytes_any_size(term: Term) -> NifResult<Option<Vec<u8>>> {
    match Binary::from_term(term) {
        Ok(bin) if bin.len() <= 1 << 20 => Ok(Some(bin.as_slice().to_vec())),
        Ok(_) => Err(Error::BadArg),
        Err(_) => Ok(None),
    }
}
