%% The firewall's state through the real hook functions and the real NIF,
%% with the README's example policy and a password file: reloads (a broken
%% file keeps the running policy; the reloader loads a change once), rate
%% limits, failed-login bans and clearing them, slow hashes on dirty
%% schedulers, and the credential cache under a reconnect storm.
-module(vmq_warden_firewall_state_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("vmq_warden_firewall.hrl").

-compile([export_all, nowarn_export_all]).
-import(vmq_warden_firewall_util,
        [passwd_lines/0, apply_env/2, sid/1, meta/2, tcp/0, a3/5, a5/5, refused/6,
         accepted/5, both_next/5, stat/1]).

all() ->
    [failed_reload_keeps_the_policy,
     reloader_loads_a_change_once,
     rate_limits,
     bans_and_clearing_them,
     slow_hashes_run_on_dirty_schedulers,
     reconnect_storm_hits_the_cache].

init_per_suite(Config) ->
    vmq_warden_firewall_util:suite_start(Config).

end_per_suite(_Config) ->
    vmq_warden_firewall_util:suite_end().

init_per_testcase(_Case, Config) ->
    ok = vmq_warden_firewall_util:case_start(Config),
    Config.

end_per_testcase(_Case, _Config) ->
    ok.

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

failed_reload_keeps_the_policy(Config) ->
    Policy = ?config(policy, Config),
    Reloads = stat([reloads]),
    Broken = <<"version = 1\n[users.alice]\ngroups = [\"devices\"\n">>,
    ok = file:write_file(Policy, Broken),
    {error, Msg} = vmq_warden:reload(),
    Text = unicode:characters_to_list(Msg),
    ct:pal("reload error: ~ts", [Text]),
    ?assertNotEqual(nomatch, string:find(Text, Policy)),
    ?assertMatch({match, _}, re:run(Text, [Policy, ":[0-9]+:"])),
    ?assertEqual(nomatch, string:find(Text, "$6$")),
    %% the running policy stays: alice, the rules and the constraints
    accepted(?LAN, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none),
    refused(banned, {{192, 168, 66, 7}, 1}, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none),
    refused(not_authorized, ?LAN, <<"root:1">>, <<"root">>, <<"x">>, none),
    ?assertEqual(maps:get(failed, Reloads) + 1, stat([reloads, failed])),
    %% an unknown key is an error with its line too
    ok = file:write_file(Policy, <<"version = 1\n\n[network]\nalow = [\"10.0.0.0/8\"]\n">>),
    {error, Msg2} = vmq_warden_config:apply(),
    ?assertMatch({match, _}, re:run(Msg2, [Policy, ":4:"])),
    %% a good reload takes effect at once (alice gone, root no longer denied)
    ok = file:write_file(Policy, <<"[users.root]\npassword = \"", (alice_hash(Config))/binary, "\"\n">>),
    ok = vmq_warden:reload(),
    both_next(?LAN, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none),
    accepted({{8, 8, 8, 8}, 1}, <<"any">>, <<"root">>, ?ALICE_PW, none).

%% The reloader loads changed files once: not a second time after an
%% operator's reload of the same files (that would empty the password cache
%% again), and not at all while reload_interval is 0. Its ticks are sent by
%% hand here; each one replaces the pending timer, and an hour-long
%% interval keeps the timer out of the way meanwhile.
reloader_loads_a_change_once(Config) ->
    Passwd = ?config(passwd, Config),
    All = [[L, "\n"] || L <- passwd_lines()],
    Fewer = tl(All),                                 % another size: a change even within one second
    Tick = fun() ->
                   vmq_warden_reloader ! tick,
                   _ = sys:get_state(vmq_warden_reloader),   % handled
                   stat([reloads, ok])
           end,
    ok = application:set_env(vmq_warden, reload_interval, 3600000),
    Ok = Tick(),                                     % the files as this case found them
    ok = file:write_file(Passwd, Fewer),
    ok = vmq_warden:reload(),
    ?assertEqual(Ok + 1, stat([reloads, ok])),
    ?assertEqual(Ok + 1, Tick()),                    % already loaded
    ok = file:write_file(Passwd, All),
    ?assertEqual(Ok + 2, Tick()),                    % changed: loaded
    ?assertEqual(Ok + 2, Tick()),
    ok = application:set_env(vmq_warden, reload_interval, 0),
    ok = file:write_file(Passwd, Fewer),
    ?assertEqual(Ok + 2, Tick()),                    % 0: no automatic reload
    ok = vmq_warden:reload(),                        % but the operator's
    ?assertEqual(Ok + 3, stat([reloads, ok])),
    ok = file:write_file(Passwd, All),
    ok = vmq_warden:reload().

