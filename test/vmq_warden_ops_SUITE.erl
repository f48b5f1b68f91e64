%% @doc Operations: vmq_metrics_mfa metrics and the vmq-admin (clique)
%% commands. vmq_warden (the operator API) is meck'd: this suite tests the
%% glue, not the registry. clique and clique_status are not installed outside
%% VerneMQ; they are meck'd (non_strict) where a case needs them.
-module(vmq_warden_ops_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_testcase/2, end_per_testcase/2]).
-export([metrics_from_stats/1,
         metrics_shape_unique_stable/1,
         metrics_never_raise/1,
         metrics_partial_stats/1,
         app_env_has_metrics_mfa/1,
         cli_without_clique/1,
         cli_register_with_mocked_clique/1,
         cli_unregister_removes_entries/1,
         cli_session_show/1,
         cli_session_show_cluster/1,
         cli_flag_typecasts/1,
         cli_stats/1,
         cli_reload/1,
         cli_bans/1,
         cli_api_failure_is_an_alert/1,
         cli_nif_not_loaded_fails/1,
         cli_reload_failure_readable/1,
         cli_state_flag/1,
         cli_errors_exit_nonzero/1]).

all() ->
    [metrics_from_stats, metrics_shape_unique_stable, metrics_never_raise,
     metrics_partial_stats, app_env_has_metrics_mfa,
     cli_without_clique, cli_register_with_mocked_clique, cli_unregister_removes_entries,
     cli_session_show, cli_session_show_cluster, cli_flag_typecasts, cli_stats, cli_reload, cli_bans,
     cli_api_failure_is_an_alert, cli_nif_not_loaded_fails, cli_reload_failure_readable,
     cli_state_flag, cli_errors_exit_nonzero].

init_per_testcase(_Case, Config) ->
    ok = meck:new(vmq_warden, [non_strict, no_link]),
    ok = meck:new(clique_status, [non_strict, no_link]),
    ok = meck:expect(clique_status, table, fun(Rows) -> {table, Rows} end),
    ok = meck:expect(clique_status, text, fun(T) -> {text, lists:flatten(io_lib:format("~ts", [T]))} end),
    ok = meck:expect(clique_status, alert, fun(L) -> {alert, L} end),
    Config.

end_per_testcase(_Case, _Config) ->
    _ = [catch meck:unload(M) || M <- [vmq_warden, clique_status, clique]],
    _ = [catch ets:delete(T) || T <- [clique_commands, clique_usage]],
    ok.

sample_stats() ->
    #{decisions => #{accepted => 101, next => 7,
                     refused => #{bad_username_or_password => 11, not_authorized => 12,
                                  banned => 13, connection_rate_exceeded => 14,
                                  client_identifier_not_valid => 15, quota_exceeded => 16},
                     failed => 3},
      events => #{auth_on_register => 201, on_register => 202, on_client_wakeup => 203,
                  on_client_offline => 204, on_client_gone => 205, on_session_expired => 206},
      stale_events => 9,
      registry => #{authenticated => 31, online => 32, offline => 33},
      cache => #{hits => 41, misses => 42},
      bans_active => 5,
      server_busy => 8,
      reloads => #{ok => 61, failed => 62},
      verify => #{count => 71, total_us => 72000}}.

%% ------------------------------------------------------------------ metrics

