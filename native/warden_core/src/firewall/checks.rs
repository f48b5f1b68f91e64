//! The checks of a connect that read only the policy and the request:
//! lengths, client id, username, and the identified client's own limits
//! and binding (step 11).

use super::*;

pub(super) fn refuse(code: RefusalCode, reason: impl Into<String>) -> Decision {
    Decision::Refuse(Refusal { code, reason: reason.into() })
}

pub(super) fn default_decision(cfg: &FirewallConfig) -> Decision {
    match cfg.default_decision {
        DefaultDecision::Allow => Decision::Accept(Mods::default()),
        DefaultDecision::Deny => refuse(RefusalCode::NotAuthorized, "default_decision: no policy or password file knows this client"),
        DefaultDecision::Next => Decision::Next,
    }
}

/// Step 11: the identified client's own restrictions, then accept.
pub(super) fn post_checks(
    req: &AuthRequest,
    identity: Option<&[u8]>,
    settings: &Settings,
    sessions: &dyn LiveSessions,
    rename: Option<Vec<u8>>,
    bind: bool,
) -> Decision {
    // Only a refusal's reason names the client: an accepted connect formats nothing.
    let who = || identity.map(|u| format!("user {:?}", lossy(u))).unwrap_or_else(|| "anonymous".to_string());
    if let Some(nets) = &settings.networks {
        if !nets.is_empty() && !req.peer.is_some_and(|p| in_networks(nets, p.ip)) {
            return refuse(RefusalCode::NotAuthorized, format!("networks: {} may not connect from this address", who()));
        }
    }
    let mut mods = settings.modifiers.resolve(&req.key);
    // VerneMQ puts these answers in place of the client's own values, even
    // larger ones: it would send packets the client cannot take, and keep
    // a session the client asked to end with its connection.
    cap(&mut mods.max_packet_size, req.client_max_packet_size);
    cap(&mut mods.session_expiry_interval, req.client_session_expiry);
    let key = mods.registered_key(&req.key);
    if bind {
        if let Some(owner) = sessions.other_owner(key, identity) {
            return refuse(
                RefusalCode::NotAuthorized,
                format!("client_id: the session of this client id belongs to user {:?}, not to {}", lossy(&owner), who()),
            );
        }
    }
    if let (Some(max), Some(u)) = (settings.max_sessions, identity) {
        let mut live = sessions.live_sessions_of_user(u);
        if live > 0 && sessions.has_live_session(u, key) {
            live -= 1; // this client id takes its own session over
        }
        if live >= max as usize {
            return refuse(RefusalCode::QuotaExceeded, format!("max_sessions: {} already has {live} of {max} sessions", who()));
        }
    }
    mods.username = rename;
    Decision::Accept(mods.into())
}

/// The policy's value as an upper bound of the client's own, when both are known.
fn cap(ours: &mut Option<u64>, theirs: Option<u32>) {
    if let (Some(o), Some(t)) = (ours.as_mut(), theirs) {
        *o = (*o).min(u64::from(t));
    }
}

/// Step 0: the configured length bounds, checked before any matcher, table
/// or hash sees the client id or the identity.
pub(super) fn check_lengths(policy: &Policy, client_id: &[u8], identity: Option<&[u8]>) -> Result<(), Refusal> {
    if let Some(max) = policy.client_id.max_length {
        if client_id.len() > max {
            return Err(Refusal { code: RefusalCode::ClientIdentifierNotValid, reason: format!("client_id: longer than {max} bytes") });
        }
    }
    if let (Some(max), Some(u)) = (policy.username.max_length, identity) {
        if u.len() > max {
            return Err(Refusal { code: RefusalCode::NotAuthorized, reason: format!("username: longer than {max} bytes") });
        }
    }
    Ok(())
}

pub(super) fn check_client_id(policy: &Policy, id: &[u8], user: Option<&[u8]>) -> Result<(), String> {
    let c = &policy.client_id;
    if let Some(ranges) = &c.allowed_chars {
        if !id.iter().all(|b| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(b))) {
            return Err("contains characters outside client_id.allowed_chars".into());
        }
    }
    if let Some(re) = &c.pattern {
        if !re.is_match(id) {
            return Err("does not match client_id.pattern".into());
        }
    }
    for r in &c.reserved {
        if id.starts_with(&r.prefix) {
            let exempt = user.is_some_and(|u| r.users.contains(u) || r.groups.iter().any(|g| policy.in_group(u, g)));
            if !exempt {
                return Err(format!("prefix {:?} is reserved", lossy(&r.prefix)));
            }
        }
    }
    if let Some(u) = user {
        if c.must_start_with_username && !id.starts_with(u) {
            return Err("must start with the username".into());
        }
        if let Some(p) = &c.username_pattern {
            if !p.matches(u, id) {
                return Err(format!("does not match {:?} for this username", p.source()));
            }
        }
    }
    Ok(())
}

pub(super) fn check_username(policy: &Policy, u: &[u8]) -> Result<(), String> {
    let c = &policy.username;
    if c.deny.contains(u) {
        return Err("this username is not allowed".into());
    }
    if let Some(re) = &c.pattern {
        if !re.is_match(u) {
            return Err("does not match username.pattern".into());
        }
    }
    Ok(())
}

