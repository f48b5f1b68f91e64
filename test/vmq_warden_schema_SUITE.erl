%% @doc Runs the REAL cuttlefish (Debian erlang-cuttlefish 3.1.0, found in the
%% OTP lib dir) over priv/vmq_warden.schema and docs/vernemq.conf.example, the
%% way a VerneMQ node does at boot (schema files + conf files ->
%% cuttlefish_generator:map/2 -> app config).
%%
%% plugins.* keys: in a real node they are declared by VerneMQ's own schema,
%% not ours. So that the documented example can be fed to cuttlefish
%% unchanged, this suite writes a tiny TEST-ONLY schema snippet
%% (plugins.$name, plugins.$name.path, plugins.$name.priority, translated into
%% a `vmq_plugin_test.plugins' proplist) next to ours. It is not shipped and
%% does not try to mirror VerneMQ's real translation; it only checks that the
%% sample's plugin lines parse and name our plugin.
-module(vmq_warden_schema_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1]).
-export([example_conf_maps_every_key/1,
         defaults_when_unset/1,
         every_key_maps_non_default_values/1,
         zero_turns_off/1,
         refuses_wrong_type/1,
         refuses_unknown_enum/1,
         refuses_missing_file/1,
         refuses_bad_sizes/1,
         refuses_unknown_key/1,
         schema_covers_the_settings_table/1,
         example_documents_every_key/1,
         app_env_from_generated_config/1]).

all() ->
    [example_conf_maps_every_key,
     defaults_when_unset,
     every_key_maps_non_default_values,
     zero_turns_off,
     refuses_wrong_type,
     refuses_unknown_enum,
     refuses_missing_file,
     refuses_bad_sizes,
     refuses_unknown_key,
     schema_covers_the_settings_table,
     example_documents_every_key,
     app_env_from_generated_config].

-define(EXAMPLE_POLICY, "/etc/vernemq/warden/policy.toml").
-define(EXAMPLE_PASSWD, "/etc/vernemq/warden/passwd").

%% The defaults of the settings table (OPERATIONS.md section 2), as
%% cuttlefish must produce them (and as vmq_warden_config:defaults/0 has them:
%% schema_covers_the_settings_table).
defaults() ->
    [{reload_interval, 5000},
     {failure_decision, deny},
     {unknown_user, next},
     {default_decision, next},
     {allow_anonymous, false},
     {auth_cache_size, 10000},
     {auth_cache_ttl, 60000},
     {auth_fail_ttl, 5000},
     {rate_per_peer, 0},
     {burst_per_peer, 10},
     {rate_per_user, 0},
     {burst_per_user, 10},
     {ban_threshold, 10},
     {ban_users, false},
     {ban_window, 60000},
     {ban_duration, 300000},
     {history_size, 1000},
     {pending_ttl, 60000},
     {reconcile_interval, 60000},
     {log_level, info},
     {events_enabled, false},
     {events_queue_bytes, 1048576},
     {events_drain_interval, 100},
     {events_mqtt, false},
     {events_mqtt_prefix, "warden/events"},
     {events_webhook, false},
     {events_webhook_url, "http://127.0.0.1:8080/warden/events"},
     {events_webhook_queue, 10000},
     {events_webhook_batch, 100},
     {events_webhook_timeout, 5000},
     {credential_check_interval, 0},
     {enforce_on_reload, false},
     {cluster_query_timeout, 2000},
     {cluster_sync_interval, 1000},
     {cluster_counts_max_bytes, 16777216}].

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(cuttlefish),
    Root = project_root(),
    Priv = ?config(priv_dir, Config),
    Policy = filename:join(Priv, "policy.toml"),
    Passwd = filename:join(Priv, "passwd"),
    ok = file:write_file(Policy, <<"# empty policy\n">>),
    ok = file:write_file(Passwd, <<>>),
    PluginsSchema = filename:join(Priv, "test_plugins.schema"),
    ok = file:write_file(PluginsSchema, plugins_schema_snippet()),
    [{schema, filename:join([Root, "priv", "vmq_warden.schema"])},
     {plugins_schema, PluginsSchema},
     {example, filename:join([Root, "docs", "vernemq.conf.example"])},
     {operations, filename:join([Root, "docs", "OPERATIONS.md"])},
     {policy, Policy}, {passwd, Passwd} | Config].

end_per_suite(_Config) ->
    ok.

%% ------------------------------------------------------------------ cases

%% The documented sample, with its two file paths pointed at existing temp
%% files, generates exactly the documented defaults plus the two paths, and the
%% plugin lines name vmq_warden.
example_conf_maps_every_key(Config) ->
    Generated = generate_from_example(Config),
    Env = lists:sort(proplists:get_value(vmq_warden, Generated)),
    Expected = lists:sort([{policy_file, ?config(policy, Config)},
                           {password_file, ?config(passwd, Config)}
                           | defaults()]),
    ?assertEqual(Expected, Env),
    Plugins = proplists:get_value(plugins, proplists:get_value(vmq_plugin_test, Generated)),
    ?assertEqual([{vmq_warden, [{path, "/opt/vmq_warden"}, {priority, 1}]}], Plugins).

%% Nothing set: every key gets its documented default; the file keys stay unset
%% (the app env default `undefined').
defaults_when_unset(Config) ->
    Env = lists:sort(map_ok(Config, [])),
    ?assertEqual(lists:sort(defaults()), Env),
    ?assertNot(lists:keymember(policy_file, 1, Env)),
    ?assertNot(lists:keymember(password_file, 1, Env)).

%% Every conf key reaches its own app env key (values differ from defaults,
%% so a mapping falling back to its default would be caught).
every_key_maps_non_default_values(Config) ->
    Lines = [{"vmq_warden.policy_file", ?config(policy, Config)},
             {"vmq_warden.password_file", ?config(passwd, Config)},
             {"vmq_warden.reload_interval", "2m"},
             {"vmq_warden.failure_decision", "next"},
             {"vmq_warden.unknown_user", "deny"},
             {"vmq_warden.default_decision", "allow"},
             {"vmq_warden.allow_anonymous", "on"},
             {"vmq_warden.auth_cache.size", "5"},
             {"vmq_warden.auth_cache.ttl", "1500ms"},
             {"vmq_warden.auth_cache.fail_ttl", "2s"},
             {"vmq_warden.rate_limit.per_peer", "7"},
             {"vmq_warden.rate_limit.burst_per_peer", "3"},
             {"vmq_warden.rate_limit.per_user", "11"},
             {"vmq_warden.rate_limit.burst_per_user", "13"},
             {"vmq_warden.ban.threshold", "4"},
             {"vmq_warden.ban.users", "on"},
             {"vmq_warden.ban.window", "30s"},
             {"vmq_warden.ban.duration", "1h"},
             {"vmq_warden.history_size", "17"},
             {"vmq_warden.pending_ttl", "10s"},
             {"vmq_warden.reconcile_interval", "90s"},
             {"vmq_warden.log_level", "debug"},
             {"vmq_warden.events", "on"},
             {"vmq_warden.events.queue_bytes", "4096"},
             {"vmq_warden.events.drain_interval", "1s"},
             {"vmq_warden.events.mqtt", "on"},
             {"vmq_warden.events.mqtt.prefix", "$SYS/warden"},
             {"vmq_warden.events.webhook", "on"},
             {"vmq_warden.events.webhook.url", "https://hooks.example/x"},
             {"vmq_warden.events.webhook.queue_size", "50"},
             {"vmq_warden.events.webhook.batch_size", "7"},
             {"vmq_warden.events.webhook.timeout", "250ms"},
             {"vmq_warden.credential_lifetime.check_interval", "30s"},
             {"vmq_warden.enforce_on_reload", "on"},
             {"vmq_warden.cluster.query_timeout", "500ms"},
             {"vmq_warden.cluster.sync_interval", "250ms"},
             {"vmq_warden.cluster.counts_max_bytes", "4096"}],
    Expected = [{policy_file, ?config(policy, Config)},
                {password_file, ?config(passwd, Config)},
                {reload_interval, 120000},
                {reconcile_interval, 90000},
                {failure_decision, next},
                {unknown_user, deny},
                {default_decision, allow},
                {allow_anonymous, true},
                {auth_cache_size, 5},
                {auth_cache_ttl, 1500},
                {auth_fail_ttl, 2000},
                {rate_per_peer, 7},
                {burst_per_peer, 3},
                {rate_per_user, 11},
                {burst_per_user, 13},
                {ban_threshold, 4},
                {ban_users, true},
                {ban_window, 30000},
                {ban_duration, 3600000},
                {history_size, 17},
                {pending_ttl, 10000},
                {log_level, debug},
                {events_enabled, true},
                {events_queue_bytes, 4096},
                {events_drain_interval, 1000},
                {events_mqtt, true},
                {events_mqtt_prefix, "$SYS/warden"},
                {events_webhook, true},
                {events_webhook_url, "https://hooks.example/x"},
                {events_webhook_queue, 50},
                {events_webhook_batch, 7},
                {events_webhook_timeout, 250},
                {credential_check_interval, 30000},
                {enforce_on_reload, true},
                {cluster_query_timeout, 500},
                {cluster_sync_interval, 250},
                {cluster_counts_max_bytes, 4096}],
    ?assertEqual(lists:sort(Expected), lists:sort(map_ok(Config, Lines))),
    %% and each enum value is accepted
    [?assertEqual(V, proplists:get_value(K, map_ok(Config, [{"vmq_warden." ++ atom_to_list(K), atom_to_list(V)}])))
     || {K, Vs} <- [{failure_decision, [deny, next]},
                    {unknown_user, [next, deny]},
                    {default_decision, [allow, deny, next]},
                    {log_level, [debug, info, notice, warning, error]}],
        V <- Vs].

%% "0" is the documented way to switch reloading / caching off (cuttlefish's
%% duration type itself refuses "0").
zero_turns_off(Config) ->
    Env = map_ok(Config, [{"vmq_warden.reload_interval", "0"},
                          {"vmq_warden.auth_cache.size", "0"},
                          {"vmq_warden.auth_cache.ttl", "0"},
                          {"vmq_warden.auth_cache.fail_ttl", "0"},
                          {"vmq_warden.rate_limit.per_peer", "0"},
                          {"vmq_warden.ban.threshold", "0"}]),
    [?assertEqual(0, proplists:get_value(K, Env))
     || K <- [reload_interval, auth_cache_size, auth_cache_ttl, auth_fail_ttl,
              rate_per_peer, ban_threshold]].

refuses_wrong_type(Config) ->
    Bad = [{"vmq_warden.reload_interval", "soon"},
           {"vmq_warden.reload_interval", "5"},        % no unit: ambiguous
           {"vmq_warden.auth_cache.size", "many"},
           {"vmq_warden.auth_cache.size", "1.5"},
           {"vmq_warden.auth_cache.ttl", "-5s"},
           {"vmq_warden.auth_cache.fail_ttl", "x"},
           {"vmq_warden.rate_limit.per_peer", "fast"},
           {"vmq_warden.rate_limit.burst_per_user", "ten"},
           {"vmq_warden.ban.threshold", "ten"},
           {"vmq_warden.ban.window", "0"},
           {"vmq_warden.ban.duration", "forever"},
           {"vmq_warden.history_size", "big"},
           {"vmq_warden.pending_ttl", "60"},
           {"vmq_warden.allow_anonymous", "yes"},
           {"vmq_warden.allow_anonymous", "true"},
           {"vmq_warden.events", "yes"},
           {"vmq_warden.events.drain_interval", "0"},
           {"vmq_warden.events.webhook.timeout", "soon"},
           {"vmq_warden.events.mqtt.prefix", "warden/#"},
           {"vmq_warden.events.mqtt.prefix", "/warden"},
           {"vmq_warden.events.webhook.url", "ftp://127.0.0.1/x"},
           {"vmq_warden.events.webhook.url", "127.0.0.1:8080"}],
    [assert_refused_naming(Config, Key, Value) || {Key, Value} <- Bad].

refuses_unknown_enum(Config) ->
    Bad = [{"vmq_warden.failure_decision", "allow"},   % fail-open is not an option
           {"vmq_warden.failure_decision", "maybe"},
           {"vmq_warden.unknown_user", "allow"},
           {"vmq_warden.default_decision", "perhaps"},
           {"vmq_warden.log_level", "loud"},
           {"vmq_warden.log_level", "critical"}],
    [assert_refused_naming(Config, Key, Value) || {Key, Value} <- Bad].

refuses_missing_file(Config) ->
    Missing = filename:join(?config(priv_dir, Config), "does-not-exist.toml"),
    Dir = ?config(priv_dir, Config),
    [assert_refused_naming(Config, Key, Value)
     || Key <- ["vmq_warden.policy_file", "vmq_warden.password_file"],
        Value <- [Missing, Dir]].

refuses_bad_sizes(Config) ->
    Bad = [{"vmq_warden.auth_cache.size", "-1"},
           {"vmq_warden.history_size", "0"},
           {"vmq_warden.history_size", "-5"},
           {"vmq_warden.rate_limit.per_peer", "-1"},
           {"vmq_warden.rate_limit.burst_per_peer", "0"},
           {"vmq_warden.rate_limit.per_user", "-2"},
           {"vmq_warden.rate_limit.burst_per_user", "-1"},
           {"vmq_warden.ban.threshold", "-1"},
           {"vmq_warden.events.queue_bytes", "0"},
           {"vmq_warden.events.webhook.queue_size", "-1"},
           {"vmq_warden.events.webhook.batch_size", "0"}],
    [assert_refused_naming(Config, Key, Value) || {Key, Value} <- Bad].

%% A typo is refused too (this is what happens to every vmq_warden.* key
%% when the schema is not installed).
refuses_unknown_key(Config) ->
    assert_refused_naming(Config, "vmq_warden.reload_intervall", "5s").

%% The settings table of OPERATIONS.md (section 2) is the one place every
%% setting is written: its app env keys are exactly the schema's mapping
%% targets and the keys of vmq_warden_config:defaults/0, whose values are
%% this suite's defaults (what cuttlefish generates) plus the two files.
schema_covers_the_settings_table(Config) ->
    {ok, Ops} = file:read_file(?config(operations, Config)),
    [_, Section2] = binary:split(Ops, <<"## 2. Settings">>),
    [Table | _] = binary:split(Section2, <<"\n## ">>),
    Rows = [L || L <- binary:split(Table, <<"\n">>, [global]),
                 re:run(L, <<"^\\| `vmq_warden\\.">>) =/= nomatch],
    TableKeys = lists:usort(
                  [begin
                       [_, Second | _] = binary:split(Row, <<" | ">>, [global]),
                       {match, [K]} = re:run(Second, <<"`([a-z_]+)`">>, [{capture, all_but_first, list}]),
                       K
                   end || Row <- Rows]),
    ?assert(length(TableKeys) >= 20),
    Targets = [M || M <- mapping_targets(Config)],
    Missing = [K || K <- TableKeys, not lists:member("vmq_warden." ++ K, Targets)],
    ?assertEqual([], Missing),
    ?assertEqual(lists:usort([T -- "vmq_warden." || T <- Targets]), TableKeys),
    CodeDefaults = vmq_warden_config:defaults(),
    ?assertEqual(TableKeys, lists:usort([atom_to_list(K) || K <- maps:keys(CodeDefaults)])),
    ?assertEqual(lists:sort(defaults()),
                 lists:sort([KV || {K, _} = KV <- maps:to_list(CodeDefaults),
                                   K =/= policy_file, K =/= password_file])).

%% The sample documents every vmq_warden.* key of the schema.
example_documents_every_key(Config) ->
    {ok, Example} = file:read_file(?config(example, Config)),
    {_, Mappings, _} = cuttlefish_schema:files([?config(schema, Config)]),
    Vars = [cuttlefish_variable:format(cuttlefish_mapping:variable(M)) || M <- Mappings],
    ?assertEqual(37, length(Vars)),
    Undocumented = [V || V <- Vars,
                         re:run(Example, "^" ++ re_quote(V) ++ " = ", [multiline]) =:= nomatch],
    ?assertEqual([], Undocumented).

%% The plugin's app env is set from the generated config (as the node does
%% from its generated app.config) and the application starts with it.
app_env_from_generated_config(Config) ->
    Generated = generate_from_example(Config),
    WardenEnv = proplists:get_value(vmq_warden, Generated),
    _ = vmq_plugin_harness:disable(vmq_warden),
    _ = application:unload(vmq_warden),
    ok = application:load(vmq_warden),
    ok = application:set_env([{vmq_warden, WardenEnv}], [{persistent, true}]),
    try
        ok = vmq_plugin_harness:enable(vmq_warden),
        All = application:get_all_env(vmq_warden),
        [?assertEqual({K, V}, lists:keyfind(K, 1, All)) || {K, V} <- WardenEnv],
        ?assertEqual(?config(policy, Config), application:get_env(vmq_warden, policy_file, undefined)),
        ?assertEqual({ok, 5000}, application:get_env(vmq_warden, reload_interval)),
        %% the hooks list of the .app file is still there next to the settings
        ?assertMatch({ok, [_ | _]}, application:get_env(vmq_warden, vmq_plugin_hooks))
    after
        _ = vmq_plugin_harness:disable(vmq_warden),
        _ = application:unload(vmq_warden)
    end.

