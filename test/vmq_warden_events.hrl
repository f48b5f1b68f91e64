%% Shared by the suites that drive sessions through the real hooks
%% (vmq_warden_events_SUITE, vmq_warden_control_SUITE) and their helpers
%% (vmq_warden_events_util).
-define(PEER, {{127, 0, 0, 1}, 34678}).
-define(PASSWORD, <<"s3cret-Pa55-word">>).
