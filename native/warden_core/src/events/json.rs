//! One event as one line of JSON (no newline), written by hand: the fields
//! are few and fixed, and byte strings that are not UTF-8 (client ids may
//! be anything) are written lossily rather than refused.

use std::fmt::Write;

use super::{Detail, Event, MODIFIER_NAMES, SCHEMA_VERSION};
use crate::types::Protocol;

/// `node` is the Erlang node name, which the Erlang side hands over.
pub fn encode_json(e: &Event, node: &str) -> Vec<u8> {
    let mut s = String::with_capacity(256);
    s.push_str("{\"v\":");
    let _ = write!(s, "{SCHEMA_VERSION}");
    field_str(&mut s, "kind", e.kind.as_str());
    field_str(&mut s, "node", node);
    field_bytes(&mut s, "mountpoint", &e.key.mountpoint);
    field_bytes(&mut s, "client_id", &e.key.client_id);
    match e.session {
        Some(n) => {
            let _ = write!(s, ",\"session\":{n}");
        }
        None => s.push_str(",\"session\":null"),
    }
    let _ = write!(s, ",\"at\":{}", e.at);
    match &e.username {
        Some(u) => field_bytes(&mut s, "username", u),
        None => s.push_str(",\"username\":null"),
    }
    match &e.peer {
        Some(p) => {
            field_str(&mut s, "peer_host", &p.ip.to_string());
            let _ = write!(s, ",\"peer_port\":{}", p.port);
        }
        None => s.push_str(",\"peer_host\":null,\"peer_port\":null"),
    }
    match &e.detail {
        Detail::None => {}
        Detail::Accepted { identity, listener, modifiers, clean_session, protocol } => {
            field_str(&mut s, "identity", identity.as_str());
            let _ = write!(s, ",\"clean_session\":{clean_session}");
            field_str(&mut s, "protocol", protocol_str(*protocol));
            if let Some(l) = listener {
                s.push_str(",\"listener\":{");
                let mut first = true;
                let mut sep = |s: &mut String| {
                    if !std::mem::take(&mut first) {
                        s.push(',');
                    }
                };
                if let Some(p) = l.port {
                    sep(&mut s);
                    let _ = write!(s, "\"port\":{p}");
                }
                if let Some(k) = &l.kind {
                    sep(&mut s);
                    s.push_str("\"type\":");
                    string(&mut s, k);
                }
                if let Some(a) = &l.addr {
                    sep(&mut s);
                    s.push_str("\"addr\":");
                    string(&mut s, &a.to_string());
                }
                s.push('}');
            }
            s.push_str(",\"modifiers\":[");
            let names = MODIFIER_NAMES.iter().enumerate().filter(|(i, _)| modifiers & (1 << i) != 0);
            for (n, (_, name)) in names.enumerate() {
                if n > 0 {
                    s.push(',');
                }
                string(&mut s, name);
            }
            s.push(']');
        }
        Detail::Refused { code, rule, protocol } => {
            field_str(&mut s, "reason", code.as_str());
            field_str(&mut s, "rule", rule);
            field_str(&mut s, "protocol", protocol_str(*protocol));
        }
        Detail::Ended { started, by_session, kicked_by } => {
            field_str(&mut s, "reason", e.kind.as_str());
            let _ = write!(s, ",\"started\":{started}");
            if let Some(n) = by_session {
                let _ = write!(s, ",\"by_session\":{n}");
            }
            if let Some(b) = kicked_by {
                field_str(&mut s, "kicked_by", b);
            }
        }
    }
    s.push('}');
    s.into_bytes()
}

fn protocol_str(p: Protocol) -> &'static str {
    match p {
        Protocol::Mqtt3 => "mqtt3",
        Protocol::Mqtt5 => "mqtt5",
    }
}

fn field_str(s: &mut String, name: &str, value: &str) {
    s.push_str(",\"");
    s.push_str(name);
    s.push_str("\":");
    string(s, value);
}

fn field_bytes(s: &mut String, name: &str, value: &[u8]) {
    field_str(s, name, &String::from_utf8_lossy(value));
}

/// A JSON string literal (RFC 8259 escapes; control characters as \u00XX).
fn string(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}