%% ------------------------------------------------------------------ helpers

generate_from_example(Config) ->
    {ok, Text0} = file:read_file(?config(example, Config)),
    Text1 = binary:replace(Text0, <<?EXAMPLE_POLICY>>, list_to_binary(?config(policy, Config))),
    Text = binary:replace(Text1, <<?EXAMPLE_PASSWD>>, list_to_binary(?config(passwd, Config))),
    ?assertNotEqual(Text0, Text1),
    ?assertNotEqual(Text1, Text),
    Conf = write_conf(Config, "example.conf", Text),
    Schema = cuttlefish_schema:files([?config(plugins_schema, Config), ?config(schema, Config)]),
    Generated = cuttlefish_generator:map(Schema, cuttlefish_conf:files([Conf])),
    ?assert(is_list(Generated)),
    Generated.

%% Maps conf lines with our schema only; returns the vmq_warden env.
map_ok(Config, Lines) ->
    case map(Config, Lines) of
        {error, Phase, Errors} ->
            ct:fail({unexpected_refusal, Phase, messages(Errors)});
        Generated ->
            proplists:get_value(vmq_warden, Generated, [])
    end.

map(Config, Lines) ->
    Text = [[K, " = ", V, "\n"] || {K, V} <- Lines],
    Name = "t" ++ integer_to_list(erlang:unique_integer([positive])) ++ ".conf",
    Conf = cuttlefish_conf:files([write_conf(Config, Name, Text)]),
    ?assert(is_list(Conf)),
    cuttlefish_generator:map(cuttlefish_schema:files([?config(schema, Config)]), Conf).

