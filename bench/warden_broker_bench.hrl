%% Shared by warden_broker_bench (the runner) and
%% warden_broker_bench_report (what it prints).
-define(CONC, 50).
%% the passes of a round, in order (warden_broker_bench)
-define(IMPLS, [null, passwd, warden, floor]).
-define(USERS, 1000).
-define(REF_AUTH, {warden_passwd_ref, auth_on_register, 5}).
-define(EMPTY, {warden_broker_bench, empty_hook, 1}).
-define(EVICT, {vmq_warden_nif, evict_caches, 1}).
%% how many KiB the calling process reads before each hook (--cold)
-define(EVICT_KIB, {warden_broker_bench, evict_kib}).
-define(PROFILE_MODS, [vmq_warden_hooks, vmq_warden_nif, credentials_obfuscation,
                       gen_server, gen, base64, crypto]).
