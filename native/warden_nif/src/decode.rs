//! Erlang terms -> `warden_core` types: the hooks' arguments as the broker
//! passes them (docs/VERNEMQ.md, "Hooks and arguments") and the operator
//! API's requests. Every binary is bounded before anything reads it; a
//! value that does not fit is `badarg` (the hook wrappers answer that with
//! the failure decision), never a panic, never some other valid value.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustler::{Atom, Binary, Decoder, Error, LocalPid, NifResult, Term, TermType};
use warden_core::firewall::{AuthRequest, Listener};
use warden_core::obfuscation::MAX_ENCRYPTED;
use warden_core::registry::KeyRef;
use warden_core::types::{Key, Peer, ProcId, Protocol};
use warden_core::warden::Password;

use crate::atoms;

/// MQTT strings are at most 65535 bytes; anything longer did not come from
/// a real CONNECT.
pub const MAX_FIELD: usize = 65_535;
/// A client certificate (DER) may be larger than an MQTT string.
const MAX_CERT: usize = 1 << 20;
/// Mountpoints are short operator-set names; a longer charlist is refused
/// before it is walked.
const MAX_MOUNTPOINT_CHARS: usize = 1024;

/// The bytes of a binary of at most `max` bytes, borrowed from the term.
fn bounded(term: Term<'_>, max: usize) -> NifResult<&[u8]> {
    let bin = Binary::from_term(term)?;
    if bin.len() > max {
        return Err(Error::BadArg);
    }
    Ok(bin.as_slice())
}

/// A binary of at most `MAX_FIELD` bytes, borrowed from the term.
pub struct Field<'a>(pub &'a [u8]);

impl<'a> Decoder<'a> for Field<'a> {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        bounded(term, MAX_FIELD).map(Field)
    }
}

/// `undefined` or a [`Field`].
pub struct OptField<'a>(pub Option<&'a [u8]>);

impl<'a> Decoder<'a> for OptField<'a> {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        if term.is_atom() && term == atoms::undefined().to_term(term.get_env()) {
            return Ok(OptField(None));
        }
        Field::decode(term).map(|f| OptField(Some(f.0)))
    }
}

/// A username as hooks get it: a binary, or anything else for none
/// (`undefined` for an anonymous client).
pub struct Username<'a>(pub Option<&'a [u8]>);

impl<'a> Decoder<'a> for Username<'a> {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        // One call for a binary; anything but a bitstring is no username.
        match Binary::from_term(term) {
            Ok(bin) if bin.len() > MAX_FIELD => Err(Error::BadArg),
            Ok(bin) => Ok(Username(Some(bin.as_slice()))),
            Err(_) if term.get_type() == TermType::Binary => Err(Error::BadArg),
            Err(_) => Ok(Username(None)),
        }
    }
}

/// `{Mountpoint, ClientId}`: the mountpoint a charlist (VerneMQ's type,
/// usually "") or a binary, the client id a binary.
pub struct SubscriberId<'a> {
    /// A binary mountpoint is borrowed; a charlist one is encoded as UTF-8.
    pub mountpoint: Cow<'a, [u8]>,
    pub client_id: &'a [u8],
}

impl<'a> Decoder<'a> for SubscriberId<'a> {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        let (mp, cid): (Term<'a>, Field<'a>) = term.decode()?;
        Ok(SubscriberId { mountpoint: mountpoint(mp)?, client_id: cid.0 })
    }
}

impl<'a> SubscriberId<'a> {
    pub fn key_ref(&self) -> KeyRef<'_> {
        KeyRef { mountpoint: &self.mountpoint, client_id: self.client_id }
    }

    /// The key over the term's bytes (a charlist mountpoint's own UTF-8).
    pub fn into_key(self) -> Key<'a> {
        Key { mountpoint: self.mountpoint, client_id: Cow::Borrowed(self.client_id) }
    }
}

