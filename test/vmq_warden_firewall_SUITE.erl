%% The firewall through the real hook functions and the real NIF, with the
%% README's example policy (docs/policy.example.toml) loaded through the app
%% env, as an operator would. Every rule type of the example, every modifier,
%% MQTT 3 (proplist) and MQTT 5 (map) shapes, reloads, rate limits, bans,
%% slow hashes on dirty schedulers and the credential cache.
-module(vmq_warden_firewall_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(CHAIN, vmq_hook_chain).
%% In network.allow (10.0.0.0/8) and in the devices group's networks.
-define(LAN, {{10, 1, 2, 3}, 40000}).
-define(ALICE_PW, <<"alice-secret">>).

%% Password-file lines made with the shipped tool:
%%   vmq-warden-passwd -c -b --scheme bcrypt --cost 8 FILE slowb bcrypt-pw
%%   vmq-warden-passwd -b --scheme argon2id FILE slowa argon-pw
%%   vmq-warden-passwd -b --scheme sha512 FILE backend backend-pw
%%   vmq-warden-passwd -b --scheme sha512 FILE sensor-7 sensor-pw
passwd_lines() ->
    [<<"slowb:$2b$08$BLnVXhcbvA7/XvXy2s/XJu6jeRaUaj1RNDoCAMIonHuvdx1JSr.CS">>,
     <<"slowa:$argon2id$v=19$m=19456,t=2,p=1$bcf0pwaI6Vl6ryOQsKNo3w$"
       "eHaM9zX+8ge4IxkwoFPSX5ePZ1DA1ZI8pPSOLInS6IY">>,
     <<"backend:$6$jsT1V6qE4dWyjto6$dbSTnj3wcV/jtDzBd18lQykCsvXenEMDnuVGB9S/PQlhWG"
       "btH/daV+A8z6p0vuODDD0y/eDcu3DUsjh4TR0c0w==">>,
     <<"sensor-7:$6$nmq/SKIXvWMwkG+H$Vs9HtokFJu1HSjz7DUJ3s4ABSlujPKkvqSXsqH1IwV2ws"
       "BI9gKJu5XbKIunU/WgYinKbcW7JcTtn+wChARgdAA==">>].

all() ->
    [example_policy_loads,
     client_id_bound_to_its_user,
     peer_networks_ipv4_and_ipv6,
     rules_in_order,
     client_id_constraints,
     reserved_prefixes,
     username_constraints,
     anonymous_per_listener,
     credentials_and_unknown_users,
     per_user_and_group_networks,
     modifiers_mqtt3_and_mqtt5,
     max_sessions_from_the_registry,
     cert_identity,
     failed_reload_keeps_the_policy,
     reloader_loads_a_change_once,
     rate_limits,
     bans_and_clearing_them,
     slow_hashes_run_on_dirty_schedulers,
     reconnect_storm_hits_the_cache].

init_per_suite(Config) ->
    ok = vmq_plugin_harness:enable(vmq_warden),
    Dir = ?config(priv_dir, Config),
    Example = filename:join([vmq_warden_robust_util:project_root(), "docs", "policy.example.toml"]),
    {ok, Toml} = file:read_file(Example),
    Policy = filename:join(Dir, "warden.toml"),
    Passwd = filename:join(Dir, "vmq.passwd"),
    ok = file:write_file(Policy, Toml),
    ok = file:write_file(Passwd, [[L, "\n"] || L <- passwd_lines()]),
    ok = file:change_mode(Passwd, 8#600),     % else the load warns
    [{example, Toml}, {policy, Policy}, {passwd, Passwd} | Config].

end_per_suite(_Config) ->
    _ = vmq_plugin_harness:disable(vmq_warden),
    ok.

init_per_testcase(_Case, Config) ->
    ok = file:write_file(?config(policy, Config), ?config(example, Config)),
    apply_env(Config, #{}),
    {ok, _} = vmq_warden:clear_bans(all),
    ok = vmq_warden_nif:reset(),
    Config.

end_per_testcase(_Case, _Config) ->
    ok.

%% The suite's settings: the example policy and the password file, failed
%% login bans off unless a case turns them on.
apply_env(Config, Extra) ->
    [application:unset_env(vmq_warden, K) || K <- maps:keys(vmq_warden_config:defaults())],
    Env = maps:merge(#{policy_file => ?config(policy, Config),
                       password_file => ?config(passwd, Config),
                       ban_threshold => 0}, Extra),
    maps:foreach(fun(K, V) -> application:set_env(vmq_warden, K, V) end, Env),
    ok = vmq_warden_config:apply().


%%--------------------------------------------------------------------
%% Hook helpers: the real hook functions, in both protocol shapes
%%--------------------------------------------------------------------

sid(Cid) -> {"", Cid}.

meta(Port, Type) ->
    #{listener_port => Port, listener_type => Type, listener_addr => {0, 0, 0, 0}}.

tcp() -> meta(1883, mqtt).

m5_props() -> #{p_session_expiry_interval => 0}.

%% MQTT 3; Meta =:= none calls the 5-arity hook.
a3(Peer, Cid, User, Pw, none) ->
    vmq_warden_hooks:auth_on_register(Peer, sid(Cid), User, Pw, true);
a3(Peer, Cid, User, Pw, Meta) ->
    vmq_warden_hooks:auth_on_register(Peer, sid(Cid), User, Pw, true, Meta).

%% MQTT 5; Meta =:= none calls the 6-arity hook.
a5(Peer, Cid, User, Pw, none) ->
    vmq_warden_hooks:auth_on_register_m5(Peer, sid(Cid), User, Pw, true, m5_props());
a5(Peer, Cid, User, Pw, Meta) ->
    vmq_warden_hooks:auth_on_register_m5(Peer, sid(Cid), User, Pw, true, m5_props(), Meta).

%% Both protocols refuse with Code: MQTT 5 as the reason code name, MQTT 3
%% as invalid_credentials (bad_username_or_password) or {error, Code}.
refused(Code, Peer, Cid, User, Pw, Meta) ->
    Code3 = case Code of
                bad_username_or_password -> invalid_credentials;
                _ -> Code
            end,
    ?assertEqual({error, Code3}, a3(Peer, Cid, User, Pw, Meta)),
    ?assertEqual({error, #{reason_code => Code}}, a5(Peer, Cid, User, Pw, Meta)).

%% Both protocols accept (ok or {ok, Mods}).
accepted(Peer, Cid, User, Pw, Meta) ->
    R3 = a3(Peer, Cid, User, Pw, Meta),
    R5 = a5(Peer, Cid, User, Pw, Meta),
    ?assert(R3 =:= ok orelse element(1, R3) =:= ok, R3),
    ?assert(R5 =:= ok orelse element(1, R5) =:= ok, R5),
    {R3, R5}.

both_next(Peer, Cid, User, Pw, Meta) ->
    ?assertEqual(next, a3(Peer, Cid, User, Pw, Meta)),
    ?assertEqual(next, a5(Peer, Cid, User, Pw, Meta)).

stat(Path) ->
    lists:foldl(fun(K, M) -> maps:get(K, M) end, vmq_warden:stats(), Path).

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

example_policy_loads(Config) ->
    %% through the operator API too, and what it loaded is what the file says
    ?assertEqual(ok, vmq_warden:reload()),
    {ok, Report} = vmq_warden_nif:load_files(list_to_binary(?config(policy, Config)),
                                             list_to_binary(?config(passwd, Config))),
    ?assertMatch(#{users := 3, groups := 3, rules := 4, passwords := 4, warnings := []}, Report).

%% [network]: allow 10/8, 192.168/16, 2001:db8::/32, 127.0.0.1; deny 10.66/16.
peer_networks_ipv4_and_ipv6(_Config) ->
    Ok = fun(Peer) -> accepted(Peer, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none) end,
    No = fun(Peer) -> refused(not_authorized, Peer, <<"backend:1">>, <<"backend">>,
                              <<"backend-pw">>, none) end,
    Ok({{10, 1, 2, 3}, 1}),
    Ok({{192, 168, 1, 5}, 1}),
    Ok({{127, 0, 0, 1}, 1}),
    Ok({{16#2001, 16#db8, 0, 0, 0, 0, 0, 7}, 1}),
    %% IPv4-mapped IPv6 is matched as IPv4
    Ok({{0, 0, 0, 0, 0, 16#ffff, 16#0a01, 16#0203}, 1}),
    No({{10, 66, 0, 9}, 1}),                 % deny wins over allow
    No({{127, 0, 0, 2}, 1}),                 % a single address is a /32
    No({{8, 8, 8, 8}, 1}),
    No({{16#2001, 16#db9, 0, 0, 0, 0, 0, 1}, 1}),
    No({{0, 0, 0, 0, 0, 0, 0, 1}, 1}),
    %% anonymous websocket clients are screened the same way
    accepted({{16#2001, 16#db8, 0, 0, 0, 0, 0, 5}, 1}, <<"ws-1">>, undefined, undefined, meta(8080, ws)),
    refused(not_authorized, {{16#fe80, 0, 0, 0, 0, 0, 0, 1}, 1}, <<"ws-1">>, undefined, undefined,
            meta(8080, ws)).

rules_in_order(_Config) ->
    Pw = <<"backend-pw">>,
    %% block-scanners: deny with code banned (inside network.allow 192.168/16)
    refused(banned, {{192, 168, 66, 7}, 1}, <<"backend:1">>, <<"backend">>, Pw, none),
    accepted({{192, 168, 67, 7}, 1}, <<"backend:1">>, <<"backend">>, Pw, none),
    %% legacy-mqtt3-on-ws: MQTT 3 on wss refused, MQTT 5 on wss passes
    ?assertEqual({error, not_authorized},
                 a3(?LAN, <<"backend:1">>, <<"backend">>, Pw, meta(8443, wss))),
    ?assertEqual({error, not_authorized},
                 a3(?LAN, <<"backend:1">>, <<"backend">>, Pw, meta(8443, mqttwss))),
    ?assertMatch({ok, #{}}, a5(?LAN, <<"backend:1">>, <<"backend">>, Pw, meta(8443, wss))),
    ?assertMatch({ok, _}, a3(?LAN, <<"backend:1">>, <<"backend">>, Pw, meta(8080, ws))),
    %% lab-devices: allow lifts network.allow and the anonymous restriction
    Lab = {{172, 16, 5, 5}, 1},
    {{ok, _}, {ok, _}} = accepted(Lab, <<"dev:lab-7">>, undefined, undefined, none),
    refused(not_authorized, Lab, <<"dev:xlab-7">>, undefined, undefined, none),
    %% ... but not the deny lists, the username checks or credentials
    refused(not_authorized, Lab, <<"root:lab-7">>, <<"root">>, <<"x">>, none),
    refused(not_authorized, {{10, 66, 5, 5}, 1}, <<"dev:lab-7">>, undefined, undefined, none),
    refused(bad_username_or_password, Lab, <<"backend:lab-7">>, <<"backend">>, <<"wrong">>, none),
    %% bridges-elsewhere: next before the client id checks, only on port 1884
    both_next(?LAN, <<"zzz">>, <<"bridge-1">>, <<"x">>, meta(1884, mqtt)),
    refused(client_identifier_not_valid, ?LAN, <<"zzz">>, <<"bridge-1">>, <<"x">>, meta(1883, mqtt)).

%% [client_id]: max_length 64, allowed_chars, pattern, username_pattern "{username}:*".
client_id_constraints(_Config) ->
    Pw = <<"backend-pw">>,
    Bad = fun(Cid) -> refused(client_identifier_not_valid, ?LAN, Cid, <<"backend">>, Pw, none) end,
    accepted(?LAN, <<"backend:x">>, <<"backend">>, Pw, none),
    Max = <<"backend:", (binary:copy(<<"x">>, 56))/binary>>,
    64 = byte_size(Max),
    accepted(?LAN, Max, <<"backend">>, Pw, none),
    Bad(<<Max/binary, "x">>),                % 65 bytes
    Bad(<<"backend/1">>),                    % '/' not in allowed_chars
    Bad(<<"backend 1">>),
    Bad(<<"other-1">>),                      % must match {username}:*
    Bad(<<"backend-1">>),                    % the separator binds
    Bad(<<"backend">>),
    %% pattern [A-Za-z0-9].* (anonymous clients skip the username checks)
    WS = meta(8080, ws),
    accepted(?LAN, <<"any-id">>, undefined, undefined, WS),
    refused(client_identifier_not_valid, ?LAN, <<"_any">>, undefined, undefined, WS),
    refused(client_identifier_not_valid, ?LAN, <<"-any">>, undefined, undefined, WS).

%% [[client_id.reserved]] svc- for user backend and group operators. The
%% example's username_pattern would refuse every svc- id of a named user, so
%% this case reloads the example without it.
reserved_prefixes(Config) ->
    Toml = binary:replace(?config(example, Config),
                          <<"username_pattern = \"{username}:*\"">>, <<>>),
    ok = file:write_file(?config(policy, Config), Toml),
    ok = vmq_warden:reload(),
    accepted(?LAN, <<"svc-1">>, <<"backend">>, <<"backend-pw">>, none),       % listed user
    accepted(?LAN, <<"svc-2">>, <<"alice">>, ?ALICE_PW, none),                % in group operators
    refused(client_identifier_not_valid, ?LAN, <<"svc-3">>, <<"sensor-7">>, <<"sensor-pw">>, none),
    refused(client_identifier_not_valid, ?LAN, <<"svc-4">>, undefined, undefined, meta(8080, ws)),
    accepted(?LAN, <<"svd-3">>, <<"sensor-7">>, <<"sensor-pw">>, none).

%% [username]: max_length 32, pattern [a-z][a-z0-9_.-]*, deny root/admin.
username_constraints(_Config) ->
    No = fun(User) -> refused(not_authorized, ?LAN, <<User/binary, ":1">>, User, <<"pw">>, none) end,
    No(<<"root">>),
    No(<<"admin">>),
    No(<<"Alice">>),
    No(<<"9lives">>),
    Long = binary:copy(<<"a">>, 33),
    No(Long),
    %% 32 bytes is fine (an unknown user: next)
    Ok32 = binary:copy(<<"a">>, 32),
    both_next(?LAN, <<Ok32/binary, ":1">>, Ok32, <<"pw">>, none).

%% [anonymous] allow = false, [[anonymous.listener]] type = "ws" allow = true,
%% group guests.
anonymous_per_listener(_Config) ->
    Anon = fun(Meta) -> {a3(?LAN, <<"anon-1">>, undefined, undefined, Meta),
                         a5(?LAN, <<"anon-1">>, undefined, undefined, Meta)} end,
    NotAuth = {{error, not_authorized}, {error, #{reason_code => not_authorized}}},
    ?assertEqual(NotAuth, Anon(none)),            % no listener data (5-/6-arity)
    ?assertEqual(NotAuth, Anon(tcp())),
    ?assertEqual(NotAuth, Anon(meta(8883, mqtts))),
    ?assertEqual(NotAuth, Anon(meta(8443, wss))),
    {{ok, M3}, {ok, M5}} = Anon(meta(8080, ws)),
    ?assertMatch({{ok, _}, {ok, _}}, Anon(meta(8080, mqttws))),
    %% guests' settings
    ?assertEqual({"guests", <<"anon-1">>}, proplists:get_value(subscriber_id, M3)),
    ?assertEqual({"guests", <<"anon-1">>}, maps:get(subscriber_id, M5)).

credentials_and_unknown_users(_Config) ->
    %% inline $6$ hash (alice) and password-file hash (backend)
    accepted(?LAN, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none),
    accepted(?LAN, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none),
    refused(bad_username_or_password, ?LAN, <<"alice:1">>, <<"alice">>, <<"nope">>, none),
    refused(bad_username_or_password, ?LAN, <<"alice:1">>, <<"alice">>, undefined, none),
    refused(bad_username_or_password, ?LAN, <<"backend:1">>, <<"backend">>, ?ALICE_PW, none),
    %% the 6-/7-arity hooks decide the same
    ?assertEqual({error, invalid_credentials},
                 a3(?LAN, <<"alice:1">>, <<"alice">>, <<"nope">>, tcp())),
    ?assertEqual({error, #{reason_code => bad_username_or_password}},
                 a5(?LAN, <<"alice:1">>, <<"alice">>, <<"nope">>, tcp())),
    %% unknown user: next (unknown_user = next by default) ...
    both_next(?LAN, <<"stranger:1">>, <<"stranger">>, <<"pw">>, none),
    both_next(?LAN, <<"stranger:1">>, <<"stranger">>, <<"pw">>, tcp()),
    %% ... so the next plugin in the chain decides
    ?assertEqual(ok, ?CHAIN:all_till_ok(auth_on_register,
                                        [?LAN, sid(<<"fake-user:1">>), <<"fake-user">>,
                                         <<"fake-pass">>, true], ?CHAIN:plugins())),
    ?assertEqual({error, no_matching_hook_found},
                 ?CHAIN:all_till_ok(auth_on_register,
                                    [?LAN, sid(<<"nobody:1">>), <<"nobody">>, <<"x">>, true],
                                    ?CHAIN:plugins())),
    %% unknown_user = deny refuses them as bad credentials
    application:set_env(vmq_warden, unknown_user, deny),
    ok = vmq_warden_config:apply(),
    refused(bad_username_or_password, ?LAN, <<"stranger:1">>, <<"stranger">>, <<"pw">>, none).

%% Per-user / per-group networks: alice and sensor-7 (group devices) only
%% from 10/8; backend overrides the group with networks = [] (anywhere).
per_user_and_group_networks(_Config) ->
    Other = {{192, 168, 1, 5}, 1},
    V6 = {{16#2001, 16#db8, 0, 0, 0, 0, 0, 9}, 1},
    accepted(?LAN, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none),
    refused(not_authorized, Other, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none),
    refused(not_authorized, V6, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none),
    refused(not_authorized, Other, <<"sensor-7:a">>, <<"sensor-7">>, <<"sensor-pw">>, none),
    accepted(Other, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none),
    accepted(V6, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none).

%% Every modifier of the example, exactly, in both shapes; MQTT 5-only keys
%% never reach MQTT 3 clients.
modifiers_mqtt3_and_mqtt5(_Config) ->
    %% alice: own settings, then devices, then operators
    {ok, A3} = a3(?LAN, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none),
    Common = [{subscriber_id, {"devices", <<"alice:1">>}},
              {max_message_size, 65536},
              {max_inflight_messages, 10},
              {retry_interval, 20},
              {upgrade_qos, true},
              {reg_view, vmq_reg_trie},
              {shared_subscription_policy, local_only},
              {max_connection_lifetime, 86400}],
    ?assertEqual(lists:sort([{clean_session, false} | Common]), lists:sort(A3)),
    {ok, A5} = a5(?LAN, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none),
    ?assertEqual(maps:from_list([{clean_start, false},
                                 {session_expiry_interval, 3600},
                                 {topic_alias_max, 16},
                                 {max_packet_size, 1048576} | Common]), A5),
    %% the 6-/7-arity hooks return the same
    ?assertEqual({ok, A3}, a3(?LAN, <<"alice:1">>, <<"alice">>, ?ALICE_PW, tcp())),
    ?assertEqual({ok, A5}, a5(?LAN, <<"alice:1">>, <<"alice">>, ?ALICE_PW, tcp())),
    %% guests (anonymous on ws)
    WS = meta(8080, ws),
    Guests = [{subscriber_id, {"guests", <<"g-1">>}}, {max_message_rate, 10},
              {max_online_messages, 100}, {max_offline_messages, 0}],
    {ok, G3} = a3(?LAN, <<"g-1">>, undefined, undefined, WS),
    ?assertEqual(lists:sort([{clean_session, true} | Guests]), lists:sort(G3)),
    {ok, G5} = a5(?LAN, <<"g-1">>, undefined, undefined, WS),
    ?assertEqual(maps:from_list([{clean_start, true} | Guests]), G5),
    %% backend: group operators (no mountpoint)
    Ops = [{upgrade_qos, true}, {shared_subscription_policy, local_only}],
    {ok, B3} = a3(?LAN, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none),
    ?assertEqual(lists:sort(Ops), lists:sort(B3)),
    ?assertEqual({ok, maps:from_list(Ops)},
                 a5(?LAN, <<"backend:1">>, <<"backend">>, <<"backend-pw">>, none)),
    %% sensor-7: group devices
    Dev = [{subscriber_id, {"devices", <<"sensor-7:a">>}}, {max_message_size, 65536},
           {max_inflight_messages, 10}, {max_connection_lifetime, 86400}],
    {ok, S3} = a3(?LAN, <<"sensor-7:a">>, <<"sensor-7">>, <<"sensor-pw">>, none),
    ?assertEqual(lists:sort(Dev), lists:sort(S3)),
    ?assertEqual({ok, maps:from_list(Dev)},
                 a5(?LAN, <<"sensor-7:a">>, <<"sensor-7">>, <<"sensor-pw">>, none)),
    %% a user only in the password file gets no settings
    ?assertEqual(ok, a3(?LAN, <<"slowb:1">>, <<"slowb">>, <<"bcrypt-pw">>, none)),
    ?assertEqual(ok, a5(?LAN, <<"slowb:1">>, <<"slowb">>, <<"bcrypt-pw">>, none)).

%% group devices: max_sessions = 2, counted from the registry. Sessions are
%% connected the way VerneMQ does it: auth in the connection process, wakeup
%% in the queue process, on_register with the rewritten subscriber id.
max_sessions_from_the_registry(_Config) ->
    Pw = <<"sensor-pw">>,
    Connect = fun(Cid, Proto) ->
                      [Conn, Queue] = [?CHAIN:spawn_proc() || _ <- [1, 2]],
                      Auth = ?CHAIN:in_proc(Conn, fun() ->
                          case Proto of
                              3 -> a3(?LAN, Cid, <<"sensor-7">>, Pw, none);
                              5 -> a5(?LAN, Cid, <<"sensor-7">>, Pw, none)
                          end end),
                      case Auth of
                          {ok, Mods} ->
                              Sid = {"devices", Cid} = mod(subscriber_id, Mods),
                              ok = ?CHAIN:in_proc(Queue, fun() ->
                                  vmq_warden_hooks:on_client_wakeup(Sid) end),
                              ok = ?CHAIN:in_proc(Conn, fun() ->
                                  case Proto of
                                      3 -> vmq_warden_hooks:on_register(?LAN, Sid, <<"sensor-7">>);
                                      5 -> vmq_warden_hooks:on_register_m5(?LAN, Sid, <<"sensor-7">>, #{})
                                  end end),
                              {ok, Queue};
                          Refusal ->
                              Refusal
                      end
              end,
    {ok, _QA} = Connect(<<"sensor-7:a">>, 3),
    {ok, _QB1} = Connect(<<"sensor-7:b">>, 5),
    ?assertMatch([_, _], vmq_warden:sessions(#{username => <<"sensor-7">>, state => online})),
    ?assertEqual({error, quota_exceeded}, Connect(<<"sensor-7:c">>, 3)),
    ?assertEqual({error, #{reason_code => quota_exceeded}}, Connect(<<"sensor-7:c">>, 5)),
    %% a reconnect of a client id that holds one of the sessions takes it over
    ?assertMatch({ok, _}, Connect(<<"sensor-7:a">>, 3)),
    {ok, QB} = Connect(<<"sensor-7:b">>, 5),
    ?assertEqual({error, quota_exceeded}, Connect(<<"sensor-7:c">>, 3)),
    %% a session ends: room for another
    ok = ?CHAIN:in_proc(QB, fun() -> vmq_warden_hooks:on_client_gone({"devices", <<"sensor-7:b">>}) end),
    ?assertMatch({ok, _}, Connect(<<"sensor-7:c">>, 5)),
    %% other users are not affected (alice: max_sessions 3 of her own)
    accepted(?LAN, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none).

mod(Key, Mods) when is_list(Mods) -> proplists:get_value(Key, Mods);
mod(Key, Mods) when is_map(Mods) -> maps:get(Key, Mods, undefined).

%% [[cert_identity]] listener ssl:8883, from cn, required, username_must_match,
%% group devices for identities that are not users.
cert_identity(_Config) ->
    Cert = fun(CN) -> maps:get(cert, public_key:pkix_test_root_cert(CN, [])) end,
    Tls = fun(CN) -> (meta(8883, mqtts))#{client_cert => Cert(CN)} end,
    S7 = Tls("sensor-7"),
    %% the certificate replaces the password; no username: the accept
    %% renames the session to the certificate identity
    {{ok, M3}, {ok, M5}} = accepted(?LAN, <<"sensor-7:t">>, undefined, undefined, S7),
    ?assertEqual(<<"sensor-7">>, mod(username, M3)),
    ?assertEqual(<<"sensor-7">>, mod(username, M5)),
    ?assertEqual({"devices", <<"sensor-7:t">>}, mod(subscriber_id, M3)),
    %% the same username: no rename; any password is ignored
    {{ok, N3}, _} = accepted(?LAN, <<"sensor-7:u">>, <<"sensor-7">>, <<"not-checked">>, S7),
    ?assertEqual(undefined, mod(username, N3)),
    %% another username than the certificate's
    refused(not_authorized, ?LAN, <<"sensor-7:x">>, <<"alice">>, ?ALICE_PW, S7),
    %% required: no certificate on this listener
    refused(not_authorized, ?LAN, <<"sensor-7:v">>, <<"sensor-7">>, <<"sensor-pw">>, meta(8883, ssl)),
    %% not a user: the entry's group (devices)
    {{ok, D3}, {ok, D5}} = accepted(?LAN, <<"dev-99:1">>, undefined, undefined, Tls("dev-99")),
    ?assertEqual({"devices", <<"dev-99:1">>}, mod(subscriber_id, D3)),
    ?assertEqual(<<"dev-99">>, mod(username, D5)),
    %% group networks apply to the identity
    refused(not_authorized, {{192, 168, 1, 1}, 1}, <<"dev-99:1">>, undefined, undefined, Tls("dev-99")),
    %% client id constraints use the identity
    refused(client_identifier_not_valid, ?LAN, <<"other-1">>, undefined, undefined, Tls("dev-99")),
    %% a certificate that is not DER
    refused(not_authorized, ?LAN, <<"x-1">>, undefined, undefined,
            (meta(8883, ssl))#{client_cert => <<"garbage">>}),
    %% other listeners: the certificate is not an identity, credentials count
    refused(not_authorized, ?LAN, <<"sensor-7:w">>, undefined, undefined,
            (meta(8884, ssl))#{client_cert => Cert("sensor-7")}),
    %% (sensor-7-t and sensor-7-u hold the 2 sessions of group devices)
    ?assertEqual({error, quota_exceeded},
                 a3(?LAN, <<"sensor-7:w">>, <<"sensor-7">>, <<"sensor-pw">>, none)),
    ok = vmq_warden_nif:reset(),
    accepted(?LAN, <<"sensor-7:w">>, <<"sensor-7">>, <<"sensor-pw">>,
             (meta(8884, ssl))#{client_cert => Cert("sensor-7")}).

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

%% A client id whose session belongs to one user cannot be taken by another
%% (client_id.bind_to_user, default on): bob with alice's client id was
%% accepted and took her session (and, persistent, her queue) over.
client_id_bound_to_its_user(Config) ->
    Policy = filename:join(?config(priv_dir, Config), "bind.toml"),
    Line = fun(Pw) -> iolist_to_binary(vmq_warden_robust_util:sha512_line(Pw)) end,
    ok = file:write_file(Policy, [<<"[users.alice]\npassword = \"">>, Line(?ALICE_PW),
                                  <<"\"\n[users.bob]\npassword = \"">>, Line(<<"bob-pw">>), <<"\"\n">>]),
    apply_env(Config, #{policy_file => Policy, password_file => undefined}),
    Sid = sid(<<"phone-1">>),
    [S1, Q1] = [vmq_hook_chain:spawn_proc() || _ <- [1, 2]],
    {ok, _} = accept_or_ok(vmq_hook_chain:in_proc(S1, fun() ->
        vmq_warden_hooks:auth_on_register(?LAN, Sid, <<"alice">>, ?ALICE_PW, false) end)),
    ok = vmq_hook_chain:in_proc(Q1, fun() -> vmq_warden_hooks:on_client_wakeup(Sid) end),
    ok = vmq_hook_chain:in_proc(S1, fun() -> vmq_warden_hooks:on_register(?LAN, Sid, <<"alice">>) end),
    %% online: bob is refused (after his own password was checked), alice is not
    refused(not_authorized, ?LAN, <<"phone-1">>, <<"bob">>, <<"bob-pw">>, none),
    refused(bad_username_or_password, ?LAN, <<"phone-1">>, <<"bob">>, <<"wrong">>, none),
    refused(not_authorized, ?LAN, <<"phone-1">>, undefined, undefined, none),
    accepted(?LAN, <<"phone-1">>, <<"alice">>, ?ALICE_PW, none),
    %% offline (her queue and its messages are kept): still hers
    ok = vmq_hook_chain:in_proc(Q1, fun() -> vmq_warden_hooks:on_client_offline(Sid) end),
    refused(not_authorized, ?LAN, <<"phone-1">>, <<"bob">>, <<"bob-pw">>, none),
    %% gone: free again
    ok = vmq_hook_chain:in_proc(Q1, fun() -> vmq_warden_hooks:on_session_expired(Sid) end),
    accepted(?LAN, <<"phone-1">>, <<"bob">>, <<"bob-pw">>, none).

accept_or_ok(ok) -> {ok, []};
accept_or_ok({ok, _} = R) -> R.
