%% Session lifecycle through the real hook functions and the real NIF, with
%% hooks dispatched the way VerneMQ does (vmq_hook_chain) from the processes
%% VerneMQ uses: auth/on_register in a connection process, wakeup/offline/
%% gone/expired in a queue process. Orders are the ones observed on a real
%% broker (docs/VERNEMQ.md, "Processes and hook order").
-module(vmq_warden_lifecycle_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).
-import(vmq_warden_events_util, [sid/1, procs/1, auth/3, auth/6, reg/2, reg/4,
                                 wakeup/2, offline/2, gone/2, expired/2]).

-include("vmq_warden_events.hrl").
-define(CHAIN, vmq_hook_chain).

%% Settings back to defaults, then these on top, applied to the NIF.
set_env(Map) -> vmq_warden_robust_util:set_env(Map).

all() ->
    [hooks_are_registered_and_exported,
     clean_connect_and_disconnect,
     persistent_connect_offline_reconnect,
     takeover_persistent_to_persistent,
     takeover_persistent_to_clean,
     takeover_clean_to_persistent,
     takeover_clean_to_clean,
     late_gone_of_old_queue_is_stale,
     late_offline_of_old_queue_is_stale,
     clean_connect_discards_offline_session,
     wakeup_of_client_authorised_by_another_plugin,
     session_expiry,
     mqtt5_hooks,
     ipv6_peer_and_network_filter,
     encrypted_and_plaintext_passwords,
     next_passes_to_the_next_plugin,
     garbage_arguments_never_raise,
     operator_api,
     sessions_listed_in_chunks,
     sessions_removed_between_chunks,
     sessions_drop_repeats_and_keep_the_limit,
     metrics_from_real_hooks].

init_per_suite(Config) ->
    ok = vmq_plugin_harness:enable(vmq_warden),
    Config.

end_per_suite(_Config) ->
    _ = vmq_plugin_harness:disable(vmq_warden),
    ok.

