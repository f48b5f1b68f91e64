%% The plugin's own control over live sessions, through the real hooks and
%% the real NIF with the broker's queues mocked as VerneMQ has them: kick
%% selectors (API and vmq-admin), the credential lifetime, and enforce on
%% reload (a policy that now refuses, a changed password, a lowered
%% max_sessions), each kick seen as its event.
-module(vmq_warden_control_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("vmq_warden_events.hrl").

-compile([export_all, nowarn_export_all]).
-import(vmq_warden_events_util,
        [events_on/1, published/0, by_client/1, sid/1, procs/1, auth/3, auth/6, reg/2, reg/4,
         wakeup/2, offline/2, gone/2, expired/2, connect/4, connect/6, connect/7, mock_broker_queues/0,
         unmock_broker_queues/0, disconnects/0, online/0]).

all() ->
    [kick_selectors,
     kick_dry_run_and_cleanup,
     kick_of_a_queue_that_ends_meanwhile,
     kick_from_vmq_admin,
     credential_lifetime_ends_old_sessions,
     enforce_on_reload_disconnects_what_the_new_policy_refuses,
     enforce_on_reload_disconnects_sessions_whose_password_changed,
     enforce_on_reload_cuts_to_a_lowered_max_sessions].

init_per_suite(Config) ->
    ok = vmq_warden_events_util:suite_start(),
    Config.

end_per_suite(_Config) ->
    vmq_warden_events_util:suite_end().

init_per_testcase(_Case, Config) ->
    ok = vmq_warden_events_util:case_start(),
    Config.

end_per_testcase(_Case, _Config) ->
    vmq_warden_events_util:case_end().

%%--------------------------------------------------------------------
%% Kick
%%--------------------------------------------------------------------

kick_setup() ->
    events_on(#{}),
    mock_broker_queues(),
    [S1, S2, S3, S4, S5, Q1, Q2, Q3, Q4, Q5] = procs(10),
    connect(S1, Q1, sid(<<"dev-1">>), true, <<"alice">>, {{10, 0, 0, 1}, 1}),
    connect(S2, Q2, sid(<<"dev-10">>), true, <<"bob">>, {{10, 1, 0, 1}, 1}),
    connect(S3, Q3, sid(<<"lamp-1">>), true, <<"alice">>, {{192, 168, 0, 5}, 1}),
    connect(S4, Q4, sid(<<"lamp-2">>), false, <<"carol">>, {{192, 168, 0, 6}, 1}),
    connect(S5, Q5, sid(<<"off-1">>), false, <<"carol">>, {{192, 168, 0, 7}, 1}),
    ok = offline(Q5, sid(<<"off-1">>)),
    ok.

kicked_ids({ok, Kicked}) -> lists:sort([C || #{client_id := C} <- Kicked]).

kick_selectors(_Config) ->
    kick_setup(),
    %% a subscriber id is exact: dev-10 stays
    ?assertEqual([<<"dev-1">>], kicked_ids(vmq_warden:kick({subscriber_id, sid(<<"dev-1">>)}))),
    ?assertEqual([<<"dev-10">>, <<"lamp-1">>, <<"lamp-2">>], online()),
    ?assertEqual([<<"lamp-1">>], kicked_ids(vmq_warden:kick({username, <<"alice">>}))),
    ?assertEqual([<<"lamp-2">>], kicked_ids(vmq_warden:kick({peer, <<"192.168.0.0/24">>}))),
    %% who asked, kept in the history too, at most 1024 bytes of it
    ?assertEqual([<<"dev-10">>], kicked_ids(vmq_warden:kick({client_id_prefix, <<"dev-">>},
                                                           #{by => binary:copy(<<"x">>, 100000)}))),
    ?assertEqual([binary:copy(<<"x">>, 1024), <<"api">>],          % newest first
                 [By || #{client_id := C, reason := kicked, kicked_by := By} <- vmq_warden:recent_endings(20),
                        C =:= <<"lamp-2">> orelse C =:= <<"dev-10">>]),
    ?assertEqual([], online()),
    ?assertEqual(4, disconnects()),
    %% each: kicked (who asked: the default), then the broker's gone/offline
    Got = by_client(published()),
    [?assertMatch([_, _, _, {<<"kicked">>, _}, {Ending, _}] when Ending =:= <<"gone">>; Ending =:= <<"offline">>,
                  maps:get(C, Got)) || C <- [<<"dev-1">>, <<"dev-10">>, <<"lamp-1">>, <<"lamp-2">>]],
    ?assertMatch({error, {bad_selector, _}}, vmq_warden:kick({client_id_prefix, <<>>})),
    ?assertMatch({error, {bad_selector, _}}, vmq_warden:kick(everyone)).

kick_dry_run_and_cleanup(_Config) ->
    kick_setup(),
    {ok, Would} = vmq_warden:kick({username, <<"carol">>}, #{dry_run => true}),
    ?assertMatch([#{client_id := <<"lamp-2">>, result := dry_run, state := online}], Would),
    ?assertEqual(0, disconnects()),
    ?assertEqual(4, length(online())),
    %% with cleanup: the offline session too, and the queue removed. The
    %% broker calls no hook for a queue it cleans up, online or offline:
    %% the plugin ends both sessions itself, each with one `kicked' ending
    _ = published(),
    ?assertEqual([<<"lamp-2">>, <<"off-1">>],
                 kicked_ids(vmq_warden:kick({username, <<"carol">>}, #{cleanup => true, by => <<"ops">>}))),
    ?assert(meck:called(vmq_queue, force_disconnect, ['_', administrative_action, true])),
    ?assertEqual(not_found, vmq_warden:lookup(sid(<<"off-1">>))),
    ?assertEqual(not_found, vmq_warden:lookup(sid(<<"lamp-2">>))),
    ?assertEqual([<<"dev-1">>, <<"dev-10">>, <<"lamp-1">>], online()),
    ?assertMatch(#{online := 3, offline := 0}, vmq_warden:counts()),
    ?assertEqual([{<<"lamp-2">>, <<"ops">>}, {<<"off-1">>, <<"ops">>}],
                 lists:sort([{C, By} || #{client_id := C, reason := kicked, kicked_by := By}
                                            <- vmq_warden:recent_endings(20)])),
    ?assertEqual(#{<<"lamp-2">> => [<<"kicked">>], <<"off-1">> => [<<"kicked">>]},
                 maps:map(fun(_, L) -> [K || {K, _} <- L] end, by_client(published()))),
    %% the same kick again finds nothing to do
    ?assertEqual({ok, []}, vmq_warden:kick({username, <<"carol">>}, #{cleanup => true})),
    %% outside VerneMQ (no queue supervisor) a real kick is refused, a dry run is not
    unmock_broker_queues(),
    ?assertEqual({error, not_inside_vernemq}, vmq_warden:kick({username, <<"alice">>})),
    ?assertMatch({ok, [_, _]}, vmq_warden:kick({username, <<"alice">>}, #{dry_run => true})).

%% A takeover can end the queue between the listing and the disconnect:
%% the broker's call then exits, which a kick answers as `not_found'; any
%% other failure is an error term, never an exception.
kick_of_a_queue_that_ends_meanwhile(_Config) ->
    kick_setup(),
    Ended = fun(Why) -> fun(_, _, _) -> exit({Why, {gen_fsm, sync_send_all_state_event, []}}) end end,
    ok = meck:expect(vmq_queue, force_disconnect, Ended(normal)),
    ?assertMatch({ok, [#{client_id := <<"dev-1">>, result := not_found}]},
                 vmq_warden:kick({subscriber_id, sid(<<"dev-1">>)})),
    ok = meck:expect(vmq_queue, force_disconnect, Ended(noproc)),
    ?assertMatch({ok, [#{client_id := <<"lamp-1">>, result := not_found}]},
                 vmq_warden:kick({subscriber_id, sid(<<"lamp-1">>)})),
    ok = meck:expect(vmq_queue, force_disconnect, fun(_, _, _) -> exit(timeout) end),
    ?assertMatch({ok, [#{client_id := <<"dev-10">>, result := {error, {exit, timeout}}}]},
                 vmq_warden:kick({subscriber_id, sid(<<"dev-10">>)})).

%% `vmq-admin warden kick', called the way clique calls it (clique_status
%% mocked: it exists only inside VerneMQ).
kick_from_vmq_admin(_Config) ->
    kick_setup(),
    ok = meck:new(clique_status, [non_strict, no_link]),
    ok = meck:expect(clique_status, table, fun(Rows) -> {table, Rows} end),
    ok = meck:expect(clique_status, text, fun(T) -> {text, lists:flatten(io_lib:format("~ts", [T]))} end),
    ok = meck:expect(clique_status, alert, fun(L) -> {alert, L} end),
    Cmd = ["vmq-admin", "warden", "kick"],
    %% a dry run: the table, nothing disconnected
    [{table, Would}] = vmq_warden_cli:kick(Cmd, [], [{client_id_prefix, <<"lamp-">>}, {dry_run, undefined}]),
    ?assertEqual([{"lamp-1", "dry_run"}, {"lamp-2", "dry_run"}],
                 lists:sort([{proplists:get_value(client_id, R), proplists:get_value(result, R)} || R <- Would])),
    ?assertEqual(0, disconnects()),
    %% --client-id is exact
    [{table, [Row]}] = vmq_warden_cli:kick(Cmd, [], [{client_id, <<"dev-1">>}]),
    ?assertMatch(#{"client_id" := "dev-1", "result" := "ok", "username" := "alice"},
                 maps:from_list([{atom_to_list(K), V} || {K, V} <- Row])),
    ?assertMatch({ok, _}, vmq_warden:lookup(sid(<<"dev-10">>))),
    Kicked = [E || {_, #{<<"kind">> := <<"kicked">>} = E} <- published()],
    ?assertMatch([#{<<"client_id">> := <<"dev-1">>, <<"kicked_by">> := <<"vmq-admin">>}], Kicked),
    %% no selector, or two: the usage, exit status 1
    ?assertMatch({exit_status, 1, _}, vmq_warden_cli:kick(Cmd, [], [{dry_run, undefined}])),
    ?assertMatch({exit_status, 1, _},
                 vmq_warden_cli:kick(Cmd, [], [{username, <<"alice">>}, {peer, "10.0.0.0/8"}])),
    ?assertEqual([{text, "No session matches."}], vmq_warden_cli:kick(Cmd, [], [{username, <<"nobody">>}])).

%% alice's group allows 1 s; bob has no limit: a pass ends alice's session
%% (`expired_credentials', then the broker's gone) and leaves bob's.
credential_lifetime_ends_old_sessions(Config) ->
    Policy = filename:join(?config(priv_dir, Config), "lifetime.toml"),
    Hash = fun() -> vmq_warden_robust_util:sha512_line(?PASSWORD) end,
    ok = file:write_file(Policy, ["[groups.short]\nmax_session_age = 1\n",
                                  "[users.alice]\ngroups = [\"short\"]\npassword = \"", Hash(), "\"\n",
                                  "[users.bob]\npassword = \"", Hash(), "\"\n"]),
    events_on(#{policy_file => Policy, default_decision => allow}),
    mock_broker_queues(),
    ?assertEqual(1, vmq_warden_nif:max_session_age(<<"alice">>)),
    ?assertEqual(undefined, vmq_warden_nif:max_session_age(<<"bob">>)),
    [S1, S2, S3, Q1, Q2, Q3] = procs(6),
    GA = connect(S1, Q1, sid(<<"a-old">>), true, <<"alice">>, ?PEER, ?PASSWORD),
    connect(S2, Q2, sid(<<"b-old">>), true, <<"bob">>, ?PEER, ?PASSWORD),
    ?assertEqual({ok, []}, vmq_warden_enforcer:check_now()),
    timer:sleep(1100),
    GA2 = connect(S3, Q3, sid(<<"a-new">>), true, <<"alice">>, ?PEER, ?PASSWORD),
    ?assertEqual({ok, [{"", <<"a-old">>}]}, vmq_warden_enforcer:check_now()),
    ?assertEqual([<<"a-new">>, <<"b-old">>], online()),
    Got = by_client(published()),
    ?assertEqual([{<<"expired_credentials">>, GA}, {<<"gone">>, GA}], lists:nthtail(3, maps:get(<<"a-old">>, Got))),
    ?assertEqual(3, length(maps:get(<<"a-new">>, Got))),
    ?assert(is_integer(GA2)),
    ?assertMatch([#{reason := gone}, #{reason := expired_credentials} | _], vmq_warden:recent_endings(2)),
    %% outside VerneMQ nothing is disconnected
    unmock_broker_queues(),
    ?assertEqual({error, not_inside_vernemq}, vmq_warden_enforcer:check_now()).

%% A reload that denies 10.0.0.0/8 and removes carol: with enforce_on_reload
%% off nothing happens; on, alice's session from 10/8 and carol's end
%% `kicked' by "reload: <rule>" and bob's stays.
enforce_on_reload_disconnects_what_the_new_policy_refuses(Config) ->
    Policy = filename:join(?config(priv_dir, Config), "enforce.toml"),
    %% each line written once: a line hashed again counts as a changed password
    Lines = maps:from_list([{Name, ["[users.", Name, "]\npassword = \"", vmq_warden_robust_util:sha512_line(?PASSWORD), "\"\n"]}
                            || Name <- ["alice", "bob", "carol"]]),
    User = fun(Name) -> maps:get(Name, Lines) end,
    ok = file:write_file(Policy, [User("alice"), User("bob"), User("carol")]),
    events_on(#{policy_file => Policy, unknown_user => deny, default_decision => next, reload_interval => 0}),
    mock_broker_queues(),
    [S1, S2, S3, Q1, Q2, Q3] = procs(6),
    connect(S1, Q1, sid(<<"a-net">>), true, <<"alice">>, {{10, 0, 0, 1}, 1}, ?PASSWORD),
    connect(S2, Q2, sid(<<"b-ok">>), true, <<"bob">>, {{192, 168, 0, 5}, 1}, ?PASSWORD),
    connect(S3, Q3, sid(<<"c-gone">>), true, <<"carol">>, {{192, 168, 0, 6}, 1}, ?PASSWORD),
    ok = file:write_file(Policy, [User("alice"), User("bob"), "[network]\ndeny = [\"10.0.0.0/8\"]\n"]),
    %% off (the default): the new policy applies to new connects only
    ok = vmq_warden:reload(),
    _ = sys:get_state(vmq_warden_enforcer),
    ?assertEqual([<<"a-net">>, <<"b-ok">>, <<"c-gone">>], online()),
    application:set_env(vmq_warden, enforce_on_reload, true),
    ok = vmq_warden:reload(),
    %% the reload's request is in the enforcer's mailbox before this call
    _ = sys:get_state(vmq_warden_enforcer),
    ?assertEqual([<<"b-ok">>], online()),
    Kicked = lists:sort([{C, By} || {_, #{<<"kind">> := <<"kicked">>, <<"client_id">> := C, <<"kicked_by">> := By}}
                                        <- published()]),
    ?assertEqual([{<<"a-net">>, <<"reload: network: peer address is in network.deny">>},
                  {<<"c-gone">>, <<"reload: credentials: unknown user">>}], Kicked),
    %% a second pass finds nothing more
    ?assertEqual({ok, []}, vmq_warden_enforcer:enforce_now()).

%% A reload that changes alice's password and keeps bob's line: her session
%% from before ends `kicked' by "reload: credentials: password changed since
%% the session logged in", bob's stays, and her session with the new
%% password, after the reload, stays through the next pass.
enforce_on_reload_disconnects_sessions_whose_password_changed(Config) ->
    Policy = filename:join(?config(priv_dir, Config), "rotate.toml"),
    User = fun(Name, Line) -> ["[users.", Name, "]\npassword = \"", Line, "\"\n"] end,
    Bob = vmq_warden_robust_util:sha512_line(?PASSWORD),
    New = <<"n3w-Pa55-word">>,
    ok = file:write_file(Policy, [User("alice", vmq_warden_robust_util:sha512_line(?PASSWORD)), User("bob", Bob)]),
    events_on(#{policy_file => Policy, unknown_user => deny, default_decision => next, reload_interval => 0}),
    application:set_env(vmq_warden, enforce_on_reload, true),
    mock_broker_queues(),
    [S1, S2, S3, Q1, Q2, Q3] = procs(6),
    connect(S1, Q1, sid(<<"a-old">>), true, <<"alice">>, ?PEER, ?PASSWORD),
    connect(S2, Q2, sid(<<"b-ok">>), true, <<"bob">>, ?PEER, ?PASSWORD),
    timer:sleep(2),
    ok = file:write_file(Policy, [User("alice", vmq_warden_robust_util:sha512_line(New)), User("bob", Bob)]),
    ok = vmq_warden_log_capture:install(enforce_capture),
    ok = vmq_warden:reload(),
    _ = sys:get_state(vmq_warden_enforcer),
    ok = vmq_warden_log_capture:remove(enforce_capture),
    ?assertEqual([<<"b-ok">>], online()),
    %% the history keeps who kicked it; the log names the session and the
    %% rule (events on or off, for both)
    ?assertMatch([#{kicked_by := <<"reload: credentials: password changed since the session logged in">>}],
                 [E || #{client_id := <<"a-old">>, reason := kicked} = E <- vmq_warden:recent_endings(10)]),
    ?assertMatch([_], [E || #{level := notice} = E <- vmq_warden_log_capture:captured(),
                            vmq_warden_log_capture:contains(E, "a-old"),
                            vmq_warden_log_capture:contains(E, "password changed since the session logged in")]),
    ?assertEqual([{<<"a-old">>, <<"reload: credentials: password changed since the session logged in">>}],
                 [{C, By} || {_, #{<<"kind">> := <<"kicked">>, <<"client_id">> := C, <<"kicked_by">> := By}}
                                 <- published()]),
    timer:sleep(2),
    connect(S3, Q3, sid(<<"a-new">>), true, <<"alice">>, ?PEER, New),
    ?assertEqual({ok, []}, vmq_warden_enforcer:enforce_now()),
    ?assertEqual([<<"a-new">>, <<"b-ok">>], online()).

%% alice's max_sessions lowered from 3 to 1: her two sessions that connected
%% last end `kicked', the first stays, and bob (no limit) keeps both.
enforce_on_reload_cuts_to_a_lowered_max_sessions(Config) ->
    Policy = filename:join(?config(priv_dir, Config), "quota.toml"),
    Line = vmq_warden_robust_util:sha512_line(?PASSWORD),
    Write = fun(Max) -> ok = file:write_file(Policy, ["[users.alice]\nmax_sessions = ", integer_to_list(Max),
                                                      "\npassword = \"", Line, "\"\n[users.bob]\npassword = \"",
                                                      Line, "\"\n"]) end,
    Write(3),
    events_on(#{policy_file => Policy, default_decision => next, reload_interval => 0}),
    application:set_env(vmq_warden, enforce_on_reload, true),
    mock_broker_queues(),
    Procs = procs(10),
    [begin timer:sleep(2), connect(S, Q, sid(C), true, U, ?PEER, ?PASSWORD) end
     || {S, Q, {C, U}} <- lists:zip3(lists:sublist(Procs, 5), lists:nthtail(5, Procs),
                                     [{<<"a1">>, <<"alice">>}, {<<"a2">>, <<"alice">>}, {<<"a3">>, <<"alice">>},
                                      {<<"b1">>, <<"bob">>}, {<<"b2">>, <<"bob">>}])],
    Write(1),
    ok = vmq_warden:reload(),
    _ = sys:get_state(vmq_warden_enforcer),
    ?assertEqual([<<"a1">>, <<"b1">>, <<"b2">>], online()),
    ?assertEqual([{C, <<"reload: max_sessions: 3 sessions of this user, at most 1">>} || C <- [<<"a2">>, <<"a3">>]],
                 lists:sort([{C, By} || {_, #{<<"kind">> := <<"kicked">>, <<"client_id">> := C,
                                             <<"kicked_by">> := By}} <- published()])).