metrics_from_stats(_Config) ->
    meck:expect(vmq_warden, stats, fun() -> sample_stats() end),
    M = vmq_warden_metrics:metrics(),
    ?assertEqual(27, length(M)),
    V = fun(Id) -> {_, _, Id, _, _, Val} = lists:keyfind(Id, 3, M), Val end,
    Expected = [{warden_decisions_accepted, 101}, {warden_decisions_next, 7},
                {warden_decisions_failed, 3},
                {warden_refusals_bad_username_or_password, 11},
                {warden_refusals_not_authorized, 12}, {warden_refusals_banned, 13},
                {warden_refusals_connection_rate_exceeded, 14},
                {warden_refusals_client_identifier_not_valid, 15},
                {warden_refusals_quota_exceeded, 16},
                {warden_events_auth_on_register, 201}, {warden_events_on_register, 202},
                {warden_events_on_client_wakeup, 203}, {warden_events_on_client_offline, 204},
                {warden_events_on_client_gone, 205}, {warden_events_on_session_expired, 206},
                {warden_stale_events, 9},
                {warden_sessions_authenticated, 31}, {warden_sessions_online, 32},
                {warden_sessions_offline, 33},
                {warden_cache_hits, 41}, {warden_cache_misses, 42},
                {warden_bans_active, 5}, {warden_server_busy, 8},
                {warden_reloads_ok, 61}, {warden_reloads_failed, 62},
                {warden_verify_count, 71}, {warden_verify_time_us, 72000}],
    [?assertEqual({Id, Val}, {Id, V(Id)}) || {Id, Val} <- Expected],
    %% label variants share one name, as VerneMQ's own labelled metrics do
    ?assertMatch({counter, [{reason, "banned"}], warden_refusals_banned, warden_refusals, _, 13},
                 lists:keyfind(warden_refusals_banned, 3, M)),
    ?assertMatch({gauge, [{state, "online"}], warden_sessions_online, warden_sessions, _, 32},
                 lists:keyfind(warden_sessions_online, 3, M)),
    ?assertMatch({gauge, [], warden_bans_active, warden_bans_active, _, 5},
                 lists:keyfind(warden_bans_active, 3, M)).

metrics_shape_unique_stable(_Config) ->
    meck:expect(vmq_warden, stats, fun() -> sample_stats() end),
    M1 = vmq_warden_metrics:metrics(),
    [begin
         ?assert(lists:member(Type, [counter, gauge])),
         ?assert(is_list(Labels)),
         [?assert(is_atom(K) andalso io_lib:printable_list(LV)) || {K, LV} <- Labels],
         ?assert(is_atom(Id)), ?assert(is_atom(Name)),
         ?assertMatch("warden_" ++ _, atom_to_list(Id)),
         ?assertMatch("warden_" ++ _, atom_to_list(Name)),
         ?assert(is_binary(Desc) andalso byte_size(Desc) > 0),
         ?assert(is_integer(Val) andalso Val >= 0)
     end || {Type, Labels, Id, Name, Desc, Val} <- M1],
    Ids = [element(3, X) || X <- M1],
    ?assertEqual(length(Ids), length(lists:usort(Ids))),
    %% {Name, Labels} identifies a series: unique as well
    Series = [{element(4, X), element(2, X)} || X <- M1],
    ?assertEqual(length(Series), length(lists:usort(Series))),
    %% one name has one type and one description
    [?assertEqual(1, length(lists:usort([{T, D} || {T, _, _, N2, D, _} <- M1, N2 =:= N])))
     || N <- lists:usort([element(4, X) || X <- M1])],
    %% stable: other values, same ids, same order
    meck:expect(vmq_warden, stats, fun() -> bump(sample_stats()) end),
    M2 = vmq_warden_metrics:metrics(),
    ?assertEqual(Ids, [element(3, X) || X <- M2]),
    ?assertNotEqual([element(6, X) || X <- M1], [element(6, X) || X <- M2]).

bump(M) when is_map(M) -> maps:map(fun(_, V) -> bump(V) end, M);
bump(N) when is_integer(N) -> N + 1.

