%% PropEr properties over every exported hook of vmq_warden_hooks, called
%% with generated arguments, well-formed and malformed, from a pool of
%% processes standing for connections and queues (so the registry sees
%% real pid identities and real state changes).
%%
%% For every call: the hook never raises, an auth hook answers with a value
%% VerneMQ accepts (ok | next | {ok, list()} for MQTT 3 | {ok, map()} for
%% MQTT 5 | {error, _}), a lifecycle hook answers ok, and no answer carries
%% a password. An auth answer is also checked against a model of the
%% settings the case set up (`expected/3'): which users the password file
%% has with which password, allow_anonymous, unknown_user and
%% default_decision; a wrong password is never accepted. After every case:
%% counts() equals a recount of sessions/1, no subscriber id is listed
%% twice, and the NIF still answers.
%%
%% CI runs a bounded number of cases. A long campaign:
%%   WARDEN_PROPER_NUMTESTS=20000 rebar3 ct --suite test/vmq_warden_prop_SUITE
-module(vmq_warden_prop_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("proper/include/proper.hrl").

-compile([export_all, nowarn_export_all]).

-define(U, vmq_warden_robust_util).
-define(POOL, 6).
-define(SECRETS, [<<"alice-secret-pw">>, <<"bob-secret-pw">>, <<"carol-secret-pw">>,
                  <<"wrong-secret-pw">>]).
%% The users of the password file and their passwords (init_per_suite).
-define(USERS, #{<<"alice">> => <<"alice-secret-pw">>, <<"bob">> => <<"bob-secret-pw">>,
                 <<"carol">> => <<"carol-secret-pw">>}).
%% Failed logins from one address that ban it (the default ban_threshold).
-define(BAN_THRESHOLD, 10).

all() ->
    [prop_every_hook_answers_validly,
     prop_lifecycle_keeps_registry_consistent,
     prop_obfuscation_failures_never_raise].

suite() -> [{timetrap, {minutes, 30}}].

init_per_suite(Config) ->
    ok = vmq_plugin_harness:enable(vmq_warden),
    Dir = ?config(priv_dir, Config),
    File = filename:join(Dir, "passwd"),
    ?U:passwords_file(File, [{"alice", ?U:sha512_line(<<"alice-secret-pw">>)},
                             {"bob", ?U:pbkdf2_line(<<"bob-secret-pw">>, 101)},
                             %% bcrypt cost 4 of carol-secret-pw (vmq-warden-passwd,
                             %% written with the $2y$ prefix): takes the
                             %% dirty-scheduler path
                             {"carol", "$2y$04$Kr5IGihlFIRrDXn2ZXEdg.T721HCWv1MNq1IGk0rRdZQ9vF3sCARK"}]),
    [{password_file, File} | Config].

end_per_suite(_Config) ->
    ?U:reset_env(),
    _ = vmq_plugin_harness:disable(vmq_warden),
    ok.

init_per_testcase(_Case, Config) ->
    vmq_warden_nif:reset(),
    Config.

end_per_testcase(_Case, _Config) ->
    catch meck:unload(),
    ?U:reset_env(),
    ok = vmq_warden_config:apply(),
    ok.

numtests(Default) -> ?U:numtests("WARDEN_PROPER_NUMTESTS", Default).

check(Prop, N) ->
    Result = proper:quickcheck(Prop, [{numtests, N}, {to_file, user}, {max_shrinks, 200}]),
    ?assertEqual(true, Result, proper:counterexample()).


%%--------------------------------------------------------------------
%% Properties
%%--------------------------------------------------------------------

prop_every_hook_answers_validly(Config) ->
    File = ?config(password_file, Config),
    Pool = pool(),
    try
        check(?FORALL({Cfg, Calls}, {settings(File), list(hook_call())},
                      run_case(Pool, Cfg, Calls)),
              numtests(300))
    after
        stop_pool(Pool)
    end.

%% Well-formed arguments only, over a few subscriber ids, so that sessions
%% really move between authenticated/online/offline and take each other over.
prop_lifecycle_keeps_registry_consistent(Config) ->
    File = ?config(password_file, Config),
    Pool = pool(),
    try
        check(?FORALL(Calls, list(well_formed_call()),
                      run_case(Pool, #{password_file => File, default_decision => allow}, Calls)),
              numtests(300))
    after
        stop_pool(Pool)
    end.

%% credentials_obfuscation:decrypt/1 that returns junk or raises: the hook
%% still answers validly (the broker's helper is not ours to trust).
prop_obfuscation_failures_never_raise(Config) ->
    File = ?config(password_file, Config),
    meck:new(credentials_obfuscation, [non_strict]),
    Pool = pool(),
    try
        check(?FORALL({Behaviour, Calls}, {decrypt_behaviour(), non_empty(list(auth_call()))},
                      begin
                          meck:expect(credentials_obfuscation, decrypt, Behaviour),
                          run_case(Pool, #{password_file => File}, Calls)
                      end),
              numtests(100))
    after
        stop_pool(Pool)
    end.

%%--------------------------------------------------------------------
%% Running a case
%%--------------------------------------------------------------------

pool() -> [vmq_hook_chain:spawn_proc() || _ <- lists:seq(1, ?POOL)].

stop_pool(Pool) -> [vmq_hook_chain:stop_proc(P) || P <- Pool], ok.

run_case(Pool, Cfg, Calls) ->
    ok = ?U:set_env(Cfg),
    vmq_warden_nif:reset(),
    {Bad, _Model} = lists:foldl(fun(Call, {Acc, Model}) ->
                                        case call_checked(Pool, Cfg, Model, Call) of
                                            {ok, Model1} -> {Acc, Model1};
                                            {bad, What, Model1} -> {[What | Acc], Model1}
                                        end
                                end, {[], new_model()}, Calls),
    Consistent = ?U:registry_consistent(),
    Alive = vmq_warden_nif:ping() =:= <<"pong">>,
    ?WHENFAIL(ct:pal("settings ~p~nbad answers ~p~nregistry ~p~nnif alive ~p",
                     [Cfg, Bad, Consistent, Alive]),
              Bad =:= [] andalso Consistent =:= true andalso Alive).

call_checked(Pool, Cfg, Model, {Slot, Hook, Args}) ->
    Proc = lists:nth(Slot rem length(Pool) + 1, Pool),
    %% what the model expects is computed before the call (the password's
    %% decryption is looked at as the hook will see it)
    Expected = expected(Cfg, Model, {Hook, Args}),
    Result = try vmq_hook_chain:in_proc(Proc, fun() -> apply(vmq_warden_hooks, Hook, Args) end)
             catch C:R -> {raised, C, R}
             end,
    Model1 = model_after(Model, {Hook, Args}, Expected, Result),
    case acceptable(Hook, Result) andalso no_secret(Result)
        andalso as_expected(Hook, Expected, Result) of
        true -> {ok, Model1};
        false -> {bad, {Hook, shorten(Args), Result, {expected, Expected}}, Model1}
    end.

acceptable(auth_on_register, R) -> ?U:valid_answer(3, R);
acceptable(auth_on_register_m5, R) -> ?U:valid_answer(5, R);
acceptable(_Lifecycle, R) -> R =:= ok.

%%--------------------------------------------------------------------
%% The model of an auth decision (docs/POLICY.md, "Decision order", with no
%% policy file): what a well-formed call must get under the case's
%% settings. Its state: the failed logins so far (a ban can follow once
%% there were ?BAN_THRESHOLD of them) and the users each subscriber id was
%% admitted or registered with (the client id binding may refuse another
%% user on it).
%%--------------------------------------------------------------------

new_model() -> #{fails => 0, owners => #{}}.

%% `lifecycle' | {auth, Proto, Key, User, [Outcome]} |
%% {malformed, Proto, WithPasswordFile, User, Plain}.
%% An outcome: accept | next | {refuse, Code} | failure (the failure decision).
expected(Cfg, Model, {Hook, [Peer, Sid, User, Pw | _] = Args})
  when Hook =:= auth_on_register; Hook =:= auth_on_register_m5 ->
    Proto = case Hook of auth_on_register -> 3; auth_on_register_m5 -> 5 end,
    Plain = plain(Pw),
    %% the connection metadata: the last argument of /6 and /7
    Meta = case {Proto, Args} of
               {3, [_, _, _, _, _, M]} -> M;
               {5, [_, _, _, _, _, _, M]} -> M;
               _ -> #{}
           end,
    case {peer_ok(Peer), subscriber_key(Sid), user_ok(User), meta_ok(Meta)} of
        {true, {ok, Key}, true, true} ->
            {auth, Proto, Key, User, tolerated(Model, Key, User, decide(Cfg, User, Plain))};
        _ ->
            {malformed, Proto, maps:is_key(password_file, Cfg), User, Plain}
    end;
expected(_Cfg, _Model, _Call) ->
    lifecycle.

decide(Cfg, User, Plain) ->
    case maps:is_key(password_file, Cfg) of
        false ->
            %% no user source at all: default_decision, whoever connects
            case maps:get(default_decision, Cfg, next) of
                allow -> [accept];
                deny -> [{refuse, not_authorized}];
                next -> [next]
            end;
        true when User =:= undefined ->
            anonymous(Cfg);
        true when User =:= <<>> ->
            %% an empty username: anonymous, or a name no user has
            anonymous(Cfg) ++ unknown_user(Cfg, Plain);
        true ->
            case maps:find(User, ?USERS) of
                {ok, Right} ->
                    case Plain of
                        {known, Right} -> [accept];
                        {known, _Wrong} -> [{refuse, bad_username_or_password}];
                        too_long -> [failure];
                        %% a decryption whose result the model does not know
                        unknown -> [accept, {refuse, bad_username_or_password}, failure]
                    end;
                error ->
                    unknown_user(Cfg, Plain)
            end
    end.

anonymous(Cfg) ->
    case maps:get(allow_anonymous, Cfg, false) of
        true -> [accept];
        false -> [{refuse, not_authorized}]
    end.

%% With unknown_user = deny the password is checked against a decoy (so a
%% decryption runs, and can fail).
unknown_user(Cfg, Plain) ->
    case {maps:get(unknown_user, Cfg, next), Plain} of
        {next, _} -> [next];
        {deny, unknown} -> [{refuse, bad_username_or_password}, failure];
        {deny, too_long} -> [failure];
        {deny, _} -> [{refuse, bad_username_or_password}]
    end.

%% What the model does not follow exactly: bans (per address and window;
%% the model only knows whether there were enough failures in the case)
%% and the client id binding (the model keeps every user a subscriber id
%% was seen with, not when a session ended).
tolerated(#{fails := Fails, owners := Owners}, Key, User, Outcomes) ->
    Banned = case Fails >= ?BAN_THRESHOLD of
                 true -> [{refuse, banned}];
                 false -> []
             end,
    Bound = case lists:member(accept, Outcomes)
                andalso lists:any(fun(U) -> U =/= User end, maps:get(Key, Owners, [])) of
                true -> [{refuse, not_authorized}];
                false -> []
            end,
    Outcomes ++ Banned ++ Bound.

model_after(Model = #{fails := Fails, owners := Owners}, _Call, {auth, Proto, Key, User, _}, Result) ->
    Fails1 = case outcome(Proto, Result) of
                 {refuse, bad_username_or_password} -> Fails + 1;
                 _ -> Fails
             end,
    Owners1 = case outcome(Proto, Result) of
                  accept -> own(Key, User, Owners);
                  _ -> Owners
              end,
    Model#{fails := Fails1, owners := Owners1};
model_after(Model = #{owners := Owners}, {Hook, [_Peer, Sid, User | _]}, lifecycle, ok)
  when Hook =:= on_register; Hook =:= on_register_m5 ->
    case {subscriber_key(Sid), user_ok(User)} of
        {{ok, Key}, true} -> Model#{owners := own(Key, User, Owners)};
        _ -> Model
    end;
model_after(Model, _Call, _Expected, _Result) ->
    Model.

own(Key, User, Owners) ->
    maps:update_with(Key, fun(Us) -> lists:usort([User | Us]) end, [User], Owners).

as_expected(_Hook, lifecycle, _Result) ->
    true;
as_expected(_Hook, {auth, Proto, _Key, _User, Outcomes}, Result) ->
    lists:member(outcome(Proto, Result), Outcomes);
%% Malformed arguments: any valid answer, but never an accepted wrong
%% password of a user of the password file.
as_expected(_Hook, {malformed, Proto, true, User, Plain}, Result) ->
    case {maps:find(User, ?USERS), Plain, outcome(Proto, Result)} of
        {{ok, Right}, {known, Given}, accept} -> Given =:= Right;
        _ -> true
    end;
as_expected(_Hook, {malformed, _Proto, false, _User, _Plain}, _Result) ->
    true.

outcome(3, ok) -> accept;
outcome(3, {ok, L}) when is_list(L) -> accept;
outcome(5, ok) -> accept;
outcome(5, {ok, M}) when is_map(M) -> accept;
outcome(_, next) -> next;
outcome(3, {error, invalid_credentials}) -> {refuse, bad_username_or_password};
outcome(3, {error, plugin_unavailable}) -> failure;
outcome(5, {error, #{reason_code := server_unavailable}}) -> failure;
outcome(3, {error, Code}) when is_atom(Code) -> {refuse, Code};
outcome(5, {error, #{reason_code := Code}}) -> {refuse, Code};
outcome(_, Other) -> {invalid, Other}.

%% The password as the hook will read it: {known, Bin | undefined};
%% `unknown' when a credentials_obfuscation module is loaded to decrypt it;
%% `too_long' over 65535 bytes (no MQTT string is: the NIF refuses it as a
%% bad argument, and the hook answers with the failure decision).
plain(undefined) -> {known, undefined};
plain(B) when is_binary(B), byte_size(B) > 65535 -> too_long;
plain(B) when is_binary(B) -> {known, B};
plain({plaintext, B}) when is_binary(B) -> plain(B);
plain({encrypted, _}) ->
    case erlang:function_exported(credentials_obfuscation, decrypt, 1) of
        true -> unknown;
        false -> {known, undefined}
    end;
plain(_) -> {known, undefined}.

peer_ok({{A, B, C, D}, Port}) ->
    lists:all(fun(X) -> is_integer(X) andalso X >= 0 andalso X =< 255 end, [A, B, C, D])
        andalso port_ok(Port);
peer_ok({{_, _, _, _, _, _, _, _} = Ip, Port}) ->
    lists:all(fun(X) -> is_integer(X) andalso X >= 0 andalso X =< 65535 end, tuple_to_list(Ip))
        andalso port_ok(Port);
peer_ok(_) -> false.

port_ok(P) -> is_integer(P) andalso P >= 0 andalso P =< 65535.

%% The plain mountpoints and client ids of the generators, below any
%% length bound.
subscriber_key({Mp, Cid}) when is_binary(Cid), byte_size(Cid) < 65535 ->
    case lists:member(Mp, ["", "mp1", <<"mp1">>, <<>>]) of
        true -> {ok, {iolist_to_binary(Mp), Cid}};
        false -> error
    end;
subscriber_key(_) -> error.

%% Listener and certificate data within the NIF's 65535-byte bound for
%% every field (anything that is not a map is ignored by the hook).
meta_ok(Meta) when is_map(Meta) ->
    lists:all(fun(V) -> not is_binary(V) orelse byte_size(V) =< 65535 end, maps:values(Meta));
meta_ok(_) -> true.

user_ok(undefined) -> true;
user_ok(U) -> is_binary(U) andalso byte_size(U) < 65535.

no_secret(Result) ->
    Bin = term_to_binary(Result),
    not lists:any(fun(S) -> binary:match(Bin, S) =/= nomatch end, ?SECRETS).

shorten(Term) when is_binary(Term), byte_size(Term) > 64 -> {binary, byte_size(Term)};
shorten(Term) when is_list(Term) -> try [shorten(T) || T <- Term] catch _:_ -> Term end;
shorten(Term) when is_tuple(Term) -> list_to_tuple(shorten(tuple_to_list(Term)));
shorten(Term) -> Term.

%%--------------------------------------------------------------------
%% Generators
%%--------------------------------------------------------------------

settings(File) ->
    ?LET({Default, Unknown, Anon, WithFile, Cache},
         {oneof([allow, deny, next]), oneof([next, deny]), boolean(), boolean(),
          oneof([0, 3, 10000])},
         maps:merge(#{default_decision => Default, unknown_user => Unknown,
                      allow_anonymous => Anon, auth_cache_size => Cache},
                    case WithFile of true -> #{password_file => File}; false -> #{} end)).

hook_call() ->
    frequency([{5, auth_call()}, {4, lifecycle_call()}, {1, garbage_call()}]).

slot() -> choose(0, ?POOL - 1).

auth_call() ->
    oneof([?LET({S, P, Sid, U, Pw, C}, {slot(), peer(), subscriber_id(), user(), password(), flag()},
                {S, auth_on_register, [P, Sid, U, Pw, C]}),
           ?LET({S, P, Sid, U, Pw, C, M}, {slot(), peer(), subscriber_id(), user(), password(), flag(), meta()},
                {S, auth_on_register, [P, Sid, U, Pw, C, M]}),
           ?LET({S, P, Sid, U, Pw, C, Pr}, {slot(), peer(), subscriber_id(), user(), password(), flag(), props()},
                {S, auth_on_register_m5, [P, Sid, U, Pw, C, Pr]}),
           ?LET({S, P, Sid, U, Pw, C, Pr, M},
                {slot(), peer(), subscriber_id(), user(), password(), flag(), props(), meta()},
                {S, auth_on_register_m5, [P, Sid, U, Pw, C, Pr, M]})]).

lifecycle_call() ->
    oneof([?LET({S, P, Sid, U}, {slot(), peer(), subscriber_id(), user()}, {S, on_register, [P, Sid, U]}),
           ?LET({S, P, Sid, U, Pr}, {slot(), peer(), subscriber_id(), user(), props()},
                {S, on_register_m5, [P, Sid, U, Pr]}),
           ?LET({S, H, Sid}, {slot(), queue_hook(), subscriber_id()}, {S, H, [Sid]})]).

queue_hook() -> oneof([on_client_wakeup, on_client_offline, on_client_gone, on_session_expired]).

%% Any term in any position.
garbage_call() ->
    ?LET({S, {Hook, Arity}, Args},
         {slot(), oneof(hooks()), vector(7, any_term())},
         {S, Hook, lists:sublist(Args, Arity)}).

hooks() ->
    [{auth_on_register, 5}, {auth_on_register, 6}, {auth_on_register_m5, 6},
     {auth_on_register_m5, 7}, {on_register, 3}, {on_register_m5, 4},
     {on_client_wakeup, 1}, {on_client_offline, 1}, {on_client_gone, 1},
     {on_session_expired, 1}].

well_formed_call() ->
    ?LET({S, Kind, Sid, Clean, U},
         {slot(), oneof([auth3, auth5, register, wakeup, offline, gone, expired]),
          elements([{"", <<"w1">>}, {"", <<"w2">>}, {"mp1", <<"w1">>}, {"", <<"w3">>}]),
          boolean(), elements([undefined, <<"alice">>])},
         begin
             Peer = {{10, 0, 0, S + 1}, 40000 + S},
             Pw = case U of undefined -> undefined; _ -> <<"alice-secret-pw">> end,
             case Kind of
                 auth3 -> {S, auth_on_register, [Peer, Sid, U, Pw, Clean]};
                 auth5 -> {S, auth_on_register_m5, [Peer, Sid, U, Pw, Clean, #{}]};
                 register -> {S, on_register, [Peer, Sid, U]};
                 wakeup -> {S, on_client_wakeup, [Sid]};
                 offline -> {S, on_client_offline, [Sid]};
                 gone -> {S, on_client_gone, [Sid]};
                 expired -> {S, on_session_expired, [Sid]}
             end
         end).

decrypt_behaviour() ->
    oneof([exactly(fun({encrypted, B}) -> B end),
           exactly(fun(_) -> <<"alice-secret-pw">> end),
           exactly(fun(_) -> "alice-secret-pw" end),
           exactly(fun(_) -> [<<"alice">>, "-secret-pw"] end),
           exactly(fun(_) -> undefined end),
           exactly(fun(_) -> {error, bad} end),
           exactly(fun(_) -> [1 | 2] end),
           exactly(fun(_) -> [16#110000] end),
           exactly(fun(_) -> error(decrypt_failed) end),
           exactly(fun(_) -> throw(decrypt_thrown) end),
           exactly(fun(_) -> exit(decrypt_exit) end)]).

%% --- arguments ---

peer() ->
    frequency([{6, {ipv4(), port()}},
               {3, {ipv6(), port()}},
               {2, odd_peer()}]).

ipv4() -> {byte(), byte(), byte(), byte()}.
ipv6() -> oneof([{word(), word(), word(), word(), word(), word(), word(), word()},
                 {0, 0, 0, 0, 0, 16#ffff, 16#7f00, 1},
                 {0, 0, 0, 0, 0, 0, 0, 1}]).
word() -> choose(0, 65535).
port() -> choose(0, 65535).

odd_peer() ->
    oneof([{{256, 0, 0, 1}, 1883}, {{-1, 0, 0, 1}, 1883}, {{1, 2, 3}, 1883},
           {{1, 2, 3, 4, 5, 6, 7, 70000}, 1}, {{1, 2, 3, 4}, -1}, {{1, 2, 3, 4}, 65536},
           {{1, 2, 3, 4}, 1 bsl 70}, {"127.0.0.1", 1883}, {<<"::1">>, 1883},
           {local, <<"/var/run/mqtt.sock">>}, {{1.0, 2, 3, 4}, 1}, {{a, b, c, d}, 1},
           {{1, 2, 3, 4}, 1, extra}, undefined, any_term()]).

subscriber_id() ->
    frequency([{8, {mountpoint(), client_id()}},
               {1, {any_term(), any_term()}},
               {1, any_term()}]).

mountpoint() ->
    oneof(["", "", "mp1", <<"mp1">>, <<>>, [1055, 1088, 1080], [16#D800], [16#110000],
           ["a", ["b", [$c]]], [$a | $b], mp, [-1], deep_list()]).

client_id() ->
    frequency([{6, elements([<<"c1">>, <<"c2">>, <<"c3">>, <<"c4">>])},
               {1, <<>>},
               {1, elements([<<255, 254, 0>>, <<16#C0, 16#80>>, <<"é"/utf8>>])},
               {1, binary()},
               {1, huge_binary()},
               {1, "charlist-id"}]).

user() ->
    frequency([{4, elements([<<"alice">>, <<"bob">>, <<"carol">>, <<"nobody">>])},
               {3, undefined},
               {1, elements([<<>>, <<255, 0, 255>>, <<"al", 0, "ice">>])},
               {1, huge_binary()},
               {1, any_term()}]).

password() ->
    frequency([{4, elements(?SECRETS)},
               {2, undefined},
               {2, ?LET(S, elements(?SECRETS), oneof([{plaintext, S}, {encrypted, S}]))},
               {1, elements([<<>>, <<0>>, {plaintext, <<>>}, {encrypted, 42}, {plaintext, undefined}])},
               {1, huge_binary()},
               {1, any_term()}]).

flag() -> oneof([true, false, 0, 1, 2, undefined, "true"]).

props() -> oneof([#{}, #{p_session_expiry_interval => choose(0, 4294967295)},
                  #{p_user_property => [{<<"k">>, <<"v">>}]}, any_term()]).

meta() ->
    oneof([#{},
           #{client_cert => oneof([binary(), huge_binary(), <<>>, not_a_cert])},
           ?LET({A, P, T}, {oneof([ipv4(), ipv6(), "0.0.0.0", any_term()]),
                            oneof([port(), -5, 1 bsl 40, any_term()]),
                            oneof([mqtt, mqtts, ws, wss, <<"mqtt">>, undefined, any_term()])},
                #{listener_addr => A, listener_port => P, listener_type => T}),
           #{listener_port => 1883, client_cert => <<"junk DER">>, extra => [self()]},
           any_term()]).

huge_binary() ->
    ?LET({Size, Byte}, {oneof([65535, 65536, 70000, 1 bsl 20]), byte()},
         binary:copy(<<Byte>>, Size)).

deep_list() ->
    ?LET(D, choose(1, 200), lists:foldl(fun(_, Acc) -> [Acc] end, "x", lists:seq(1, D))).

any_term() ->
    oneof([resize(8, any()), atom(), self(), make_ref(), 1 bsl 100, -1.5,
           huge_binary(), deep_list(), #{a => [1, {2}]}, fun erlang:self/0]).
