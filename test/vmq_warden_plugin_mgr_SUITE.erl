%% The plugin started, reloaded and stopped the way VerneMQ's plugin manager
%% does it (vmq_plugin_harness), then used: the NIF must be attached and the
%% registry intact after each step. On a real 2.0.1 / 2.1.2 node the
%% manager's reload of every module after start left the NIF stub module
%% without its library, and every client was refused.
-module(vmq_warden_plugin_mgr_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).
-import(vmq_warden_events_util, [auth/3, reg/2, wakeup/2, offline/2]).

-define(CHAIN, vmq_hook_chain).

all() ->
    [nif_attached_after_enable,
     clients_admitted_after_enable,
     registry_survives_a_second_reload,
     registry_survives_hot_load_of_each_module,
     disable_enable_cycles].

init_per_testcase(_Case, Config) ->
    ok = vmq_plugin_harness:enable(vmq_warden),
    vmq_warden_robust_util:set_env(#{default_decision => allow}),
    ok = vmq_warden_nif:reset(),
    Config.

end_per_testcase(_Case, _Config) ->
    vmq_plugin_harness:disable(vmq_warden).

%%--------------------------------------------------------------------

nif_attached_after_enable(_Config) ->
    ?assert(vmq_warden_nif:loaded()),
    ?assertEqual(ok, vmq_warden_nif:load()),
    ?assertEqual(none, vmq_warden_nif:load_error()),
    ?assertNotMatch(#{nif_loaded := false}, vmq_warden:stats()).

%% A connect, a takeover and a disconnect, in the broker's order.
clients_admitted_after_enable(_Config) ->
    Sid = {"", <<"mgr-1">>},
    [S1, S2, Q] = [?CHAIN:spawn_proc() || _ <- [1, 2, 3]],
    ok = auth(S1, Sid, false),
    ok = wakeup(Q, Sid),
    ok = reg(S1, Sid),
    #{generation := G1} = online(Sid),
    %% persistent -> persistent takeover: auth, offline, on_register, wakeup
    ok = auth(S2, Sid, false),
    ok = offline(Q, Sid),
    ok = reg(S2, Sid),
    ok = wakeup(Q, Sid),
    #{generation := G2, connect_count := 2} = online(Sid),
    ?assert(G2 > G1),
    ok = offline(Q, Sid),
    ?assertMatch({ok, #{state := offline, generation := G2}}, vmq_warden:lookup(Sid)),
    ?assertMatch([#{reason := offline, generation := G2}, #{reason := taken_over, generation := G1}],
                 vmq_warden:recent_endings(2)).

%% An operator (or a second enable of a running plugin) reloads the modules
%% again: the old instances are purged first, as code:load_file/1 needs.
registry_survives_a_second_reload(_Config) ->
    Sid = connect(<<"mgr-2">>),
    [?assertEqual(true, code:purge(M) orelse true) || M <- app_modules()],
    Loaded = vmq_plugin_harness:reload_modules(vmq_warden),
    [?assertEqual({M, {module, M}}, R) || {M, _} = R <- Loaded],
    ?assert(vmq_warden_nif:loaded()),
    #{generation := _} = online(Sid),
    ?assertEqual(ok, auth(?CHAIN:spawn_proc(), {"", <<"mgr-2b">>}, true)).

registry_survives_hot_load_of_each_module(_Config) ->
    Sid = connect(<<"mgr-3">>),
    #{generation := G} = online(Sid),
    [begin
         ?assertEqual({module, M}, vmq_plugin_harness:hot_load(M)),
         ?assert(vmq_warden_nif:loaded(), M),
         ?assertMatch(#{generation := G, state := online}, online(Sid))
     end || M <- app_modules()],
    ?assertEqual(ok, auth(?CHAIN:spawn_proc(), {"", <<"mgr-3b">>}, true)).

%% vmq-admin plugin disable / enable, three times: attached every time, the
%% registry starts empty after each enable, and works.
disable_enable_cycles(_Config) ->
    [begin
         Sid = connect(<<"mgr-cycle">>),
         #{state := online} = online(Sid),
         ok = vmq_plugin_harness:disable(vmq_warden),
         ?assertEqual(false, lists:keymember(vmq_warden, 1, application:which_applications())),
         ok = vmq_plugin_harness:enable(vmq_warden),
         ?assert(vmq_warden_nif:loaded()),
         vmq_warden_robust_util:set_env(#{default_decision => allow}),
         ?assertEqual(not_found, vmq_warden:lookup(Sid))
     end || _ <- [1, 2, 3]],
    #{state := online} = online(connect(<<"mgr-cycle">>)).

%%--------------------------------------------------------------------

app_modules() ->
    {ok, Mods} = application:get_key(vmq_warden, modules),
    Mods.

connect(ClientId) ->
    Sid = {"", ClientId},
    [S, Q] = [?CHAIN:spawn_proc() || _ <- [1, 2]],
    ok = auth(S, Sid, true),
    ok = wakeup(Q, Sid),
    ok = reg(S, Sid),
    Sid.

online(Sid) ->
    {ok, #{state := online} = S} = vmq_warden:lookup(Sid),
    S.
