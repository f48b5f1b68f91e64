%% Hostile input through the real hooks: every matcher (glob, regex, CIDR,
%% listener, certificate parsing, username and client-id checks) fed with
%% maximal-length (65535-byte) and adversarial values, and the rate-limit
%% and ban tables fed with very many distinct keys.
%%
%% Asserted with the NIF's own call timer (vmq_warden_nif:call_times/0, the
%% CPU time of the calling thread inside the NIF): no call on a normal
%% scheduler uses more than 1 ms of CPU. And with the NIF's allocator count
%% (vmq_warden_nif:memory/0): every table stays bounded in bytes.
%%
%% WARDEN_HOSTILE_KEYS (default 1000000) sets the number of distinct keys of
%% the table cases.
-module(vmq_warden_hostile_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(U, vmq_warden_robust_util).
-define(PEER, {{192, 0, 2, 1}, 40000}).
-define(MAX, 65535).
%% argon2id m=19456,t=2,p=1 (about 40 ms), from vmq_warden_robust_SUITE.
-define(ARGON_DAVE, "$argon2id$v=19$m=19456,t=2,p=1$eU/vg6fo/uUGs3wgiQRAIg$Gj8OECeOY5QLaHHY959E+qtZbXJPQ8pZKXmwXrZe/Y4").
%% The table cases: the Rust heap may grow by at most this much while
%% millions of distinct keys go through the limiter and ban tables (their
%% bound: 100 000 entries each, at most 16 MiB each, see docs/ROBUSTNESS.md).
-define(TABLE_BYTES, (96 * 1024 * 1024)).
%% Steps of the calibration's arithmetic next to each driven hook call:
%% about 2.5 us here, the order of an auth_on_register's NIF call.
-define(CONTROL_ROUNDS, 1000).

all() ->
    [glob_username_pattern_is_linear,
     regex_never_sees_unbounded_input,
     deny_rules_fail_closed_on_overlong_input,
     username_and_client_id_checks,
     cidr_and_listener_matchers,
     garbage_client_certificates,
     rate_tables_bounded_in_bytes,
     long_usernames_do_not_grow_the_heap,
     ban_table_bounded_in_bytes,
     slow_verifications_bounded_and_busy_refused].

suite() -> [{timetrap, {minutes, 10}}].

init_per_suite(Config) ->
    ok = vmq_plugin_harness:enable(vmq_warden),
    Dir = ?config(priv_dir, Config),
    Pw = ?U:passwords_file(filename:join(Dir, "passwd"),
                           [{"alice", ?U:sha512_line(<<"alice-pw">>)}]),
    Slow = ?U:passwords_file(filename:join(Dir, "passwd-slow"), [{"dave", ?ARGON_DAVE}]),
    [{password_file, Pw}, {slow_password_file, Slow} | Config].

end_per_suite(_Config) ->
    _ = vmq_plugin_harness:disable(vmq_warden),
    ok.

init_per_testcase(_Case, Config) ->
    vmq_warden_nif:reset(),
    {ok, _} = vmq_warden:clear_bans(all),
    Config.

end_per_testcase(_Case, _Config) ->
    catch vmq_warden_nif:call_times_stop(),
    ?U:reset_env(),
    ok = vmq_warden_config:apply(),
    ok.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

policy(Config, Name, Text) ->
    Path = filename:join(?config(priv_dir, Config), Name),
    ok = file:write_file(Path, Text),
    Path.

use_policy(Config, Name, Text, Env) ->
    Path = policy(Config, Name, Text),
    ok = ?U:set_env(maps:merge(#{policy_file => Path,
                                 password_file => ?config(password_file, Config),
                                 default_decision => deny, unknown_user => deny,
                                 ban_threshold => 0, auth_cache_size => 0}, Env)).

auth(Peer, ClientId, User, Password) ->
    vmq_warden_hooks:auth_on_register(Peer, {"", ClientId}, User, Password, true).

