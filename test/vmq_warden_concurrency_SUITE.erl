%% Thousands of Erlang processes drive random session lifecycles against the
%% real NIF at the same time. Each subscriber id has one driver process that
%% plays the broker: it spawns the connection and queue processes the broker
%% would use and calls the hooks from them in one of the orders observed on a
%% real broker (docs/VERNEMQ.md, "Processes and hook order"), including both takeover races:
%%   - the new connection's on_register against the old queue's offline/gone
%%     (two processes, issued at the same time);
%%   - the old queue's late on_client_gone against the new queue's wakeup
%%     (clean takeover: the old queue replies to the cleanup before it calls
%%     on_client_gone).
%% Every driver keeps a model of the outcome (absent / online / offline,
%% clean flag). At the end the registry must hold exactly the modelled
%% sessions: no lost session (modelled but absent), no ghost (present but
%% not modelled), no duplicate (a subscriber id listed twice), counts()
%% equal to a recount. Then every session is ended and nothing may remain.
-module(vmq_warden_concurrency_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(U, vmq_warden_robust_util).
-define(CHAIN, vmq_hook_chain).

all() ->
    [concurrent_lifecycles_match_the_model,
     storm_on_few_ids_stays_consistent,
     same_id_connects_at_once].

suite() -> [{timetrap, {minutes, 10}}].

init_per_suite(Config) ->
    ok = vmq_plugin_harness:enable(vmq_warden),
    Config.

end_per_suite(_Config) ->
    _ = vmq_plugin_harness:disable(vmq_warden),
    ok.

init_per_testcase(_Case, Config) ->
    ok = ?U:set_env(#{default_decision => allow, allow_anonymous => true}),
    vmq_warden_nif:reset(),
    Config.

end_per_testcase(_Case, _Config) ->
    ?U:reset_env(),
    ok = vmq_warden_config:apply().

ids() -> ?U:numtests("WARDEN_CONCURRENCY_IDS", 2000).
steps() -> ?U:numtests("WARDEN_CONCURRENCY_STEPS", 12).

%%--------------------------------------------------------------------
%% Cases
%%--------------------------------------------------------------------

concurrent_lifecycles_match_the_model(_Config) ->
    N = ids(),
    Steps = steps(),
    Self = self(),
    T0 = erlang:monotonic_time(millisecond),
    Drivers = [spawn_link(fun() -> driver(Self, I, Steps) end) || I <- lists:seq(1, N)],
    [D ! go || D <- Drivers],
    Results = [receive {done, D, R} -> R after 300000 -> error({driver_timeout, D}) end
               || D <- Drivers],
    T1 = erlang:monotonic_time(millisecond),
    Expected = maps:from_list([{Sid, S} || {Sid, S, _Procs} <- Results, S =/= absent]),
    Sessions = ?U:all_sessions(),
    Present = [{Mp, Cid} || #{mountpoint := Mp, client_id := Cid} <- Sessions],
    ?assertEqual(length(Present), length(lists:usort(Present)), duplicated_sessions),
    Lost = [Sid || Sid <- maps:keys(Expected), not lists:member(Sid, Present)],
    Ghost = [Sid || Sid <- Present, not maps:is_key(Sid, Expected)],
    ?assertEqual({[], []}, {Lost, Ghost}),
    Wrong = [{Sid, Want, Got} || #{mountpoint := Mp, client_id := Cid, state := St,
                                   clean_session := Cl} <- Sessions,
                                 Sid <- [{Mp, Cid}],
                                 Want <- [maps:get(Sid, Expected)],
                                 Got <- [{St, Cl}],
                                 not matches(Want, Got)],
    ?assertEqual([], Wrong),
    ?assertEqual(true, ?U:registry_consistent()),
    Online = length([x || {online, _} <- maps:values(Expected)]),
    Offline = length([x || {offline, _} <- maps:values(Expected)]),
    ?assertEqual(#{authenticated => 0, online => Online, offline => Offline}, vmq_warden:counts()),
    Stale = maps:get(stale_events, maps:get(registry, vmq_warden:stats())),
    ct:pal("~p ids x ~p steps in ~p ms: ~p online, ~p offline, ~p stale events ignored",
           [N, Steps, T1 - T0, Online, Offline, Stale]),
    %% Tear down from the processes that own the sessions: nothing may remain.
    [teardown(Sid, S, Procs) || {Sid, S, Procs} <- Results],
    ?assertEqual(#{authenticated => 0, online => 0, offline => 0}, vmq_warden:counts()),
    ?assertEqual([], ?U:all_sessions()),
    [?CHAIN:stop_proc(P) || {_, _, Procs} <- Results, P <- maps:values(Procs)],
    ok.

%% Many processes firing random well-formed hooks at a handful of ids at
%% once. The outcome is not modelled; the registry must stay consistent.
storm_on_few_ids_stays_consistent(_Config) ->
    Self = self(),
    Sids = [{"", <<"storm-", (integer_to_binary(I))/binary>>} || I <- lists:seq(1, 5)],
    Workers = [spawn_link(fun() -> storm_worker(Self, Sids, 200) end) || _ <- lists:seq(1, 500)],
    [receive {storm_done, W} -> ok after 120000 -> error(storm_timeout) end || W <- Workers],
    ?assertEqual(true, ?U:registry_consistent()),
    ?assert(length(?U:all_sessions()) =< length(Sids)),
    ?assertEqual(<<"pong">>, vmq_warden_nif:ping()).

storm_worker(Parent, Sids, N) ->
    rand:seed(exsss, {erlang:phash2(self()), 7, 11}),
    Peer = {{127, 0, 0, 1}, 1883},
    [begin
         Sid = lists:nth(rand:uniform(length(Sids)), Sids),
         R = case rand:uniform(7) of
                 1 -> vmq_warden_hooks:auth_on_register(Peer, Sid, undefined, undefined, rand:uniform(2) =:= 1);
                 2 -> vmq_warden_hooks:on_register(Peer, Sid, undefined);
                 3 -> vmq_warden_hooks:on_client_wakeup(Sid);
                 4 -> vmq_warden_hooks:on_client_offline(Sid);
                 5 -> vmq_warden_hooks:on_client_gone(Sid);
                 6 -> vmq_warden_hooks:on_session_expired(Sid);
                 7 -> vmq_warden_hooks:auth_on_register_m5(Peer, Sid, undefined, undefined, true, #{})
             end,
         true = (R =:= ok) orelse ?U:valid_answer(3, R)
     end || _ <- lists:seq(1, N)],
    Parent ! {storm_done, self()}.

%%--------------------------------------------------------------------
%% The driver of one subscriber id
%%--------------------------------------------------------------------

matches({State, Clean}, {State, Clean}) -> true;
matches(_, _) -> false.

%% Model: absent | {online, Clean} | {offline, false}; Procs: #{conn, queue}.
driver(Parent, I, Steps) ->
    rand:seed(exsss, {I, erlang:phash2(self()), 42}),
    Sid = {mountpoint(I), <<"c-", (integer_to_binary(I))/binary>>},
    receive go -> ok end,
    {State, Procs} = lists:foldl(fun(_, Acc) -> step(Sid, Acc) end, {absent, #{}}, lists:seq(1, Steps)),
    Parent ! {done, self(), {Sid, State, Procs}}.

mountpoint(I) when I rem 10 =:= 0 -> "mp1";
mountpoint(_) -> "".

bool() -> rand:uniform(2) =:= 1.

step(Sid, {absent, Procs}) ->
    %% New client (or a new session after gone/expired): new connection, new queue.
    stop_all(Procs),
    Clean = bool(),
    [S, Q] = procs(2),
    connect(S, Q, Sid, Clean),
    {{online, Clean}, #{conn => S, queue => Q}};
step(Sid, {{offline, false}, #{queue := Q} = Procs}) ->
    case rand:uniform(3) of
        1 ->
            %% persistent reconnect: the queue is woken up again
            [S] = procs(1),
            stop(maps:get(conn, Procs, undefined)),
            connect(S, Q, Sid, false),
            {{online, false}, Procs#{conn => S}};
        2 ->
            %% clean connect over the offline session: the broker removes
            %% the old queue without a hook; a new queue wakes up
            [S, Q2] = procs(2),
            connect(S, Q2, Sid, true),
            stop_all(Procs),
            {{online, true}, #{conn => S, queue => Q2}};
        3 ->
            ok = call(Q, on_session_expired, [Sid]),
            {absent, Procs}
    end;
step(Sid, {{online, OldClean}, #{conn := S1, queue := Q1} = Procs}) ->
    case rand:uniform(5) of
        1 when OldClean ->
            ok = call(Q1, on_client_gone, [Sid]),
            {absent, Procs};
        1 ->
            ok = call(Q1, on_client_offline, [Sid]),
            {{offline, false}, Procs};
        _ ->
            takeover(Sid, OldClean, bool(), S1, Q1)
    end.

%% The four takeover orders of docs/VERNEMQ.md, with the two processes of
%% each race issued at once.
takeover(Sid, OldClean, NewClean, S1, Q1) ->
    [S2] = procs(1),
    ok = auth(S2, Sid, NewClean),
    Result =
        case {OldClean, NewClean} of
            {false, false} ->
                %% auth@S2, offline@Q1 || on_register@S2, wakeup@Q1
                race([{Q1, on_client_offline, [Sid]}], [{S2, on_register, [peer(), Sid, undefined]}]),
                ok = call(Q1, on_client_wakeup, [Sid]),
                {{online, false}, #{conn => S2, queue => Q1}};
            {true, false} ->
                %% auth@S2, gone@Q1 || on_register@S2, wakeup@Q1 (queue reused)
                race([{Q1, on_client_gone, [Sid]}], [{S2, on_register, [peer(), Sid, undefined]}]),
                ok = call(Q1, on_client_wakeup, [Sid]),
                {{online, false}, #{conn => S2, queue => Q1}};
            {_, true} ->
                %% auth@S2, gone@Q1 || (wakeup@Q2, on_register@S2): the old
                %% queue's gone may come after the new queue's wakeup
                [Q2] = procs(1),
                race([{Q1, on_client_gone, [Sid]}],
                     [{Q2, on_client_wakeup, [Sid]}, {S2, on_register, [peer(), Sid, undefined]}]),
                stop(Q1),
                {{online, true}, #{conn => S2, queue => Q2}}
        end,
    stop(S1),
    Result.

teardown(_Sid, absent, _Procs) -> ok;
teardown(Sid, {online, true}, #{queue := Q}) -> ok = call(Q, on_client_gone, [Sid]);
teardown(Sid, {online, false}, #{queue := Q}) ->
    ok = call(Q, on_client_offline, [Sid]),
    ok = call(Q, on_session_expired, [Sid]);
teardown(Sid, {offline, false}, #{queue := Q}) -> ok = call(Q, on_session_expired, [Sid]).

%%--------------------------------------------------------------------
%% Hook calls from the right processes
%%--------------------------------------------------------------------

peer() -> {{10, 1, 2, 3}, 50000}.

procs(N) -> [?CHAIN:spawn_proc() || _ <- lists:seq(1, N)].

stop(undefined) -> ok;
stop(P) -> ?CHAIN:stop_proc(P).

stop_all(Procs) -> [stop(P) || P <- maps:values(Procs)], ok.

auth(S, Sid, Clean) ->
    ?CHAIN:in_proc(S, fun() -> vmq_warden_hooks:auth_on_register(peer(), Sid, undefined, undefined, Clean) end).

call(Proc, Hook, Args) ->
    ?CHAIN:in_proc(Proc, fun() -> apply(vmq_warden_hooks, Hook, Args) end).

connect(S, Q, Sid, Clean) ->
    ok = auth(S, Sid, Clean),
    ok = call(Q, on_client_wakeup, [Sid]),
    ok = call(S, on_register, [peer(), Sid, undefined]).

%% Two sequences of hook calls, each in order, the two at the same time.
race(SeqA, SeqB) ->
    Self = self(),
    Run = fun(Seq) ->
                  spawn_link(fun() ->
                                     [ok = call(P, H, A) || {P, H, A} <- Seq],
                                     Self ! {raced, self()}
                             end)
          end,
    %% Randomise which side starts first, too.
    {First, Second} = case bool() of true -> {SeqA, SeqB}; false -> {SeqB, SeqA} end,
    Pids = [Run(First), Run(Second)],
    [receive {raced, P} -> ok after 10000 -> error(race_timeout) end || P <- Pids],
    ok.

%%--------------------------------------------------------------------
%% Many clients with one client id connect at once (docs/VERNEMQ.md,
%% "Concurrent connects"): every client authenticates in its own process at
%% the same time; a registrar per id stands for the broker, registering the
%% clients one after the other in the order their requests reach it, with
%% each takeover's queue hooks from the queue processes, and each client
%% runs its on_register when its registration returns; then the last one
%% disconnects. Model: one session per id while connected; at the end
%% offline (persistent) or nothing (clean); connect_count = clients;
%% endings: one taken_over per replaced client and one gone/offline.
%%--------------------------------------------------------------------

same_id_connects_at_once(_Config) ->
    Ids = [{"", <<"same-", (integer_to_binary(N))/binary>>} || N <- lists:seq(1, 150)],
    Self = self(),
    Registrars = [{Sid, spawn_link(fun() -> registrar(Sid, Self) end)} || Sid <- Ids],
    Clients = [{Sid, Reg, rand:uniform(2) =:= 1} || {Sid, Reg} <- Registrars,
                                                    _ <- lists:seq(1, 2 + rand:uniform(2))],
    Go = make_ref(),
    Pids = [spawn_link(fun() -> client(Sid, Reg, Clean, Go, Self) end) || {Sid, Reg, Clean} <- Clients],
    [P ! Go || P <- Pids],
    [receive {registered, P} -> ok after 20000 -> error(client_timeout) end || P <- Pids],
    %% all registered: exactly one online session per id, the last registrant
    [begin
         Reg ! {last, self()},
         {Conn, Clean, N} = receive {last, Reg, L} -> L after 5000 -> error(no_last) end,
         {ok, S} = vmq_warden:lookup(Sid),
         ?assertMatch(#{state := online, clean_session := Clean, connect_count := N,
                        pending_generation := undefined}, S, Sid),
         _ = Conn
     end || {Sid, Reg} <- Registrars],
    ?assertEqual(length(Ids), maps:get(online, vmq_warden:counts())),
    %% the last client of each id disconnects
    [Reg ! {disconnect, self()} || {_, Reg} <- Registrars],
    [receive {disconnected, Reg} -> ok after 5000 -> error(no_disconnect) end || {_, Reg} <- Registrars],
    Endings = vmq_warden:recent_endings(100000),
    [begin
         Mine = [R || #{client_id := C, reason := R} <- Endings, C =:= element(2, Sid)],
         N = length([x || {S, _, _} <- Clients, S =:= Sid]),
         ?assertEqual(N - 1, length([R || R <- Mine, R =:= taken_over]), Sid),
         ?assertEqual(1, length([R || R <- Mine, R =:= gone orelse R =:= offline]), Sid),
         case vmq_warden:lookup(Sid) of
             not_found -> ?assert(lists:member(gone, Mine), Sid);
             {ok, #{state := offline}} -> ?assert(lists:member(offline, Mine), Sid)
         end
     end || Sid <- Ids],
    ?assertEqual(0, maps:get(online, vmq_warden:counts())),
    ?assertEqual(0, maps:get(authenticated, vmq_warden:counts())),
    [unlink(P) || P <- Pids ++ [R || {_, R} <- Registrars]],
    ok.

client(Sid, Reg, Clean, Go, Test) ->
    receive Go -> ok end,
    Peer = {{127, 0, 0, 1}, 40000 + rand:uniform(20000)},
    ok = ?CHAIN:all_till_ok(auth_on_register, [Peer, Sid, undefined, undefined, Clean], ?CHAIN:plugins()),
    Reg ! {register, self(), Clean},
    receive registered -> ok end,
    ok = ?CHAIN:all(on_register, [Peer, Sid, undefined], ?CHAIN:plugins()),
    Reg ! {on_register_done, self()},
    Test ! {registered, self()},
    receive stop -> ok end.

%% The broker's side for one id: the current queue and clean flag.
registrar(Sid, Test) -> registrar(Sid, Test, undefined, 0).

registrar(Sid, Test, Cur, N) ->
    receive
        {register, Conn, Clean} ->
            Queue = case Cur of
                        undefined -> new_queue();
                        {_, Q, false} when not Clean -> queue_hook(Q, on_client_offline, Sid), Q;
                        {_, Q, true} when not Clean -> queue_hook(Q, on_client_gone, Sid), Q;
                        {_, Q, _} -> queue_hook(Q, on_client_gone, Sid), new_queue()
                    end,
            queue_hook(Queue, on_client_wakeup, Sid),
            Conn ! registered,
            receive {on_register_done, Conn} -> ok end,
            registrar(Sid, Test, {Conn, Queue, Clean}, N + 1);
        {last, From} ->
            {Conn, _, Clean} = Cur,
            From ! {last, self(), {Conn, Clean, N}},
            registrar(Sid, Test, Cur, N);
        {disconnect, From} ->
            {_, Q, Clean} = Cur,
            queue_hook(Q, case Clean of true -> on_client_gone; false -> on_client_offline end, Sid),
            From ! {disconnected, self()}
    end.

new_queue() -> ?CHAIN:spawn_proc().

queue_hook(Q, Hook, Sid) ->
    ok = ?CHAIN:in_proc(Q, fun() -> ?CHAIN:all(Hook, [Sid], ?CHAIN:plugins()) end).
