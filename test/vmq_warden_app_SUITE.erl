%% @doc Application start and stop (issue 4, "Start, stop, re-enable" and
%% "Logs"): a bad configuration fails start with a clear error; a valid one
%% starts; the Rust core's `tracing' events arrive in OTP logger with level,
%% target and fields and without secrets; refusal audit lines are
%% rate-limited under storms; the vmq-admin commands are registered with
%% clique on start and removed on stop.
-module(vmq_warden_app_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([bad_setting_fails_start/1,
         broken_policy_fails_start/1,
         missing_password_file_fails_start/1,
         valid_config_starts/1,
         lone_node_records_no_count_changes/1,
         refusal_reaches_logger/1,
         refusal_storm_is_rate_limited/1,
         failed_reload_logs_one_error/1,
         cli_registered_on_start_unregistered_on_stop/1]).

-define(PEER, {{192, 0, 2, 7}, 40001}).
-define(PASSWORD, <<"Sup3r-S3cret-pw">>).
-define(HANDLER, warden_app_capture).
-define(AUDIT, <<"vmq_warden::audit">>).

all() ->
    [bad_setting_fails_start,
     broken_policy_fails_start,
     missing_password_file_fails_start,
     valid_config_starts,
     lone_node_records_no_count_changes,
     refusal_reaches_logger,
     refusal_storm_is_rate_limited,
     failed_reload_logs_one_error,
     cli_registered_on_start_unregistered_on_stop].

init_per_suite(Config) ->
    Config.

end_per_suite(_Config) ->
    _ = vmq_plugin_harness:disable(vmq_warden),
    reset_env(),
    ok.

init_per_testcase(_Case, Config) ->
    _ = vmq_plugin_harness:disable(vmq_warden),
    reset_env(),
    #{level := Primary} = logger:get_primary_config(),
    %% VerneMQ logs at info by default; OTP's primary level is notice
    ok = logger:update_primary_config(#{level => info}),
    ok = vmq_warden_log_capture:install(?HANDLER),
    [{primary_level, Primary} | Config].

end_per_testcase(_Case, Config) ->
    ok = vmq_warden_log_capture:remove(?HANDLER),
    ok = logger:update_primary_config(#{level => ?config(primary_level, Config)}),
    _ = vmq_plugin_harness:disable(vmq_warden),
    _ = [catch meck:unload(M) || M <- [clique]],
    _ = [catch ets:delete(T) || T <- [clique_commands, clique_usage]],
    reset_env(),
    ok.

%%--------------------------------------------------------------------
%% Bad and good configurations
%%--------------------------------------------------------------------

%% application:start/1 returns {error, {{bad_config, Reason}, {vmq_warden_app,
%% start, _}}}: the application controller wraps the {error, {bad_config,
%% Reason}} of vmq_warden_app:start/2. Reason names the setting and value.
bad_setting_fails_start(_Config) ->
    Bad = [{failure_decision, maybe}, {default_decision, perhaps}, {unknown_user, allow},
           {allow_anonymous, yes}, {auth_cache_size, -1}, {reload_interval, "5s"},
           {log_level, loud}, {policy_file, 42}],
    [begin
         reset_env(),
         ok = application:set_env(vmq_warden, Key, Value),
         ?assertEqual({error, {{bad_config, {invalid_setting, Key, Value}},
                               {vmq_warden_app, start, [normal, []]}}},
                      vmq_plugin_harness:enable(vmq_warden)),
         ?assertEqual(undefined, whereis(vmq_warden_sup)),
         ?assertNot(lists:keymember(vmq_warden, 1, application:which_applications())),
         %% and an error line that names the setting
         Lines = [E || E <- vmq_warden_log_capture:captured(), maps:get(level, E) =:= error,
                       vmq_warden_log_capture:contains(E, "bad configuration"), vmq_warden_log_capture:contains(E, atom_to_list(Key))],
         ?assertMatch([_ | _], Lines, Key)
     end || {Key, Value} <- Bad],
    %% the same node starts once the setting is fixed
    reset_env(),
    ?assertEqual(ok, vmq_plugin_harness:enable(vmq_warden)).

broken_policy_fails_start(Config) ->
    Policy = filename:join(?config(priv_dir, Config), "broken_policy.toml"),
    ok = file:write_file(Policy, <<"version = 1\n[network]\nallow = [\"127.0.0.1\"]\nfrobnicate = 1\n">>),
    ok = application:set_env(vmq_warden, policy_file, Policy),
    {error, {{bad_config, Reason}, _}} = vmq_plugin_harness:enable(vmq_warden),
    ct:pal("policy error: ~p", [Reason]),
    Text = unicode:characters_to_list(Reason),
    %% names the file, the line and the key
    ?assertNotEqual(nomatch, string:find(Text, Policy ++ ":4")),
    ?assertNotEqual(nomatch, string:find(Text, "frobnicate")),
    ?assertEqual(undefined, whereis(vmq_warden_sup)),
    %% fixed file: starts
    ok = file:write_file(Policy, <<"version = 1\n[network]\nallow = [\"127.0.0.1\"]\n">>),
    ?assertEqual(ok, vmq_plugin_harness:enable(vmq_warden)).

missing_password_file_fails_start(Config) ->
    Passwd = filename:join(?config(priv_dir, Config), "no_such_passwd"),
    ok = application:set_env(vmq_warden, password_file, Passwd),
    {error, {{bad_config, Reason}, _}} = vmq_plugin_harness:enable(vmq_warden),
    ?assertNotEqual(nomatch, string:find(unicode:characters_to_list(Reason), Passwd)),
    ?assertEqual(undefined, whereis(vmq_warden_sup)).

valid_config_starts(Config) ->
    Dir = ?config(priv_dir, Config),
    Policy = filename:join(Dir, "good_policy.toml"),
    Passwd = filename:join(Dir, "good_passwd"),
    ok = file:write_file(Policy, <<"version = 1\n[network]\nallow = [\"192.0.2.0/24\"]\n">>),
    ok = file:write_file(Passwd, <<>>),
    Env = #{policy_file => Policy, password_file => Passwd, reload_interval => 1000,
            failure_decision => next, unknown_user => deny, default_decision => deny,
            allow_anonymous => true, auth_cache_size => 0, auth_cache_ttl => 0,
            rate_per_peer => 100, burst_per_peer => 20, ban_threshold => 0,
            history_size => 10, log_level => debug},
    maps:foreach(fun(K, V) -> ok = application:set_env(vmq_warden, K, V) end, Env),
    ?assertEqual(ok, vmq_plugin_harness:enable(vmq_warden)),
    ?assert(vmq_warden_nif:loaded()),
    ?assert(is_pid(whereis(vmq_warden_reloader))),
    ?assert(is_pid(whereis(vmq_warden_log))),
    ?assertEqual({ok, maps:merge(vmq_warden_config:defaults(), Env)}, vmq_warden_config:settings()),
    ?assertEqual(ok, vmq_plugin_harness:disable(vmq_warden)).

%% A node without peers sends its per-user counts to nobody, so it keeps no
%% record of whose count changed: that record costs every connect and
%% disconnect a set insert (vmq_warden_cluster_sync). The sync still runs
%% (a long period, so that no tick drains a change before the check).
lone_node_records_no_count_changes(_Config) ->
    ?assertEqual([], nodes()),
    ok = application:set_env(vmq_warden, default_decision, allow),
    ok = application:set_env(vmq_warden, cluster_sync_interval, 3600000),
    ?assertEqual(ok, vmq_plugin_harness:enable(vmq_warden)),
    ?assert(is_pid(whereis(vmq_warden_cluster_sync))),
    ?assertEqual(ok, vmq_warden_hooks:auth_on_register(?PEER, {"", <<"lone">>}, <<"u">>, undefined, true)),
    ?assertMatch({ok, #{state := authenticated}}, vmq_warden:lookup({"", <<"lone">>})),
    ?assertEqual({[], false}, vmq_warden_nif:cluster_local_changes(100)).

%%--------------------------------------------------------------------
%% Logs
%%--------------------------------------------------------------------

%% A reload that fails is one error line naming the file and the line (it
%% was two, once from the Rust side and once from the Erlang side: seen in
%% a real broker's log).
failed_reload_logs_one_error(Config) ->
    Policy = filename:join(?config(priv_dir, Config), "policy.toml"),
    ok = file:write_file(Policy, <<"version = 1\n">>),
    ok = application:set_env(vmq_warden, policy_file, Policy),
    ok = vmq_plugin_harness:enable(vmq_warden),
    ok = file:write_file(Policy, <<"version = 1\n[network]\nalow = []\n">>),
    {error, _} = vmq_warden:reload(),
    ok = vmq_warden_log:flush(),
    Errors = [E || #{level := error} = E <- vmq_warden_log_capture:captured()],
    ct:pal("error lines: ~p", [Errors]),
    ?assertMatch([_], Errors),
    ?assert(vmq_warden_log_capture:contains(hd(Errors), "policy.toml:3")).

%% One refusal: one audit line in logger with level info, domain
%% [vmq_warden], the Rust target and the refusal's fields; no password.
refusal_reaches_logger(_Config) ->
    ok = application:set_env(vmq_warden, default_decision, deny),
    ok = vmq_plugin_harness:enable(vmq_warden),
    ok = vmq_warden_log:flush(),
    _ = vmq_warden_log_capture:captured(),
    Sid = {"", <<"refused-client">>},
    ?assertEqual({error, not_authorized}, vmq_warden_hooks:auth_on_register(?PEER, Sid, <<"mallory">>, ?PASSWORD, true)),
    ok = vmq_warden_log:flush(),
    Events = vmq_warden_log_capture:captured(),
    Audit = [E || #{meta := #{target := ?AUDIT}} = E <- Events],
    ?assertMatch([_], Audit, Events),
    [#{level := Level, msg := {report, Report}, meta := Meta}] = Audit,
    ct:pal("audit event: ~p", [hd(Audit)]),
    ?assertEqual(info, Level),
    ?assertEqual([vmq_warden], maps:get(domain, Meta)),
    ?assertEqual(<<"connection refused">>, maps:get(msg, Report)),
    ?assertEqual(<<"not_authorized">>, maps:get(code, Report)),
    ?assertNotEqual(nomatch, binary:match(maps:get(reason, Report), <<"default_decision">>)),
    ?assertEqual(<<"refused-client">>, maps:get(client_id, Report)),
    ?assertEqual(<<"192.0.2.7">>, maps:get(peer, Report)),
    ?assertEqual(<<"mallory">>, maps:get(username, Report)),
    %% a failed password check too (bad credentials), logged without the password
    Passwd = filename:join(?config(priv_dir, _Config), "passwd"),
    ok = write_passwd(Passwd, <<"mallory">>, <<"the-right-one">>),
    ok = application:set_env(vmq_warden, password_file, Passwd),
    ok = vmq_warden:reload(),
    ?assertEqual({error, invalid_credentials},
                 vmq_warden_hooks:auth_on_register(?PEER, Sid, <<"mallory">>, ?PASSWORD, true)),
    ?assertEqual({error, #{reason_code => bad_username_or_password}},
                 vmq_warden_hooks:auth_on_register_m5(?PEER, Sid, <<"mallory">>, ?PASSWORD, true, #{})),
    ok = vmq_warden_log:flush(),
    Events2 = vmq_warden_log_capture:captured(),
    Bad = [R || #{meta := #{target := ?AUDIT}, msg := {report, #{code := <<"bad_username_or_password">>} = R}}
                    <- Events2],
    ?assertMatch([_, _], Bad, Events2),
    ct:pal("bad password audit: ~p", [Bad]),
    [?assertNot(vmq_warden_log_capture:contains(E, binary_to_list(?PASSWORD)), E) || E <- vmq_warden_log_capture:all_captured()],
    [?assertNot(vmq_warden_log_capture:contains(E, "the-right-one"), E) || E <- vmq_warden_log_capture:all_captured()].

%% 2000 refused connects: at most 50 audit lines per second reach the log,
%% the rest are counted and reported by a summary line once the second is
%% over. Every refusal is accounted for: logged or counted.
refusal_storm_is_rate_limited(_Config) ->
    ok = application:set_env(vmq_warden, default_decision, deny),
    ok = vmq_plugin_harness:enable(vmq_warden),
    %% let a previous window's summary out first
    timer:sleep(1100),
    ok = vmq_warden_log:flush(),
    _ = vmq_warden_log_capture:captured(),
    Refused0 = not_authorized(),
    N = 2000,
    T0 = erlang:monotonic_time(millisecond),
    [{error, not_authorized} = vmq_warden_hooks:auth_on_register(?PEER, {"", integer_to_binary(I)}, <<"storm">>,
                                                    ?PASSWORD, true)
     || I <- lists:seq(1, N)],
    Elapsed = erlang:monotonic_time(millisecond) - T0,
    %% the summary of the storm's last second comes with the next drain
    timer:sleep(1100),
    ok = vmq_warden_log:flush(),
    Events = [E || #{meta := #{target := ?AUDIT}} = E <- vmq_warden_log_capture:captured()],
    Refusals = [E || #{level := info} = E <- Events],
    Summaries = [R || #{level := warning, msg := {report, R}} <- Events],
    ct:pal("storm of ~b refusals in ~b ms: ~b audit lines, summaries ~p",
           [N, Elapsed, length(Refusals), Summaries]),
    %% the storm spans at most Elapsed/1000 + 1 one-second windows
    Windows = Elapsed div 1000 + 2,
    ?assert(length(Refusals) =< 50 * Windows),
    ?assert(length(Refusals) >= 50),
    ?assertMatch([_ | _], Summaries),
    ?assert(length(Summaries) =< Windows),
    Suppressed = lists:sum([binary_to_integer(maps:get(suppressed, S)) || S <- Summaries]),
    ?assertEqual(N, length(Refusals) + Suppressed),
    [?assertEqual(<<(maps:get(suppressed, S))/binary, " refusals not logged in the last second">>,
                  maps:get(msg, S)) || S <- Summaries],
    ?assertEqual(<<"50">>, maps:get(limit_per_second, hd(Summaries))),
    %% the decisions themselves are all counted
    ?assertEqual(N, not_authorized() - Refused0),
    %% a quiet second later: no more summaries, and one refusal is logged again
    ?assertEqual({error, not_authorized}, vmq_warden_hooks:auth_on_register(?PEER, {"", <<"after">>}, undefined,
                                                                            undefined, true)),
    ok = vmq_warden_log:flush(),
    ?assertMatch([#{level := info}], [E || #{meta := #{target := ?AUDIT}} = E <- vmq_warden_log_capture:captured()]),
    [?assertNot(vmq_warden_log_capture:contains(E, binary_to_list(?PASSWORD))) || E <- vmq_warden_log_capture:all_captured()].

not_authorized() ->
    #{decisions := #{refused := #{not_authorized := R}}} = vmq_warden:stats(),
    R.

%%--------------------------------------------------------------------
%% vmq-admin commands
%%--------------------------------------------------------------------

%% Inside VerneMQ clique is loaded: start registers every command (and its
%% usage), stop removes them from clique's tables.
cli_registered_on_start_unregistered_on_stop(_Config) ->
    ok = meck:new(clique, [non_strict, no_link]),
    clique_commands = ets:new(clique_commands, [public, named_table]),
    clique_usage = ets:new(clique_usage, [public, named_table]),
    ok = meck:expect(clique, register_command,
                     fun(Cmd, Keys, Flags, Fun) -> ets:insert(clique_commands, {Cmd, Keys, Flags, Fun}) end),
    ok = meck:expect(clique, register_usage, fun(Cmd, U) -> ets:insert(clique_usage, {Cmd, U}) end),
    Theirs = ["vmq-admin", "session", "show"],
    true = ets:insert(clique_commands, {Theirs, [], [], fun(_, _, _) -> ok end}),
    ok = vmq_plugin_harness:enable(vmq_warden),
    Ours = [["vmq-admin", "warden", "session", "show"], ["vmq-admin", "warden", "stats"],
            ["vmq-admin", "warden", "reload"], ["vmq-admin", "warden", "ban", "show"],
            ["vmq-admin", "warden", "ban", "clear"], ["vmq-admin", "warden", "kick"]],
    ?assertEqual(6, meck:num_calls(clique, register_command, '_')),
    ?assertEqual(lists:sort([Theirs | Ours]), lists:sort([element(1, E) || E <- ets:tab2list(clique_commands)])),
    [?assertMatch([_], ets:lookup(clique_usage, C)) || C <- Ours],
    ?assertMatch([_], ets:lookup(clique_usage, ["vmq-admin", "warden"])),
    %% a registered callback reaches the running plugin
    [{_, [], [], Stats}] = ets:lookup(clique_commands, ["vmq-admin", "warden", "reload"]),
    ok = meck:new(clique_status, [non_strict, no_link]),
    ok = meck:expect(clique_status, text, fun(T) -> {text, T} end),
    ?assertEqual([{text, "Done"}], Stats(["vmq-admin", "warden", "reload"], [], [])),
    ok = meck:unload(clique_status),
    ok = vmq_plugin_harness:disable(vmq_warden),
    ?assertEqual([Theirs], [element(1, E) || E <- ets:tab2list(clique_commands)]),
    ?assertEqual([], ets:tab2list(clique_usage)).

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

%% A mosquitto 2.x "$7$" line (PBKDF2-HMAC-SHA512, 64-byte hash), built with
%% crypto; 250 iterations keeps it on the fast path.
write_passwd(Path, User, Password) ->
    Salt = <<"0123456789abcdef">>,
    Iter = 250,
    Hash = crypto:pbkdf2_hmac(sha512, Password, Salt, Iter, 64),
    Line = [User, ":$7$", integer_to_binary(Iter), "$", base64:encode(Salt), "$",
            base64:encode(Hash), "\n"],
    file:write_file(Path, Line).

reset_env() ->
    _ = application:load(vmq_warden),
    [application:unset_env(vmq_warden, K)
     || K <- [nif_path | maps:keys(vmq_warden_config:defaults())]],
    ok.