init_per_testcase(_Case, Config) ->
    set_env(#{default_decision => allow}),
    vmq_warden_nif:reset(),
    Config.

end_per_testcase(_Case, _Config) ->
    catch meck:unload(),
    ok.

%%--------------------------------------------------------------------
%% Helpers: one call per hook, in the right process
%%--------------------------------------------------------------------

%% The hook steps of vmq_warden_events_util, from this suite's one peer.
auth(Conn, Sid, Clean, User, Password) -> auth(Conn, Sid, Clean, User, Password, ?PEER).
reg(Conn, Sid, User) -> reg(Conn, Sid, User, ?PEER).

%% Normal connect (docs/VERNEMQ.md: wakeup comes before on_register).
%% Returns the session number (generation) the registry gave the connect.
connect(Conn, Queue, Sid, Clean) ->
    ok = auth(Conn, Sid, Clean),
    ok = wakeup(Queue, Sid),
    ok = reg(Conn, Sid),
    maps:get(generation, session(Sid)).

%% Session numbers grow with each connect of a subscriber id (they are not
%% consecutive: the registry draws them from a per-shard counter).
assert_newer(G1, Sid) ->
    G2 = maps:get(generation, session(Sid)),
    ?assert(G2 > G1, {G2, G1}),
    G2.

session(Sid) ->
    {ok, S} = vmq_warden:lookup(Sid),
    S.

stale() -> maps:get(stale_events, maps:get(registry, vmq_warden:stats())).

last_ending(Sid) ->
    {_, ClientId} = Sid,
    [E | _] = [E || #{client_id := C} = E <- vmq_warden:recent_endings(100), C =:= ClientId],
    E.

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

hooks_are_registered_and_exported(_Config) ->
    {ok, Hooks} = application:get_env(vmq_warden, vmq_plugin_hooks),
    Expected = [{auth_on_register, 5}, {auth_on_register, 6}, {auth_on_register_m5, 6},
                {auth_on_register_m5, 7}, {on_register, 3}, {on_register_m5, 4},
                {on_client_wakeup, 1}, {on_client_offline, 1}, {on_client_gone, 1},
                {on_session_expired, 1}],
    ?assertEqual(lists:sort(Expected), lists:sort([{F, A} || {_M, F, A, _} <- Hooks])),
    %% VerneMQ checks the exports when it enables the plugin
    [?assertEqual({module, M}, code:ensure_loaded(M)) || {M, _, _, _} <- Hooks],
    [?assert(erlang:function_exported(M, F, A)) || {M, F, A, _} <- Hooks],
    ok.

clean_connect_and_disconnect(_Config) ->
    [S, Q] = procs(2),
    Sid = sid(<<"clean-1">>),
    G1 = connect(S, Q, Sid, true),
    ?assertMatch(#{state := online, generation := G1, clean_session := true,
                   peer := ?PEER, connect_count := 1, protocol := 3}, session(Sid)),
    ?assertEqual(1, maps:get(online, vmq_warden:counts())),
    ok = gone(Q, Sid),
    ?assertEqual(not_found, vmq_warden:lookup(Sid)),
    ?assertMatch(#{reason := gone, generation := G1}, last_ending(Sid)),
    ?assertEqual(0, maps:get(online, vmq_warden:counts())).

persistent_connect_offline_reconnect(_Config) ->
    [S1, S2, Q] = procs(3),
    Sid = sid(<<"persist-1">>),
    G1 = connect(S1, Q, Sid, false),
    ok = offline(Q, Sid),
    ?assertMatch(#{state := offline, generation := G1, last_end := {offline, _}}, session(Sid)),
    connect(S2, Q, Sid, false),
    G2 = assert_newer(G1, Sid),
    ?assertMatch(#{state := online, generation := G2, connect_count := 2}, session(Sid)).

%% auth@S2, offline@Q1, on_register@S2, wakeup@Q1
takeover_persistent_to_persistent(_Config) ->
    [S1, S2, Q1] = procs(3),
    Sid = sid(<<"ff">>),
    G1 = connect(S1, Q1, Sid, false),
    ok = auth(S2, Sid, false),
    ok = offline(Q1, Sid),
    ok = reg(S2, Sid),
    ok = wakeup(Q1, Sid),
    G2 = assert_newer(G1, Sid),
    ?assertMatch(#{state := online, generation := G2, connect_count := 2}, session(Sid)),
    ?assertMatch(#{reason := taken_over, generation := G1}, last_ending(Sid)).

%% auth@S2, gone@Q1, wakeup@Q2, on_register@S2
takeover_persistent_to_clean(_Config) ->
    [S1, S2, Q1, Q2] = procs(4),
    Sid = sid(<<"ft">>),
    G1 = connect(S1, Q1, Sid, false),
    ok = auth(S2, Sid, true),
    ok = gone(Q1, Sid),
    ?assertMatch({ok, _}, vmq_warden:lookup(Sid)),
    ok = wakeup(Q2, Sid),
    ok = reg(S2, Sid),
    G2 = assert_newer(G1, Sid),
    ?assertMatch(#{state := online, generation := G2, clean_session := true}, session(Sid)),
    ?assertMatch(#{reason := taken_over, generation := G1}, last_ending(Sid)),
    %% the new clean session ends normally from its own queue
    ok = gone(Q2, Sid),
    ?assertEqual(not_found, vmq_warden:lookup(Sid)).

%% auth@S2, gone@Q1, on_register@S2, wakeup@Q1 (queue reused)
takeover_clean_to_persistent(_Config) ->
    [S1, S2, Q1] = procs(3),
    Sid = sid(<<"tf">>),
    G1 = connect(S1, Q1, Sid, true),
    ok = auth(S2, Sid, false),
    ok = gone(Q1, Sid),
    ok = reg(S2, Sid),
    ok = wakeup(Q1, Sid),
    G2 = assert_newer(G1, Sid),
    ?assertMatch(#{state := online, generation := G2, clean_session := false}, session(Sid)),
    ok = offline(Q1, Sid),
    ?assertMatch(#{state := offline, generation := G2}, session(Sid)).

%% auth@S2, gone@Q1, wakeup@Q2, on_register@S2
takeover_clean_to_clean(_Config) ->
    [S1, S2, Q1, Q2] = procs(4),
    Sid = sid(<<"tt">>),
    G1 = connect(S1, Q1, Sid, true),
    ok = auth(S2, Sid, true),
    ok = gone(Q1, Sid),
    ok = wakeup(Q2, Sid),
    ok = reg(S2, Sid),
    G2 = assert_newer(G1, Sid),
    ?assertMatch(#{state := online, generation := G2}, session(Sid)),
    ?assertMatch(#{reason := taken_over, generation := G1}, last_ending(Sid)).

%% The race of docs/VERNEMQ.md, "Processes and hook order": the old queue replies to the cleanup
%% before it calls on_client_gone, so its gone arrives after the new queue's
%% wakeup. Applying it would mark a live client as gone.
late_gone_of_old_queue_is_stale(_Config) ->
    [S1, S2, Q1, Q2] = procs(4),
    Sid = sid(<<"race">>),
    G1 = connect(S1, Q1, Sid, true),
    Stale0 = stale(),
    ok = auth(S2, Sid, true),
    ok = wakeup(Q2, Sid),
    ok = reg(S2, Sid),
    ok = gone(Q1, Sid),
    G2 = assert_newer(G1, Sid),
    ?assertMatch(#{state := online, generation := G2}, session(Sid)),
    ?assertEqual(Stale0 + 1, stale()),
    ?assertEqual(1, maps:get(online, vmq_warden:counts())),
    %% and the live session still ends from its own queue
    ok = gone(Q2, Sid),
    ?assertEqual(not_found, vmq_warden:lookup(Sid)).

%% Persistent takeover where the new connection's on_register runs before
%% the old queue's offline (two processes, no order between them).
late_offline_of_old_queue_is_stale(_Config) ->
    [S1, S2, Q1] = procs(3),
    Sid = sid(<<"race-ff">>),
    G1 = connect(S1, Q1, Sid, false),
    ok = auth(S2, Sid, false),
    ok = reg(S2, Sid),
    ok = offline(Q1, Sid),
    ok = wakeup(Q1, Sid),
    G2 = assert_newer(G1, Sid),
    ?assertMatch(#{state := online, generation := G2}, session(Sid)).

%% A clean client over an offline persistent session: the broker removes
%% the old queue and calls no hook for it.
clean_connect_discards_offline_session(_Config) ->
    [S1, S2, Q1, Q2] = procs(4),
    Sid = sid(<<"discard">>),
    G1 = connect(S1, Q1, Sid, false),
    ok = offline(Q1, Sid),
    connect(S2, Q2, Sid, true),
    G2 = assert_newer(G1, Sid),
    ?assertMatch(#{state := online, generation := G2, clean_session := true}, session(Sid)),
    ?assertMatch(#{reason := discarded, generation := G1}, last_ending(Sid)).

wakeup_of_client_authorised_by_another_plugin(_Config) ->
    set_env(#{default_decision => next}),
    [S, Q] = procs(2),
    Sid = sid(<<"other-plugin">>),
    ok = auth(S, Sid, true, <<"fake-user">>, <<"fake-pass">>),
    ?assertEqual(not_found, vmq_warden:lookup(Sid)),
    ok = wakeup(Q, Sid),
    ok = reg(S, Sid, <<"fake-user">>),
    ?assertMatch(#{state := online, generation := _, username := <<"fake-user">>,
                   peer := ?PEER}, session(Sid)).

session_expiry(_Config) ->
    [S, Q] = procs(2),
    Sid = sid(<<"expire">>),
    connect(S, Q, Sid, false),
    ok = offline(Q, Sid),
    ok = expired(Q, Sid),
    ?assertEqual(not_found, vmq_warden:lookup(Sid)),
    ?assertMatch(#{reason := expired}, last_ending(Sid)).

mqtt5_hooks(_Config) ->
    [S, Q] = procs(2),
    Sid = sid(<<"m5">>),
    Props = #{p_session_expiry_interval => 0},
    ok = ?CHAIN:in_proc(S, fun() ->
        ?CHAIN:all_till_ok(auth_on_register_m5, [?PEER, Sid, undefined, undefined, true, Props],
                           ?CHAIN:plugins()) end),
    ok = wakeup(Q, Sid),
    ok = ?CHAIN:in_proc(S, fun() ->
        ?CHAIN:all(on_register_m5, [?PEER, Sid, undefined, Props], ?CHAIN:plugins()) end),
    ?assertMatch(#{state := online, protocol := 5}, session(Sid)),
    %% the 7-arity variant with the 2.2 metadata map
    Meta = #{listener_addr => {127, 0, 0, 1}, listener_port => 1883, listener_type => mqtt},
    [S2] = procs(1),
    ?assertEqual(ok, ?CHAIN:in_proc(S2, fun() ->
        vmq_warden_hooks:auth_on_register_m5(?PEER, sid(<<"m5b">>), undefined, undefined,
                                             true, Props, Meta) end)),
    %% and the 6-arity MQTT 3 variant (forward_connection_opts listeners)
    ?assertEqual(ok, ?CHAIN:in_proc(S2, fun() ->
        vmq_warden_hooks:auth_on_register(?PEER, sid(<<"m3b">>), undefined, undefined,
                                          true, #{client_cert => <<1, 2, 3>>}) end)),
    %% a refusal in MQTT 5 shape
    set_env(#{default_decision => deny}),
    ?assertMatch({error, #{reason_code := _}},
                 vmq_warden_hooks:auth_on_register_m5(?PEER, sid(<<"m5c">>), undefined,
                                                      undefined, true, Props)).

ipv6_peer_and_network_filter(_Config) ->
    [S, Q] = procs(2),
    Sid = sid(<<"v6">>),
    Peer = {{16#2001, 16#db8, 0, 0, 0, 0, 0, 1}, 41000},
    ok = ?CHAIN:in_proc(S, fun() ->
        ?CHAIN:all_till_ok(auth_on_register, [Peer, Sid, undefined, undefined, true],
                           ?CHAIN:plugins()) end),
    ok = wakeup(Q, Sid),
    ok = ?CHAIN:in_proc(S, fun() -> ?CHAIN:all(on_register, [Peer, Sid, undefined], ?CHAIN:plugins()) end),
    ?assertMatch(#{peer := Peer}, session(Sid)),
    ?assertMatch([#{client_id := <<"v6">>}], vmq_warden:sessions(#{peer => <<"2001:db8::/32">>})),
    ?assertEqual([], vmq_warden:sessions(#{peer => <<"10.0.0.0/8">>})),
    %% a plain address, as `vmq-admin warden session show --peer` accepts
    ?assertMatch([#{client_id := <<"v6">>}], vmq_warden:sessions(#{peer => <<"2001:db8::1">>})),
    ?assertEqual([], vmq_warden:sessions(#{peer => "2001:db8::2"})).

%% VerneMQ 2.x passes {encrypted, Bin}; the plugin decrypts it once with
%% credentials_obfuscation. 1.x passes a plain binary.
encrypted_and_plaintext_passwords(Config) ->
    Dir = ?config(priv_dir, Config),
    File = filename:join(Dir, "passwd"),
    ok = file:write_file(File, ["alice:", sha512_line(<<"s3cret">>), "\n"]),
    set_env(#{password_file => File, default_decision => next, unknown_user => next}),
    meck:new(credentials_obfuscation, [non_strict]),
    meck:expect(credentials_obfuscation, decrypt, fun({encrypted, <<"enc:", P/binary>>}) -> P end),
    [S] = procs(1),
    ?assertEqual(ok, auth(S, sid(<<"a1">>), true, <<"alice">>, {encrypted, <<"enc:s3cret">>})),
    ?assertEqual({error, invalid_credentials},
                 auth(S, sid(<<"a2">>), true, <<"alice">>, {encrypted, <<"enc:wrong">>})),
    ?assertEqual(ok, auth(S, sid(<<"a3">>), true, <<"alice">>, <<"s3cret">>)),
    ?assertEqual(ok, auth(S, sid(<<"a4">>), true, <<"alice">>, {plaintext, <<"s3cret">>})),
    ?assertEqual({error, invalid_credentials}, auth(S, sid(<<"a5">>), true, <<"alice">>, undefined)),
    %% decrypted once per connect that needed it, and not for an unknown user
    ?assertEqual(next, vmq_warden_hooks:auth_on_register(?PEER, sid(<<"a7">>), <<"stranger">>,
                                                         {encrypted, <<"enc:x">>}, true)),
    ?assertEqual(2, meck:num_calls(credentials_obfuscation, decrypt, '_')),
    meck:unload(credentials_obfuscation),
    %% without credentials_obfuscation an encrypted password cannot match
    ?assertEqual({error, invalid_credentials},
                 auth(S, sid(<<"a6">>), true, <<"alice">>, {encrypted, <<"enc:s3cret">>})).

sha512_line(Password) ->
    Salt = crypto:strong_rand_bytes(12),
    Hash = crypto:hash(sha512, <<Password/binary, Salt/binary>>),
    ["$6$", base64:encode(Salt), "$", base64:encode(Hash)].

next_passes_to_the_next_plugin(Config) ->
    Dir = ?config(priv_dir, Config),
    File = filename:join(Dir, "passwd-next"),
    ok = file:write_file(File, ["alice:", sha512_line(<<"pw">>), "\n"]),
    set_env(#{password_file => File, default_decision => next, unknown_user => next}),
    [S] = procs(1),
    ?assertEqual(next, ?CHAIN:in_proc(S, fun() ->
        vmq_warden_hooks:auth_on_register(?PEER, sid(<<"n1">>), <<"fake-user">>, <<"fake-pass">>, true)
    end)),
    ?assertEqual(ok, auth(S, sid(<<"n1">>), true, <<"fake-user">>, <<"fake-pass">>)),
    ?assertEqual({error, no_matching_hook_found}, auth(S, sid(<<"n2">>), true, <<"nobody">>, <<"x">>)),
    %% unknown users can be refused outright instead
    set_env(#{password_file => File, default_decision => next, unknown_user => deny}),
    ?assertEqual({error, invalid_credentials}, auth(S, sid(<<"n3">>), true, <<"fake-user">>, <<"fake-pass">>)).

%% Wrong types, huge binaries, invalid UTF-8: every hook answers with a
%% value VerneMQ accepts and the registry is untouched.
garbage_arguments_never_raise(_Config) ->
    [S, Q] = procs(2),
    connect(S, Q, sid(<<"keeper">>), false),
    Before = vmq_warden:counts(),
    Huge = binary:copy(<<"x">>, 1 bsl 20),
    Garbage = [undefined, 42, foo, [], {}, {a, b, c}, <<255, 254, 0>>, Huge, self(),
               make_ref(), #{a => 1}, [1, 2 | 3], {"", 42}, {[300], <<"c">>},
               {{999, 0, 0, 1}, 1}, {{1, 2, 3, 4}, -1}, {"mp", Huge}, -1.5],
    Valid = fun(ok) -> true; (next) -> true; ({ok, L}) when is_list(L); is_map(L) -> true;
               ({error, _}) -> true; (_) -> false end,
    [begin
         R5 = vmq_warden_hooks:auth_on_register(A, B, C, D, E),
         ?assert(Valid(R5), {R5, [A, B, C, D, E]}),
         ?assert(Valid(vmq_warden_hooks:auth_on_register(A, B, C, D, E, A))),
         ?assert(Valid(vmq_warden_hooks:auth_on_register_m5(A, B, C, D, E, A))),
         ?assert(Valid(vmq_warden_hooks:auth_on_register_m5(A, B, C, D, E, A, B))),
         ok = vmq_warden_hooks:on_register(A, B, C),
         ok = vmq_warden_hooks:on_register_m5(A, B, C, D),
         ok = vmq_warden_hooks:on_client_wakeup(B),
         ok = vmq_warden_hooks:on_client_offline(B),
         ok = vmq_warden_hooks:on_client_gone(B),
         ok = vmq_warden_hooks:on_session_expired(B)
     end || A <- Garbage, B <- [lists:nth(rand:uniform(length(Garbage)), Garbage)],
            C <- [lists:nth(rand:uniform(length(Garbage)), Garbage)],
            D <- [lists:nth(rand:uniform(length(Garbage)), Garbage)],
            E <- [lists:nth(rand:uniform(length(Garbage)), Garbage)]],
    %% invalid UTF-8 client id is a valid subscriber: stored byte for byte
    Odd = sid(<<255, 0, 254>>),
    connect(S, Q, Odd, true),
    ?assertMatch(#{client_id := <<255, 0, 254>>}, session(Odd)),
    ok = gone(Q, Odd),
    ?assertEqual(Before, vmq_warden:counts()),
    ?assertMatch(#{state := online}, session(sid(<<"keeper">>))).

operator_api(_Config) ->
    [S1, S2, Q1, Q2] = procs(4),
    connect(S1, Q1, sid(<<"op-a">>), true),
    connect(S2, Q2, sid(<<"op-b">>), false),
    ok = offline(Q2, sid(<<"op-b">>)),
    ?assertMatch(#{online := 1, offline := 1}, vmq_warden:counts()),
    %% bad input is an error term, never an exception nor everything listed
    ?assertEqual({error, {unknown_filter_keys, [bogus]}}, vmq_warden:sessions(#{bogus => 1})),
    ?assertEqual({error, {unknown_filter_keys, [stat]}}, vmq_warden:sessions(#{stat => online})),
    ?assertEqual({error, {bad_limit, -1}}, vmq_warden:sessions(#{limit => -1})),
    ?assertEqual({error, badarg}, vmq_warden:sessions(not_a_map)),
    ?assertEqual({error, badarg}, vmq_warden:recent_endings(foo)),
    ?assertEqual({error, badarg}, vmq_warden:recent_endings(-1)),
    ?assertMatch([#{client_id := <<"op-b">>, node := _}], vmq_warden:sessions(#{state => offline})),
    ?assertEqual(2, length(vmq_warden:sessions(#{client_id => <<"op-">>}))),
    ?assertEqual(1, length(vmq_warden:sessions(#{limit => 1}))),
    ?assertEqual({error, <<"peer must be a CIDR network or an address, e.g. 10.0.0.0/8">>},
                 vmq_warden:sessions(#{peer => <<"not-a-network">>})),
    Stats = vmq_warden:stats(),
    ?assertMatch(#{events := #{auth_on_register := N}} when N >= 2, Stats),
    ?assertMatch(#{registry := #{online := 1, offline := 1}}, Stats).

%% Persistent sessions the registry learns of from an offline hook (queue =
%% the calling process), the quickest way to fill it.
offline_sessions(Prefix, N) ->
    Ids = [iolist_to_binary(io_lib:format("~s~5..0B", [Prefix, I])) || I <- lists:seq(1, N)],
    [ok = vmq_warden_hooks:on_client_offline(sid(Id)) || Id <- Ids],
    Ids.

client_ids(Sessions) -> [C || #{client_id := C} <- Sessions].

raw_client_ids(Rows) -> [element(2, R) || R <- Rows].

-define(ALL_SPEC, {undefined, undefined, undefined, undefined, undefined}).

%% More sessions than one NIF call returns: sessions/1 loops the chunks and
%% every limit and filter gives exact counts with no repeats.
sessions_listed_in_chunks(_Config) ->
    A = offline_sessions("chunk-a-", 2500),
    B = offline_sessions("chunk-b-", 2500),
    %% 5000 records are far more than one call reads in its ~200 us
    {Rows, Next} = vmq_warden_nif:list_chunk(?ALL_SPEC, start, 100000),
    ?assertNotEqual(done, Next),
    ?assert(length(Rows) < 5000),
    Unique = fun(L) -> Ids = client_ids(L), ?assertEqual(length(Ids), length(lists:usort(Ids))), Ids end,
    ?assertEqual(lists:sort(A ++ B), lists:sort(Unique(vmq_warden:sessions(#{limit => 100000})))),
    ?assertEqual(3000, length(Unique(vmq_warden:sessions(#{limit => 3000})))),
    ?assertEqual(1000, length(Unique(vmq_warden:sessions(#{})))),
    ?assertEqual(5000, length(Unique(vmq_warden:sessions(#{state => offline, limit => 5000})))),
    ?assertEqual(B, lists:sort(Unique(vmq_warden:sessions(#{client_id => <<"chunk-b-">>,
                                                              limit => 100000})))),
    Some = Unique(vmq_warden:sessions(#{client_id => <<"chunk-a-">>, limit => 2499})),
    ?assertEqual(2499, length(Some)),
    ?assertEqual([], Some -- A),
    ?assertEqual([], vmq_warden:sessions(#{state => online, limit => 100000})),
    ?assertEqual([], vmq_warden:sessions(#{limit => 0})),
    ?assertEqual({error, <<"unknown state">>}, vmq_warden:sessions(#{state => nonsense, limit => 0})).

%% Sessions expired between two NIF calls of one listing (the NIF called
%% directly, as sessions/1 does). The first call stops after 3 rows, in the
%% middle of the first shard, which is read from its last slot down.
sessions_removed_between_chunks(_Config) ->
    %% Every session not yet listed expires: the shard's 3 listed records
    %% move down into the freed slots, and those below the cursor come
    %% again; nothing else does.
    All = offline_sessions("gone-", 2000),
    {First, {0, Unvisited} = Cursor} = vmq_warden_nif:list_chunk(?ALL_SPEC, start, 3),
    ?assert(Unvisited > 0),
    Listed = raw_client_ids(First),
    [ok = vmq_warden_hooks:on_session_expired(sid(Id)) || Id <- All -- Listed],
    Again = raw_client_ids(rest_of_listing(Cursor)),
    ?assertEqual([], Again -- Listed),
    ?assertEqual(min(Unvisited, 3), length(Again)),
    ?assertEqual(lists:sort(Listed), lists:sort(client_ids(vmq_warden:sessions(#{})))),

    %% Every other session not yet listed expires: the others are all listed.
    vmq_warden_nif:reset(),
    All2 = offline_sessions("half-", 2000),
    {First2, Cursor2} = vmq_warden_nif:list_chunk(?ALL_SPEC, start, 3),
    Listed2 = raw_client_ids(First2),
    {Expire, Keep} = lists:partition(fun(Id) -> binary:last(Id) rem 2 =:= 0 end, All2 -- Listed2),
    [ok = vmq_warden_hooks:on_session_expired(sid(Id)) || Id <- Expire],
    Rest = raw_client_ids(rest_of_listing(Cursor2)),
    ?assertEqual([], Rest -- (Listed2 ++ Keep)),
    ?assertEqual(lists:sort(Listed2 ++ Keep), lists:usort(Listed2 ++ Rest)),
    ?assertEqual(lists:sort(Listed2 ++ Keep),
                 lists:sort(client_ids(vmq_warden:sessions(#{limit => 100000})))).

%% A record moved between two NIF calls of a listing comes again
%% (sessions_removed_between_chunks): the listing keeps its first row,
%% keeps the order of the rest, and counts the limit without the repeats.
%% The chunks are scripted here, two rows a call at most, so that each
%% case is certain to meet its repeats.
sessions_drop_repeats_and_keep_the_limit(_Config) ->
    Row = fun(Mp, Id) -> {Mp, Id, online, 1, undefined, undefined, undefined, true, 3,
                          0, 0, 0, 1, undefined} end,
    [A, B, C, D] = [Row("", Id) || Id <- [<<"a">>, <<"b">>, <<"c">>, <<"d">>]],
    OtherA = Row("m", <<"a">>),
    Stream = [A, B, A, C, OtherA, B, D],
    Fetch = fun(Cursor, Left) ->
                    At = case Cursor of start -> 0; N -> N end,
                    Rows = lists:sublist(lists:nthtail(At, Stream), min(Left, 2)),
                    Next = At + length(Rows),
                    {Rows, case Next >= length(Stream) of true -> done; false -> Next end}
            end,
    Ids = fun(L) -> [{Mp, Id} || #{mountpoint := Mp, client_id := Id} <- L] end,
    All = [{"", <<"a">>}, {"", <<"b">>}, {"", <<"c">>}, {"m", <<"a">>}, {"", <<"d">>}],
    ?assertEqual(All, Ids(vmq_warden:list_chunks(Fetch, 100))),
    [?assertEqual(lists:sublist(All, Limit), Ids(vmq_warden:list_chunks(Fetch, Limit)))
     || Limit <- lists:seq(0, 6)],
    %% every row a map, as sessions/1 returns it
    [#{node := Node, state := online} | _] = vmq_warden:list_chunks(Fetch, 1),
    ?assertEqual(node(), Node),
    %% an error of the NIF is the answer
    ?assertEqual({error, boom}, vmq_warden:list_chunks(fun(_, _) -> {error, boom} end, 5)),
    %% The heap is sized for the listing only: the caller's setting comes
    %% back, and a process whose max_heap_size leaves no room for the
    %% sizing is not killed by it.
    {min_heap_size, MinBefore} = process_info(self(), min_heap_size),
    _ = vmq_warden:list_chunks(Fetch, 10000),
    ?assertEqual({min_heap_size, MinBefore}, process_info(self(), min_heap_size)),
    {Pid, Ref} = spawn_monitor(
                   fun() ->
                           process_flag(max_heap_size, #{size => 100000, kill => true,
                                                         error_logger => false}),
                           L = vmq_warden:list_chunks(Fetch, 10000),
                           erlang:garbage_collect(),
                           exit({listed, length(L)})
                   end),
    receive {'DOWN', Ref, process, Pid, Why} -> ?assertEqual({listed, 5}, Why)
    after 5000 -> error(no_answer)
    end.

rest_of_listing(done) -> [];
rest_of_listing(Cursor) ->
    {Rows, Next} = vmq_warden_nif:list_chunk(?ALL_SPEC, Cursor, 100000),
    Rows ++ rest_of_listing(Next).

%% The metrics VerneMQ reads (vmq_warden_metrics:metrics/0) built from the
%% real vmq_warden:stats() after real hooks: connects, refusals, a takeover,
%% sessions left in each state. Counters are compared as differences (the
%% NIF's counters live as long as the library), gauges as they are.
metrics_from_real_hooks(Config) ->
    %% The refusal codes and hook names the metrics know are exactly the
    %% ones stats() reports (the core's lists): a code or hook added there
    %% and not here would never reach the broker's metrics.
    #{decisions := #{refused := Refused}, events := Events} = vmq_warden:stats(),
    Defs = vmq_warden_metrics:metric_defs(),
    Labelled = fun(Name, Label) -> lists:usort([list_to_atom(V) || {_, [{L, V}], _, N, _, _} <- Defs,
                                                                   N =:= Name, L =:= Label]) end,
    ?assertEqual(lists:sort(maps:keys(Refused)), Labelled(warden_refusals, reason)),
    ?assertEqual(lists:sort(maps:keys(Events)), Labelled(warden_events, hook)),
    File = vmq_warden_robust_util:passwords_file(
             filename:join(?config(priv_dir, Config), "passwd_metrics"),
             [{"alice", vmq_warden_robust_util:sha512_line(<<"alice-pw">>)}]),
    set_env(#{password_file => File, allow_anonymous => true, unknown_user => deny,
              default_decision => next, ban_threshold => 0}),
    vmq_warden_nif:reset(),
    Metrics = fun() -> maps:from_list([{Id, V} || {_, _, Id, _, _, V} <- vmq_warden_metrics:metrics()]) end,
    M0 = Metrics(),
    [S1, S2, S3, S4, S5, Q1, Q2, Q3] = procs(8),
    %% a persistent connect of alice, then a takeover of it
    Sid = sid(<<"m-taken">>),
    ok = auth(S1, Sid, false, <<"alice">>, <<"alice-pw">>),
    ok = wakeup(Q1, Sid),
    ok = reg(S1, Sid, <<"alice">>),
    ok = auth(S2, Sid, false, <<"alice">>, <<"alice-pw">>),
    ok = offline(Q1, Sid),
    ok = reg(S2, Sid, <<"alice">>),
    ok = wakeup(Q1, Sid),
    ?assertMatch(#{reason := taken_over}, last_ending(Sid)),
    %% refusals: a wrong password, an unknown user (unknown_user = deny)
    ?assertEqual({error, invalid_credentials}, auth(S3, sid(<<"m-wrong">>), true, <<"alice">>, <<"nope">>)),
    ?assertEqual({error, invalid_credentials}, auth(S3, sid(<<"m-who">>), true, <<"mallory">>, <<"x">>)),
    %% anonymous: one session goes offline, one ends, one stays authenticated
    Off = sid(<<"m-off">>),
    connect(S4, Q2, Off, false),
    ok = offline(Q2, Off),
    Gone = sid(<<"m-gone">>),
    connect(S5, Q3, Gone, true),
    ok = gone(Q3, Gone),
    ok = auth(S5, sid(<<"m-auth">>), true),
    M1 = Metrics(),
    Delta = fun(Id) -> maps:get(Id, M1) - maps:get(Id, M0) end,
    Counters = [{warden_decisions_accepted, 5}, {warden_decisions_next, 0},
                {warden_decisions_failed, 0},
                {warden_refusals_bad_username_or_password, 2},
                {warden_refusals_not_authorized, 0}, {warden_refusals_banned, 0},
                {warden_refusals_connection_rate_exceeded, 0},
                {warden_refusals_client_identifier_not_valid, 0},
                {warden_refusals_quota_exceeded, 0},
                {warden_events_auth_on_register, 7}, {warden_events_on_register, 4},
                {warden_events_on_client_wakeup, 4}, {warden_events_on_client_offline, 2},
                {warden_events_on_client_gone, 1}, {warden_events_on_session_expired, 0},
                %% a `$6$` hash is checked at every login (mallory's decoy
                %% too) and never cached
                {warden_cache_hits, 0}, {warden_cache_misses, 0}, {warden_verify_count, 4}],
    ?assertEqual(Counters, [{Id, Delta(Id)} || {Id, _} <- Counters]),
    Gauges = [{warden_sessions_authenticated, 1}, {warden_sessions_online, 1},
              {warden_sessions_offline, 1}, {warden_bans_active, 0}],
    ?assertEqual(Gauges, [{Id, maps:get(Id, M1)} || {Id, _} <- Gauges]),
    %% the same figures as stats() itself
    #{decisions := #{accepted := Accepted}, registry := #{online := Online}} = vmq_warden:stats(),
    ?assertEqual({Accepted, Online},
                 {maps:get(warden_decisions_accepted, M1), maps:get(warden_sessions_online, M1)}).
