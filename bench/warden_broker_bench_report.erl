%% @doc What warden_broker_bench prints: each round's table, and the summary
%% over the rounds with the ratios the target is judged on (the method is in
%% warden_broker_bench's header and docs/BENCHMARKS.md).
-module(warden_broker_bench_report).

-export([print_round/2, summary/2]).
%% shared with the runner
-export([pct/2]).

-include("warden_broker_bench.hrl").

%%--------------------------------------------------------------------
%% One round
%%--------------------------------------------------------------------

name(null) -> "null (no hook)";
name(passwd) -> "vmq_passwd-like ref";
name(warden) -> "vmq_warden";
name(floor) -> "vmq_warden floor".

us(Ns) -> Ns / 1000.

mean([]) -> 0.0;
mean(L) -> lists:sum(L) / length(L).

pct(L, P) ->
    S = lists:sort(L),
    lists:nth(max(1, min(length(S), ceil(length(S) * P))), S).

%% Wall-time figures of one hook over a pass, in us: {median, mean, p99}.
wall_stats([]) -> {0.0, 0.0, 0.0};
wall_stats(L) -> {us(pct(L, 0.5)), us(mean(L)), us(pct(L, 0.99))}.

%% Per-hook figures of a warden/passwd pass: [{Label, Key, Filter}]
hook_keys(Impl) when Impl =:= warden; Impl =:= floor ->
    [{"auth_on_register", auth}, {"on_register", register}, {"on_client_wakeup", wakeup},
     {"on_client_gone", gone}, {"on_client_offline", offline}];
hook_keys(passwd) ->
    [{"auth_on_register", auth}];
hook_keys(null) ->
    [].

%% The wall samples of a hook: auth without the decrypt call (own time) and
%% the decrypt wait apart.
samples(Times, auth) -> [A - D || #{auth := A, decrypt := D} <- Times];
samples(Times, auth_total) -> [A || #{auth := A} <- Times];
samples(Times, decrypt) -> [D || #{decrypt := D} <- Times];
samples(Times, gone) -> [E || #{ending := E, clean := true} <- Times];
samples(Times, offline) -> [E || #{ending := E, clean := false} <- Times];
samples(Times, empty) -> [E || #{empty := E} <- Times] ++ [E || #{empty_q := E} <- Times];
samples(Times, K) -> [maps:get(K, T) || T <- Times].

hook_mfa(auth, passwd) -> ?REF_AUTH;
hook_mfa(K, floor) -> setelement(1, hook_mfa(K, warden), warden_floor_hooks);
hook_mfa(auth, _) -> {vmq_warden_hooks, auth_on_register, 5};
hook_mfa(register, _) -> {vmq_warden_hooks, on_register, 3};
hook_mfa(wakeup, _) -> {vmq_warden_hooks, on_client_wakeup, 1};
hook_mfa(gone, _) -> {vmq_warden_hooks, on_client_gone, 1};
hook_mfa(offline, _) -> {vmq_warden_hooks, on_client_offline, 1}.

ct(Traced, MFA) -> maps:get({MFA, client}, Traced, {0, 0}).

%% call_time per call of a hook in a traced pass, and the floor's.
ct_per_call(Traced, MFA) ->
    case ct(Traced, MFA) of
        {0, _} -> 0.0;
        {C, T} -> T / C
    end.

print_round(R, Res) ->
    io:format("~n== round ~p ==~n", [R]),
    io:format("  ~-22s ~8s ~11s ~13s ~13s ~10s  ~s~n",
              ["pass (wall, untraced)", "wall s", "connects/s", "CPU us/conn", "sched us/conn",
               "conn (CPU)", "connects per scheduler"]),
    {null, NullW, _} = lists:keyfind(null, 1, Res),
    [begin
         #{connects := N, wall_ns := W, runtime_ms := RT, busy_ns := B, times := Ts} = Wall,
         Sch = lists:sort(maps:to_list(lists:foldl(fun(#{sched := S}, A) ->
                                                           maps:update_with(S, fun(V) -> V + 1 end, 1, A)
                                                   end, #{}, Ts))),
         io:format("  ~-22s ~8.3f ~11b ~13.1f ~13.1f ~10s  ~w~n",
                   [name(Impl), W / 1.0e9, round(N * 1.0e9 / W), RT * 1000 / N, us(B / N),
                    case Impl of
                        null -> "-";
                        _ -> io_lib:format("+~.1f", [(RT * 1000 - maps:get(runtime_ms, NullW) * 1000) / N])
                    end,
                    [C || {_, C} <- Sch]])
     end || {Impl, Wall, _} <- Res],
    io:format("  (CPU us/conn: erlang:statistics(runtime), all VM threads; sched: busy time "
              "of the schedulers; conn (CPU): over the null pass)~n"),
    io:format("~n  ~-28s ~-17s ~31s  ~22s~n",
              ["hook", "impl", "wall us: median / mean / p99", "call_time us raw / net"]),
    [begin
         #{times := Ts} = Wall,
         #{traced := Tr} = Traced,
         Floor = ct_per_call(Tr, ?EMPTY),
         [begin
              {Md, Mn, P} = wall_stats(samples(Ts, K)),
              CT = ct_per_call(Tr, hook_mfa(K, Impl)),
              io:format("  ~-28s ~-17s ~9.2f / ~8.2f / ~8.2f  ~10.2f / ~8.2f~n",
                        [Label, name(Impl), Md, Mn, P, CT, CT - Floor])
          end || {Label, K} <- hook_keys(Impl)],
         case Impl of
             floor -> ok;
             _ ->
                 {DMd, DMn, DP} = wall_stats(samples(Ts, decrypt)),
                 io:format("  ~-28s ~-17s ~9.2f / ~8.2f / ~8.2f~n",
                           ["  (decrypt call, waited)", name(Impl), DMd, DMn, DP])
         end
     end || {Impl, Wall, Traced} <- Res, Impl =/= null],
    {_, NW, NT} = lists:keyfind(null, 1, Res),
    {EMd, EMn, EP} = wall_stats(samples(maps:get(times, NW), empty)),
    io:format("  ~-28s ~-17s ~9.2f / ~8.2f / ~8.2f  ~10.2f~n",
              ["empty function (floor)", "-", EMd, EMn, EP, ct_per_call(maps:get(traced, NT), ?EMPTY)]),
    io:format("  (wall: monotonic_time pair around the call in the calling process; auth "
              "without its decrypt call, which is the line below it; call_time net = raw - "
              "the empty function's call_time in the same traced pass)~n"),
    ok.

%%--------------------------------------------------------------------
%% Summary over all rounds
%%--------------------------------------------------------------------

%% The floor (the empty function's call_time per call over every traced
%% pass) of the processes of Role, and Net(Impl, MFA) -> {Calls, Us net of
%% that floor}.
floor_and_net(Results, Role) ->
    {FC, FT} = lists:foldl(fun(I, {C0, T0}) -> {C, T} = ct_sum(Results, I, ?EMPTY, Role),
                                               {C0 + C, T0 + T} end,
                           {0, 0}, ?IMPLS),
    Floor = FT / max(1, FC),
    {Floor, fun(Impl, MFA) -> {C, T} = ct_sum(Results, Impl, MFA, Role), {C, T - C * Floor} end}.

%% {Calls, Us} of an MFA over all traced passes of Impl.
ct_sum(Results, Impl, MFA, Role) ->
    lists:foldl(fun({C, T}, {C0, T0}) -> {C0 + C, T0 + T} end, {0, 0},
                [maps:get({MFA, Role}, Tr, {0, 0})
                 || Res <- Results, {I, _, #{traced := Tr}} <- Res, I =:= Impl]).

walls(Results, Impl) ->
    lists:append([Ts || Res <- Results, {I, #{times := Ts}, _} <- Res, I =:= Impl]).

wall_sum(Results, Impl, Key) ->
    lists:sum([maps:get(K, W) || Res <- Results, {I, W, _} <- Res, I =:= Impl, K <- [Key]]).

summary(Results, Connects) ->
    Rounds = length(Results),
    N = Connects * Rounds,
    {Floor, Net} = floor_and_net(Results, client),
    {FloorT, NetT} = floor_and_net(Results, client_trim),
    PerCall = fun({C, T}) -> T / max(1, C) end,
    WTs = walls(Results, warden),
    PTs = walls(Results, passwd),
    NTs = walls(Results, null),
    EmptyWall = mean(samples(NTs, empty)),
    WallNet = fun(Ts, K) -> mean(samples(Ts, K)) - EmptyWall end,
    io:format("~n== summary: ~p rounds x ~p connects per pass, ~p at a time ==~n",
              [Rounds, Connects, ?CONC]),
    io:format("  call_time floor (empty function, same processes): ~.3f us per call; "
              "wall floor (timer pair + empty call): ~.3f us~n", [Floor, us(EmptyWall)]),
    io:format("  (trimmed: without the processes whose call_time is above the 99th percentile; "
              "floor ~.3f us)~n", [FloorT]),
    io:format("~n  ~-20s ~8s ~18s ~14s ~18s ~17s~n",
              ["vmq_warden hook", "calls", "call_time net us", "trimmed", "wall own mean us",
               "wall own median"]),
    Hooks = [{"auth_on_register", auth}, {"on_register", register}, {"on_client_wakeup", wakeup},
             {"on_client_gone", gone}, {"on_client_offline", offline}],
    [begin
         {C, T} = Net(warden, hook_mfa(K, warden)),
         io:format("  ~-20s ~8b ~18.2f ~14.2f ~18.2f ~17.2f~n",
                   [L, C, T / max(1, C), PerCall(NetT(warden, hook_mfa(K, warden))),
                    us(WallNet(WTs, K)), us(pct(samples(WTs, K), 0.5))])
     end || {L, K} <- Hooks],
    %% per connect: every function of the plugin's modules, hooks and NIFs
    WardenCT = impl_total(Net, warden) / N,
    WardenWall = us(lists:sum([lists:sum(samples(WTs, K)) - length(samples(WTs, K)) * EmptyWall
                               || {_, K} <- Hooks]) / length(WTs)),
    WardenCTt = impl_total(NetT, warden) / N,
    {PC, _} = Net(passwd, ?REF_AUTH),
    PasswdCT = impl_total(Net, passwd) / max(1, PC),
    {PCt, _} = NetT(passwd, ?REF_AUTH),
    PasswdCTt = impl_total(NetT, passwd) / max(1, PCt),
    PasswdWall = us(WallNet(PTs, auth)),
    io:format("  ~-20s ~8s ~18.2f ~14.2f ~18.2f~n",
              ["per connect (all)", "", WardenCT, WardenCTt, WardenWall]),
    io:format("  (hook rows: the hook function's own call_time; per connect (all): every "
              "function of vmq_warden_hooks and vmq_warden_nif, so the NIFs the hooks "
              "tail-call are in it)~n"),
    io:format("~n  vmq_passwd-like ref auth_on_register (every function of warden_passwd_ref): call_time net ~.2f us per call (trimmed "
              "~.2f), wall own mean ~.2f us (median ~.2f)~n",
              [PasswdCT, PasswdCTt, PasswdWall, us(pct(samples(PTs, auth), 0.5))]),
    {DC, DT} = ct_sum(Results, warden, {credentials_obfuscation, decrypt_term, 2}, server),
    {DCp, DTp} = ct_sum(Results, passwd, {credentials_obfuscation, decrypt_term, 2}, server),
    {EC, ET} = ct_sum(Results, warden, {credentials_obfuscation, encrypt_term, 2}, server),
    io:format("  decrypt: server work (decrypt_term in credentials_obfuscation_svc, call_time) "
              "~.2f us per call (~.2f in the ref's passes; encrypt_term ~.2f us); wait seen by the "
              "hook (wall) mean ~.2f us, median ~.2f, p99 ~.2f~n",
              [DT / max(1, DC), DTp / max(1, DCp), ET / max(1, EC),
               us(mean(samples(WTs, decrypt))), us(pct(samples(WTs, decrypt), 0.5)),
               us(pct(samples(WTs, decrypt), 0.99))]),
    CPU = fun(Impl, K) -> wall_sum(Results, Impl, K) end,
    CpuW = (CPU(warden, runtime_ms) - CPU(null, runtime_ms)) * 1000 / N,
    CpuP = (CPU(passwd, runtime_ms) - CPU(null, runtime_ms)) * 1000 / N,
    BusyW = us((CPU(warden, busy_ns) - CPU(null, busy_ns)) / N),
    BusyP = us((CPU(passwd, busy_ns) - CPU(null, busy_ns)) / N),
    io:format("  CPU per connect over the null pass (decrypt server included): vmq_warden ~.1f us "
              "(scheduler busy ~.1f us), vmq_passwd-like ~.1f us (~.1f us); null pass itself "
              "~.1f us (~.1f us)~n",
              [CpuW, BusyW, CpuP, BusyP, CPU(null, runtime_ms) * 1000 / N, us(CPU(null, busy_ns) / N)]),
    Ratio = fun(A, B) when B > 0 -> A / B; (_, _) -> -1.0 end,
    %% The whole work of a hook: what it asked the library's server to
    %% decrypt is part of its cost. The plugin decrypts inside its NIF; the
    %% reference has the server do it, where neither its caller's clock
    %% (the wait is taken out) nor its call_time sees it. Only decrypt_term
    %% is added (not the server's gen_server overhead): for the reference,
    %% a lower bound.
    SrvW = DT / N,
    SrvP = DTp / max(1, DCp),
    Med = fun(Ts, K) -> us(pct(samples(Ts, K), 0.5)) end,
    Share = fun(K) -> length(samples(WTs, K)) / max(1, length(WTs)) end,
    WardenMed = lists:sum([Med(WTs, K) * Share(K) || {_, K} <- Hooks]),
    PasswdMed = Med(PTs, auth),
    Cold = persistent_term:get(?EVICT_KIB) > 0,
    WholeWall = Ratio(WardenMed + SrvW, PasswdMed + SrvP),
    WholeCpu = Ratio(CpuW, CpuP),
    CallerMed = Ratio(WardenMed, PasswdMed),
    CallerMean = Ratio(WardenWall, PasswdWall),
    io:format("~n  RATIO plugin per connect / vmq_passwd-like auth per call (target <= 0.5):~n"),
    io:format("    whole work, wall own medians + server decrypt: ~.2f / (~.2f + ~.2f) us = ~.2f  [~s]~n",
              [WardenMed + SrvW, PasswdMed, SrvP, WholeWall, met(WholeWall)]),
    io:format("    whole work, CPU per connect over null:         ~.1f / ~.1f us = ~.2f  [~s]~n",
              [CpuW, CpuP, WholeCpu,
               case Cold of
                   true -> "not judged: with --cold the evictions' own CPU swamps it";
                   false -> met(WholeCpu)
               end]),
    io:format("    caller side only, wall own medians:            ~.2f / ~.2f us = ~.2f  [~s]  "
              "(the reference's decrypt left out, the plugin's in)~n",
              [WardenMed, PasswdMed, CallerMed, met(CallerMed)]),
    io:format("    caller side only, wall own means:              ~.2f / ~.2f us = ~.2f  [~s]~n",
              [WardenWall, PasswdWall, CallerMean, met(CallerMean)]),
    io:format("    call_time, every function, net of the floor:   ~.2f / ~.2f us = ~.2f  (the in-broker "
              "method, caller side; not judged: the floor, ~.2f us a call here, is subtracted ~.1f "
              "times a connect and moves between rounds; trimmed ~.2f / ~.2f)~n",
              [WardenCT, PasswdCT, Ratio(WardenCT, PasswdCT), Floor,
               traced_calls(Results, warden) / N, WardenCTt, PasswdCTt]),
    io:format("  (call_time: the VM keeps it per process in whole microseconds, and each fresh "
              "process calls each hook once: every figure is truncated, about 0.5 us per call "
              "low, the floor too; wall own: ns, auth without its decrypt call, minus the wall "
              "floor)~n"),
    %% The same hooks without the core (warden_floor_hooks): what any native
    %% hook taking the broker's arguments costs; the rest is the plugin's work.
    FTs = walls(Results, floor),
    FloorMed = lists:sum([Med(FTs, K) * Share(K) || {_, K} <- Hooks]),
    io:format("~n  HOOK FLOOR: the same hooks with the arguments decoded and answered but no call "
              "into the core (warden_floor_hooks), wall own medians, us~n"),
    io:format("  ~-20s ~10s ~11s ~10s~n", ["hook", "floor", "vmq_warden", "the core"]),
    [io:format("  ~-20s ~10.2f ~11.2f ~10.2f~n", [L, Med(FTs, K), Med(WTs, K), Med(WTs, K) - Med(FTs, K)])
     || {L, K} <- Hooks],
    io:format("  ~-20s ~10.2f ~11.2f ~10.2f~n", ["per connect", FloorMed, WardenMed, WardenMed - FloorMed]),
    io:format("  the floor per connect / the reference's whole work: ~.2f / ~.2f us = ~.2f~n",
              [FloorMed, PasswdMed + SrvP, Ratio(FloorMed, PasswdMed + SrvP)]),
    ok.

%% Traced calls of the implementation's functions, in the client processes.
traced_calls(Results, Impl) ->
    lists:sum([element(1, ct_sum(Results, Impl, MFA, client)) || MFA <- warden_broker_bench:traced_mfas(Impl) -- [?EMPTY]]).

%% A ratio below zero (a figure under its baseline's noise) says nothing.
met(R) when R < 0 -> "not judged: below the noise";
met(R) when R =< 0.5 -> "met";
met(_) -> "NOT met".

%% The implementation's total net call_time, in us: all its functions.
impl_total(Net, Impl) ->
    MFAs = warden_broker_bench:traced_mfas(Impl) -- [?EMPTY],
    lists:sum([element(2, Net(Impl, M)) || M <- MFAs]).
