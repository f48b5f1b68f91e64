//! Everything before the password, one named step each, in the order of
//! POLICY.md's decision table (numbered as there). A step that decides
//! returns `Err(decision)`; `?` ends the screening there.

// The Err is the decision itself, moved once up to `screen`; boxing it
// would add an allocation to every refusal.
#![allow(clippy::result_large_err)]

use std::sync::atomic::Ordering;

use super::checks::{check_client_id, check_lengths, check_username, default_decision, post_checks, refuse};
use super::identity::cert_identity_name;
use super::{credential, lossy, AuthRequest, Decision, Firewall, FirewallConfig, LiveSessions, LoadedPolicy, PasswordCheck, RefusalCode, UnknownUser};
use crate::credentials::PasswordHash;
use crate::limits::peer_key;
use crate::policy::{in_networks, Action, CertIdentity, MatchInput, Policy};
use crate::types::{Listener, Millis};

/// What the screening leaves to do.
pub(super) enum Screen {
    Done(Decision),
    Password(PasswordCheck),
}

type Step<T> = Result<T, Decision>;

/// Who the client is for the identity rules: the certificate's identity
/// when a `cert_identity` entry applies (enforced at step 9), else the
/// CONNECT username.
struct Identity<'r> {
    cert_rule: Option<&'r CertIdentity>,
    cert_name: Option<Result<Vec<u8>, String>>,
}

impl Identity<'_> {
    fn name<'a>(&'a self, req: &'a AuthRequest) -> Option<&'a [u8]> {
        match &self.cert_name {
            Some(Ok(n)) => Some(n),
            _ => req.username.as_deref(),
        }
    }
}

impl Firewall {
    /// `take_tokens`: false for a re-check of a live session (recheck.rs),
    /// which must not use up the client's rate-limit tokens.
    pub(super) fn screen(&self, cfg: &FirewallConfig, snap: &LoadedPolicy, req: &AuthRequest, sessions: &dyn LiveSessions, now: Millis, take_tokens: bool) -> Screen {
        match self.screen_steps(cfg, snap, req, sessions, now, take_tokens) {
            Ok(screen) => screen,
            Err(decision) => Screen::Done(decision),
        }
    }

    fn screen_steps(&self, cfg: &FirewallConfig, snap: &LoadedPolicy, req: &AuthRequest, sessions: &dyn LiveSessions, now: Millis, take_tokens: bool) -> Step<Screen> {
        let policy = &snap.policy;
        // 0. lengths, before any matcher or table sees the bytes
        check_lengths(policy, &req.key.client_id, req.username.as_deref()).map_err(Decision::Refuse)?;
        self.check_bans(cfg, req, now)?; // 1.
        if take_tokens {
            self.check_rates(req, now)?; // 2.
        }
        // 3. nothing configured at all
        if snap.knows_nothing() {
            return Err(default_decision(cfg));
        }
        warn_once_without_listener(snap, req.listener.as_ref());
        let who = identity(policy, req)?;
        let allowed_by_rule = rules(policy, req, who.name(req))?; // 4.
        networks(policy, req, allowed_by_rule)?; // 5.
        names(policy, req, who.name(req))?; // 6., 7.
        anonymous(cfg, policy, req, &who, allowed_by_rule)?; // 8.
        let bind = policy.client_id.bind_to_user;
        cert_identity(policy, req, who, sessions, bind)?; // 9.
        Ok(credentials(cfg, snap, req, sessions, bind)) // 10.
    }

    /// 1. bans of the peer's address and (with `ban_users`) of the username
    fn check_bans(&self, cfg: &FirewallConfig, req: &AuthRequest, now: Millis) -> Step<()> {
        if let Some(p) = req.peer {
            if let Some(until) = self.peer_bans.banned_until(&peer_key(p.ip), now) {
                return Err(refuse(RefusalCode::Banned, format!("ban: peer address banned for {} s after failed logins", (until - now).div_ceil(1000))));
            }
        }
        if let (true, Some(u)) = (cfg.ban_users, &req.username) {
            if let Some(until) = self.user_bans.banned_until(u, now) {
                return Err(refuse(RefusalCode::Banned, format!("ban: username banned for {} s after failed logins", (until - now).div_ceil(1000))));
            }
        }
        Ok(())
    }

