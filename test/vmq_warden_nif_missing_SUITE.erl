%% @doc The NIF library missing or failing to load, and a disable/enable
%% cycle of the plugin (docs/VERNEMQ.md, "Registering and configuring": disabling stops the app,
%% purges its modules and unloads the NIF).
%%
%% Documented choice: without the library the application still starts and
%% keeps its hooks registered, so that they answer with the failure decision
%% (`failure_decision', default `deny': fail closed) instead of raising or
%% leaving the decision to the next plugin. Lifecycle hooks return `ok', the
%% operator API returns `{error, nif_not_loaded}', and one error line names
%% the library and why it did not load.
%%
%% The library is shared with suites that ran before in this VM: each case
%% stops the app and purges `vmq_warden_nif' (old and current code) so that
%% the library really unloads before another `nif_path' is tried.
-module(vmq_warden_nif_missing_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([missing_library_fails_closed/1,
         broken_library_fails_closed/1,
         failure_decision_next/1,
         bad_setting_refused_without_nif/1,
         disable_enable_cycle/1]).

-define(PEER, {{127, 0, 0, 1}, 41000}).
-define(PASSWORD, <<"n0t-In-Any-L0g!">>).
-define(HANDLER, warden_nif_missing_capture).

all() ->
    [missing_library_fails_closed,
     broken_library_fails_closed,
     failure_decision_next,
     bad_setting_refused_without_nif,
     disable_enable_cycle].

init_per_suite(Config) ->
    Config.

end_per_suite(_Config) ->
    %% leave the VM as the next suite expects it: app stopped, NIF unloaded,
    %% default library path
    stop_and_purge(),
    reset_env(),
    ok.

init_per_testcase(_Case, Config) ->
    stop_and_purge(),
    reset_env(),
    ok = vmq_warden_log_capture:install(?HANDLER),
    Config.

end_per_testcase(_Case, _Config) ->
    ok = vmq_warden_log_capture:remove(?HANDLER),
    stop_and_purge(),
    reset_env(),
    ok.

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

missing_library_fails_closed(Config) ->
    Path = filename:join(?config(priv_dir, Config), "no_such_library"),
    ok = start_with_nif(Path),
    ?assertNot(vmq_warden_nif:loaded()),
    %% the app runs: supervisor, log drainer and reloader are up
    ?assert(is_pid(whereis(vmq_warden_sup))),
    ?assert(is_pid(whereis(vmq_warden_reloader))),
    assert_clear_log_line(Path),
    assert_fails_closed(),
    assert_lifecycle_ok(),
    assert_api_not_loaded(),
    assert_no_password_logged().

%% A file that exists but is no shared library (erlang:load_nif appends .so).
broken_library_fails_closed(Config) ->
    Path = filename:join(?config(priv_dir, Config), "not_a_library"),
    ok = file:write_file(Path ++ ".so", <<"this is not an ELF file\n">>),
    ok = start_with_nif(Path),
    ?assertNot(vmq_warden_nif:loaded()),
    assert_clear_log_line(Path),
    assert_fails_closed(),
    assert_lifecycle_ok(),
    assert_api_not_loaded(),
    assert_no_password_logged().

%% failure_decision = next: every auth hook passes the decision on, so the
%% next plugin in the chain decides (here the fake plugin knows one user).
failure_decision_next(Config) ->
    Path = filename:join(?config(priv_dir, Config), "no_such_library"),
    ok = load_app(),
    ok = application:set_env(vmq_warden, failure_decision, next),
    ok = start_with_nif(Path),
    [?assertEqual(next, R) || R <- auth_all_arities(<<"alice">>, ?PASSWORD)],
    Chain = vmq_hook_chain:plugins(),
    ?assertEqual(ok, vmq_hook_chain:all_till_ok(
                       auth_on_register, [?PEER, {"", <<"c">>}, <<"fake-user">>, <<"fake-pass">>, true],
                       Chain)),
    %% and the deny default refuses that same client (fail closed)
    ok = application:set_env(vmq_warden, failure_decision, deny),
    ?assertEqual({error, plugin_unavailable},
                 vmq_hook_chain:all_till_ok(
                   auth_on_register, [?PEER, {"", <<"c">>}, <<"fake-user">>, <<"fake-pass">>, true],
                   Chain)),
    assert_lifecycle_ok(),
    assert_no_password_logged().

%% The settings are checked before the library is loaded: a bad one fails
%% start even when the NIF is missing (the failure decision itself must be
%% valid for fail-closed to mean anything).
bad_setting_refused_without_nif(Config) ->
    Path = filename:join(?config(priv_dir, Config), "no_such_library"),
    ok = load_app(),
    ok = application:set_env(vmq_warden, failure_decision, maybe),
    ok = application:set_env(vmq_warden, nif_path, Path),
    ?assertMatch({error, {{bad_config, {invalid_setting, failure_decision, maybe}}, _}},
                 vmq_plugin_harness:enable(vmq_warden)),
    ?assertEqual(undefined, whereis(vmq_warden_sup)),
    ok = application:set_env(vmq_warden, failure_decision, deny),
    ?assertEqual(ok, vmq_plugin_harness:enable(vmq_warden)).

%% First with a missing library, then as VerneMQ disables and enables a
%% plugin (vmq_plugin_harness). The enable attaches the library to a fresh
%% instance of vmq_warden_nif and the hooks decide normally. The plugin
%% resets its state at start, so the registry starts empty after a
%% disable/enable cycle.
disable_enable_cycle(Config) ->
    Path = filename:join(?config(priv_dir, Config), "no_such_library"),
    ok = start_with_nif(Path),
    ?assertNot(vmq_warden_nif:loaded()),
    %% failure_decision = deny (the default)
    ?assertEqual([{error, plugin_unavailable}, {error, plugin_unavailable},
                  {error, #{reason_code => server_unavailable}},
                  {error, #{reason_code => server_unavailable}}],
                 auth_all_arities(<<"alice">>, ?PASSWORD)),
    %% the operator fixes the path (here: back to the default priv/ library)
    disable(),
    ok = enable(#{default_decision => allow}),
    ?assert(vmq_warden_nif:loaded()),
    ?assertEqual([ok, ok, ok, ok], auth_all_arities(<<"alice">>, ?PASSWORD)),
    Sid = {"", <<"before-cycle">>},
    [Conn, Queue] = [vmq_hook_chain:spawn_proc() || _ <- [1, 2]],
    ok = vmq_hook_chain:in_proc(Conn, fun() ->
             vmq_warden_hooks:auth_on_register(?PEER, Sid, undefined, undefined, true)
         end),
    ok = vmq_hook_chain:in_proc(Queue, fun() -> vmq_warden_hooks:on_client_wakeup(Sid) end),
    ok = vmq_hook_chain:in_proc(Conn, fun() -> vmq_warden_hooks:on_register(?PEER, Sid, undefined) end),
    ?assertMatch({ok, #{state := online}}, vmq_warden:lookup(Sid)),
    %% two more cycles with the library present: the manager's disable
    %% leaves the module's current code, and so the library, in place; the
    %% enable starts from a reset state on that same library
    [begin
         disable(),
         ?assertNot(lists:keymember(vmq_warden, 1, application:which_applications())),
         ?assertEqual(true, vmq_warden_nif:loaded()),
         ok = enable(#{default_decision => deny}),
         ?assert(vmq_warden_nif:loaded()),
         ?assert(library_mapped()),
         %% a fresh registry
         ?assertEqual(not_found, vmq_warden:lookup(Sid)),
         ?assertEqual(#{authenticated => 0, online => 0, offline => 0}, vmq_warden:counts()),
         %% the hooks decide normally (default_decision deny: not authorized)
         ?assertEqual([{error, not_authorized}, {error, not_authorized},
                       {error, #{reason_code => not_authorized}},
                       {error, #{reason_code => not_authorized}}],
                      auth_all_arities(<<"alice">>, ?PASSWORD)),
         ?assertEqual(next, set_and_auth(next)),
         %% (counters keep counting when the library image was reused)
         #{decisions := #{accepted := Accepted0}} = vmq_warden:stats(),
         ?assertEqual(ok, set_and_auth(allow)),
         ?assertMatch(#{decisions := #{accepted := A}} when A =:= Accepted0 + 1, vmq_warden:stats())
     end || _ <- [1, 2]],
    assert_no_password_logged().

%%--------------------------------------------------------------------
%% Assertions
%%--------------------------------------------------------------------

%% What logger's default handler (VerneMQ's error.log) does with `Event'
%% under OTP's default domain filters: `stop' when it drops it.
passes_default_handler_filters(Event) ->
    Filters = [{log, super, [otp, sasl]}, {log, undefined, []}],
    case [R || F <- Filters, (R = logger_filters:domain(Event, F)) =/= ignore] of
        [] -> stop;     % filter_default of the default handler
        [R | _] -> R
    end.

%% One error line at start names the library path and says why and what the
%% hooks do; it carries no password.
assert_clear_log_line(Path) ->
    Events = vmq_warden_log_capture:captured(),
    Lines = [E || E <- Events, maps:get(level, E) =:= error,
                  vmq_warden_log_capture:contains(E, "NIF library not loaded")],
    ?assertMatch([_], Lines),
    [Line] = Lines,
    ct:pal("NIF missing log line: ~p", [Line]),
    %% VerneMQ's error.log is logger's default handler, which OTP gives its
    %% default domain filters: the line must pass them (no domain).
    ?assertEqual(error, maps:find(domain, maps:get(meta, Line))),
    ?assertNotEqual(stop, passes_default_handler_filters(Line)),
    ?assert(vmq_warden_log_capture:contains(Line, Path)),
    ?assert(vmq_warden_log_capture:contains(Line, "nif_load_failed")),
    ?assert(vmq_warden_log_capture:contains(Line, "failure decision")),
    ok.

assert_fails_closed() ->
    [R3a, R3b, R5a, R5b] = auth_all_arities(<<"alice">>, ?PASSWORD),
    ?assertEqual({error, plugin_unavailable}, R3a),
    ?assertEqual({error, plugin_unavailable}, R3b),
    ?assertEqual({error, #{reason_code => server_unavailable}}, R5a),
    ?assertEqual({error, #{reason_code => server_unavailable}}, R5b),
    %% anonymous and encrypted passwords too
    ?assertEqual({error, plugin_unavailable},
                 vmq_warden_hooks:auth_on_register(?PEER, {"", <<"anon">>}, undefined, undefined, 1)),
    ?assertEqual({error, plugin_unavailable},
                 vmq_warden_hooks:auth_on_register(?PEER, {"", <<"enc">>}, <<"u">>,
                                                   {encrypted, <<"x">>}, false)),
    ?assert(maps:get(failed, maps:get(decisions, vmq_warden:stats())) >= 6),
    ok.

assert_lifecycle_ok() ->
    Sid = {"", <<"lifecycle">>},
    ?assertEqual(ok, vmq_warden_hooks:on_register(?PEER, Sid, <<"alice">>)),
    ?assertEqual(ok, vmq_warden_hooks:on_register_m5(?PEER, Sid, <<"alice">>, #{})),
    [?assertEqual(ok, vmq_warden_hooks:F(Sid))
     || F <- [on_client_wakeup, on_client_offline, on_client_gone, on_session_expired]],
    ok.

assert_api_not_loaded() ->
    ?assertEqual({error, nif_not_loaded}, vmq_warden:lookup({"", <<"x">>})),
    ?assertEqual({error, nif_not_loaded}, vmq_warden:sessions(#{})),
    ?assertEqual({error, nif_not_loaded}, vmq_warden:counts()),
    ?assertEqual({error, nif_not_loaded}, vmq_warden:recent_endings(10)),
    ?assertEqual({error, nif_not_loaded}, vmq_warden:bans()),
    ?assertEqual({error, nif_not_loaded}, vmq_warden:clear_bans(all)),
    ?assertEqual({error, nif_not_loaded}, vmq_warden:reload()),
    %% stats/0 feeds the metrics and never fails: it says the NIF is missing
    ?assertMatch(#{nif_loaded := false, decisions := #{failed := _}}, vmq_warden:stats()),
    ?assert(is_list(vmq_warden_metrics:metrics())),
    ok.

assert_no_password_logged() ->
    _ = catch vmq_warden_log:flush(),
    _ = vmq_warden_log_capture:captured(),
    Events = vmq_warden_log_capture:all_captured(),
    ?assertNotEqual([], Events),
    [?assertNot(vmq_warden_log_capture:contains(E, binary_to_list(?PASSWORD)), E) || E <- Events],
    ok.

%%--------------------------------------------------------------------
%% Helpers
%%--------------------------------------------------------------------

auth_all_arities(User, Password) ->
    Sid = {"", <<"client-1">>},
    Meta = #{listener_port => 1883, listener_type => mqtt},
    [vmq_warden_hooks:auth_on_register(?PEER, Sid, User, Password, true),
     vmq_warden_hooks:auth_on_register(?PEER, Sid, User, Password, true, Meta),
     vmq_warden_hooks:auth_on_register_m5(?PEER, Sid, User, Password, true, #{}),
     vmq_warden_hooks:auth_on_register_m5(?PEER, Sid, User, Password, true, #{}, Meta)].

set_and_auth(Decision) ->
    ok = application:set_env(vmq_warden, default_decision, Decision),
    ok = vmq_warden_config:apply(),
    vmq_warden_hooks:auth_on_register(?PEER, {"", <<"after-cycle">>}, undefined, undefined, true).

start_with_nif(Path) ->
    ok = load_app(),
    ok = application:set_env(vmq_warden, nif_path, Path),
    vmq_plugin_harness:enable(vmq_warden).

%% What VerneMQ does on `vmq-admin plugin disable' (vmq_plugin_harness):
%% stop, purge the old code of every module, unload. The current code of
%% vmq_warden_nif stays, with its library.
disable() ->
    {ok, Mods} = application:get_key(vmq_warden, modules),
    ?assert(lists:member(vmq_warden_nif, Mods)),
    ok = vmq_plugin_harness:disable(vmq_warden).

%% ... and on enable (the app env comes back from the .app file: nif_path
%% is gone, the default library in priv/ is used).
enable(Env) ->
    ok = application:load(vmq_warden),
    maps:foreach(fun(K, V) -> ok = application:set_env(vmq_warden, K, V) end, Env),
    vmq_plugin_harness:enable(vmq_warden).

load_app() ->
    case application:load(vmq_warden) of
        ok -> ok;
        {error, {already_loaded, vmq_warden}} -> ok
    end.

stop_and_purge() ->
    _ = vmq_plugin_harness:disable(vmq_warden),
    purge(vmq_warden_nif),
    ok.

purge(M) ->
    _ = code:purge(M),
    _ = code:delete(M),
    _ = code:purge(M),
    ok.

reset_env() ->
    _ = application:load(vmq_warden),
    [application:unset_env(vmq_warden, K)
     || K <- [nif_path | maps:keys(vmq_warden_config:defaults())]],
    ok.

%% Linux: is the library still mapped into this VM?
library_mapped() ->
    case file:read_file("/proc/self/maps") of
        {ok, Maps} -> binary:match(Maps, <<"vmq_warden_nif.so">>) =/= nomatch;
        _ -> false
    end.

