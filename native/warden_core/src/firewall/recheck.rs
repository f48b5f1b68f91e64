//! Enforce on reload: would a live session be refused if it connected now,
//! under the policy just loaded? Only the steps that need no password, with
//! no side effect (no rate-limit token, no counter, no audit line).

use super::*;

impl Firewall {
    /// The refusal a connect like `req` would get now from the steps before
    /// the password: a ban, a rule, the networks, the client id and
    /// username policies, anonymous access, and a user no longer known
    /// (`unknown_user = deny`); and a session that logged in (at
    /// `logged_in_at`) before a reload changed its user's stored
    /// credential, which it cannot have proved. `None` when it would pass
    /// them, and always when the policy names listeners or certificate
    /// identities: the registry keeps neither a session's listener nor its
    /// certificate, and without them those conditions would refuse sessions
    /// they admitted. Not re-checked: `max_sessions`.
    pub fn recheck(&self, req: &AuthRequest, logged_in_at: Millis, sessions: &dyn LiveSessions, now: Millis) -> Option<Refusal> {
        let running = self.running.load();
        let (cfg, snap) = (&running.cfg, &running.snap);
        if snap.listener_conditions || !snap.policy.cert_identity.is_empty() {
            return None;
        }
        let refusal = |reason: &str| Some(Refusal { code: RefusalCode::BadUsernameOrPassword, reason: reason.into() });
        match self.screen(cfg, snap, req, sessions, now, false) {
            Screen::Done(Decision::Refuse(r)) if r.code != RefusalCode::QuotaExceeded => Some(r),
            Screen::Password(check) if check.decoy => refusal("credentials: unknown user"),
            // At the same millisecond the session may have used either: refused.
            Screen::Password(_) if req.username.as_deref().and_then(|u| snap.credentials_changed.get(u)).is_some_and(|at| logged_in_at <= *at) => {
                refusal("credentials: password changed since the session logged in")
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::PasswordFile;
    use crate::types::SubscriberKey;

    fn fw(policy: &str, cfg: FirewallConfig) -> Firewall {
        let fw = Firewall::new(cfg);
        fw.install(Policy::parse(policy, "test.toml").unwrap(), PasswordFile::default());
        fw
    }

    fn live(ip: &str, user: Option<&str>) -> AuthRequest<'static> {
        AuthRequest {
            key: SubscriberKey::new(&b""[..], &b"c1"[..]),
            peer: Some(Peer { ip: ip.parse().unwrap(), port: 40000 }),
            username: user.map(|u| u.as_bytes().to_vec().into()),
            has_password: user.is_some(),
            clean_session: true,
            protocol: Protocol::Mqtt3,
            listener: None,
            client_cert: None,
            client_max_packet_size: None,
            client_session_expiry: None,
        }
    }

    const ALICE: &str = "[users.alice]\npassword = \"$6$c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\"\n";

    #[test]
    fn a_network_now_denied_and_a_removed_user_are_refused() {
        let cfg = FirewallConfig { unknown_user: UnknownUser::Deny, ..Default::default() };
        let f = fw(&format!("{ALICE}[network]\ndeny = [\"10.0.0.0/8\"]\n"), cfg);
        let r = f.recheck(&live("10.1.2.3", Some("alice")), 0, &NoSessions, 1).expect("refused");
        assert_eq!(r.code, RefusalCode::NotAuthorized);
        assert!(r.reason.starts_with("network:"), "{}", r.reason);
        assert_eq!(f.recheck(&live("192.168.1.1", Some("alice")), 0, &NoSessions, 1), None, "a credential no reload changed");
        let r = f.recheck(&live("192.168.1.1", Some("bob")), 0, &NoSessions, 1).expect("unknown user");
        assert_eq!(r.reason, "credentials: unknown user");
        // no counter, no audit: a re-check is no decision
        assert!(f.stats().refused.iter().all(|(_, n)| *n == 0));
        // with unknown_user = next a user not known passes to the next plugin: not refused
        let f = fw(ALICE, FirewallConfig::default());
        assert_eq!(f.recheck(&live("192.168.1.1", Some("bob")), 0, &NoSessions, 1), None);
    }

    /// A `$6$` line for `user` whose digest is `digest` repeated.
    fn line(user: &str, digest: char) -> String {
        format!("[users.{user}]\npassword = \"$6$c2FsdA==${}==\"\n", digest.to_string().repeat(86))
    }

    /// Reloads at `now` (what `load` does with files).
    fn reload(f: &Firewall, policy: &str, passwords: &str, now: Millis) {
        let one_at_a_time = f.changing.lock();
        let _ = f.swap(&one_at_a_time, Policy::parse(policy, "test.toml").unwrap(), PasswordFile::parse(passwords, "passwd"), !passwords.is_empty(), now);
    }

    /// A reload that changes alice's stored hash refuses her sessions that
    /// logged in before it (and at its millisecond), not the ones after;
    /// bob's unchanged line refuses no one. Later reloads keep the time of
    /// the change; a user removed and then added back has changed too, and
    /// so has a password file's line.
    #[test]
    fn a_session_older_than_its_user_s_changed_credential_is_refused() {
        let f = fw(&format!("{}{}", line("alice", 'A'), line("bob", 'B')), FirewallConfig::default());
        let refused = |user: &str, logged_in_at: Millis| {
            f.recheck(&live("192.168.1.1", Some(user)), logged_in_at, &NoSessions, 5_000).map(|r| (r.code, r.reason))
        };
        let changed = Some((RefusalCode::BadUsernameOrPassword, "credentials: password changed since the session logged in".to_string()));
        assert_eq!(refused("alice", 0), None, "the first load changes no one");
        reload(&f, &format!("{}{}", line("alice", 'C'), line("bob", 'B')), "", 1_000);
        assert_eq!(refused("alice", 999), changed);
        assert_eq!(refused("alice", 1_000), changed);
        assert_eq!(refused("alice", 1_001), None);
        assert_eq!(refused("bob", 999), None);
        // the same files again: the change keeps its time
        reload(&f, &format!("{}{}", line("alice", 'C'), line("bob", 'B')), "", 2_000);
        assert_eq!(refused("alice", 900), changed);
        assert_eq!(refused("alice", 1_500), None);
        // alice removed (with unknown_user = next her sessions pass), then back
        reload(&f, &line("bob", 'B'), "", 2_500);
        assert_eq!(refused("alice", 2_400), None);
        reload(&f, &format!("{}{}", line("alice", 'C'), line("bob", 'B')), "", 3_000);
        assert_eq!(refused("alice", 2_600), changed);
        // a password file's line
        let carol = |digest: char| format!("carol:$6$c2FsdA==${}==\n", digest.to_string().repeat(86));
        reload(&f, "", &carol('D'), 4_000);
        assert_eq!(refused("carol", 3_900), changed, "carol had no credential before, while others had");
        reload(&f, "", &carol('E'), 4_500);
        assert_eq!(refused("carol", 4_200), changed);
        assert_eq!(refused("carol", 4_600), None);
    }

    #[test]
    fn no_rate_limit_token_is_used_and_nothing_is_counted() {
        let cfg = FirewallConfig { rate_per_peer: 1.0, burst_per_peer: 1, ..Default::default() };
        let f = fw(ALICE, cfg);
        for _ in 0..5 {
            assert_eq!(f.recheck(&live("192.168.1.1", Some("alice")), 0, &NoSessions, 1), None);
        }
        match f.begin(live("192.168.1.1", Some("alice")), &NoSessions, 1) {
            Step::NeedPassword(_) => {}
            Step::Done(d, _) => panic!("the first real connect must get its token: {d:?}"),
        }
    }

    #[test]
    fn policies_naming_listeners_or_certificates_are_not_rechecked() {
        let rule = "[[rule]]\nname = \"no-tcp\"\naction = \"deny\"\nreason = \"tls only\"\nwhen = { listener = [{ type = \"tcp\" }] }\n";
        let f = fw(&format!("{ALICE}{rule}"), FirewallConfig::default());
        assert_eq!(f.recheck(&live("192.168.1.1", Some("alice")), 0, &NoSessions, 1), None);
    }
}