    /// 2. connect rates per peer address and per username
    fn check_rates(&self, req: &AuthRequest, now: Millis) -> Step<()> {
        if let Some(p) = req.peer {
            if !self.peer_rate.try_acquire(&peer_key(p.ip), now) {
                return Err(refuse(RefusalCode::ConnectionRateExceeded, "rate_limit: too many connects from this address"));
            }
        }
        if let Some(u) = &req.username {
            if !self.user_rate.try_acquire(u, now) {
                return Err(refuse(RefusalCode::ConnectionRateExceeded, "rate_limit: too many connects for this user"));
            }
        }
        Ok(())
    }
}

fn warn_once_without_listener(snap: &LoadedPolicy, listener: Option<&Listener>) {
    if listener.is_none() && snap.listener_conditions && !snap.warned_no_listener.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            target: "vmq_warden",
            "the policy names listeners, but the broker sends no listener data (VerneMQ 2.2 metadata): \
             listener deny rules, per-listener anonymous refusals and required certificates apply to every \
             connect, listener allow rules to none"
        );
    }
}

/// The identity the rules look at; a certificate's name is length-checked
/// like a username.
fn identity<'p>(policy: &'p Policy, req: &AuthRequest) -> Step<Identity<'p>> {
    let cert_rule = policy.cert_identity.iter().find(|c| c.applies(req.listener.as_ref(), req.client_cert.is_some()));
    let cert_name = match (cert_rule, &req.client_cert) {
        (Some(c), Some(der)) => Some(cert_identity_name(der, c.from)),
        _ => None,
    };
    if let Some(Ok(n)) = &cert_name {
        if req.username.as_deref() != Some(n.as_slice()) {
            check_lengths(policy, &req.key.client_id, Some(n)).map_err(Decision::Refuse)?;
        }
    }
    Ok(Identity { cert_rule, cert_name })
}

/// Step 4, the rules: first match; a deny whose listener condition cannot
/// be evaluated holds (fail closed), an allow's does not. `Ok(true)`: an
/// allow rule matched.
fn rules(policy: &Policy, req: &AuthRequest, identity: Option<&[u8]>) -> Step<bool> {
    let input = MatchInput {
        peer: req.peer.map(|p| p.ip),
        listener: req.listener.as_ref(),
        client_id: &req.key.client_id,
        username: identity,
        protocol: req.protocol,
        has_cert: req.client_cert.is_some(),
    };
    for rule in &policy.rules {
        let hit = match rule.action {
            Action::Deny => rule.when.matches_failing_closed(&input),
            Action::Allow | Action::Next => rule.when.matches(&input),
        };
        if hit {
            return match rule.action {
                Action::Allow => Ok(true),
                Action::Deny => Err(refuse(rule.code, format!("rule {}: {}", rule.name, rule.reason))),
                Action::Next => Err(Decision::Next),
            };
        }
    }
    Ok(false)
}

/// Step 5: peer networks: an allow rule lifts network.allow, never network.deny
fn networks(policy: &Policy, req: &AuthRequest, allowed_by_rule: bool) -> Step<()> {
    let (net, peer_ip) = (&policy.network, req.peer.map(|p| p.ip));
    if peer_ip.is_some_and(|ip| in_networks(&net.deny, ip)) {
        return Err(refuse(RefusalCode::NotAuthorized, "network: peer address is in network.deny"));
    }
    if !allowed_by_rule && !net.allow.is_empty() && !peer_ip.is_some_and(|ip| in_networks(&net.allow, ip)) {
        return Err(refuse(RefusalCode::NotAuthorized, "network: peer address is not in network.allow"));
    }
    Ok(())
}

