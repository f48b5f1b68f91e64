//! Enforce on reload: would a live session be refused if it connected now,
//! under the policy just loaded? Only the steps that need no password, with
//! no side effect (no rate-limit token, no counter, no audit line).

use super::*;

impl Firewall {
    /// The refusal a connect like `req` would get now from the steps before
    /// the password: a ban, a rule, the networks, the client id and
    /// username policies, anonymous access, and a user no longer known
    /// (`unknown_user = deny`). `None` when it would pass them, and always
    /// when the policy names listeners or certificate identities: the
    /// registry keeps neither a session's listener nor its certificate, and
    /// without them those conditions would refuse sessions they admitted.
    /// Not re-checked: the password (a changed one) and `max_sessions`.
    pub fn recheck(&self, req: &AuthRequest, sessions: &dyn LiveSessions, now: Millis) -> Option<Refusal> {
        let cfg = self.config();
        let snap = self.snap.load();
        if snap.listener_conditions || !snap.policy.cert_identity.is_empty() {
            return None;
        }
        match self.screen(&cfg, &snap, req, sessions, now, false) {
            Screen::Done(Decision::Refuse(r)) if r.code != RefusalCode::QuotaExceeded => Some(r),
            Screen::Password(check) if check.decoy => {
                Some(Refusal { code: RefusalCode::BadUsernameOrPassword, reason: "credentials: unknown user".into() })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::PasswordFile;

    fn fw(policy: &str, cfg: FirewallConfig) -> Firewall {
        let fw = Firewall::new(cfg);
        fw.install(Policy::parse(policy, "test.toml").unwrap(), PasswordFile::default());
        fw
    }

    fn live(ip: &str, user: Option<&str>) -> AuthRequest {
        AuthRequest {
            key: SubscriberKey::new(&b""[..], &b"c1"[..]),
            peer: Some(Peer { ip: ip.parse().unwrap(), port: 40000 }),
            username: user.map(|u| u.as_bytes().to_vec()),
            has_password: user.is_some(),
            clean_session: true,
            protocol: Protocol::Mqtt3,
            listener: None,
            client_cert: None,
        }
    }

    const ALICE: &str = "[users.alice]\npassword = \"$6$c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\"\n";

    #[test]
    fn a_network_now_denied_and_a_removed_user_are_refused() {
        let cfg = FirewallConfig { unknown_user: UnknownUser::Deny, ..Default::default() };
        let f = fw(&format!("{ALICE}[network]\ndeny = [\"10.0.0.0/8\"]\n"), cfg);
        let r = f.recheck(&live("10.1.2.3", Some("alice")), &NoSessions, 1).expect("refused");
        assert_eq!(r.code, RefusalCode::NotAuthorized);
        assert!(r.reason.starts_with("network:"), "{}", r.reason);
        assert_eq!(f.recheck(&live("192.168.1.1", Some("alice")), &NoSessions, 1), None, "password not re-checked");
        let r = f.recheck(&live("192.168.1.1", Some("bob")), &NoSessions, 1).expect("unknown user");
        assert_eq!(r.reason, "credentials: unknown user");
        // no counter, no audit: a re-check is no decision
        assert!(f.stats().refused.iter().all(|(_, n)| *n == 0));
        // with unknown_user = next a user not known passes to the next plugin: not refused
        let f = fw(ALICE, FirewallConfig::default());
        assert_eq!(f.recheck(&live("192.168.1.1", Some("bob")), &NoSessions, 1), None);
    }

    #[test]
    fn no_rate_limit_token_is_used_and_nothing_is_counted() {
        let cfg = FirewallConfig { rate_per_peer: 1.0, burst_per_peer: 1, ..Default::default() };
        let f = fw(ALICE, cfg);
        for _ in 0..5 {
            assert_eq!(f.recheck(&live("192.168.1.1", Some("alice")), &NoSessions, 1), None);
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
        assert_eq!(f.recheck(&live("192.168.1.1", Some("alice")), &NoSessions, 1), None);
    }
}