/// Read as a list first, without asking the term's type: VerneMQ's
/// mountpoint is a charlist, "" on most listeners, and every hook of a
/// connect reads one (each call into the VM is cold code in a broker).
/// "" is asked for first: `list_length` builds an error value even when
/// it succeeds, and dropping it was a call into cold code on every hook
/// (about 1% of the library's time in a node).
fn mountpoint(term: Term<'_>) -> NifResult<Cow<'_, [u8]>> {
    if term.is_empty_list() {
        return Ok(Cow::Borrowed(&[]));
    }
    let Ok(len) = term.list_length() else {
        return Field::decode(term).map(|f| Cow::Borrowed(f.0));
    };
    if len == 0 {
        return Ok(Cow::Borrowed(&[]));
    }
    if len > MAX_MOUNTPOINT_CHARS {
        return Err(Error::BadArg);
    }
    let mut s = String::new();
    for c in term.into_list_iterator()? {
        s.push(char::from_u32(c.decode::<u32>()?).ok_or(Error::BadArg)?);
    }
    Ok(Cow::Owned(s.into_bytes()))
}

/// An IP address tuple, or `None` for anything else (an address the broker
/// could not give is no address, not an error).
pub struct Address(pub Option<IpAddr>);

impl<'a> Decoder<'a> for Address {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        Ok(Address(ip(term)))
    }
}

fn ip(term: Term<'_>) -> Option<IpAddr> {
    let env = term.get_env();
    let parts = tuple_elements(term)?;
    // SAFETY: the elements of a tuple of `env`, valid as long as `term`.
    let part = |t| unsafe { Term::new(env, t) };
    match parts.len() {
        4 => {
            let mut o = [0u8; 4];
            for (slot, &t) in o.iter_mut().zip(parts) {
                *slot = part(t).decode().ok()?;
            }
            Some(IpAddr::V4(Ipv4Addr::from(o)))
        }
        8 => {
            let mut w = [0u16; 8];
            for (slot, &t) in w.iter_mut().zip(parts) {
                *slot = part(t).decode().ok()?;
            }
            Some(IpAddr::V6(Ipv6Addr::from(w)))
        }
        _ => None,
    }
}

/// A port number, or `None` for anything else.
pub struct PortNumber(pub Option<u16>);

impl<'a> Decoder<'a> for PortNumber {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        Ok(PortNumber(term.decode().ok()))
    }
}

/// The hooks' `Peer`: `{Ip, Port}`, or `None` when there is no address.
pub struct PeerArg(pub Option<Peer>);

impl<'a> Decoder<'a> for PeerArg {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        let Ok((Address(ip), PortNumber(port))) = term.decode::<(Address, PortNumber)>() else {
            return Ok(PeerArg(None));
        };
        Ok(PeerArg(ip.map(|ip| Peer { ip, port: port.unwrap_or(0) })))
    }
}

/// 3 (the hooks without `_m5`) or 5.
pub struct ProtocolArg(pub Protocol);

impl<'a> Decoder<'a> for ProtocolArg {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        match term.decode::<u8>()? {
            5 => Ok(ProtocolArg(Protocol::Mqtt5)),
            3 | 4 => Ok(ProtocolArg(Protocol::Mqtt3)),
            _ => Err(Error::BadArg),
        }
    }
}

/// `CleanSession` / `CleanStart`: `true` or 1 (some clients' encoders), else false.
pub struct Flag(pub bool);

impl<'a> Decoder<'a> for Flag {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        Ok(Flag(term.decode::<bool>().unwrap_or(false) || matches!(term.decode::<i64>(), Ok(1))))
    }
}

/// The listener and certificate from the connection metadata map of the
/// 6-/7-arity auth hooks (`#{}` when the listener forwards nothing).
pub struct Metadata<'a> {
    pub listener: Listener,
    pub client_cert: Option<&'a [u8]>,
}

