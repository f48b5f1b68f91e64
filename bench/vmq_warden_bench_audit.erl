%% @doc The stall audit of `vmq_warden_bench': the plugin's workloads again,
%% with every NIF call's wall time, its thread's CPU time and whether the
%% thread blocked recorded in the NIF (vmq_warden_nif:call_times/0, the
%% `diagnostics' feature), and the machine's own calibration.
-module(vmq_warden_bench_audit).

-export([stall_audit/2, print_calls/1]).

%%--------------------------------------------------------------------
%% Stall audit: the plugin's workloads again, with every NIF call's wall
%% time, its thread's CPU time and whether the thread blocked recorded in
%% the NIF (vmq_warden_nif:call_times/0). A separate pass, because reading
%% the thread clocks costs system calls that would distort the timed rows.
%%--------------------------------------------------------------------

stall_audit(_Opts, false) ->
    [];
stall_audit(#{n := N, life := L, life_keys := K, slow_users := SU, hits := H,
              scale_n := ScaleN, lookups := NL, list_reps := Reps,
              calibration_ms := CalMs}, true) ->
    M = vmq_warden_hooks,
    S = erlang:system_info(schedulers_online),
    Logins = fun() ->
                     %% while the bench's password file is configured; a reload
                     %% empties the verification cache, so the slow hashes run again
                     ok = vmq_warden:reload(),
                     Login = vmq_warden_bench:login_fun(vmq_warden_hooks, vmq_warden_bench:keyset("apw", H + 2 * SU)),
                     [begin
                          C = vmq_warden_bench:credentials(Kind, SU),
                          [Login(C, I, I) || I <- lists:seq(1, SU)],
                          vmq_warden_bench:loop(fun(I) -> Login(C, (I rem SU) + 1, I) end, 1, H)
                      end || Kind <- ["bcrypt", "argon2id"]],
                     C6 = vmq_warden_bench:credentials("sha512", 1000),
                     vmq_warden_bench:loop(fun(I) -> Login(C6, (I rem 1000) + 1, I) end, 1, H),
                     application:unset_env(vmq_warden, password_file),
                     ok = vmq_warden:reload()
             end,
    Phases = [{"logins", Logins},
              {"each hook", fun() -> vmq_warden_bench:hook_rows("audit", M, N) end},
              {"lifecycles", fun() -> vmq_warden_bench:life_run(M, "audit", S, K, max(2, 2 * (L div (2 * K)))) end},
              {"registry at scale", fun() -> vmq_warden_bench:scale_one("audit", M, ScaleN, NL, Reps) end},
              {"calibration", fun() -> calibration(S, CalMs) end}],
    PerPhase = [{Name, audit_phase(F)} || {Name, F} <- Phases],
    ok = vmq_warden_nif:call_times_stop(),
    %% where the calls over 1 ms of CPU were, if any
    [io:format("  (stall audit, ~s: ~s)~n",
               [Name, lists:join(", ", [io_lib:format("~s ~p over 1 ms of CPU (max ~.1f us)",
                                                      [Nif, OC, MC / 1000])
                                         || #{nif := Nif, over_cpu := OC, max_cpu := MC} <- Calls,
                                            OC > 0])])
     || {Name, Calls} <- PerPhase, lists:any(fun(#{over_cpu := OC}) -> OC > 0 end, Calls)],
    merge_calls(lists:append([Calls || {_, Calls} <- PerPhase])).

%% The machine's own share of calls over 1 ms: one process per scheduler
%% calls vmq_warden_nif:calibrate/1 (about 1 us of arithmetic, no memory,
%% no lock) for Ms milliseconds, timed like the plugin's calls. On a
%% dedicated machine none of these goes over 1 ms of CPU; each that does
%% is time the thread's CPU clock counted that no code of ours spent.
calibration(Procs, Ms) ->
    %% rounds for about 1 us per call, measured here
    T0 = vmq_warden_bench:now_ns(),
    vmq_warden_bench:loop(fun(_) -> vmq_warden_nif:calibrate(1000) end, 1, 10000),
    Rounds = max(1, round(1000 * 1000 / max(1.0, (vmq_warden_bench:now_ns() - T0) / 10000))),
    Deadline = vmq_warden_bench:now_ns() + Ms * 1000000,
    Spin = fun Spin(Calls) ->
                   case vmq_warden_bench:now_ns() < Deadline of
                       true ->
                           vmq_warden_bench:loop(fun(_) -> vmq_warden_nif:calibrate(Rounds) end, 1, 1000),
                           Spin(Calls + 1000);
                       false ->
                           Calls
                   end
           end,
    vmq_warden_bench:parallel(fun(_) -> Spin(0) end, lists:duplicate(Procs, x)).

%% The figures of one phase: call timing restarted (zeroed) for it.
audit_phase(F) ->
    ok = vmq_warden_nif:call_times_start(),
    _ = F(),
    [#{nif => binary_to_list(Name), sched => binary_to_atom(Sched), calls => C,
       max_wall => MW, max_cpu => MC, over_wall => OW, over_cpu => OC,
       blocked => B, over_wall_blocked => OWB, over_cpu_faults => PF}
     || {Name, Sched, #{calls := C, max_wall_ns := MW, max_cpu_ns := MC, over_wall := OW,
                        over_cpu := OC, blocked := B, over_wall_blocked := OWB,
                        over_cpu_page_faults := PF}} <- vmq_warden_nif:call_times()].

%% One row per NIF over all phases: counts summed, maxima kept.
merge_calls(Rows) ->
    Add = fun(A, B) ->
                  maps:map(fun(K, V) when K =:= max_wall; K =:= max_cpu -> max(V, maps:get(K, B));
                              (K, V) when is_integer(V) -> V + maps:get(K, B);
                              (_, V) -> V
                           end, A)
          end,
    ByNif = lists:foldl(fun(#{nif := Nif} = R, Acc) ->
                                maps:update_with(Nif, fun(A) -> Add(A, R) end, R, Acc)
                        end, #{}, Rows),
    [R || {_, R} <- lists:sort(maps:to_list(ByNif))].

print_calls([]) ->
    ok;
print_calls(Calls) ->
    io:format("~nNIF calls during the stall audit (the plugin's workloads again, every call "
              "timed inside the NIF: wall time, the thread's CPU time, voluntary context "
              "switches)~n~n"),
    io:format("  ~-20s ~-9s ~10s ~12s ~12s ~9s ~9s ~9s ~9s ~9s~n",
              ["NIF", "scheduler", "calls", "max wall us", "max CPU us", ">1ms wall",
               ">1ms CPU", "blocked", ">1ms+blk", "faults"]),
    [io:format("  ~-20s ~-9s ~10b ~12.1f ~12.1f ~9b ~9b ~9b ~9b ~9b~n",
               [Nif, Sched, C, MW / 1000, MC / 1000, OW, OC, B, OWB, PF])
     || #{nif := Nif, sched := Sched, calls := C, max_wall := MW, max_cpu := MC,
          over_wall := OW, over_cpu := OC, blocked := B, over_wall_blocked := OWB,
          over_cpu_faults := PF} <- Calls],
    io:format("  (>1ms wall with neither >1ms CPU nor a block: the OS preempted the "
              "scheduler thread; blocked: the thread waited, on a lock or in the kernel; "
              "faults: page faults taken by the >1ms-CPU calls, whose CPU time includes them)~n"),
    ok.