/// Steps 6 and 7, client id and username: they bind whatever rule allowed
fn names(policy: &Policy, req: &AuthRequest, identity: Option<&[u8]>) -> Step<()> {
    if let Err(why) = check_client_id(policy, &req.key.client_id, identity) {
        return Err(refuse(RefusalCode::ClientIdentifierNotValid, format!("client_id: {why}")));
    }
    if let Some(u) = identity {
        if let Err(why) = check_username(policy, u) {
            return Err(refuse(RefusalCode::NotAuthorized, format!("username: {why}")));
        }
    }
    Ok(())
}

/// Step 8: anonymous (an allow rule may admit an anonymous client)
fn anonymous(cfg: &FirewallConfig, policy: &Policy, req: &AuthRequest, who: &Identity<'_>, allowed_by_rule: bool) -> Step<()> {
    if !allowed_by_rule && who.name(req).is_none() && who.cert_name.is_none() && !policy.anonymous.allowed(req.listener.as_ref(), cfg.allow_anonymous) {
        return Err(refuse(RefusalCode::NotAuthorized, policy.anonymous.refusal_reason(req.listener.as_ref())));
    }
    Ok(())
}

/// Step 9: certificate identity: a client with one is decided here (no password)
fn cert_identity(policy: &Policy, req: &AuthRequest, who: Identity<'_>, sessions: &dyn LiveSessions, bind: bool) -> Step<()> {
    let Some(c) = who.cert_rule else { return Ok(()) };
    match who.cert_name {
        Some(Err(why)) => Err(refuse(RefusalCode::NotAuthorized, format!("cert_identity: {why}"))),
        Some(Ok(name)) => {
            if c.username_must_match && req.username.as_ref().is_some_and(|u| *u != name) {
                return Err(refuse(
                    RefusalCode::NotAuthorized,
                    format!("cert_identity: username does not match the client certificate's identity {:?}", lossy(&name)),
                ));
            }
            let settings = match policy.user(&name) {
                Some(u) => &u.settings,
                None if c.require_known => {
                    return Err(refuse(RefusalCode::NotAuthorized, format!("cert_identity: certificate identity {:?} is not a known user", lossy(&name))))
                }
                None => &c.settings,
            };
            let rename = (req.username.as_deref() != Some(name.as_slice())).then(|| name.clone());
            Err(post_checks(req, Some(&name), settings, sessions, rename, bind))
        }
        None if c.required => Err(refuse(RefusalCode::NotAuthorized, "cert_identity: a client certificate is required on this listener")),
        None => Ok(()),
    }
}

/// Step 10: credentials: the password check to run, or the decision for a
/// client without a username or an unknown one
fn credentials(cfg: &FirewallConfig, snap: &LoadedPolicy, req: &AuthRequest, sessions: &dyn LiveSessions, bind: bool) -> Screen {
    let policy = &snap.policy;
    let Some(user) = &req.username else {
        return Screen::Done(post_checks(req, None, &policy.anonymous.settings, sessions, None, bind));
    };
    let policy_user = policy.user(user);
    let hash = credential(policy_user, &snap.passwords, user);
    let check = |hash: PasswordHash, decoy: bool| {
        Screen::Password(PasswordCheck {
            fingerprint: hash.fingerprint(),
            slow: hash.is_slow(),
            cached: !hash.cheaper_than_cache(),
            hash,
            decoy,
            ban_users: cfg.ban_users,
        })
    };
    match hash {
        Some(h) => check(h.clone(), false),
        None if !snap.has_user_source() => Screen::Done(default_decision(cfg)),
        None => match cfg.unknown_user {
            UnknownUser::Next => Screen::Done(Decision::Next),
            UnknownUser::Deny => check(snap.decoys.pick(user), true),
        },
    }
}
