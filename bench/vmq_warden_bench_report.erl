%% @doc The printed report of `vmq_warden_bench': the table of rows, the
%% registry at scale, and the targets with their verdicts.
-module(vmq_warden_bench_report).

-export([print_table/1, print_scale/1, targets/3, print_targets/1]).

print_table(Rows) ->
    io:format("~-44s ~-11s ~12s ~12s ~14s ~10s~n",
              ["workload", "impl", "median ns", "p99 ns", "per second", "long_sched"]),
    io:format("~s~n", [lists:duplicate(108, $-)]),
    [io:format("~-44s ~-11s ~12s ~12s ~14s ~10s~n",
               [W, I, fmt(Md), fmt(P), fmt_rate(T), fmt_ls(LS)])
     || #{workload := W, impl := I, median := Md, p99 := P, tput := T, ls := LS} <- Rows],
    io:format("(lifecycle rows: median = ns per lifecycle of 4 hooks; p99 = per hook call; "
              "per second = lifecycles/s, all processes)~n"),
    ok.

fmt_ls({N, NNif}) -> integer_to_list(N) ++ "/" ++ integer_to_list(NNif);
fmt_ls(N) when is_integer(N) -> integer_to_list(N).

fmt(X) when is_float(X), X >= 100 -> integer_to_list(round(X));
fmt(X) when is_float(X) -> float_to_list(X, [{decimals, 1}]);
fmt(X) -> integer_to_list(X).

fmt_rate(0) -> "-";
fmt_rate(X) -> integer_to_list(round(X)).

print_scale(Results) ->
    io:format("~nRegistry at scale (24-byte client ids, IPv4 peers, usernames; filled by one "
              "process per scheduler with auth+wakeup+register; reads while ~p background "
              "process(es) run lifecycles)~n",
              [max(1, erlang:system_info(schedulers_online) - 1)]),
    [begin
         io:format("~n  ~s, ~p sessions~n", [Name, N]),
         io:format("    fill: ~.3f s (~p sessions/s), long_sched ~s~n",
                   [Fill / 1.0e9, round(N * 1.0e9 / Fill), fmt_ls(LSF)]),
         io:format("    memory per session: ETS ~.1f B, VM total ~.1f B, Rust heap (allocator) ~.1f B, "
                   "process RSS ~.1f B; Rust heap left after clear: ~p B~n",
                   [EtsPer, VmPer, NatPer, RssPer, NatLeft]),
         io:format("    lookup (operator API, result as a map): median ~s ns, p99 ~s ns, "
                   "~s/s, long_sched ~s~n",
                   [fmt(LM), fmt(LP), fmt_rate(LT), fmt_ls(LSL)]),
         io:format("    filtered list (~p matches of ~p, peer 172.16.0.0/12): median ~.2f ms, "
                   "p99 ~.2f ms, ~slong_sched ~s; background lifecycles meanwhile: ~p~n",
                   [Mt, N, ListM / 1.0e6, ListP / 1.0e6, fmt_longest(Longest), fmt_ls(LSList), Bg])
     end || #{impl := Name, n := N, fill_ns := Fill, ls_fill := LSF, ets_per := EtsPer,
              vm_per := VmPer, native_per := NatPer, rss_per := RssPer, native_left := NatLeft,
              lookup_median := LM, lookup_p99 := LP, lookup_tput := LT,
              ls_lookup := LSL, matches := Mt, list_median := ListM, list_p99 := ListP,
              ls_list := LSList, list_longest_call := Longest, bg_lifecycles := Bg} <- Results],
    ok.

fmt_longest(#{list_longest := Ns, list_calls := Calls, list_calls_over_1ms := {Over, All}}) ->
    io_lib:format("longest NIF call ~s us (~p calls per list; ~p of ~p over 1 ms), ",
                  [fmt(Ns / 1000), Calls, Over, All]);
fmt_longest(#{}) ->
    "".

find(Rows, W, I) ->
    case [R || #{workload := W1, impl := I1} = R <- Rows, W1 =:= W, I1 =:= I] of
        [R | _] -> R;
        [] -> undefined
    end.

targets(_, _, []) ->
    [{"all targets", "not measured: NIF not loaded", false}];
targets(Rows, Scale, Calls) ->
    S = erlang:system_info(schedulers_online),
    Multi = lists:flatten(io_lib:format("lifecycle (4 hooks), ~p proc~s", [S, [$s || S > 1]])),
    #{tput := RefT} = find(Rows, Multi, "ets ref"),
    #{tput := NifT, p99 := MultiP99} = find(Rows, Multi, "vmq_warden"),
    #{median := Noop} = find(Rows, "empty call", "nif noop/0"),
    Hooks = [find(Rows, H, "vmq_warden")
             || H <- ["auth_on_register (accept, no password)", "on_client_wakeup",
                      "on_register", "on_client_offline", "on_client_gone"]],
    WorstMed = lists:max([M || #{median := M} <- Hooks]),
    [RefS, NifS] = case Scale of
                       [A, B] -> [A, B];
                       _ -> [undefined, undefined]
                   end,
    ListCalls = maps:get(list_longest_call, NifS),
    RefPer = maps:get(ets_per, RefS),
    NifPer = maps:get(native_per, NifS) + maps:get(ets_per, NifS),
    LSs = [L || #{ls := L, impl := Impl} <- Rows, Impl =/= "ets ref", Impl =/= "-"] ++
        [maps:get(K, NifS) || K <- [ls_fill, ls_lookup, ls_list]],
    LS = lists:sum([A || {A, _} <- LSs]),
    LSNif = lists:sum([B || {_, B} <- LSs]),
    Floor = lists:sum([A || #{ls := {A, _}, workload := "empty call"} <- Rows]),
    [{"lifecycle throughput, all schedulers >= 2x ETS ref",
      io_lib:format("~.2fx (~p vs ~p lifecycles/s)", [NifT / RefT, round(NifT), round(RefT)]),
      NifT >= 2 * RefT},
     {"per-hook median <= 3x empty NIF call",
      io_lib:format("worst hook ~s ns = ~.1fx of noop ~s ns",
                    [fmt(WorstMed), WorstMed / Noop, fmt(Noop)]),
      WorstMed =< 3 * Noop},
     {"p99 per hook < 10 us under contention",
      io_lib:format("~s ns (~p processes)", [fmt(MultiP99), S]), MultiP99 < 10000},
     {"memory per session <= 1/2 ETS ref",
      io_lib:format("~.1f B vs ~.1f B (~.2fx)", [NifPer, RefPer, NifPer / RefPer]),
      NifPer =< RefPer / 2},
     {"1M sessions registered < 2 s",
      io_lib:format("~.3f s for ~p", [maps:get(fill_ns, NifS) / 1.0e9, maps:get(n, NifS)]),
      maps:get(n, NifS) >= 1000000 andalso maps:get(fill_ns, NifS) < 2.0e9},
     %% the list's own stall is its longest NIF call; long_schedule events
     %% meanwhile also count OS preemption of the schedulers (see the noop rows)
     {"filtered list of 10,000 < 50 ms, no call > 1 ms CPU",
      io_lib:format("~p matches: median ~.2f ms, p99 ~.2f ms, ~slong_sched ~s",
                    [maps:get(matches, NifS), maps:get(list_median, NifS) / 1.0e6,
                     maps:get(list_p99, NifS) / 1.0e6, fmt_longest(ListCalls),
                     fmt_ls(maps:get(ls_list, NifS))]),
      maps:get(matches, NifS) >= 10000 andalso maps:get(list_p99, NifS) < 50.0e6
          andalso list_calls_within_budget(Calls)},
     stall_target(Calls, {LS, LSNif, Floor})].

%% The list's chunks in the stall audit: none used > 1 ms of CPU (the
%% Erlang-side longest call above also counts OS preemption).
list_calls_within_budget(Calls) ->
    case [C || #{nif := "list_chunk"} = C <- Calls] of
        [#{calls := N, over_cpu := 0}] -> N > 0;
        _ -> false
    end.

%% The plugin stalls a scheduler when one of its NIF calls on a normal
%% scheduler keeps the thread busy > 1 ms: > 1 ms of the thread's CPU time.
%% A call that took > 1 ms of wall time with less CPU was preempted by the
%% OS, or blocked: on a lock whose holder (using < 1 ms of CPU, by the
%% first rule) was preempted, or in the kernel (e.g. a page fault waiting
%% for the address-space lock). Those are printed apart, with the
%% long_schedule events, which cannot tell any of them apart.
stall_target(Calls, {LS, LSNif, Floor}) ->
    Normal = [C || #{sched := normal, nif := Nif} = C <- Calls, Nif =/= "calibration"],
    Sum = fun(K) -> lists:sum([maps:get(K, C) || C <- Normal]) end,
    MaxCpu = lists:max([0 | [MC || #{max_cpu := MC} <- Normal]]),
    {"zero scheduler stalls > 1 ms (plugin workloads)",
     io_lib:format("~p of ~p normal-scheduler NIF calls used > 1 ms of CPU (max ~.1f us); "
                   "> 1 ms of wall time: ~p preempted, ~p blocked; long_schedule events "
                   "~p, ~p with an end in a NIF call, empty-call baselines ~p; ~s",
                   [Sum(over_cpu), Sum(calls), MaxCpu / 1000,
                    Sum(over_wall) - Sum(over_wall_blocked), Sum(over_wall_blocked),
                    LS, LSNif, Floor, calibration_figures(Calls)]),
     Normal =/= [] andalso Sum(over_cpu) =:= 0}.

%% Not part of the target: the same count for calls that do nothing but
%% arithmetic (calibration/2), the machine's floor.
calibration_figures(Calls) ->
    case [C || #{nif := "calibration"} = C <- Calls] of
        [#{calls := N, over_cpu := OC, max_cpu := MC}] ->
            io_lib:format("calibration (1 us of arithmetic a call): ~p of ~p calls over 1 ms "
                          "of CPU (max ~.1f us)", [OC, N, MC / 1000]);
        [] ->
            "no calibration"
    end.

print_targets(Ts) ->
    io:format("~nTargets~n"),
    [io:format("  [~s] ~-52s ~s~n", [case Met of true -> "met"; false -> "NOT met" end, T, F])
     || {T, F, Met} <- Ts],
    ok.
