%% Helpers of the suites that run the firewall through the real hook
%% functions and the real NIF with the README's example policy
%% (docs/policy.example.toml) and a password file loaded through the app
%% env, as an operator would (vmq_warden_firewall_SUITE,
%% vmq_warden_firewall_state_SUITE).
-module(vmq_warden_firewall_util).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include("vmq_warden_firewall.hrl").

-export([passwd_lines/0, suite_start/1, suite_end/0, case_start/1, apply_env/2,
         sid/1, meta/2, tcp/0, a3/5, a5/5, refused/6, accepted/5, both_next/5,
         stat/1]).

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

%% The example policy and the password file in the suite's directory.
suite_start(Config) ->
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

suite_end() ->
    _ = vmq_plugin_harness:disable(vmq_warden),
    ok.

%% The example policy again, the settings, no bans, an empty registry.
case_start(Config) ->
    ok = file:write_file(?config(policy, Config), ?config(example, Config)),
    apply_env(Config, #{}),
    {ok, _} = vmq_warden:clear_bans(all),
    ok = vmq_warden_nif:reset().

%% The suites' settings: the example policy and the password file, failed
%% login bans off unless a case turns them on.
apply_env(Config, Extra) ->
    [application:unset_env(vmq_warden, K) || K <- maps:keys(vmq_warden_config:defaults())],
    Env = maps:merge(#{policy_file => ?config(policy, Config),
                       password_file => ?config(passwd, Config),
                       ban_threshold => 0}, Extra),
    maps:foreach(fun(K, V) -> application:set_env(vmq_warden, K, V) end, Env),
    ok = vmq_warden_config:apply().

%% The real hook functions, in both protocol shapes.
sid(Cid) -> {"", Cid}.

meta(Port, Type) ->
    #{listener_port => Port, listener_type => Type, listener_addr => {0, 0, 0, 0}}.

tcp() -> meta(1883, mqtt).

%% A client asking for a day: the policies' session_expiry_interval
%% (an upper bound) shows in the answers.
m5_props() -> #{p_session_expiry_interval => 86400}.

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
