//! What the core's examples share with the broker bench: its policy, its
//! users and one connect's arguments.

use std::net::IpAddr;

use warden_core::firewall::{AuthRequest, Listener};
use warden_core::types::{Peer, Protocol, SubscriberKey};

/// Network and client-id rules, the `{username}:*` glob, a deny rule.
pub const POLICY: &str = include_str!("policy.toml");
pub const USERS: usize = 1000;
/// credentials_obfuscation 3.4.0's encryption of "s3cret!" under `SECRET`
/// (obfuscation.rs), as the broker hands passwords to auth_on_register.
pub const SECRET: &[u8] = b"vmq-node-secret-0123456789abcdef";
pub const ENCRYPTED: &[u8] = b"KIoUIOU7FtPqWa4UWfbz5ZD91B2UbRwwJA6D/E9PHgeodFdyWgha/Y2/s6lZS5K37r9gl81NFchvYjYcS53KgVsl4HgJjVEJAGDZaVRIv/o=";

pub fn user(i: usize) -> String {
    format!("user{i:04}")
}

/// Client `i`: user `i % USERS`, a client id its glob admits, an allowed peer.
pub fn request(i: usize) -> AuthRequest<'static> {
    AuthRequest {
        key: SubscriberKey::new(&b""[..], format!("{}:dev-{i}", user(i % USERS)).into_bytes()),
        peer: Some(Peer { ip: format!("10.1.{}.{}", (i / 256) % 256, i % 256).parse::<IpAddr>().unwrap(), port: 40000 }),
        username: Some(user(i % USERS).into_bytes().into()),
        has_password: true,
        clean_session: true,
        protocol: Protocol::Mqtt3,
        listener: Some(Listener::default()),
        client_cert: None,
        client_max_packet_size: None,
        client_session_expiry: None,
    }
}
