%% @doc What docs/OPERATIONS.md section 8 (and the README) state about the
%% hook calls of VerneMQ 2.0, 2.1 and 2.2, checked through the real hook
%% functions and the real NIF, so that the documentation keeps describing
%% the current behaviour:
%%
%% - 2.0, and 2.1 without `forward_connection_opts': auth_on_register/5 and
%%   auth_on_register_m5/6, no metadata;
%% - 2.1 with `forward_connection_opts = on': /6 and /7 with
%%   `#{client_cert => DER | undefined}' only;
%% - 2.2: /6 and /7 with `listener_addr', `listener_port', `listener_type'
%%   added to that map.
%%
%% Without listener data a listener matcher that names a field never
%% matches. A certificate client without a username is accepted with a
%% `username' modifier, which VerneMQ drops (its current username is
%% `undefined'); the registry keeps the certificate identity all the same.
-module(vmq_warden_broker_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2]).
-export([listener_conditions_need_listener_data/1,
         cert_client_without_username/1]).

-define(PEER, {{10, 0, 0, 5}, 40001}).

all() ->
    [listener_conditions_need_listener_data, cert_client_without_username].

init_per_suite(Config) ->
    Config.

end_per_suite(_Config) ->
    _ = vmq_plugin_harness:disable(vmq_warden),
    [application:unset_env(vmq_warden, K) || K <- [policy_file, password_file]],
    ok.

init_per_testcase(_Case, Config) ->
    _ = vmq_plugin_harness:disable(vmq_warden),
    Config.

start_with_policy(Config, Toml) ->
    Policy = filename:join(?config(priv_dir, Config), "warden.toml"),
    ok = file:write_file(Policy, Toml),
    _ = application:load(vmq_warden),
    [application:unset_env(vmq_warden, K) || K <- maps:keys(vmq_warden_config:defaults())],
    ok = application:set_env(vmq_warden, policy_file, Policy),
    ok = vmq_plugin_harness:enable(vmq_warden),
    ok = vmq_warden_nif:reset(),
    ok = vmq_warden:reload().

%% The metadata map of VerneMQ 2.2 (listener types as VerneMQ names them).
meta22(Type, Port) ->
    #{listener_addr => {0, 0, 0, 0}, listener_port => Port, listener_type => Type}.

%% VerneMQ 2.1 with forward_connection_opts = on.
meta21() ->
    #{client_cert => undefined}.

listener_conditions_need_listener_data(Config) ->
    start_with_policy(Config,
                      <<"[anonymous]\n"
                        "allow = false\n"
                        "[[anonymous.listener]]\n"
                        "type = \"ws\"\n"
                        "allow = true\n"
                        "[[rule]]\n"
                        "name = \"no-mqtt3-on-wss\"\n"
                        "action = \"deny\"\n"
                        "code = \"banned\"\n"
                        "when = { protocol = \"mqtt3\", listener = [{ type = \"wss\" }] }\n">>),
    Anon3 = fun(Cid, Meta) ->
                    Sid = {"", Cid},
                    case Meta of
                        none -> vmq_warden_hooks:auth_on_register(?PEER, Sid, undefined, undefined, true);
                        _ -> vmq_warden_hooks:auth_on_register(?PEER, Sid, undefined, undefined, true, Meta)
                    end
            end,
    Anon5 = fun(Cid, Meta) ->
                    Sid = {"", Cid},
                    case Meta of
                        none -> vmq_warden_hooks:auth_on_register_m5(?PEER, Sid, undefined, undefined, true, #{});
                        _ -> vmq_warden_hooks:auth_on_register_m5(?PEER, Sid, undefined, undefined, true, #{}, Meta)
                    end
            end,
    %% 2.2: the websocket exception admits, the wss rule refuses
    ?assertMatch(ok, ok_or(Anon3(<<"a1">>, meta22(mqttws, 8080)))),
    ?assertEqual({error, banned}, Anon3(<<"a2">>, meta22(mqttwss, 8443))),
    ?assertEqual({error, #{reason_code => not_authorized}}, Anon5(<<"a3">>, meta22(mqttwss, 8443))),
    %% 2.0 / 2.1: neither matches; [anonymous] allow = false decides everywhere
    [?assertEqual({error, not_authorized}, Anon3(<<"b1">>, Meta)) || Meta <- [none, meta21()]],
    [?assertEqual({error, #{reason_code => not_authorized}}, Anon5(<<"b2">>, Meta))
     || Meta <- [none, meta21()]],
    ok.

ok_or(ok) -> ok;
ok_or({ok, _}) -> ok;
ok_or(Other) -> Other.

cert_client_without_username(Config) ->
    start_with_policy(Config,
                      <<"[[cert_identity]]\n"
                        "from = \"cn\"\n"
                        "group = \"devices\"\n"
                        "[groups.devices]\n"
                        "max_sessions = 5\n">>),
    #{cert := Der} = public_key:pkix_test_root_cert("device-7", []),
    Meta = #{client_cert => Der},
    %% no CONNECT username: accepted with the username modifier (which
    %% VerneMQ drops: the current value is undefined, an atom)
    Sid1 = {"", <<"dev-a">>},
    ?assertEqual({ok, [{username, <<"device-7">>}]},
                 vmq_warden_hooks:auth_on_register(?PEER, Sid1, undefined, undefined, true, Meta)),
    {ok, #{username := <<"device-7">>, state := authenticated}} = vmq_warden:lookup(Sid1),
    %% on_register carries what VerneMQ registered, no username: the
    %% registry keeps the identity the plugin admitted
    ok = vmq_warden_hooks:on_client_wakeup(Sid1),
    ok = vmq_warden_hooks:on_register(?PEER, Sid1, undefined),
    {ok, #{username := <<"device-7">>, state := online}} = vmq_warden:lookup(Sid1),
    %% use_identity_as_username = on: VerneMQ puts the CN in the username
    %% before the hook; no modifier needed, the registry keeps the name
    Sid2 = {"", <<"dev-b">>},
    ?assertEqual(ok, ok_or(vmq_warden_hooks:auth_on_register(?PEER, Sid2, <<"device-7">>,
                                                             undefined, true, Meta))),
    ?assertNotMatch({ok, [{username, _} | _]},
                    vmq_warden_hooks:auth_on_register(?PEER, {"", <<"dev-c">>}, <<"device-7">>,
                                                      undefined, true, Meta)),
    ok = vmq_warden_hooks:on_client_wakeup(Sid2),
    ok = vmq_warden_hooks:on_register(?PEER, Sid2, <<"device-7">>),
    {ok, #{username := <<"device-7">>, state := online}} = vmq_warden:lookup(Sid2),
    ok.