impl<'a> Decoder<'a> for Metadata<'a> {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        let env = term.get_env();
        let get = |key: Atom| term.map_get(key.to_term(env)).ok();
        // Not a map, or the empty one of a plain listener.
        if !non_empty_map(term) {
            return Ok(Metadata { listener: Listener::default(), client_cert: None });
        }
        let kind = get(atoms::listener_type()).and_then(|t| {
            if t.is_atom() {
                t.atom_to_string().ok().filter(|s| s != "undefined")
            } else {
                Field::decode(t).ok().map(|f| String::from_utf8_lossy(f.0).into_owned())
            }
        });
        let client_cert = match get(atoms::client_cert()).map(Binary::from_term) {
            Some(Ok(der)) if der.len() <= MAX_CERT => Some(der.as_slice()),
            Some(Ok(_)) => return Err(Error::BadArg),
            _ => None,
        };
        Ok(Metadata {
            listener: Listener {
                port: get(atoms::listener_port()).and_then(|t| t.decode().ok()),
                kind,
                addr: get(atoms::listener_addr()).and_then(ip),
            },
            client_cert,
        })
    }
}

/// One call into the VM: the maps the hooks pass are empty on plain
/// listeners and for MQTT 3, and then nothing is looked up in them.
fn non_empty_map(term: Term<'_>) -> bool {
    matches!(term.map_size(), Ok(n) if n > 0)
}

/// What the firewall reads from auth_on_register_m5's `Properties` map: the
/// client's Maximum Packet Size (a four-byte integer above 0, else none
/// sent) and the Session Expiry Interval it asked for (0 when absent, as
/// MQTT 5 reads it; also when `Properties` is not a map).
pub struct ConnectProperties {
    pub max_packet_size: Option<u32>,
    pub session_expiry: u32,
}

impl<'a> Decoder<'a> for ConnectProperties {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        let get = |key: Atom| term.map_get(key.to_term(term.get_env())).ok().and_then(|t| t.decode::<u32>().ok());
        // MQTT 3's `#{}` (or not a map).
        if !non_empty_map(term) {
            return Ok(ConnectProperties { max_packet_size: None, session_expiry: 0 });
        }
        Ok(ConnectProperties {
            max_packet_size: get(atoms::p_max_packet_size()).filter(|n| *n > 0),
            session_expiry: get(atoms::p_session_expiry_interval()).unwrap_or(0),
        })
    }
}

/// auth_on_register's arguments: `{Proto, Peer, SubscriberId, User,
/// Password, Clean, Properties, Meta}` (`Properties` is `#{}` for MQTT 3).
/// The password is decoded here but decrypted by the core only when the
/// decision needs it.
pub struct AuthArgs<'a> {
    pub protocol: ProtocolArg,
    pub peer: PeerArg,
    pub subscriber_id: SubscriberId<'a>,
    pub username: Username<'a>,
    pub password: PasswordArg<'a>,
    pub clean: Flag,
    pub properties: ConnectProperties,
    pub meta: Metadata<'a>,
}

impl<'a> Decoder<'a> for AuthArgs<'a> {
    fn decode(term: Term<'a>) -> NifResult<Self> {
        let [protocol, peer, subscriber_id, username, password, clean, properties, meta] = tuple::<8>(term)?;
        Ok(AuthArgs {
            protocol: protocol.decode()?,
            peer: peer.decode()?,
            subscriber_id: subscriber_id.decode()?,
            username: username.decode()?,
            password: password.decode()?,
            clean: clean.decode()?,
            properties: properties.decode()?,
            meta: meta.decode()?,
        })
    }
}

impl<'a> AuthArgs<'a> {
    /// The request, and the password to check if the decision needs one.
    pub fn into_request(self) -> (AuthRequest<'a>, Password<'a>) {
        let password = self.password.0;
        let request = AuthRequest {
            key: self.subscriber_id.into_key(),
            peer: self.peer.0,
            username: self.username.0.map(Cow::Borrowed),
            has_password: !matches!(password, Password::Absent),
            clean_session: self.clean.0,
            protocol: self.protocol.0,
            listener: Some(self.meta.listener),
            client_cert: self.meta.client_cert.map(Cow::Borrowed),
            client_max_packet_size: self.properties.max_packet_size,
            client_session_expiry: Some(self.properties.session_expiry),
        };
        (request, password)
    }
}

/// The password as the broker gave it: a binary, `{encrypted, B}`, or
/// anything else for none. One that is too long is not an error here: only
/// if the decision needs it.
pub struct PasswordArg<'a>(pub Password<'a>);

