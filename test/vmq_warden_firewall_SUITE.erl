%% The firewall's decisions through the real hook functions and the real
%% NIF, with the README's example policy (docs/policy.example.toml) loaded
%% through the app env, as an operator would: every rule type of the
%% example, every modifier, MQTT 3 (proplist) and MQTT 5 (map) shapes,
%% max_sessions, certificate identities and the client id binding. Reloads,
%% rate limits, bans, slow hashes and the credential cache:
%% vmq_warden_firewall_state_SUITE.
-module(vmq_warden_firewall_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("vmq_warden_firewall.hrl").

-compile([export_all, nowarn_export_all]).
-import(vmq_warden_firewall_util,
        [passwd_lines/0, apply_env/2, sid/1, meta/2, tcp/0, a3/5, a5/5, refused/6,
         accepted/5, both_next/5, stat/1]).

-define(CHAIN, vmq_hook_chain).

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
     max_packet_size_never_above_the_clients,
     session_expiry_never_above_the_clients,
     max_sessions_from_the_registry,
     cert_identity].

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
%% never reach MQTT 3 clients. VerneMQ's MQTT 5 session knows neither
%% max_inflight_messages nor retry_interval: the first reaches it as the
%% client's receive maximum (fc_receive_max_client), the second not at all.
modifiers_mqtt3_and_mqtt5(_Config) ->
    %% alice: own settings, then devices, then operators
    {ok, A3} = a3(?LAN, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none),
    Common = [{subscriber_id, {"devices", <<"alice:1">>}},
              {max_message_size, 65536},
              {upgrade_qos, true},
              {reg_view, vmq_reg_trie},
              {shared_subscription_policy, local_only},
              {max_connection_lifetime, 86400}],
    %% retry_interval: 20 s in the policy, milliseconds to VerneMQ's session
    ?assertEqual(lists:sort([{clean_session, false}, {max_inflight_messages, 10},
                             {retry_interval, 20000} | Common]), lists:sort(A3)),
    {ok, A5} = a5(?LAN, <<"alice:1">>, <<"alice">>, ?ALICE_PW, none),
    ?assertEqual(maps:from_list([{clean_start, false},
                                 {fc_receive_max_client, 10},
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
           {max_connection_lifetime, 86400}],
    {ok, S3} = a3(?LAN, <<"sensor-7:a">>, <<"sensor-7">>, <<"sensor-pw">>, none),
    ?assertEqual(lists:sort([{max_inflight_messages, 10} | Dev]), lists:sort(S3)),
    ?assertEqual({ok, maps:from_list([{fc_receive_max_client, 10} | Dev])},
                 a5(?LAN, <<"sensor-7:a">>, <<"sensor-7">>, <<"sensor-pw">>, none)),
    %% a user only in the password file gets no settings
    ?assertEqual(ok, a3(?LAN, <<"slowb:1">>, <<"slowb">>, <<"bcrypt-pw">>, none)),
    ?assertEqual(ok, a5(?LAN, <<"slowb:1">>, <<"slowb">>, <<"bcrypt-pw">>, none)).

%% VerneMQ sets the answer's max_packet_size in place of the Maximum Packet
%% Size the client sent in its CONNECT, even a larger one, and then sends
%% packets the client said it cannot take. alice's policy says 1048576.
max_packet_size_never_above_the_clients(_Config) ->
    Size = fun(Props) -> alice_m5_answer(max_packet_size, Props) end,
    ?assertEqual(4096, Size(#{p_max_packet_size => 4096})),
    ?assertEqual(1048576, Size(#{p_max_packet_size => 8388608})),
    ?assertEqual(1048576, Size(#{p_max_packet_size => 1048576})),
    %% none sent: the broker acts on the value only with a node-wide limit
    %% of its own, which it then replaces
    ?assertEqual(1048576, Size(#{})),
    ?assertEqual(1048576, Size(#{p_session_expiry_interval => 0})),
    %% not a valid MQTT size: as if none was sent
    ?assertEqual(1048576, Size(#{p_max_packet_size => 0})),
    ?assertEqual(1048576, Size(#{p_max_packet_size => <<"4096">>})),
    ?assertEqual(1048576, Size(not_a_map)),
    %% the 7-arity hook reads the same property
    ?assertMatch({ok, #{max_packet_size := 4096}},
                 vmq_warden_hooks:auth_on_register_m5(
                   ?LAN, sid(<<"alice:1">>), <<"alice">>, ?ALICE_PW, true,
                   #{p_max_packet_size => 4096}, tcp())),
    %% a user without the modifier gets none, whatever the client sent
    ?assertEqual({ok, #{upgrade_qos => true, shared_subscription_policy => local_only}},
                 vmq_warden_hooks:auth_on_register_m5(
                   ?LAN, sid(<<"backend:1">>), <<"backend">>, <<"backend-pw">>, true,
                   #{p_max_packet_size => 4096})).

%% VerneMQ puts the answer's session_expiry_interval in place of the one
%% the client asked for, even a longer one: a client asking for none (0,
%% or no property) would keep a session for an hour after a DISCONNECT.
%% The policy's value is the longest a session may outlive its connection.
%% alice's policy says 3600.
session_expiry_never_above_the_clients(_Config) ->
    Expiry = fun(Props) -> alice_m5_answer(session_expiry_interval, Props) end,
    ?assertEqual(0, Expiry(#{})),
    ?assertEqual(0, Expiry(#{p_session_expiry_interval => 0})),
    ?assertEqual(10, Expiry(#{p_session_expiry_interval => 10})),
    ?assertEqual(3600, Expiry(#{p_session_expiry_interval => 3600})),
    ?assertEqual(3600, Expiry(#{p_session_expiry_interval => 86400})),
    ?assertEqual(3600, Expiry(#{p_session_expiry_interval => 16#FFFFFFFF})),
    %% not a valid interval: as if none was asked for
    ?assertEqual(0, Expiry(#{p_session_expiry_interval => -1})),
    ?assertEqual(0, Expiry(not_a_map)),
    %% MQTT 3 has no interval and gets no key
    {ok, A3} = vmq_warden_hooks:auth_on_register(?LAN, sid(<<"alice:1">>), <<"alice">>, ?ALICE_PW, false),
    ?assertEqual(false, lists:keymember(session_expiry_interval, 1, A3)).

%% Key of alice's MQTT 5 answer when her client sends these CONNECT
%% properties (none if the answer has no such key).
alice_m5_answer(Key, Props) ->
    {ok, M} = vmq_warden_hooks:auth_on_register_m5(?LAN, sid(<<"alice:1">>), <<"alice">>,
                                                   ?ALICE_PW, false, Props),
    maps:get(Key, M, none).

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
