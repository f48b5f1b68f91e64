%% The registry rebuilt from the broker's own queues when the plugin starts
%% inside VerneMQ, with the broker's functions (vmq_queue_sup_sup:
%% fold_queues/2 and get_queue_pid/1, vmq_queue:status/1) mocked as a
%% VerneMQ 2.0.1 node answers them; and an empty start outside VerneMQ.
-module(vmq_warden_rebuild_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

all() ->
    [restart_brings_back_online_and_offline_sessions,
     works_in_bounded_steps,
     hooks_since_the_start_win,
     empty_start_outside_vernemq].

init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, _Config) ->
    vmq_plugin_harness:disable(vmq_warden),
    catch meck:unload(),
    case whereis(vmq_queue_sup_sup) of
        undefined -> ok;
        Pid -> unlink(Pid), exit(Pid, kill)
    end,
    ok.

%% The broker: [{SubscriberId, online | offline | plugin}]; returns the
%% queue pids by subscriber id.
mock_broker(Queues0) ->
    Sup = spawn(fun() -> receive stop -> ok end end),
    true = register(vmq_queue_sup_sup, Sup),
    ok = meck:new(vmq_queue_sup_sup, [non_strict, no_link]),
    ok = meck:new(vmq_queue, [non_strict, no_link]),
    Queues = [{Sid, vmq_hook_chain:spawn_proc(), State} || {Sid, State} <- Queues0],
    ok = meck:expect(vmq_queue_sup_sup, fold_queues,
                     fun(Fun, Acc) -> lists:foldl(fun({Sid, Pid, _}, A) -> Fun(Sid, Pid, A) end, Acc, Queues) end),
    ok = meck:expect(vmq_queue_sup_sup, get_queue_pid,
                     fun(Sid) -> case lists:keyfind(Sid, 1, Queues) of
                                     false -> not_found;
                                     {_, Pid, _} -> Pid
                                 end end),
    ok = meck:expect(vmq_queue, status,
                     fun(Pid) ->
                             {_, _, State} = lists:keyfind(Pid, 2, Queues),
                             case State of
                                 online -> {online, fanout, 0, 1, false};
                                 offline -> {offline, fanout, 3, 0, false};
                                 plugin -> {online, fanout, 0, 1, true}
                             end
                     end),
    maps:from_list([{Sid, Pid} || {Sid, Pid, _} <- Queues]).

%% Sessions in the registry; the plugin restarted (disable, enable) while
%% the broker keeps its queues: they are back, with their state.
restart_brings_back_online_and_offline_sessions(_Config) ->
    Pids = mock_broker([{{"", <<"on">>}, online}, {{"", <<"off">>}, offline},
                        {{"mp", <<"on2">>}, online}, {{"", <<"plugin-q">>}, plugin}]),
    ok = vmq_plugin_harness:enable(vmq_warden),
    ok = wait_rebuilt(3),
    ?assertMatch({ok, #{state := online, mountpoint := "", username := undefined}},
                 vmq_warden:lookup({"", <<"on">>})),
    ?assertMatch({ok, #{state := offline, clean_session := false}}, vmq_warden:lookup({"", <<"off">>})),
    ?assertMatch({ok, #{state := online, mountpoint := "mp"}}, vmq_warden:lookup({"mp", <<"on2">>})),
    ?assertEqual(not_found, vmq_warden:lookup({"", <<"plugin-q">>})),
    ?assertEqual(#{authenticated => 0, online => 2, offline => 1}, vmq_warden:counts()),
    %% the restored queues' next hooks apply to them
    Off = maps:get({"", <<"on">>}, Pids),
    ok = in_proc(Off, fun() -> vmq_warden_hooks:on_client_offline({"", <<"on">>}) end),
    ?assertMatch({ok, #{state := offline}}, vmq_warden:lookup({"", <<"on">>})),
    %% and a second restart finds the same again
    vmq_plugin_harness:disable(vmq_warden),
    ok = vmq_plugin_harness:enable(vmq_warden),
    ok = wait_rebuilt(3),
    ?assertEqual(#{authenticated => 0, online => 2, offline => 1}, vmq_warden:counts()).

%% 1,050 queues: 11 steps of at most 100, with a pause between them, and the
%% rebuild process never runs one long stretch (it sleeps between steps).
works_in_bounded_steps(_Config) ->
    _ = mock_broker([{{"", integer_to_binary(I)}, online} || I <- lists:seq(1, 1050)]),
    ok = vmq_plugin_harness:enable(vmq_warden),
    ok = wait_rebuilt(1050),
    ?assertEqual(#{queues => 1050, restored => 0, kept => 1050, skipped => 0, steps => 11},
                 vmq_warden_rebuild:run()).

%% A client that connected after the start, before the rebuild reached its
%% queue: the hooks' record stays.
hooks_since_the_start_win(_Config) ->
    _ = mock_broker([{{"", <<"k">>}, offline}]),
    ok = vmq_plugin_harness:enable(vmq_warden),
    ok = wait_rebuilt(1),
    vmq_warden_robust_util:set_env(#{default_decision => allow}),
    Sid = {"", <<"k">>},
    Conn = vmq_hook_chain:spawn_proc(),
    ok = in_proc(Conn, fun() -> ok = vmq_warden_hooks:auth_on_register({{127, 0, 0, 1}, 1}, Sid, <<"u">>, undefined, true) end),
    ?assertMatch(#{restored := 0, kept := 1}, vmq_warden_rebuild:run()),
    %% the restored offline session, and the connect waiting to resume it
    {ok, #{state := offline, pending_generation := Pending}} = vmq_warden:lookup(Sid),
    ?assert(is_integer(Pending)),
    ok = vmq_warden_nif:reset(),
    ok = in_proc(Conn, fun() -> ok = vmq_warden_hooks:auth_on_register({{127, 0, 0, 1}, 1}, Sid, <<"u">>, undefined, true) end),
    ?assertMatch(#{restored := 0, kept := 1}, vmq_warden_rebuild:run()),
    ?assertMatch({ok, #{state := authenticated}}, vmq_warden:lookup(Sid)).

empty_start_outside_vernemq(_Config) ->
    ok = vmq_plugin_harness:enable(vmq_warden),
    ?assertNot(vmq_warden_broker:inside_vernemq()),
    ?assertEqual({error, not_inside_vernemq}, vmq_warden_rebuild:run()),
    ?assertEqual(#{authenticated => 0, online => 0, offline => 0}, vmq_warden:counts()).

%% ---------------------------------------------------------------------

wait_rebuilt(Live) ->
    wait_rebuilt(Live, 500).

wait_rebuilt(_Live, 0) ->
    timeout;
wait_rebuilt(Live, N) ->
    #{authenticated := A, online := On, offline := Off} = vmq_warden:counts(),
    case A + On + Off >= Live of
        true -> ok;
        false -> timer:sleep(20), wait_rebuilt(Live, N - 1)
    end.

%% Runs Fun in process Pid (a stand-in for a queue or connection process).
in_proc(Pid, Fun) ->
    vmq_hook_chain:in_proc(Pid, Fun).
