%% Shared by the suites that run the firewall with the README's example
%% policy (vmq_warden_firewall_SUITE, vmq_warden_firewall_state_SUITE) and
%% their helpers (vmq_warden_firewall_util).
%% In network.allow (10.0.0.0/8) and in the devices group's networks.
-define(LAN, {{10, 1, 2, 3}, 40000}).
-define(ALICE_PW, <<"alice-secret">>).
