%% The session lifecycle as events, through the real hooks and the real NIF
%% in the broker's hook orders (docs/VERNEMQ.md): every kind in order per
%% subscriber and exactly once, the MQTT sink with the broker's publish
%% function mocked, the webhook against a loopback HTTP server (working,
%% failing, slow, dead), the queue's bound under a storm, and no password in
%% any event. The plugin's own control over sessions (kicks, credential
%% lifetime, enforce on reload): vmq_warden_control_SUITE.
-module(vmq_warden_events_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("vmq_warden_events.hrl").

-compile([export_all, nowarn_export_all]).
-import(vmq_warden_events_util,
        [events_on/1, published/0, by_client/1, sid/1, procs/1, auth/3, auth/6, reg/2, reg/4,
         wakeup/2, offline/2, gone/2, expired/2, connect/4, connect/6, connect/7, mock_broker_queues/0,
         online/0]).

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
     webhook_slow_endpoint_never_slows_a_hook].

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
    mock_broker_queues(),
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

