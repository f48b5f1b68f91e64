%% PropEr properties over every exported hook of vmq_warden_hooks, called
%% with generated arguments, well-formed and malformed, from a pool of
%% processes standing for connections and queues (so the registry sees
%% real pid identities and real state changes).
%%
%% For every call: the hook never raises, an auth hook answers with a value
%% VerneMQ accepts (ok | next | {ok, list()} for MQTT 3 | {ok, map()} for
%% MQTT 5 | {error, _}), a lifecycle hook answers ok, and no answer carries
%% a password. After every case: counts() equals a recount of sessions/1,
%% no subscriber id is listed twice, and the NIF still answers.
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
                             %% bcrypt cost 4: takes the dirty-scheduler path
                             {"carol", "$2y$04$abcdefghijklmnopqrstuu5Nn4WsO1vMdnV6A0d6f0JrPQe2w9vbi"}]),
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
    Bad = lists:filtermap(fun(Call) -> call_checked(Pool, Call) end, Calls),
    Consistent = ?U:registry_consistent(),
    Alive = vmq_warden_nif:ping() =:= <<"pong">>,
    ?WHENFAIL(ct:pal("settings ~p~nbad answers ~p~nregistry ~p~nnif alive ~p",
                     [Cfg, Bad, Consistent, Alive]),
              Bad =:= [] andalso Consistent =:= true andalso Alive).

call_checked(Pool, {Slot, Hook, Args}) ->
    Proc = lists:nth(Slot rem length(Pool) + 1, Pool),
    Result = try vmq_hook_chain:in_proc(Proc, fun() -> apply(vmq_warden_hooks, Hook, Args) end)
             catch C:R -> {raised, C, R}
             end,
    case acceptable(Hook, Result) andalso no_secret(Result) of
        true -> false;
        false -> {true, {Hook, shorten(Args), Result}}
    end.

acceptable(auth_on_register, R) -> ?U:valid_answer(3, R);
acceptable(auth_on_register_m5, R) -> ?U:valid_answer(5, R);
acceptable(_Lifecycle, R) -> R =:= ok.

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