alice_hash(Config) ->
    {match, [H]} = re:run(?config(example, Config), "password = \"([^\"]+)\"",
                          [{capture, all_but_first, binary}]),
    H.

rate_limits(Config) ->
    %% per peer address: burst 3, (almost) no refill
    apply_env(Config, #{rate_per_peer => 0.001, burst_per_peer => 3}),
    Peer = {{10, 9, 9, 9}, 1},
    [?assertMatch({ok, _}, a3(Peer, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none))
     || _ <- [1, 2, 3]],
    ?assertEqual({error, connection_rate_exceeded},
                 a3(Peer, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none)),
    ?assertEqual({error, #{reason_code => connection_rate_exceeded}},
                 a5(Peer, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none)),
    %% IPv6 peers share the bucket of their /64
    P6 = fun(Last) -> {{16#2001, 16#db8, 0, 1, 0, 0, 0, Last}, 1} end,
    [?assertMatch({ok, _}, a3(P6(I), <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none))
     || I <- [1, 2, 3]],
    ?assertEqual({error, connection_rate_exceeded},
                 a3(P6(4), <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none)),
    %% another address is not affected
    ?assertMatch({ok, _}, a3(?LAN, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none)),
    %% per username, whatever the address
    apply_env(Config, #{rate_per_user => 0.001, burst_per_user => 2}),
    [?assertMatch({ok, _}, a3({{10, 5, 0, I}, 1}, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none))
     || I <- [1, 2]],
    ?assertEqual({error, #{reason_code => connection_rate_exceeded}},
                 a5({{10, 5, 0, 3}, 1}, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none)),
    ?assertMatch({ok, _}, a3({{10, 5, 0, 4}, 1}, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none)).

bans_and_clearing_them(Config) ->
    apply_env(Config, #{ban_threshold => 3, ban_users => true, ban_window => 60000, ban_duration => 60000}),
    Peer = {{10, 7, 7, 7}, 1},
    [?assertEqual({error, invalid_credentials},
                  a3(Peer, <<"alice:1">>, <<"alice">>, <<"guess", I>>, none)) || I <- [1, 2, 3]],
    %% the address and the user are banned, even with the right password
    ?assertEqual({error, banned}, a3(Peer, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none)),
    ?assertEqual({error, #{reason_code => banned}}, a5(Peer, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none)),
    ?assertEqual({error, banned}, a3(Peer, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none)),
    ?assertEqual({error, banned}, a3(?LAN, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none)),
    Bans = vmq_warden:bans(),
    ?assertMatch([_, _], Bans),
    Targets = lists:sort([T || #{target := T} <- Bans]),
    ?assertEqual([{peer, <<"10.7.7.7/32">>}, {username, <<"alice">>}],
                 [{K, iolist_to_binary(V)} || {K, V} <- Targets]),
    [?assert(R > 0 andalso R =< 60000) || #{remaining_ms := R} <- Bans],
    ?assert(stat([bans_active]) >= 2),
    %% lift the address ban: the user stays banned
    ?assertEqual({ok, 1}, vmq_warden:clear_bans({peer, "10.7.7.7"})),
    ?assertMatch({ok, _}, a3(Peer, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none)),
    ?assertEqual({error, banned}, a3(?LAN, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none)),
    ?assertEqual({ok, 1}, vmq_warden:clear_bans({username, <<"alice">>})),
    ?assertEqual([], vmq_warden:bans()),
    ?assertMatch({ok, _}, a3(?LAN, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none)),
    %% clear_bans(all)
    _ = [a5({{10, 8, 8, 8}, 1}, <<"backend:1">>, <<"backend">>, <<"no", I>>, none) || I <- [1, 2, 3]],
    ?assertEqual({error, #{reason_code => banned}},
                 a5({{10, 8, 8, 8}, 1}, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none)),
    ?assertMatch({ok, N} when N >= 1, vmq_warden:clear_bans(all)),
    ?assertMatch({ok, _}, a5({{10, 8, 8, 8}, 1}, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none)),
    ?assertEqual({error, bad_address}, vmq_warden:clear_bans({peer, "not-an-ip"})).

%% bcrypt and argon2id verifications take milliseconds each. On a normal
%% scheduler they would show up as long_schedule events; they run on dirty
%% CPU schedulers (the verify.slow counter counts that path).
slow_hashes_run_on_dirty_schedulers(_Config) ->
    Slow0 = stat([verify, slow]),
    Us0 = stat([verify, total_us]),
    Count0 = stat([verify, count]),
    Prev = erlang:system_flag(scheduler_wall_time, true),
    Wall0 = dirty_cpu_active_us(),
    erlang:system_monitor(self(), [{long_schedule, 5}]),
    Parent = self(),
    Logins = [{<<"slowb">>, <<"bcrypt-pw">>}, {<<"slowa">>, <<"argon-pw">>}],
    Workers = [spawn_link(fun() ->
                   Results = [a3(?LAN, <<User/binary, ":", (integer_to_binary(I))/binary>>, User,
                                 <<Pw/binary, (integer_to_binary(W * 10 + I))/binary>>, none)
                              || I <- lists:seq(1, 4)]
                       ++ [a5(?LAN, <<User/binary, ":ok">>, User, Pw, none)],
                   Parent ! {self(), Results}
               end) || {User, Pw} <- Logins, W <- [1, 2]],
    Results = [receive {W, R} -> R after 60000 -> error(timeout) end || W <- Workers],
    erlang:system_monitor(undefined),
    DirtyUs = dirty_cpu_active_us() - Wall0,
    _ = erlang:system_flag(scheduler_wall_time, Prev),
    [?assertEqual([{error, invalid_credentials}, {error, invalid_credentials},
                   {error, invalid_credentials}, {error, invalid_credentials}, ok], R)
     || R <- Results],
    %% 16 distinct wrong passwords + 2 first right ones went the slow path
    %% (the other two right ones may have hit the cache)
    Slow = stat([verify, slow]) - Slow0,
    ?assert(Slow >= 18, Slow),
    %% By scheduler type: the hashing time was spent on dirty CPU schedulers.
    VerifyUs = stat([verify, total_us]) - Us0,
    ct:log("dirty cpu active ~p us, verification ~p us", [DirtyUs, VerifyUs]),
    ?assert(DirtyUs >= VerifyUs div 2, {dirty_cpu_active_us, DirtyUs, verify_us, VerifyUs}),
    %% And no worker held a normal scheduler for anything like one hash. A
    %% hash on a normal scheduler shows up as a long_schedule of about its
    %% whole cost; shorter reports are the OS preempting a loaded machine.
    PerHashMs = VerifyUs div max(1, stat([verify, count]) - Count0) div 1000,
    LongOnes = [L || {_Pid, Info} = L <- flush_long_schedule(Workers),
                     proplists:get_value(timeout, Info) >= max(5, PerHashMs div 2)],
    ?assertEqual([], LongOnes).

%% Microseconds the dirty CPU schedulers have been busy (needs the
%% scheduler_wall_time flag).
dirty_cpu_active_us() ->
    Normal = erlang:system_info(schedulers),
    DirtyCpu = erlang:system_info(dirty_cpu_schedulers),
    Active = lists:sum([A || {Id, A, _T} <- erlang:statistics(scheduler_wall_time_all),
                             Id > Normal, Id =< Normal + DirtyCpu]),
    erlang:convert_time_unit(Active, perf_counter, microsecond).

flush_long_schedule(Pids) ->
    receive
        {monitor, Pid, long_schedule, Info} ->
            case lists:member(Pid, Pids) of
                true -> [{Pid, Info} | flush_long_schedule(Pids)];
                false -> flush_long_schedule(Pids)
            end
    after 0 -> []
    end.

%% A reconnect storm of a known client: one slow verification, then cache hits.
reconnect_storm_hits_the_cache(_Config) ->
    Hits0 = stat([cache, hits]),
    Count0 = stat([verify, count]),
    Slow0 = stat([verify, slow]),
    N = 200,
    [?assertEqual(ok, a3(?LAN, <<"slowb:storm">>, <<"slowb">>, <<"bcrypt-pw">>, none))
     || _ <- lists:seq(1, N)],
    [?assertEqual(ok, a5(?LAN, <<"slowb:storm">>, <<"slowb">>, <<"bcrypt-pw">>, none))
     || _ <- lists:seq(1, N)],
    ?assertEqual(1, stat([verify, count]) - Count0),
    ?assertEqual(1, stat([verify, slow]) - Slow0),
    ?assert(stat([cache, hits]) - Hits0 >= 2 * N - 1),
    %% a wrong password is not served from the right one's cache entry
    ?assertEqual({error, invalid_credentials},
                 a3(?LAN, <<"slowb:storm">>, <<"slowb">>, <<"bcrypt-pX">>, none)),
    %% and a storm of the same wrong password is remembered too
    Count1 = stat([verify, count]),
    [?assertEqual({error, invalid_credentials},
                  a3(?LAN, <<"slowb:storm">>, <<"slowb">>, <<"bcrypt-pX">>, none))
     || _ <- lists:seq(1, 50)],
    ?assertEqual(Count1, stat([verify, count])),
    %% a reload empties the cache
    ok = vmq_warden:reload(),
    ?assertEqual(ok, a3(?LAN, <<"slowb:storm">>, <<"slowb">>, <<"bcrypt-pw">>, none)),
    ?assertEqual(Count1 + 1, stat([verify, count])).
