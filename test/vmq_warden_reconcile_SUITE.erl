%% The reconciliation against the broker's own queues, with the broker's
%% functions (vmq_queue_sup_sup:get_queue_pid/1, vmq_queue:status/1)
%% mocked as a VerneMQ 2.0.1 node answers them.
-module(vmq_warden_reconcile_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(PEER, {{127, 0, 0, 1}, 40200}).
-define(CHAIN, vmq_hook_chain).

all() ->
    [corrects_sessions_the_broker_does_not_have,
     nothing_outside_vernemq,
     ghost_no_longer_counts_for_max_sessions].

init_per_testcase(_Case, Config) ->
    ok = vmq_plugin_harness:enable(vmq_warden),
    vmq_warden_robust_util:set_env(#{default_decision => allow}),
    ok = application:set_env(vmq_warden, reconcile_grace, 0),
    ok = vmq_warden_nif:reset(),
    Config.

end_per_testcase(_Case, _Config) ->
    catch meck:unload(),
    case whereis(vmq_queue_sup_sup) of
        undefined -> ok;
        Pid -> unlink(Pid), exit(Pid, kill)
    end,
    ok = application:unset_env(vmq_warden, reconcile_grace),
    vmq_plugin_harness:disable(vmq_warden).

%% The broker: a map of subscriber id => absent | offline | online.
mock_broker(View) ->
    Sup = spawn_link(fun() -> receive stop -> ok end end),
    true = register(vmq_queue_sup_sup, Sup),
    ok = meck:new(vmq_queue_sup_sup, [non_strict, no_link]),
    ok = meck:new(vmq_queue, [non_strict, no_link]),
    Queues = maps:map(fun(_, absent) -> absent;
                         (_, State) -> {spawn(fun() -> receive stop -> ok end end), State}
                      end, View),
    ok = meck:expect(vmq_queue_sup_sup, get_queue_pid,
                     fun(Sid) -> case maps:get(Sid, Queues, absent) of
                                     absent -> not_found;
                                     {Pid, _} -> Pid
                                 end end),
    ok = meck:expect(vmq_queue, status,
                     fun(Pid) ->
                             [State] = [S || {P, S} <- maps:values(Queues), P =:= Pid],
                             Sessions = case State of online -> 1; offline -> 0 end,
                             {State, fanout, 0, Sessions, false}
                     end).

corrects_sessions_the_broker_does_not_have(_Config) ->
    Ghost = connect(<<"ghost">>, true, <<"alice">>),
    Live = connect(<<"live">>, true, <<"bob">>),
    Left = connect(<<"left">>, false, <<"carol">>),
    Stored = connect(<<"stored">>, false, undefined),
    {ok, #{generation := GhostGen}} = vmq_warden:lookup(Ghost),
    mock_broker(#{Ghost => absent, Live => online, Left => offline, Stored => online}),
    ?assert(vmq_warden_broker:inside_vernemq()),
    ?assertEqual(#{checked => 4, corrected => 2, differs => 0}, vmq_warden_reconciler:run_pass()),
    ?assertEqual(not_found, vmq_warden:lookup(Ghost)),
    ?assertMatch({ok, #{state := online}}, vmq_warden:lookup(Live)),
    ?assertMatch({ok, #{state := offline}}, vmq_warden:lookup(Left)),
    ?assertMatch({ok, #{state := online}}, vmq_warden:lookup(Stored)),
    ?assertMatch([#{reason := vanished, generation := GhostGen, client_id := <<"ghost">>}],
                 [E || #{client_id := <<"ghost">>} = E <- vmq_warden:recent_endings(10)]),
    Stats = vmq_warden:stats(),
    ?assertMatch(#{registry := #{reconciled := 2}, reconcile_passes := 1}, Stats),
    ?assert(lists:keymember(warden_reconciled, 3, vmq_warden_metrics:metrics())),
    %% a second pass finds nothing more to correct
    ?assertEqual(#{checked => 3, corrected => 0, differs => 0}, vmq_warden_reconciler:run_pass()).

nothing_outside_vernemq(_Config) ->
    Sid = connect(<<"alone">>, true, undefined),
    ?assertNot(vmq_warden_broker:inside_vernemq()),
    ?assertEqual({error, not_inside_vernemq}, vmq_warden_reconciler:run_pass()),
    ?assertMatch({ok, #{state := online}}, vmq_warden:lookup(Sid)).

%% The lock-out the real broker showed: a ghost of alice counted against
%% max_sessions = 1 until the reconciliation removes it.
ghost_no_longer_counts_for_max_sessions(Config) ->
    Policy = filename:join(?config(priv_dir, Config), "max1.toml"),
    Hash = iolist_to_binary(vmq_warden_robust_util:sha512_line(<<"pw">>)),
    ok = file:write_file(Policy, [<<"version = 1\n[users.alice]\nmax_sessions = 1\npassword = \"">>,
                                  Hash, <<"\"\n">>]),
    vmq_warden_robust_util:set_env(#{default_decision => allow, policy_file => Policy}),
    ok = application:set_env(vmq_warden, reconcile_grace, 0),
    Ghost = connect(<<"alice-1">>, true, <<"alice">>),
    ?assertEqual({error, quota_exceeded}, auth(?CHAIN:spawn_proc(), {"", <<"alice-2">>}, true, <<"alice">>)),
    mock_broker(#{Ghost => absent}),
    #{corrected := 1} = vmq_warden_reconciler:run_pass(),
    ?assertEqual(ok, auth(?CHAIN:spawn_proc(), {"", <<"alice-2">>}, true, <<"alice">>)).

%%--------------------------------------------------------------------

auth(Conn, Sid, Clean, User) ->
    Password = case User of <<"alice">> -> <<"pw">>; _ -> undefined end,
    ?CHAIN:in_proc(Conn, fun() ->
        ?CHAIN:all_till_ok(auth_on_register, [?PEER, Sid, User, Password, Clean], ?CHAIN:plugins())
    end).

connect(ClientId, Clean, User) ->
    Sid = {"", ClientId},
    [S, Q] = [?CHAIN:spawn_proc() || _ <- [1, 2]],
    ok = auth(S, Sid, Clean, User),
    ok = ?CHAIN:in_proc(Q, fun() -> ?CHAIN:all(on_client_wakeup, [Sid], ?CHAIN:plugins()) end),
    ok = ?CHAIN:in_proc(S, fun() -> ?CHAIN:all(on_register, [?PEER, Sid, User], ?CHAIN:plugins()) end),
    Sid.
