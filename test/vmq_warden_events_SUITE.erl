%% The session lifecycle as events, through the real hooks and the real NIF
%% in the broker's hook orders (docs/VERNEMQ.md): every kind in order per
%% subscriber and exactly once, the MQTT sink with the broker's publish
%% function mocked, the webhook against a loopback HTTP server (working,
%% failing, slow, dead), the queue's bound under a storm, kick selectors
%% with vernemq_dev_api mocked, and no password in any event.
-module(vmq_warden_events_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(CHAIN, vmq_hook_chain).
-define(PEER, {{127, 0, 0, 1}, 34678}).
-define(PASSWORD, <<"s3cret-Pa55-word">>).
%% drained only when a test calls flush/0
-define(NEVER, 3600000).

all() ->
    [off_by_default_nothing_queued,
     every_kind_in_order_exactly_once,
     mqtt_topics_and_payload,
     no_password_in_any_event,
     storm_stays_bounded_and_counts_drops,
     concurrent_clients_each_get_their_events_in_order,
     webhook_sends_batches_of_json_lines,
     webhook_failing_endpoint_retries_then_drops,
     webhook_dead_endpoint_opens_the_breaker,
     webhook_slow_endpoint_never_slows_a_hook,
     kick_selectors,
     kick_dry_run_and_cleanup,
     kick_from_vmq_admin,
     credential_lifetime_ends_old_sessions,
     enforce_on_reload_disconnects_what_the_new_policy_refuses,
     enforce_on_reload_disconnects_sessions_whose_password_changed,
     enforce_on_reload_cuts_to_a_lowered_max_sessions].

init_per_suite(Config) ->
    ok = vmq_plugin_harness:enable(vmq_warden),
    Config.

end_per_suite(_Config) ->
    vmq_warden_robust_util:reset_env(),
    catch meck:unload(),
    _ = vmq_plugin_harness:disable(vmq_warden),
    ok.

init_per_testcase(_Case, Config) ->
    _ = (catch ets:delete(kick_queues)),
    ets:new(kick_queues, [public, named_table]),
    events_on(#{events_enabled => false}),
    Config.

end_per_testcase(_Case, _Config) ->
    catch meck:unload(),
    events_on(#{events_enabled => false}),
    ok.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

%% Settings (default_decision allow, events on, mqtt sink on, drained by
%% flush/0 only), then `Extra'; the registry and the event queue empty; the
%% sink processes restarted so they read them.
events_on(Extra) ->
    Test = self(),
    catch meck:unload(vmq_reg),
    ok = meck:new(vmq_reg, [non_strict, no_link]),
    Publish = fun(Topic, Payload, Opts) -> Test ! {published, Topic, Payload, Opts}, ok end,
    ok = meck:expect(vmq_reg, direct_plugin_exports,
                     fun(_Mod) -> {fun() -> ok end, Publish, {fun(_) -> ok end, fun(_) -> ok end}} end),
    vmq_warden_robust_util:set_env(maps:merge(#{default_decision => allow, events_enabled => true,
                                                events_mqtt => true,
                                                events_drain_interval => ?NEVER}, Extra)),
    ok = vmq_warden_nif:reset(),
    [begin
         ok = supervisor:terminate_child(vmq_warden_sup, Id),
         {ok, _} = supervisor:restart_child(vmq_warden_sup, Id)
     end || Id <- [vmq_warden_webhook, vmq_warden_events]],
    flush_mailbox(),
    ok.

flush_mailbox() ->
    receive {published, _, _, _} -> flush_mailbox(); {http_stub, _, _} -> flush_mailbox()
    after 0 -> ok
    end.

%% Drains the queue into the sinks; returns what the MQTT sink published:
%% [{Topic, DecodedJson}], in order.
published() ->
    _ = vmq_warden_events:flush(),
    collect().

collect() ->
    receive
        {published, Topic, Payload, #{qos := 0, retain := false}} ->
            [{Topic, vmq_warden_json:decode(Payload)} | collect()]
    after 0 -> []
    end.

%% Per client id: [{Kind, Session}] in order.
by_client(Published) ->
    lists:foldl(fun({_, #{<<"client_id">> := C, <<"kind">> := K, <<"session">> := S}}, Acc) ->
                        maps:update_with(C, fun(L) -> L ++ [{K, S}] end, [{K, S}], Acc)
                end, #{}, Published).

sid(ClientId) -> {"", ClientId}.
procs(N) -> [?CHAIN:spawn_proc() || _ <- lists:seq(1, N)].

auth(Conn, Sid, Clean) -> auth(Conn, Sid, Clean, undefined, undefined, ?PEER).
auth(Conn, Sid, Clean, User, Password, Peer) ->
    ?CHAIN:in_proc(Conn, fun() ->
        ?CHAIN:all_till_ok(auth_on_register, [Peer, Sid, User, Password, Clean], ?CHAIN:plugins())
    end).
reg(Conn, Sid) -> reg(Conn, Sid, undefined, ?PEER).
reg(Conn, Sid, User, Peer) ->
    ?CHAIN:in_proc(Conn, fun() -> ?CHAIN:all(on_register, [Peer, Sid, User], ?CHAIN:plugins()) end).
queue(Queue, Hook, Sid) ->
    ?CHAIN:in_proc(Queue, fun() -> ?CHAIN:all(Hook, [Sid], ?CHAIN:plugins()) end).
wakeup(Q, Sid) -> queue(Q, on_client_wakeup, Sid).
offline(Q, Sid) -> queue(Q, on_client_offline, Sid).
gone(Q, Sid) -> queue(Q, on_client_gone, Sid).
expired(Q, Sid) -> queue(Q, on_session_expired, Sid).

%% auth, wakeup, on_register (docs/VERNEMQ.md); the queue is remembered
%% for the mocked broker's disconnect. Returns the session number.
connect(Conn, Queue, Sid, Clean) -> connect(Conn, Queue, Sid, Clean, undefined, ?PEER).
connect(Conn, Queue, Sid, Clean, User, Peer) -> connect(Conn, Queue, Sid, Clean, User, Peer, undefined).
connect(Conn, Queue, {_, ClientId} = Sid, Clean, User, Peer, Password) ->
    ok = auth(Conn, Sid, Clean, User, Password, Peer),
    ok = wakeup(Queue, Sid),
    ok = reg(Conn, Sid, User, Peer),
    true = ets:insert(kick_queues, {ClientId, Queue, Clean}),
    {ok, #{generation := G}} = vmq_warden:lookup(Sid),
    G.

%% vernemq_dev_api as the broker has it: disconnecting calls the queue's
%% gone hook (offline for a persistent session kept).
mock_dev_api() ->
    ok = meck:new(vernemq_dev_api, [non_strict, no_link]),
    ok = meck:expect(vernemq_dev_api, disconnect_by_subscriber_id,
                     fun({_, ClientId} = Sid, Opts) ->
                             case ets:lookup(kick_queues, ClientId) of
                                 [{_, Q, Clean}] ->
                                     case Clean orelse lists:member(do_cleanup, Opts) of
                                         true -> ok = gone(Q, Sid);
                                         false -> ok = offline(Q, Sid)
                                     end;
                                 [] -> not_found
                             end
                     end).

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

off_by_default_nothing_queued(_Config) ->
    ?assertEqual(false, maps:get(events_enabled, vmq_warden_config:defaults())),
    [S, Q] = procs(2),
    connect(S, Q, sid(<<"quiet">>), true),
    ok = gone(Q, sid(<<"quiet">>)),
    ?assertMatch(#{enabled := false, pushed := 0, dropped := 0, queued := 0}, vmq_warden:events()),
    ?assertEqual([], published()).

every_kind_in_order_exactly_once(Config) ->
    File = vmq_warden_robust_util:passwords_file(
             filename:join(?config(priv_dir, Config), "passwd"),
             [{"alice", vmq_warden_robust_util:sha512_line(?PASSWORD)}]),
    events_on(#{password_file => File, default_decision => allow, unknown_user => next,
                allow_anonymous => true}),
    mock_dev_api(),
    [S1, S2, S3, S4, S5, S6, S7, S8, Q1, Q2, Q3, Q4, Q5, Q6] = procs(14),
    %% clean connect, disconnect
    G1 = connect(S1, Q1, sid(<<"clean">>), true),
    ok = gone(Q1, sid(<<"clean">>)),
    %% persistent: offline, then expired
    G2 = connect(S2, Q2, sid(<<"persist">>), false),
    ok = offline(Q2, sid(<<"persist">>)),
    ok = expired(Q2, sid(<<"persist">>)),
    %% takeover true -> true: auth@S2, gone@Q1, wakeup@Q2, on_register@S2
    T = sid(<<"takeover">>),
    G3 = connect(S3, Q3, T, true),
    ok = auth(S4, T, true),
    ok = gone(Q3, T),
    ok = wakeup(Q4, T),
    ok = reg(S4, T),
    {ok, #{generation := G4}} = vmq_warden:lookup(T),
    %% persistent offline, then a clean connect discards it (no hook)
    D = sid(<<"discard">>),
    G5 = connect(S5, Q5, D, false),
    ok = offline(Q5, D),
    G6 = connect(S6, Q6, D, true),
    %% never registered: abandoned by the sweep (pending_ttl 1 ms for it only)
    ok = auth(S7, sid(<<"never">>), true),
    application:set_env(vmq_warden, pending_ttl, 1),
    ok = vmq_warden_config:apply(),
    timer:sleep(5),
    ?assertEqual(1, vmq_warden_nif:sweep()),
    application:unset_env(vmq_warden, pending_ttl),
    ok = vmq_warden_config:apply(),
    %% refused: a wrong password
    ?assertEqual({error, invalid_credentials},
                 auth(S8, sid(<<"refused">>), true, <<"alice">>, <<"wrong-", ?PASSWORD/binary>>, ?PEER)),
    %% kicked, then the broker's gone
    ?assertMatch({ok, [#{result := ok}]}, vmq_warden:kick({subscriber_id, D}, #{by => <<"test">>})),
    Published = published(),
    Got = by_client(Published),
    ?assertEqual([{<<"accepted">>, G1}, {<<"woke_up">>, G1}, {<<"registered">>, G1}, {<<"gone">>, G1}],
                 maps:get(<<"clean">>, Got)),
    ?assertEqual([{<<"accepted">>, G2}, {<<"woke_up">>, G2}, {<<"registered">>, G2},
                  {<<"offline">>, G2}, {<<"expired">>, G2}], maps:get(<<"persist">>, Got)),
    ?assertEqual([{<<"accepted">>, G3}, {<<"woke_up">>, G3}, {<<"registered">>, G3},
                  {<<"accepted">>, G4}, {<<"taken_over">>, G3}, {<<"woke_up">>, G4},
                  {<<"registered">>, G4}], maps:get(<<"takeover">>, Got)),
    ?assertEqual([{<<"accepted">>, G5}, {<<"woke_up">>, G5}, {<<"registered">>, G5},
                  {<<"offline">>, G5}, {<<"accepted">>, G6}, {<<"discarded">>, G5},
                  {<<"woke_up">>, G6}, {<<"registered">>, G6}, {<<"kicked">>, G6}, {<<"gone">>, G6}],
                 maps:get(<<"discard">>, Got)),
    ?assertMatch([{<<"accepted">>, _}, {<<"abandoned">>, _}], maps:get(<<"never">>, Got)),
    ?assertEqual([{<<"refused">>, null}], maps:get(<<"refused">>, Got)),
    %% the details
    Events = [E || {_, E} <- Published],
    [Taken] = [E || #{<<"kind">> := <<"taken_over">>} = E <- Events],
    ?assertEqual(G4, maps:get(<<"by_session">>, Taken)),
    [Kicked] = [E || #{<<"kind">> := <<"kicked">>} = E <- Events],
    ?assertEqual(<<"test">>, maps:get(<<"kicked_by">>, Kicked)),
    [Refused] = [E || #{<<"kind">> := <<"refused">>} = E <- Events],
    ?assertMatch(#{<<"reason">> := <<"bad_username_or_password">>, <<"username">> := <<"alice">>,
                   <<"rule">> := <<_/binary>>}, Refused),
    Node = atom_to_binary(node(), utf8),
    [?assertMatch(#{<<"v">> := 1, <<"node">> := Node, <<"at">> := At} when is_integer(At), E)
     || E <- Events],
    %% recent_endings knows the kick too
    ?assert(lists:any(fun(#{reason := R}) -> R =:= kicked end, vmq_warden:recent_endings(100))),
    ?assertMatch(#{dropped := 0, queued := 0}, vmq_warden:events()).

mqtt_topics_and_payload(_Config) ->
    events_on(#{events_mqtt_prefix => "$SYS/warden"}),
    [S, Q] = procs(2),
    G = connect(S, Q, sid(<<"dev/1+#">>), true, <<"bob">>, {{10, 1, 2, 3}, 5555}),
    [{Topic, Accepted} | _] = published(),
    ?assertEqual([<<"$SYS">>, <<"warden">>, atom_to_binary(node(), utf8), <<"accepted">>, <<"dev_1__">>],
                 Topic),
    ?assertMatch(#{<<"client_id">> := <<"dev/1+#">>, <<"session">> := G, <<"username">> := <<"bob">>,
                   <<"peer_host">> := <<"10.1.2.3">>, <<"peer_port">> := 5555,
                   <<"identity">> := <<"username">>, <<"protocol">> := <<"mqtt3">>,
                   <<"clean_session">> := true, <<"modifiers">> := [], <<"mountpoint">> := <<>>},
                 Accepted),
    ?assertMatch(#{mqtt_published := 3, mqtt_failed := 0}, vmq_warden:events()).

%% The password of an accepted and of a refused connect is in no byte of
%% any event.
no_password_in_any_event(Config) ->
    File = vmq_warden_robust_util:passwords_file(
             filename:join(?config(priv_dir, Config), "passwd"),
             [{"alice", vmq_warden_robust_util:sha512_line(?PASSWORD)}]),
    events_on(#{password_file => File, default_decision => next, unknown_user => deny}),
    [S1, S2, S3, Q] = procs(4),
    ok = auth(S1, sid(<<"a">>), true, <<"alice">>, ?PASSWORD, ?PEER),
    ok = wakeup(Q, sid(<<"a">>)),
    Wrong = <<?PASSWORD/binary, "-but-wrong">>,
    {error, _} = auth(S2, sid(<<"b">>), true, <<"alice">>, Wrong, ?PEER),
    {error, _} = auth(S3, sid(<<"c">>), true, <<"mallory">>, ?PASSWORD, ?PEER),
    _ = vmq_warden_events:flush(),
    Payloads = [P || {published, _, P, _} <- drain_raw()],
    ?assertEqual(4, length(Payloads)),
    [?assertEqual(nomatch, binary:match(P, [?PASSWORD, <<"s3cret">>, Wrong])) || P <- Payloads].

drain_raw() ->
    receive {published, _, _, _} = M -> [M | drain_raw()] after 0 -> [] end.

storm_stays_bounded_and_counts_drops(_Config) ->
    Bytes = 20000,
    events_on(#{events_queue_bytes => Bytes}),
    N = 1000,
    [S, Q] = procs(2),
    [begin
         Sid = sid(<<"storm-", (integer_to_binary(I))/binary>>),
         ok = auth(S, Sid, true), ok = wakeup(Q, Sid), ok = reg(S, Sid), ok = gone(Q, Sid)
     end || I <- lists:seq(1, N)],
    #{pushed := Pushed, dropped := Dropped, queued := Queued, queued_bytes := QB} = vmq_warden:events(),
    ?assert(QB =< Bytes, QB),
    ?assert(Dropped > 0),
    %% every event either queued or counted dropped: four a client
    ?assertEqual(4 * N, Pushed + Dropped),
    ?assertEqual(Pushed, Queued),
    ?assertEqual(Pushed, length(published())),
    ?assertMatch(#{queued := 0, queued_bytes := 0}, vmq_warden:events()).

%% 20 processes connect and disconnect 20 clients each at the same time:
%% every client gets its four events, once each, in the hook order.
concurrent_clients_each_get_their_events_in_order(_Config) ->
    events_on(#{}),
    Test = self(),
    Workers = [spawn_link(fun() ->
                                  clients(<<"w", (integer_to_binary(W))/binary, "-">>, 20),
                                  Test ! {done, self()}
                          end) || W <- lists:seq(1, 20)],
    [receive {done, W} -> ok after 30000 -> error(timeout) end || W <- Workers],
    Got = by_client(published()),
    ?assertEqual(400, map_size(Got)),
    maps:foreach(fun(C, Events) ->
                         [{_, G} | _] = Events,
                         ?assert(is_integer(G), C),
                         ?assertEqual([{K, G} || K <- [<<"accepted">>, <<"woke_up">>, <<"registered">>, <<"gone">>]],
                                      Events)
                 end, Got),
    ?assertMatch(#{dropped := 0}, vmq_warden:events()).

%%--------------------------------------------------------------------
%% The webhook
%%--------------------------------------------------------------------

webhook_on(Port, Extra) ->
    Url = "http://127.0.0.1:" ++ integer_to_list(Port) ++ "/events",
    events_on(maps:merge(#{events_mqtt => false, events_webhook => true, events_webhook_url => Url,
                           events_webhook_batch => 10, events_webhook_timeout => 2000}, Extra)).

%% `N' clients connect and go: 4 N events.
clients(Prefix, N) ->
    [S, Q] = procs(2),
    [begin
         Sid = sid(<<Prefix/binary, (integer_to_binary(I))/binary>>),
         ok = auth(S, Sid, true), ok = wakeup(Q, Sid), ok = reg(S, Sid), ok = gone(Q, Sid)
     end || I <- lists:seq(1, N)],
    ok.

bodies(Port, Timeout) ->
    receive {http_stub, Port, Body} -> [Body | bodies(Port, Timeout)]
    after Timeout -> []
    end.

webhook_stats() ->
    maps:get(webhook, vmq_warden:events()).

wait_until(Fun, Ms) when Ms =< 0 -> ?assert(Fun());
wait_until(Fun, Ms) ->
    case Fun() of
        true -> ok;
        false -> timer:sleep(50), wait_until(Fun, Ms - 50)
    end.

webhook_sends_batches_of_json_lines(_Config) ->
    {ok, Port} = vmq_warden_http_stub:start(ok),
    webhook_on(Port, #{}),
    clients(<<"hook-">>, 25),
    ?assertEqual(100, vmq_warden_events:flush()),
    wait_until(fun() -> maps:get(sent, webhook_stats()) =:= 100 end, 5000),
    Bodies = bodies(Port, 200),
    Lines = [L || B <- Bodies, L <- binary:split(B, <<"\n">>, [global, trim_all])],
    ?assertEqual(100, length(Lines)),
    [?assert(length(binary:split(B, <<"\n">>, [global, trim_all])) =< 10) || B <- Bodies],
    Decoded = [vmq_warden_json:decode(L) || L <- Lines],
    ?assertEqual(lists:sort([<<"accepted">>, <<"woke_up">>, <<"registered">>, <<"gone">>]),
                 lists:usort([K || #{<<"kind">> := K} <- Decoded])),
    ?assertMatch(#{sent := 100, retried := 0, dropped := 0, breaker := closed}, webhook_stats()),
    vmq_warden_http_stub:stop(Port).

webhook_failing_endpoint_retries_then_drops(_Config) ->
    {ok, Port} = vmq_warden_http_stub:start(fail),
    webhook_on(Port, #{}),
    clients(<<"fail-">>, 5),
    _ = vmq_warden_events:flush(),
    %% 20 events, two batches: the first tried 4 times (3 retries) and
    %% dropped, the second fails once more: 5 failures in a row open the breaker
    wait_until(fun() -> maps:get(breaker, webhook_stats()) =:= open end, 5000),
    #{sent := 0, retried := Retried, dropped := Dropped, failed_requests := Failed} = webhook_stats(),
    ?assertEqual(5, Failed),
    ?assertEqual(10, Dropped),
    ?assertEqual(3 * 10 + 10, Retried),
    ?assertEqual(5, length(bodies(Port, 100))),
    %% the endpoint comes back: after the breaker's pause the rest is sent
    ok = vmq_warden_http_stub:set_mode(Port, ok),
    wait_until(fun() -> maps:get(sent, webhook_stats()) =:= 10 end, 15000),
    ?assertMatch(#{breaker := closed, queued := 0}, webhook_stats()),
    vmq_warden_http_stub:stop(Port).

webhook_dead_endpoint_opens_the_breaker(_Config) ->
    webhook_on(vmq_warden_http_stub:dead_port(), #{events_webhook_queue => 30}),
    clients(<<"dead-">>, 25),
    _ = vmq_warden_events:flush(),
    wait_until(fun() -> maps:get(breaker, webhook_stats()) =:= open end, 5000),
    #{failed_requests := Failed, queued := Queued, dropped := Dropped} = webhook_stats(),
    %% bounded: 30 kept, 70 dropped (counted), then the first batch of 10
    %% dropped after its 4 tries
    ?assertEqual(5, Failed),
    ?assertEqual(20, Queued),
    ?assertEqual(80, Dropped),
    %% open: no more tries for a while
    timer:sleep(1000),
    ?assertMatch(#{failed_requests := Failed, breaker := open}, webhook_stats()).

%% A webhook that takes 3 s a request: hooks keep their speed, the events
%% keep flowing out of the hooks' queue, the webhook's queue stays bounded.
webhook_slow_endpoint_never_slows_a_hook(_Config) ->
    {ok, Port} = vmq_warden_http_stub:start({slow, 3000}),
    webhook_on(Port, #{events_webhook_queue => 50, events_webhook_timeout => 5000,
                       events_drain_interval => 10}),
    clients(<<"warm-">>, 20),
    timer:sleep(100),
    [S, Q] = procs(2),
    Times = [begin
                 Sid = sid(<<"slow-", (integer_to_binary(I))/binary>>),
                 {Us, ok} = timer:tc(fun() -> auth(S, Sid, true) end),
                 ok = wakeup(Q, Sid), ok = reg(S, Sid), ok = gone(Q, Sid),
                 Us
             end || I <- lists:seq(1, 300)],
    Median = lists:nth(150, lists:sort(Times)),
    ct:log("auth hook with a slow webhook: median ~b us, max ~b us", [Median, lists:max(Times)]),
    ?assert(Median < 2000, Median),
    timer:sleep(100),
    #{queued := Queued, dropped := Dropped} = webhook_stats(),
    ?assert(Queued =< 50, Queued),
    ?assert(Dropped > 0),
    ?assertMatch(#{queued := 0}, vmq_warden:events()),
    vmq_warden_http_stub:stop(Port).

%%--------------------------------------------------------------------
%% Kick
%%--------------------------------------------------------------------

kick_setup() ->
    events_on(#{}),
    mock_dev_api(),
    [S1, S2, S3, S4, S5, Q1, Q2, Q3, Q4, Q5] = procs(10),
    connect(S1, Q1, sid(<<"dev-1">>), true, <<"alice">>, {{10, 0, 0, 1}, 1}),
    connect(S2, Q2, sid(<<"dev-10">>), true, <<"bob">>, {{10, 1, 0, 1}, 1}),
    connect(S3, Q3, sid(<<"lamp-1">>), true, <<"alice">>, {{192, 168, 0, 5}, 1}),
    connect(S4, Q4, sid(<<"lamp-2">>), false, <<"carol">>, {{192, 168, 0, 6}, 1}),
    connect(S5, Q5, sid(<<"off-1">>), false, <<"carol">>, {{192, 168, 0, 7}, 1}),
    ok = offline(Q5, sid(<<"off-1">>)),
    ok.

kicked_ids({ok, Kicked}) -> lists:sort([C || #{client_id := C} <- Kicked]).

online() ->
    lists:sort([C || #{client_id := C} <- vmq_warden:sessions(#{state => online})]).

kick_selectors(_Config) ->
    kick_setup(),
    %% a subscriber id is exact: dev-10 stays
    ?assertEqual([<<"dev-1">>], kicked_ids(vmq_warden:kick({subscriber_id, sid(<<"dev-1">>)}))),
    ?assertEqual([<<"dev-10">>, <<"lamp-1">>, <<"lamp-2">>], online()),
    ?assertEqual([<<"lamp-1">>], kicked_ids(vmq_warden:kick({username, <<"alice">>}))),
    ?assertEqual([<<"lamp-2">>], kicked_ids(vmq_warden:kick({peer, <<"192.168.0.0/24">>}))),
    ?assertEqual([<<"dev-10">>], kicked_ids(vmq_warden:kick({client_id_prefix, <<"dev-">>}))),
    ?assertEqual([], online()),
    ?assertEqual(4, meck:num_calls(vernemq_dev_api, disconnect_by_subscriber_id, '_')),
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
    ?assertEqual(0, meck:num_calls(vernemq_dev_api, disconnect_by_subscriber_id, '_')),
    ?assertEqual(4, length(online())),
    %% with cleanup: the offline session too, and the queue removed
    ?assertEqual([<<"lamp-2">>, <<"off-1">>],
                 kicked_ids(vmq_warden:kick({username, <<"carol">>}, #{cleanup => true, by => <<"ops">>}))),
    ?assert(meck:called(vernemq_dev_api, disconnect_by_subscriber_id, [{"", <<"off-1">>}, [do_cleanup]])),
    ?assertEqual(not_found, vmq_warden:lookup(sid(<<"off-1">>))),
    %% outside VerneMQ (no vernemq_dev_api) a real kick is refused, a dry run is not
    meck:unload(vernemq_dev_api),
    ?assertEqual({error, not_inside_vernemq}, vmq_warden:kick({username, <<"alice">>})),
    ?assertMatch({ok, [_, _]}, vmq_warden:kick({username, <<"alice">>}, #{dry_run => true})).

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
    ?assertEqual(0, meck:num_calls(vernemq_dev_api, disconnect_by_subscriber_id, '_')),
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
    mock_dev_api(),
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
    meck:unload(vernemq_dev_api),
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
    mock_dev_api(),
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
    mock_dev_api(),
    [S1, S2, S3, Q1, Q2, Q3] = procs(6),
    connect(S1, Q1, sid(<<"a-old">>), true, <<"alice">>, ?PEER, ?PASSWORD),
    connect(S2, Q2, sid(<<"b-ok">>), true, <<"bob">>, ?PEER, ?PASSWORD),
    timer:sleep(2),
    ok = file:write_file(Policy, [User("alice", vmq_warden_robust_util:sha512_line(New)), User("bob", Bob)]),
    ok = vmq_warden:reload(),
    _ = sys:get_state(vmq_warden_enforcer),
    ?assertEqual([<<"b-ok">>], online()),
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
    mock_dev_api(),
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