metrics_never_raise(_Config) ->
    [begin
         meck:expect(vmq_warden, stats, F),
         ?assertEqual([], vmq_warden_metrics:metrics())
     end || F <- [fun() -> error(boom) end,
                  fun() -> throw(boom) end,
                  fun() -> exit(boom) end,
                  fun() -> erlang:nif_error(nif_not_loaded) end,
                  fun() -> not_a_map end,
                  fun() -> [1, 2] end]],
    %% garbage inside the map: no raise, bad values left out
    meck:expect(vmq_warden, stats, fun() -> #{decisions => 5, registry => #{online => -1},
                                               cache => #{hits => "x", misses => 2}} end),
    ?assertMatch([{counter, [], warden_cache_misses, _, _, 2}], vmq_warden_metrics:metrics()),
    %% the API itself undefined (plugin half loaded)
    meck:expect(vmq_warden, stats, fun() -> error(undef) end),
    ?assertEqual([], vmq_warden_metrics:metrics()).

metrics_partial_stats(_Config) ->
    meck:expect(vmq_warden, stats, fun() -> #{bans_active => 2, stale_events => 0} end),
    ?assertEqual([warden_stale_events, warden_bans_active],
                 [element(3, X) || X <- vmq_warden_metrics:metrics()]).

app_env_has_metrics_mfa(_Config) ->
    _ = application:load(vmq_warden),
    {ok, {M, F, A}} = application:get_env(vmq_warden, vmq_metrics_mfa),
    ?assertEqual({vmq_warden_metrics, metrics, []}, {M, F, A}),
    {module, M} = code:ensure_loaded(M),
    ?assert(erlang:function_exported(M, F, length(A))).

%% ------------------------------------------------------------------ cli registration

cli_without_clique(_Config) ->
    ?assertEqual(non_existing, code:which(clique)),
    ?assertNot(vmq_warden_cli:available()),
    ?assertEqual(not_available, vmq_warden_cli:register()),
    ?assertEqual(ok, vmq_warden_cli:unregister()).

cli_register_with_mocked_clique(_Config) ->
    mock_clique(),
    ?assert(vmq_warden_cli:available()),
    ?assertEqual(ok, vmq_warden_cli:register()),
    Registered = [{Cmd, Flags, Fun} || {_, {clique, register_command, [Cmd, [], Flags, Fun]}, _}
                                           <- meck:history(clique)],
    Cmds = [C || {C, _, _} <- Registered],
    ?assertEqual(lists:sort([["vmq-admin", "warden", "session", "show"],
                             ["vmq-admin", "warden", "stats"],
                             ["vmq-admin", "warden", "reload"],
                             ["vmq-admin", "warden", "ban", "show"],
                             ["vmq-admin", "warden", "ban", "clear"],
                             ["vmq-admin", "warden", "kick"]]),
                 lists:sort(Cmds)),
    {_, ShowFlags, ShowFun} = lists:keyfind(["vmq-admin", "warden", "session", "show"], 1, Registered),
    ?assertEqual(lists:sort(["client-id", "username", "state", "peer", "mountpoint", "limit", "cluster"]),
                 lists:sort([proplists:get_value(longname, Spec) || {_, Spec} <- ShowFlags])),
    [?assert(is_function(Fun, 3)) || {_, _, Fun} <- Registered],
    %% external funs: they survive a reload of vmq_warden_cli
    [?assertEqual(external, element(2, erlang:fun_info(Fun, type))) || {_, _, Fun} <- Registered],
    %% a registered callback, called the way clique calls it, reaches the API
    meck:expect(vmq_warden, sessions, fun(_) -> [] end),
    ?assertEqual([{text, "No sessions match."}],
                 ShowFun(["vmq-admin", "warden", "session", "show"], [], [{username, <<"u">>}])),
    ?assert(meck:called(vmq_warden, sessions, [#{username => <<"u">>, limit => 100}])),
    Usages = [C || {_, {clique, register_usage, [C, U]}, _} <- meck:history(clique), is_list(U)],
    ?assert(lists:member(["vmq-admin", "warden"], Usages)),
    [?assert(lists:member(C, Usages)) || C <- Cmds],
    %% clique failing: register returns an error, does not raise
    meck:expect(clique, register_command, fun(_, _, _, _) -> error(badarg) end),
    ?assertMatch({error, {error, badarg}}, vmq_warden_cli:register()).

%% With clique's (public, named) tables present, unregister removes exactly
%% our entries.
cli_unregister_removes_entries(_Config) ->
    mock_clique(),
    clique_commands = ets:new(clique_commands, [public, named_table]),
    clique_usage = ets:new(clique_usage, [public, named_table]),
    meck:expect(clique, register_command,
                fun(Cmd, Keys, Flags, Fun) -> ets:insert(clique_commands, {Cmd, Keys, Flags, Fun}) end),
    meck:expect(clique, register_usage, fun(Cmd, U) -> ets:insert(clique_usage, {Cmd, U}) end),
    true = ets:insert(clique_commands, {["vmq-admin", "session", "show"], [], [], fun(_, _, _) -> ok end}),
    true = ets:insert(clique_usage, {["vmq-admin", "session"], "theirs"}),
    ok = vmq_warden_cli:register(),
    ?assertEqual(7, ets:info(clique_commands, size)),
    ?assert(ets:info(clique_usage, size) > 5),
    ok = vmq_warden_cli:unregister(),
    ?assertEqual([["vmq-admin", "session", "show"]], [element(1, E) || E <- ets:tab2list(clique_commands)]),
    ?assertEqual([["vmq-admin", "session"]], [element(1, E) || E <- ets:tab2list(clique_usage)]).

mock_clique() ->
    ok = meck:new(clique, [non_strict, no_link]),
    ok = meck:expect(clique, register_command, fun(_, _, _, _) -> true end),
    ok = meck:expect(clique, register_usage, fun(_, _) -> true end).

%% ------------------------------------------------------------------ cli callbacks

sessions() ->
    [#{client_id => <<"c1">>, mountpoint => "", state => online, generation => 3,
       peer => {{10, 1, 2, 3}, 51000}, username => <<"alice">>, clean_session => false,
       protocol => 5, node => 'vmq@host', first_connect => 1700000000000,
       last_connect => 1700000100000, last_change => 1700000100500, connect_count => 2,
       last_end => {taken_over, 1700000100400}},
     #{client_id => <<"c2">>, mountpoint => "mp1", state => offline, generation => 1,
       peer => undefined, username => undefined, clean_session => false,
       protocol => 3, node => 'vmq@host', first_connect => 1700000000000,
       last_connect => 1700000000000, last_change => 1700000200000, connect_count => 1,
       last_end => undefined}].

cli_session_show(_Config) ->
    Cmd = ["vmq-admin", "warden", "session", "show"],
    meck:expect(vmq_warden, sessions, fun(_) -> sessions() end),
    Flags = [{client_id, <<"c1">>}, {username, <<"alice">>}, {state, online},
             {peer, "10.0.0.0/8"}, {mountpoint, ""}, {limit, 5}],
    [{table, [Row1, Row2]}] = vmq_warden_cli:session_show(Cmd, [], Flags),
    ?assert(meck:called(vmq_warden, sessions,
                        [#{client_id => <<"c1">>, username => <<"alice">>, state => online,
                           peer => "10.0.0.0/8", mountpoint => "", limit => 5}])),
    %% same columns in the same order on every row (clique takes row 1 as header)
    ?assertEqual([K || {K, _} <- Row1], [K || {K, _} <- Row2]),
    ?assertEqual("c1", proplists:get_value(client_id, Row1)),
    ?assertEqual("alice", proplists:get_value(username, Row1)),
    ?assertEqual("online", proplists:get_value(state, Row1)),
    ?assertEqual("10.1.2.3", proplists:get_value(peer_host, Row1)),
    ?assertEqual("51000", proplists:get_value(peer_port, Row1)),
    ?assertEqual("5", proplists:get_value(protocol, Row1)),
    ?assertEqual("2023-11-14T22:15:00.500Z", proplists:get_value(last_change, Row1)),
    ?assertEqual("taken_over at 2023-11-14T22:15:00.400Z", proplists:get_value(last_end, Row1)),
    ?assertEqual("mp1", proplists:get_value(mountpoint, Row2)),
    ?assertEqual("", proplists:get_value(username, Row2)),
    ?assertEqual("", proplists:get_value(peer_host, Row2)),
    %% no flags: default limit only
    _ = vmq_warden_cli:session_show(Cmd, [], []),
    ?assert(meck:called(vmq_warden, sessions, [#{limit => 100}])),
    %% no match
    meck:expect(vmq_warden, sessions, fun(_) -> [] end),
    ?assertEqual([{text, "No sessions match."}], vmq_warden_cli:session_show(Cmd, [], [])),
    %% key=value args are not accepted: usage, and the command fails
    ?assertMatch({exit_status, 1, [{alert, _}]}, vmq_warden_cli:session_show(Cmd, [{x, "y"}], [])).

%% --cluster: the merged rows, the nodes that answered, and an alert naming
%% those that did not (the command still succeeds: it showed what it could).
cli_session_show_cluster(_Config) ->
    Cmd = ["vmq-admin", "warden", "session", "show"],
    meck:expect(vmq_warden, cluster_sessions,
                fun(_) -> #{sessions => sessions(), nodes => ['a@h', 'b@h'], unreachable => ['c@h'],
                            not_running => []}
                end),
    [{table, [_, _]}, {text, "Nodes that answered: a@h, b@h"}, {alert, [{text, Alert}]}] =
        vmq_warden_cli:session_show(Cmd, [], [{cluster, undefined}, {username, <<"alice">>}]),
    ?assertEqual("Nodes that did not answer (their sessions are not shown): c@h", Alert),
    ?assert(meck:called(vmq_warden, cluster_sessions, [#{username => <<"alice">>, limit => 100}])),
    ?assertNot(meck:called(vmq_warden, sessions, '_')),
    meck:expect(vmq_warden, cluster_sessions,
                fun(_) -> #{sessions => [], nodes => ['a@h'], unreachable => [], not_running => []} end),
    ?assertEqual([{text, "No sessions match."}, {text, "Nodes that answered: a@h"}],
                 vmq_warden_cli:session_show(Cmd, [], [{cluster, undefined}])),
    meck:expect(vmq_warden, cluster_sessions, fun(_) -> {error, nif_not_loaded} end),
    ?assertMatch({exit_status, 1, _}, vmq_warden_cli:session_show(Cmd, [], [{cluster, undefined}])).

cli_flag_typecasts(_Config) ->
    ?assertEqual("10.0.0.0/8", vmq_warden_cli:to_cidr("10.0.0.0/8")),
    ?assertEqual("192.168.1.7", vmq_warden_cli:to_cidr("192.168.1.7")),
    ?assertEqual("::1/128", vmq_warden_cli:to_cidr("::1/128")),
    [?assertEqual({error, {invalid_flag_value, {peer, S}}}, vmq_warden_cli:to_cidr(S))
     || S <- ["10.0.0.0/33", "10.0.0/8", "host", "::1/129", "1.2.3.4/x"]],
    ?assertEqual(online, vmq_warden_cli:to_state("online")),
    %% passed on, refused by session_show/3 (cli_state_flag)
    ?assertEqual({not_a_state, "sleeping"}, vmq_warden_cli:to_state("sleeping")),
    ?assertEqual(25, vmq_warden_cli:to_limit("25")),
    [?assertEqual({error, {invalid_flag_value, {limit, S}}}, vmq_warden_cli:to_limit(S))
     || S <- ["0", "-1", "lots"]],
    ?assertEqual("1.2.3.4", vmq_warden_cli:to_ip("1.2.3.4")),
    ?assertEqual({error, {invalid_flag_value, {peer, "1.2.3.0/24"}}}, vmq_warden_cli:to_ip("1.2.3.0/24")),
    ?assertEqual(<<"bjørn"/utf8>>, vmq_warden_cli:to_binary("bjørn")).

cli_stats(_Config) ->
    meck:expect(vmq_warden, stats, fun() -> sample_stats() end),
    meck:expect(vmq_warden, counts, fun() -> #{authenticated => 31, online => 32, offline => 33} end),
    Out = vmq_warden_cli:stats(["vmq-admin", "warden", "stats"], [], []),
    [{table, Counts}, {table, Stats}] = [T || {table, _} = T <- Out],
    ?assertEqual([[{state, "authenticated"}, {sessions, "31"}],
                  [{state, "offline"}, {sessions, "33"}],
                  [{state, "online"}, {sessions, "32"}]], Counts),
    ?assert(lists:member([{stat, "decisions.refused.banned"}, {value, "13"}], Stats)),
    ?assert(lists:member([{stat, "verify.total_us"}, {value, "72000"}], Stats)),
    ?assert(lists:member([{stat, "server_busy"}, {value, "8"}], Stats)),
    ?assertEqual(27, length(Stats)).

cli_reload(_Config) ->
    Cmd = ["vmq-admin", "warden", "reload"],
    meck:expect(vmq_warden, reload, fun() -> ok end),
    ?assertEqual([{text, "Done"}], vmq_warden_cli:reload(Cmd, [], [])),
    meck:expect(vmq_warden, reload, fun() -> {error, {policy_parse, 3}} end),
    {exit_status, 1, [{alert, [{text, Msg}]}]} = vmq_warden_cli:reload(Cmd, [], []),
    ?assertNotEqual(nomatch, string:find(Msg, "policy_parse")).

cli_bans(_Config) ->
    Show = ["vmq-admin", "warden", "ban", "show"],
    Clear = ["vmq-admin", "warden", "ban", "clear"],
    meck:expect(vmq_warden, bans, fun() -> [] end),
    ?assertEqual([{text, "No active bans."}], vmq_warden_cli:ban_show(Show, [], [])),
    meck:expect(vmq_warden, bans,
                fun() -> [#{target => {peer, <<"10.0.0.9/32">>}, until => 1700000300000, remaining_ms => 1000},
                          #{target => {username, <<"mallory">>}, until => undefined, remaining_ms => 10}] end),
    [{table, [R1, R2]}] = vmq_warden_cli:ban_show(Show, [], []),
    ?assertEqual([K || {K, _} <- R1], [K || {K, _} <- R2]),
    ?assertEqual("peer 10.0.0.9/32", proplists:get_value(target, R1)),
    ?assertEqual("username mallory", proplists:get_value(target, R2)),
    ?assertEqual("2023-11-14T22:18:20.000Z", proplists:get_value(until, R1)),
    ?assertEqual("", proplists:get_value(until, R2)),

    meck:expect(vmq_warden, clear_bans, fun(_) -> {ok, 2} end),
    ?assertEqual([{text, "Cleared 2 ban(s)"}], vmq_warden_cli:ban_clear(Clear, [], [{all, undefined}])),
    ?assert(meck:called(vmq_warden, clear_bans, [all])),
    _ = vmq_warden_cli:ban_clear(Clear, [], [{peer, "10.0.0.9"}]),
    ?assert(meck:called(vmq_warden, clear_bans, [{peer, "10.0.0.9"}])),
    meck:expect(vmq_warden, clear_bans, fun(_) -> {ok, 1} end),
    ?assertEqual([{text, "Cleared 1 ban(s)"}],
                 vmq_warden_cli:ban_clear(Clear, [], [{username, <<"mallory">>}])),
    ?assert(meck:called(vmq_warden, clear_bans, [{username, <<"mallory">>}])),
    %% none or more than one selector: usage, and nothing is cleared
    meck:reset(vmq_warden),
    ?assertMatch({exit_status, 1, [{alert, _}]}, vmq_warden_cli:ban_clear(Clear, [], [])),
    ?assertMatch({exit_status, 1, [{alert, _}]},
                 vmq_warden_cli:ban_clear(Clear, [], [{all, undefined}, {username, <<"x">>}])),
    ?assertNot(meck:called(vmq_warden, clear_bans, '_')).

%% The plugin API raising (registry not running, NIF missing) prints an
%% alert instead of crashing the command, and the command fails.
cli_api_failure_is_an_alert(_Config) ->
    [meck:expect(vmq_warden, F, fun() -> error(noproc) end) || F <- [stats, reload, bans]],
    meck:expect(vmq_warden, counts, fun() -> #{} end),
    meck:expect(vmq_warden, sessions, fun(_) -> exit(noproc) end),
    meck:expect(vmq_warden, clear_bans, fun(_) -> throw(nope) end),
    [?assertMatch({exit_status, 1, [{alert, [{text, "vmq_warden: command failed" ++ _}]}]}, Out)
     || Out <- [vmq_warden_cli:stats([], [], []),
                vmq_warden_cli:reload([], [], []),
                vmq_warden_cli:ban_show([], [], []),
                vmq_warden_cli:session_show([], [], []),
                vmq_warden_cli:ban_clear([], [], [{all, undefined}])]].

%% ------------------------------------------------------------------ failures

%% What clique makes of a callback's result (clique_command:run/1, 0.3.8 and
%% later): {exit_status, N, Output} prints Output and vmq-admin exits with N;
%% anything else exits with 0.
exit_status({exit_status, N, Output}) when is_integer(N), is_list(Output) -> {N, Output};
exit_status(Output) when is_list(Output) -> {0, Output}.

%% A failed command: an alert first (with one flat text), a non-zero status.
assert_failed(Result) ->
    {Status, Output} = exit_status(Result),
    ?assert(Status > 0, Result),
    ?assertMatch([{alert, [{text, _}]} | _], Output),
    [{alert, [{text, Text}]} | Rest] = Output,
    ?assert(io_lib:printable_unicode_list(Text), Text),
    {Text, Rest}.

%% The values the real API returns without the NIF library (pinned by
%% vmq_warden_nif_missing_SUITE:assert_api_not_loaded/0).
mock_api_without_nif() ->
    NotLoaded = {error, nif_not_loaded},
    meck:expect(vmq_warden, sessions, fun(_) -> NotLoaded end),
    meck:expect(vmq_warden, counts, fun() -> NotLoaded end),
    meck:expect(vmq_warden, bans, fun() -> NotLoaded end),
    meck:expect(vmq_warden, clear_bans, fun(_) -> NotLoaded end),
    meck:expect(vmq_warden, reload, fun() -> NotLoaded end),
    meck:expect(vmq_warden, stats, fun() -> #{nif_loaded => false, decisions => #{failed => 4}} end).

%% Every command says that the NIF library is not loaded and fails; stats
%% still shows the counters kept on the Erlang side.
cli_nif_not_loaded_fails(_Config) ->
    mock_api_without_nif(),
    Results = [vmq_warden_cli:session_show(["vmq-admin", "warden", "session", "show"], [], []),
               vmq_warden_cli:session_show(["vmq-admin", "warden", "session", "show"], [],
                                           [{state, online}, {limit, 5}]),
               vmq_warden_cli:stats(["vmq-admin", "warden", "stats"], [], []),
               vmq_warden_cli:reload(["vmq-admin", "warden", "reload"], [], []),
               vmq_warden_cli:ban_show(["vmq-admin", "warden", "ban", "show"], [], []),
               vmq_warden_cli:ban_clear(["vmq-admin", "warden", "ban", "clear"], [], [{all, undefined}])],
    [begin
         {Text, _} = assert_failed(R),
         ?assertNotEqual(nomatch, string:find(Text, "NIF library is not loaded"), Text)
     end || R <- Results],
    {_, StatsRest} = assert_failed(lists:nth(3, Results)),
    [{table, Counters}] = [T || {table, _} = T <- StatsRest],
    ?assert(lists:member([{stat, "decisions.failed"}, {value, "4"}], Counters)),
    ?assert(lists:member([{stat, "nif_loaded"}, {value, "false"}], Counters)).

%% A reload the core refused: its message (a binary naming file, line and
%% reason) printed as text, and the command fails.
cli_reload_failure_readable(_Config) ->
    Cmd = ["vmq-admin", "warden", "reload"],
    Msg = <<"/etc/vernemq/warden.toml:4: users.bjørn: unknown field `frobnicate`"/utf8>>,
    meck:expect(vmq_warden, reload, fun() -> {error, Msg} end),
    {Text, []} = assert_failed(vmq_warden_cli:reload(Cmd, [], [])),
    ?assertNotEqual(nomatch, string:find(Text, unicode:characters_to_list(Msg)), Text),
    ?assertEqual(nomatch, string:find(Text, "<<"), Text),
    ?assertNotEqual(nomatch, string:find(Text, "running policy stays"), Text),
    %% a bad setting in the app env: readable too
    meck:expect(vmq_warden, reload, fun() -> {error, {invalid_setting, ban_window, -1}} end),
    {Text2, []} = assert_failed(vmq_warden_cli:reload(Cmd, [], [])),
    ?assertNotEqual(nomatch, string:find(Text2, "ban_window"), Text2),
    %% and success is still plain "Done", status 0
    meck:expect(vmq_warden, reload, fun() -> ok end),
    ?assertEqual({0, [{text, "Done"}]}, exit_status(vmq_warden_cli:reload(Cmd, [], []))).

%% --state takes exactly the states a registry record can have
%% (warden_core SessionState Authenticated, Online, Offline; Gone and
%% Expired are endings); others are refused naming the valid ones, and the
%% API is not called.
cli_state_flag(_Config) ->
    Cmd = ["vmq-admin", "warden", "session", "show"],
    meck:expect(vmq_warden, sessions, fun(_) -> [] end),
    [begin
         State = vmq_warden_cli:to_state(atom_to_list(S)),
         ?assertEqual(S, State),
         ?assertEqual({0, [{text, "No sessions match."}]},
                      exit_status(vmq_warden_cli:session_show(Cmd, [], [{state, State}]))),
         ?assert(meck:called(vmq_warden, sessions, [#{state => S, limit => 100}]))
     end || S <- [authenticated, online, offline]],
    meck:reset(vmq_warden),
    [begin
         {Text, []} = assert_failed(vmq_warden_cli:session_show(Cmd, [], [{state, vmq_warden_cli:to_state(S)}])),
         ?assertNotEqual(nomatch, string:find(Text, S), Text),
         ?assertNotEqual(nomatch, string:find(Text, "authenticated, online, offline"), Text)
     end || S <- ["pending", "gone", "expired", "Online", "sleeping", ""]],
    ?assertNot(meck:called(vmq_warden, sessions, '_')),
    %% the usage text lists the same states
    meck:new(clique, [non_strict, no_link]),
    meck:expect(clique, register_command, fun(_, _, _, _) -> true end),
    meck:expect(clique, register_usage, fun(_, _) -> true end),
    ok = vmq_warden_cli:register(),
    [Usage] = [lists:flatten(U) || {_, {clique, register_usage, [C, U]}, _} <- meck:history(clique),
                                   C =:= Cmd],
    ?assertNotEqual(nomatch, string:find(Usage, "--state       one of authenticated, online, offline\n"), Usage).

%% Bad arguments, an API error or a raise: every command fails (exit status
%% non-zero) with an alert; none prints a crash.
cli_errors_exit_nonzero(_Config) ->
    meck:expect(vmq_warden, sessions, fun(_) -> {error, <<"unknown state">>} end),
    meck:expect(vmq_warden, bans, fun() -> {error, badarg} end),
    meck:expect(vmq_warden, clear_bans, fun(_) -> {error, bad_address} end),
    meck:expect(vmq_warden, stats, fun() -> #{} end),
    meck:expect(vmq_warden, counts, fun() -> {error, {error, boom}} end),
    {T1, []} = assert_failed(vmq_warden_cli:session_show([], [], [])),
    ?assertNotEqual(nomatch, string:find(T1, "unknown state"), T1),
    _ = assert_failed(vmq_warden_cli:ban_show([], [], [])),
    {T3, []} = assert_failed(vmq_warden_cli:ban_clear([], [], [{peer, "10.0.0.1"}])),
    ?assertNotEqual(nomatch, string:find(T3, "not an IP address"), T3),
    _ = assert_failed(vmq_warden_cli:stats([], [], [])),
    %% usage errors
    _ = assert_failed(vmq_warden_cli:session_show([], [{x, "y"}], [])),
    _ = assert_failed(vmq_warden_cli:stats([], [{x, "y"}], [])),
    _ = assert_failed(vmq_warden_cli:reload([], [], [{force, undefined}])),
    _ = assert_failed(vmq_warden_cli:ban_show([], [{x, "y"}], [])),
    _ = assert_failed(vmq_warden_cli:ban_clear([], [], [])),
    _ = assert_failed(vmq_warden_cli:ban_clear([], [], [{all, undefined}, {username, <<"x">>}])).