assert_refused_naming(Config, Key, Value) ->
    case map(Config, [{Key, Value}]) of
        {error, _Phase, Errors} ->
            Msgs = messages(Errors),
            ct:log("~ts = ~ts refused:~n~ts", [Key, Value, lists:join("\n", Msgs)]),
            case [M || M <- Msgs, string:find(M, Key) =/= nomatch] of
                [] -> ct:fail({refusal_does_not_name_key, Key, Value, Msgs});
                _ -> ok
            end;
        Generated ->
            ct:fail({accepted, Key, Value, Generated})
    end.

messages({errorlist, Errors}) ->
    [lists:flatten(io_lib:format("~ts", [cuttlefish_error:xlate(E)])) || E <- Errors].

mapping_targets(Config) ->
    {_, Mappings, _} = cuttlefish_schema:files([?config(schema, Config)]),
    [cuttlefish_mapping:mapping(M) || M <- Mappings].

write_conf(Config, Name, Text) ->
    Path = filename:join(?config(priv_dir, Config), Name),
    ok = file:write_file(Path, Text),
    Path.

re_quote(S) ->
    re:replace(S, "\\.", "\\\\.", [global, {return, list}]).

project_root() ->
    %% ?FILE is this source file (test/..); fall back to the app's lib dir.
    Candidates = [filename:dirname(filename:dirname(filename:absname(?FILE))),
                  code:lib_dir(vmq_warden)],
    [Root | _] = [R || R <- Candidates, is_list(R),
                       filelib:is_regular(filename:join([R, "priv", "vmq_warden.schema"])),
                       filelib:is_regular(filename:join([R, "docs", "vernemq.conf.example"]))],
    Root.

%% Test-only stand-in for the plugins.* keys that VerneMQ's own schema
%% declares (see the module doc).
plugins_schema_snippet() ->
    <<"{mapping, \"plugins.$name\", \"vmq_plugin_test.plugins\", [{datatype, flag}]}.\n"
      "{mapping, \"plugins.$name.path\", \"vmq_plugin_test.plugins\", [{datatype, string}]}.\n"
      "{mapping, \"plugins.$name.priority\", \"vmq_plugin_test.plugins\", [{datatype, integer}]}.\n"
      "{translation, \"vmq_plugin_test.plugins\",\n"
      " fun(Conf) ->\n"
      "     On = [N || {[\"plugins\", N], true} <- Conf],\n"
      "     [{list_to_atom(N),\n"
      "       [{path, proplists:get_value([\"plugins\", N, \"path\"], Conf)},\n"
      "        {priority, proplists:get_value([\"plugins\", N, \"priority\"], Conf)}]}\n"
      "      || N <- On]\n"
      " end}.\n">>.