auth5(Peer, ClientId, User, Password, Meta) ->
    vmq_warden_hooks:auth_on_register_m5(Peer, {"", ClientId}, User, Password, true, #{}, Meta).

bytes(N, C) -> binary:copy(<<C>>, N).

%% Runs Fun with the call timer on; fails if calls on a normal scheduler
%% used more than 1 ms of their thread's CPU in one run and the same kind
%% again in the next, from a reset state (?U:stalls_twice/3). Returns Fun's
%% result.
timed(What, Fun) ->
    ?U:stalls_twice(What, fun() -> timed_once(What, Fun) end, fun vmq_warden_nif:reset/0).

%% One run: Fun's result and the kinds with calls over 1 ms of CPU on a
%% normal scheduler. Logs the worst CPU time (us) of each kind.
%%
%% The machine's share: this VM's thread CPU clock now and then counts a
%% millisecond or more that the call did not spend (interrupt time is
%% charged to the running thread here). Over a million calls it happens a few
%% times, to the calibration's arithmetic (which touches no memory) as
%% often as to the hooks. So where Fun also ran calibration calls
%% (drive/2), a kind counts only with more such calls than three times the
%% calibration's, plus two; elsewhere every one counts.
timed_once(What, Fun) ->
    ok = vmq_warden_nif:call_times_start(),
    Result = Fun(),
    Calls = vmq_warden_nif:call_times(),
    ok = vmq_warden_nif:call_times_stop(),
    Worst = [{K, S, maps:get(max_cpu_ns, F, 0) div 1000, maps:get(calls, F)}
             || {K, S, F} <- Calls, maps:get(calls, F) > 0],
    ct:pal("~s: calls (kind, scheduler, worst CPU us, calls): ~p", [What, Worst]),
    Allowed = case [F || {<<"calibration">>, _, #{calls := C} = F} <- Calls, C > 0] of
                  [#{over_cpu := Machine}] ->
                      ct:pal("~s: the calibration's calls over 1 ms: ~b", [What, Machine]),
                      3 * Machine + 2;
                  [] ->
                      0
              end,
    {Result, [{K, F} || {K, <<"normal">>, #{over_cpu := N} = F} <- Calls,
                        K =/= <<"calibration">>, N > Allowed]}.

valid(R) -> ?assert(?U:valid_answer(3, R) orelse ?U:valid_answer(5, R)).

%%--------------------------------------------------------------------
%% Matchers
%%--------------------------------------------------------------------

%% `{username}` expands to a literal inside a glob: with a 65535-byte
%% username and client id (one byte off at the end, the worst case for a
%% backtracking matcher) every form stays linear.
glob_username_pattern_is_linear(Config) ->
    User = bytes(?MAX, $a),
    Bad = <<(bytes(?MAX - 1, $a))/binary, "b">>,
    Half = bytes(?MAX div 2, $a),
    [begin
         use_policy(Config, "glob.toml",
                    ["[client_id]\nusername_pattern = \"", P, "\"\n"
                     "[users.alice]\n"], #{}),
         timed(["glob ", P],
               fun() ->
                       [valid(auth(?PEER, Cid, U, <<"x">>))
                        || U <- [User, Half, <<"a">>, <<"aa">>],
                           Cid <- [Bad, User, Half, <<"a">>]]
               end),
         %% still a working matcher
         ?assertMatch({error, _}, auth(?PEER, <<"zzz">>, <<"alice">>, <<"alice-pw">>))
     end || P <- ["*{username}*", "*{username}", "{username}*", "*?{username}*?*",
                  "{username}-*-{username}"]],
    use_policy(Config, "glob.toml",
               "[client_id]\nusername_pattern = \"*{username}*\"\n[users.alice]\n", #{}),
    ?assertEqual(ok, auth(?PEER, <<"x-alice-y">>, <<"alice">>, <<"alice-pw">>)),
    ?assertMatch({error, _}, auth(?PEER, <<"x-alic-y">>, <<"alice">>, <<"alice-pw">>)).

%% A regex whose lazy DFA explodes (`.*a.{20}`) on 65535-byte inputs, in
%% rules and in pattern checks, with and without max_length.
regex_never_sees_unbounded_input(Config) ->
    Inputs = [bytes(?MAX, $a), <<(bytes(?MAX - 21, $b))/binary, "a", (bytes(20, $b))/binary>>,
              list_to_binary([rand:uniform(255) || _ <- lists:seq(1, ?MAX)])],
    Policies =
        ["[[rule]]\nname = \"r\"\naction = \"deny\"\nwhen = { client_id = \".*a.{20}\" }\n",
         "[[rule]]\nname = \"r\"\naction = \"allow\"\nwhen = { username = \".*a.{20}\" }\n",
         "[client_id]\nmax_length = 64\npattern = \".*a.{20}\"\n",
         "[username]\npattern = \"(.*a.{20})|(.*b.{20})\"\n",
         "[[rule]]\nname = \"r\"\naction = \"next\"\nwhen = { client_id = \"(a|b|c|d)*a(a|b|c|d){24}\","
         " username = \"[^x]*a.{18}\" }\n"],
    [begin
         use_policy(Config, "regex.toml", [P, "[users.alice]\n"], #{}),
         timed(["regex ", P],
               fun() -> [valid(auth(?PEER, I, J, <<"x">>)) || I <- Inputs, J <- Inputs] end)
     end || P <- Policies].

%% A deny rule must deny whatever the input's length: an over-long value
%% cannot escape it. An allow rule must not admit one; a pattern that must
%% match refuses it.
deny_rules_fail_closed_on_overlong_input(Config) ->
    Long = bytes(?MAX, $a),
    use_policy(Config, "deny.toml",
               "[[rule]]\nname = \"no-a\"\naction = \"deny\"\nwhen = { client_id = \"a+\" }\n"
               "[users.alice]\n", #{}),
    ?assertEqual({error, not_authorized}, auth(?PEER, Long, <<"alice">>, <<"alice-pw">>)),
    ?assertEqual({error, not_authorized}, auth(?PEER, <<"aaa">>, <<"alice">>, <<"alice-pw">>)),
    ?assertEqual(ok, auth(?PEER, <<"bbb">>, <<"alice">>, <<"alice-pw">>)),
    use_policy(Config, "deny.toml",
               "[[rule]]\nname = \"no-user\"\naction = \"deny\"\nwhen = { username = \"a+\" }\n"
               "[users.alice]\n", #{}),
    ?assertEqual({error, not_authorized}, auth(?PEER, <<"c">>, Long, <<"x">>)),
    %% allow rule (it lifts network.allow): an over-long id does not make it apply
    use_policy(Config, "allow.toml",
               "[[rule]]\nname = \"ok-a\"\naction = \"allow\"\nwhen = { client_id = \"a+\" }\n"
               "[network]\nallow = [\"10.0.0.0/8\"]\n[users.alice]\n", #{}),
    ?assertEqual(ok, auth(?PEER, <<"aaa">>, <<"alice">>, <<"alice-pw">>)),
    ?assertEqual({error, not_authorized}, auth(?PEER, Long, <<"alice">>, <<"alice-pw">>)),
    %% patterns that must match: an over-long value is refused
    use_policy(Config, "pat.toml",
               "[client_id]\npattern = \"a+\"\n[username]\npattern = \"[a-z]+\"\n"
               "[users.alice]\n", #{}),
    ?assertEqual(ok, auth(?PEER, <<"aaa">>, <<"alice">>, <<"alice-pw">>)),
    ?assertEqual({error, client_identifier_not_valid}, auth(?PEER, Long, <<"alice">>, <<"alice-pw">>)),
    ?assertEqual({error, not_authorized}, auth(?PEER, <<"aaa">>, bytes(?MAX, $z), <<"x">>)).

username_and_client_id_checks(Config) ->
    Long = bytes(?MAX, $a),
    Rand = list_to_binary([rand:uniform(255) || _ <- lists:seq(1, ?MAX)]),
    use_policy(Config, "checks.toml",
               ["[client_id]\nallowed_chars = \"a-z0-9\"\nmust_start_with_username = true\n"
                "[[client_id.reserved]]\nprefix = \"", binary:copy(<<"a">>, 1000), "\"\nusers = [\"alice\"]\n"
                "[username]\ndeny = [\"root\", \"", binary:copy(<<"a">>, 1000), "\"]\n"
                "[users.alice]\n"], #{}),
    timed("username/client-id checks",
          fun() ->
                  [valid(auth(?PEER, C, U, <<"x">>))
                   || C <- [Long, Rand, <<>>], U <- [Long, Rand, <<"alice">>, undefined]]
          end).

cidr_and_listener_matchers(Config) ->
    use_policy(Config, "nets.toml",
               ["[network]\nallow = [", lists:join(",", [io_lib:format("\"10.~b.0.0/16\"", [I]) || I <- lists:seq(0, 255)]),
                ", \"2001:db8::/32\"]\n"
                "[[rule]]\nname = \"l\"\naction = \"deny\"\nwhen = { listener = [{ type = \"ws\", port = 1 }] }\n"
                "[users.alice]\n"], #{}),
    Peers = [{{10, rand:uniform(255), 1, 1}, 1}, {{8193, 3512, 0, 0, 0, 0, 0, 1}, 1},
             {{0, 0, 0, 0, 0, 65535, 2560, 1}, 1}, {{300, 1, 1, 1}, 1}, {"junk", 1}, undefined],
    Metas = [#{}, #{listener_type => bytes(?MAX, $w), listener_port => 1, listener_addr => {1, 2, 3, 4}},
             #{listener_type => ws, listener_port => 65536}, #{listener_type => list_to_atom(lists:duplicate(255, $w))}],
    timed("cidr/listener",
          fun() -> [valid(auth5(P, <<"c">>, <<"alice">>, <<"x">>, M)) || P <- Peers, M <- Metas] end).

%% The certificate comes from the network: random bytes, a DER header
%% claiming a huge length, truncations, deep nesting, all 65535 bytes.
garbage_client_certificates(Config) ->
    use_policy(Config, "cert.toml",
               "[[cert_identity]]\nfrom = \"cn\"\n[[cert_identity]]\nfrom = \"san\"\n"
               "[users.alice]\n", #{}),
    Rand = fun(N) -> crypto:strong_rand_bytes(N) end,
    Nested = iolist_to_binary(lists:duplicate(?MAX div 4, <<16#30, 16#84, 16#ff, 16#ff>>)),
    Certs = [Rand(?MAX), Rand(100), <<16#30, 16#84, 16#7f, 16#ff, 16#ff, 16#ff>>,
             <<16#30, 16#83, 16#00, 16#ff, 16#fb, (Rand(?MAX - 5))/binary>>, Nested,
             bytes(?MAX, 16#30), <<>>],
    timed("certificates",
          fun() ->
                  [?assertMatch({error, _}, auth5(?PEER, <<"c">>, U, <<"x">>, #{client_cert => C}))
                   || C <- Certs, U <- [<<"alice">>, undefined]]
          end).

%%--------------------------------------------------------------------
%% Tables
%%--------------------------------------------------------------------

keys() -> ?U:numtests("WARDEN_HOSTILE_KEYS", 1000000).

%% Rate limiting on per peer and per user: every connect from a new IPv6
%% /64 with a new username adds one key to each table.
rate_tables_bounded_in_bytes(Config) ->
    use_policy(Config, "rate.toml", "[users.alice]\n",
               #{rate_per_peer => 1, burst_per_peer => 1, rate_per_user => 1, burst_per_user => 1,
                 unknown_user => next}),
    N = keys(),
    Mem0 = vmq_warden_nif:memory(),
    timed(io_lib:format("rate tables, ~b distinct peers and users", [N]),
          fun() -> drive(N, fun(I) ->
                                    Peer = {{16#2001, 16#db8, I bsr 16, I band 16#ffff, 0, 0, 0, 1}, 1},
                                    auth(Peer, <<"c">>, <<"user-", (integer_to_binary(I))/binary>>, <<"x">>)
                            end)
          end),
    Mem1 = vmq_warden_nif:memory(),
    ct:pal("Rust heap: ~b -> ~b bytes (+~b) after ~b distinct keys", [Mem0, Mem1, Mem1 - Mem0, N]),
    ?assert(Mem1 - Mem0 < ?TABLE_BYTES),
    %% the limiter still limits
    P = {{192, 0, 2, 99}, 1},
    _ = auth(P, <<"c">>, <<"alice">>, <<"alice-pw">>),
    ?assertEqual({error, connection_rate_exceeded}, auth(P, <<"c">>, <<"alice">>, <<"alice-pw">>)).

%% Usernames of 65535 bytes: the limiter keeps a fixed-size key, not the name.
long_usernames_do_not_grow_the_heap(Config) ->
    use_policy(Config, "rate.toml", "[users.alice]\n",
               #{rate_per_user => 1, burst_per_user => 1, unknown_user => next}),
    Base = bytes(?MAX - 8, $u),
    Mem0 = vmq_warden_nif:memory(),
    timed("20000 long usernames",
          fun() -> drive(20000, fun(I) -> auth(?PEER, <<"c">>, <<I:64, Base/binary>>, <<"x">>) end) end),
    Mem1 = vmq_warden_nif:memory(),
    ct:pal("Rust heap: ~b -> ~b bytes (+~b) after 20000 usernames of 65535 bytes", [Mem0, Mem1, Mem1 - Mem0]),
    ?assert(Mem1 - Mem0 < 16 * 1024 * 1024).

%% Failed logins (wrong password for a known user, a fast hash) from very
%% many peers: one failure counter per peer fills the peer ban table past
%% its bound (the threshold is set high so that no ban, of the user either,
%% cuts the flood short). Bounded in bytes; bans still work afterwards.
ban_table_bounded_in_bytes(Config) ->
    use_policy(Config, "ban.toml", "[users.alice]\n", #{ban_threshold => 1000000000}),
    N = 150000,
    Mem0 = vmq_warden_nif:memory(),
    timed(io_lib:format("ban table, ~b failing peers", [N]),
          fun() -> drive(N, fun(I) ->
                                    Peer = {{16#2001, 16#db8, I bsr 16, I band 16#ffff, 0, 0, 0, 1}, 1},
                                    {error, _} = auth(Peer, <<"c">>, <<"alice">>, <<"wrong">>)
                            end)
          end),
    Mem1 = vmq_warden_nif:memory(),
    ct:pal("Rust heap: ~b -> ~b bytes (+~b) after ~b failing peers", [Mem0, Mem1, Mem1 - Mem0, N]),
    ?assert(Mem1 - Mem0 < ?TABLE_BYTES),
    use_policy(Config, "ban.toml", "[users.alice]\n", #{ban_threshold => 3}),
    P = {{192, 0, 2, 77}, 1},
    [_ = auth(P, <<"c">>, <<"alice">>, <<"wrong">>) || _ <- lists:seq(1, 3)],
    ?assertEqual({error, banned}, auth(P, <<"c">>, <<"alice">>, <<"alice-pw">>)).

%% N calls from as many processes as schedulers, each followed by a
%% calibration call of about the hook's length (timed_once/2 says why).
drive(N, Fun) ->
    Workers = erlang:system_info(schedulers_online),
    Self = self(),
    Pids = [spawn_link(fun() ->
                               [begin
                                    Fun(I),
                                    vmq_warden_nif:calibrate(?CONTROL_ROUNDS)
                                end || I <- lists:seq(W, N, Workers)],
                               Self ! {done, self()}
                       end) || W <- lists:seq(1, Workers)],
    [receive {done, P} -> ok after 600000 -> error(timeout) end || P <- Pids],
    ok.

%% Slow verifications never run more at once than their slots (here 1);
%% a connect that finds no slot within its wait (3 s) is refused as server
%% busy (MQTT 5 server_busy, MQTT 3 not_authorized), and no call on a
%% normal scheduler waits for a slot.
slow_verifications_bounded_and_busy_refused(Config) ->
    use_policy(Config, "slow.toml", "", #{auth_cache_size => 0,
                                          password_file => ?config(slow_password_file, Config)}),
    _ = vmq_warden_nif:slow_slots(1),
    _ = vmq_warden_nif:slow_slots_info(),
    {1, 0, 0, Busy0} = vmq_warden_nif:slow_slots_info(),
    Self = self(),
    %% one run: the counts below are of this run's refusals
    {Answers, Over} = timed_once("150 argon2 logins at once, 1 slot",
                    fun() ->
                            Pids = [spawn_link(fun() ->
                                                       Peer = {{10, 0, I div 256, I rem 256}, 1},
                                                       R = case I rem 2 of
                                                               0 -> auth5(Peer, <<"c">>, <<"dave">>, <<"wrong">>, #{});
                                                               1 -> auth(Peer, <<"c">>, <<"dave">>, <<"wrong">>)
                                                           end,
                                                       Self ! {answer, self(), I rem 2, R}
                                               end) || I <- lists:seq(1, 150)],
                            [receive {answer, P, Kind, R} -> {Kind, R} after 60000 -> error(timeout) end
                             || P <- Pids]
                    end),
    {Limit, Running, Peak, Busy1} = vmq_warden_nif:slow_slots_info(),
    Counts = lists:foldl(fun(A, M) -> maps:update_with(A, fun(N) -> N + 1 end, 1, M) end, #{}, Answers),
    ct:pal("slots ~p, running ~p, peak ~p, busy refusals ~p; answers ~p",
           [Limit, Running, Peak, Busy1 - Busy0, Counts]),
    ?assertEqual([], Over),
    ?assertEqual({1, 0, 1}, {Limit, Running, Peak}),
    Busy = Busy1 - Busy0,
    ?assert(Busy > 0),
    %% stats() and the metrics count them too
    ?assertEqual(Busy1, maps:get(server_busy, vmq_warden:stats())),
    ?assertEqual(Busy, maps:get({0, {error, #{reason_code => server_busy}}}, Counts, 0)
                     + maps:get({1, {error, not_authorized}}, Counts, 0)),
    ?assertEqual(150 - Busy, maps:get({0, {error, #{reason_code => bad_username_or_password}}}, Counts, 0)
                           + maps:get({1, {error, invalid_credentials}}, Counts, 0)).