impl<'a> Decoder<'a> for PasswordArg<'a> {
    /// `{encrypted, B}` tried first (VerneMQ 2.x hands every password so),
    /// two calls into the VM either way.
    fn decode(term: Term<'a>) -> NifResult<Self> {
        if let Ok([tag, inner]) = tuple::<2>(term) {
            let encrypted = is_the_atom(tag, atoms::encrypted());
            // The base64 of salt, IV and ciphertext: about 4/3 of the
            // password, so longer than any MQTT string.
            let password = encrypted.then(|| binary_password(inner, MAX_ENCRYPTED, Password::Encrypted)).flatten();
            return Ok(PasswordArg(password.unwrap_or(Password::Absent)));
        }
        Ok(PasswordArg(binary_password(term, MAX_FIELD, Password::Clear).unwrap_or(Password::Absent)))
    }
}

/// `None` if `term` is no bitstring; `Unreadable` if it is longer than
/// `max` or not whole bytes.
fn binary_password<'a>(term: Term<'a>, max: usize, wrap: fn(&'a [u8]) -> Password<'a>) -> Option<Password<'a>> {
    match Binary::from_term(term) {
        Ok(bin) if bin.len() > max => Some(Password::Unreadable),
        Ok(bin) => Some(wrap(bin.as_slice())),
        Err(_) => (term.get_type() == TermType::Binary).then_some(Password::Unreadable),
    }
}

/// Whether `term` is `atom`, without a call into the VM: an atom is an
/// immediate word, equal only to itself.
fn is_the_atom(term: Term<'_>, atom: Atom) -> bool {
    term.as_c_arg() == atom.to_term(term.get_env()).as_c_arg()
}

/// A local pid's term is an immediate word that is unique while the process
/// lives, which is all the registry needs to tell two processes apart.
pub fn proc_id(term: Term) -> NifResult<ProcId> {
    let _: LocalPid = term.decode()?;
    Ok(pid_word(term))
}

/// The calling process's [`ProcId`]: `enif_self` gives a local pid, so it
/// is not checked again as [`proc_id`] checks an argument.
pub fn caller(env: rustler::Env) -> ProcId {
    use rustler::Encoder;
    pid_word(env.pid().encode(env))
}

fn pid_word(pid: Term) -> ProcId {
    let mut word = WordCapture(0);
    pid.as_c_arg().hash(&mut word);
    ProcId(word.0)
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

/// The elements of an `N`-tuple, borrowed from the term. Rustler's
/// `get_tuple` and its `NifTuple` derive copy them into a `Vec` (a malloc
/// on every auth_on_register); its decoder for Rust tuples borrows them but
/// stops at 7 elements.
pub fn tuple<'a, const N: usize>(term: Term<'a>) -> NifResult<[Term<'a>; N]> {
    let elements = tuple_elements(term).ok_or(Error::BadArg)?;
    let elements: &[rustler::sys::ErlNifTerm; N] = elements.try_into().map_err(|_| Error::BadArg)?;
    let env = term.get_env();
    // SAFETY: the elements of a tuple of `env`, valid as long as `term`.
    Ok(elements.map(|t| unsafe { Term::new(env, t) }))
}

/// A tuple's elements as the VM holds them (one call, whatever the arity),
/// or `None` if `term` is not a tuple.
fn tuple_elements<'a>(term: Term<'a>) -> Option<&'a [rustler::sys::ErlNifTerm]> {
    let mut arity: std::ffi::c_int = 0;
    let mut elements: *const rustler::sys::ErlNifTerm = std::ptr::null();
    // SAFETY: enif_get_tuple reads `term` and writes the two outputs; on
    // success `elements` points at `arity` terms that live as long as `term`.
    let ok = unsafe { rustler::sys::enif_get_tuple(term.get_env().as_c_arg(), term.as_c_arg(), &mut arity, &mut elements) };
    if ok == 0 {
        return None;
    }
    // SAFETY: as above.
    Some(unsafe { std::slice::from_raw_parts(elements, usize::try_from(arity).ok()?) })
}
