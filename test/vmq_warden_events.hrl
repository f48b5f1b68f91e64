%% Shared by the suites that drive sessions through the real hooks with
%% vmq_warden_events_util (vmq_warden_events_SUITE, vmq_warden_control_SUITE,
%% vmq_warden_lifecycle_SUITE) and by that module.
-define(PEER, {{127, 0, 0, 1}, 34678}).
-define(PASSWORD, <<"s3cret-Pa55-word">>).
