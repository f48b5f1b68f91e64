%% @doc vmq_warden benchmark: the plugin (Rust NIF behind vmq_warden_hooks)
%% against same-run baselines: an empty Erlang call, an empty NIF call and
%% the pure-Erlang ETS reference (warden_ref). Run with scripts/bench.sh
%% (`make bench`, `make bench QUICK=1`).
%%
%% Method
%% - median: calls are timed in batches of ?BATCH back-to-back calls with
%%   erlang:monotonic_time(nanosecond); ns/call = batch time / ?BATCH; the
%%   median over all batches. No timer cost is in it.
%% - p99: a second pass over an identical, separate key set times every call
%%   on its own; the 99th percentile of those (includes one timer read pair,
%%   shown as the "timer" row).
%% - throughput: calls (or lifecycles) per second of the batch pass, wall
%%   clock, for all processes together.
%% - long_sched: erlang:system_monitor long_schedule events (a process or
%%   port that ran > 1 ms without yielding) during that workload's passes.
%% - longest NIF call (filtered list): the list as vmq_warden:sessions/1
%%   runs it, with each vmq_warden_nif:list_chunk/3 call timed on its own.
%% - "N sessions cached" rows: the hooks over 100 sessions, round after
%%   round, so their data stays in the CPU cache: the code path's own cost,
%%   next to the rows over 200,000 sessions that also read memory.
%% - stall audit: every plugin NIF call timed inside the NIF (wall and the
%%   thread's CPU time), then vmq_warden_nif:calibrate/1 (fixed arithmetic)
%%   the same way, as the machine's own floor of calls over 1 ms.
-module(vmq_warden_bench).

-export([main/1, run/1]).
%% spawned
-export([monitor_loop/2]).
%% The workloads and helpers the stall audit runs again (vmq_warden_bench_audit).
-export([now_ns/0, loop/3, keyset/2, hook_rows/3, life_run/5, parallel/2, credentials/2,
         login_fun/2, scale_one/5]).
%% The machine's description and load, shared with warden_broker_bench.
-export([load/0, cpu_model/0]).

-define(BATCH, 100).
-define(MON, vmq_warden_bench_mon).

%%--------------------------------------------------------------------
%% Entry
%%--------------------------------------------------------------------

main(Args) ->
    Quick = lists:member("--quick", Args),
    Scale = case [list_to_integer(S -- "--sessions=") || "--sessions=" ++ _ = S <- Args] of
                [N] -> N;
                [] when Quick -> 250000;
                [] -> 1000000
            end,
    Tiny = lists:member("--smoke", Args),
    try run(#{quick => Quick orelse Tiny, smoke => Tiny, sessions => Scale}) of
        ok -> halt(0)
    catch
        C:R:St ->
            io:format(standard_error, "bench failed: ~p:~p~n~p~n", [C, R, St]),
            halt(1)
    end.

run(Opts0) ->
    Opts = sizes(Opts0),
    T0 = erlang:monotonic_time(millisecond),
    Nif = start_plugin(),
    ok = warden_ref:init(#{nets => ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
                           client_id_re => "^[a-zA-Z0-9_-]+$",
                           allow_anonymous => true}),
    start_monitor(),
    header(Opts, Nif),
    %% first, while the registry has never grown: its tables keep their
    %% capacity after a clear, which would hide the cost of growing them
    Scale = scale(Opts, Nif),
    Rows0 = baselines(Opts, Nif),
    Rows1 = hooks(Opts, Nif),
    Rows2 = lifecycles(Opts, Nif),
    Rows3 = passwords(Opts, Nif),
    Calls = vmq_warden_bench_audit:stall_audit(Opts, Nif),
    Report = vmq_warden_bench_report,
    Report:print_table(Rows0 ++ Rows1 ++ Rows2 ++ Rows3),
    Report:print_scale(Scale),
    vmq_warden_bench_audit:print_calls(Calls),
    Report:print_targets(Report:targets(Rows0 ++ Rows1 ++ Rows2 ++ Rows3, Scale, Calls)),
    io:format("~nmachine load at end: ~s~n", [load()]),
    io:format("Total bench time: ~.1f s~n",
              [(erlang:monotonic_time(millisecond) - T0) / 1000]),
    ok.

sizes(#{smoke := true} = O) ->
    O#{n => 2000, life => 2000, life_keys => 500, scale_n => 20000, lookups => 2000,
       list_reps => 2, slow_users => 2, hits => 500, matches_every => 100,
       cached_rounds => 100, calibration_ms => 200};
sizes(#{quick := true} = O) ->
    O#{n => 20000, life => 20000, life_keys => 5000, scale_n => maps:get(sessions, O),
       lookups => 20000, list_reps => 5, slow_users => 4, hits => 5000, matches_every => 100,
       cached_rounds => 500, calibration_ms => 1000};
sizes(O) ->
    O#{n => 200000, life => 200000, life_keys => 20000, scale_n => maps:get(sessions, O),
       lookups => 200000, list_reps => 20, slow_users => 16, hits => 50000, matches_every => 100,
       cached_rounds => 2000, calibration_ms => 10000}.

start_plugin() ->
    application:load(vmq_warden),
    application:set_env(vmq_warden, default_decision, allow),
    application:set_env(vmq_warden, allow_anonymous, true),
    application:set_env(vmq_warden, reload_interval, 0),
    application:set_env(vmq_warden, log_level, error),
    ok = vmq_plugin_harness:enable(vmq_warden),
    logger:set_primary_config(level, error),
    vmq_warden_nif:loaded().

header(Opts, Nif) ->
    io:format("vmq_warden benchmark (~s)~n", [case Opts of
                                                   #{smoke := true} -> "smoke";
                                                   #{quick := true} -> "quick";
                                                   _ -> "full"
                                               end]),
    io:format("machine: ~s, ~p schedulers online, ~p dirty CPU schedulers, OTP ~s (erts ~s)~n",
              [cpu_model(), erlang:system_info(schedulers_online),
               erlang:system_info(dirty_cpu_schedulers_online),
               erlang:system_info(otp_release), erlang:system_info(version)]),
    io:format("machine load at start: ~s~n", [load()]),
    %% glibc malloc settings change the stall audit (docs/BENCHMARKS.md)
    io:format("GLIBC_TUNABLES: ~s~n", [os:getenv("GLIBC_TUNABLES", "(not set)")]),
    Nif orelse io:format("*** NIF NOT LOADED: native rows are skipped ***~n"),
    io:format("median: ns/call from batches of ~p calls; p99: ns/call timing each call "
              "(includes the timer row); long_sched: system_monitor long_schedule events > 1 ms, all/with an end in a vmq_warden_nif call~n~n", [?BATCH]).

%% Other work on the machine shows up as scheduler stalls and noise:
%% loadavg and the kernel's CPU pressure (share of time some task waited).
load() ->
    L = case file:read_file("/proc/loadavg") of
            {ok, B} -> lists:join(" ", lists:sublist(string:split(string:trim(B), " ", all), 3));
            _ -> "?"
        end,
    P = case file:read_file("/proc/pressure/cpu") of
            {ok, PB} ->
                case re:run(PB, "some avg10=([0-9.]+) avg60=([0-9.]+)", [{capture, all_but_first, binary}]) of
                    {match, [A10, A60]} -> io_lib:format(", CPU pressure some avg10=~s% avg60=~s%", [A10, A60]);
                    _ -> ""
                end;
            _ -> ""
        end,
    io_lib:format("loadavg ~s (~p CPUs)~s", [L, erlang:system_info(logical_processors_available), P]).

cpu_model() ->
    case file:read_file("/proc/cpuinfo") of
        {ok, Bin} ->
            case re:run(Bin, "model name\\s*:\\s*([^\\n]*)", [{capture, all_but_first, binary}]) of
                {match, [M]} -> binary_to_list(M);
                _ -> "unknown CPU"
            end;
        _ -> "unknown CPU"
    end.

%%--------------------------------------------------------------------
%% long_schedule monitor
%%--------------------------------------------------------------------

start_monitor() ->
    Pid = spawn(?MODULE, monitor_loop, [{0, 0}, []]),
    register(?MON, Pid),
    _ = erlang:system_monitor(Pid, [{long_schedule, 1}]),
    ok.

%% Counts events, and among them those that began or ended inside a
%% vmq_warden_nif function (where a NIF that runs too long would show).
%% An event with both ends in plain Erlang code means the OS took the CPU
%% from the scheduler thread (another program, a dirty scheduler thread).
monitor_loop({N, NNif}, Seen) ->
    receive
        {monitor, Who, long_schedule, Info} ->
            InNif = lists:any(fun({K, {vmq_warden_nif, _, _}}) when K =:= in; K =:= out -> true;
                                 (_) -> false
                              end, Info),
            monitor_loop({N + 1, NNif + if InNif -> 1; true -> 0 end},
                         lists:sublist([{Who, Info} | Seen], 5));
        {take, From} ->
            From ! {long_sched, N, NNif, Seen},
            monitor_loop({0, 0}, [])
    end.

%% Events since the last call.
long_sched() ->
    ?MON ! {take, self()},
    receive {long_sched, N, NNif, Seen} ->
            N > 0 andalso os:getenv("BENCH_VERBOSE") =/= false
                andalso io:format("  long_schedule: ~p~n", [Seen]),
            {N, NNif}
    end.

%%--------------------------------------------------------------------
%% Timing helpers
%%--------------------------------------------------------------------

now_ns() -> erlang:monotonic_time(nanosecond).

%% F(I) for I in 1..N in batches of ?BATCH: {[ns per call per batch], TotalNs}.
batches(F, N) ->
    T0 = now_ns(),
    Per = batches(F, 1, N, []),
    {Per, now_ns() - T0}.

batches(_F, I, N, Acc) when I > N -> Acc;
batches(F, I, N, Acc) ->
    Last = min(N, I + ?BATCH - 1),
    T0 = now_ns(),
    loop(F, I, Last),
    T1 = now_ns(),
    batches(F, Last + 1, N, [(T1 - T0) / (Last - I + 1) | Acc]).

loop(_F, I, N) when I > N -> ok;
loop(F, I, N) -> _ = F(I), loop(F, I + 1, N).

%% Every call timed on its own.
percall(F, N) -> percall(F, 1, N, []).
percall(_F, I, N, Acc) when I > N -> Acc;
percall(F, I, N, Acc) ->
    T0 = now_ns(),
    _ = F(I),
    T1 = now_ns(),
    percall(F, I + 1, N, [T1 - T0 | Acc]).

pct(Samples, P) ->
    S = lists:sort(Samples),
    L = length(S),
    lists:nth(max(1, min(L, ceil(L * P))), S).

median(S) -> pct(S, 0.5).

row(Workload, Impl, Median, P99, Throughput, LongSched) ->
    #{workload => Workload, impl => Impl, median => Median, p99 => P99,
      tput => Throughput, ls => LongSched}.

%% A workload measured twice over identical key sets: batches on set A,
%% per-call on set B.
measure(Workload, Impl, FA, FB, N) ->
    _ = long_sched(),
    {Per, Total} = batches(FA, N),
    Samples = percall(FB, N),
    LS = long_sched(),
    row(Workload, Impl, median(Per), pct(Samples, 0.99), N * 1.0e9 / Total, LS).

%%--------------------------------------------------------------------
%% Keys: 24-byte client ids, IPv4 peers, usernames (one per 10 clients)
%%--------------------------------------------------------------------

%% Always 24 bytes: the set tag, a dash, the index zero-padded.
cid(Set, I) ->
    iolist_to_binary(io_lib:format("~s-~*..0B", [Set, 23 - length(Set), I])).

sid(Set, I) -> {"", cid(Set, I)}.

peer(I) when I rem 100 =:= 0 -> {{192, 168, (I bsr 8) band 255, I band 255}, 1024 + I rem 60000};
peer(I) -> {{10, (I bsr 16) band 255, (I bsr 8) band 255, I band 255}, 1024 + I rem 60000}.

%% Registry-at-scale keys: every 100th in 172.16.0.0/12 (the list filter).
scale_peer(I) when I rem 100 =:= 0 -> {{172, 16 + (I bsr 16) band 15, (I bsr 8) band 255, I band 255}, 1024 + I rem 60000};
scale_peer(I) -> peer(I + 1).

user(I) -> iolist_to_binary(io_lib:format("user-~7..0B", [I div 10])).

%% Precomputed arguments, so key building is not timed.
keyset(Set, N) ->
    list_to_tuple([{sid(Set, I), peer(I), user(I)} || I <- lists:seq(1, N)]).

%%--------------------------------------------------------------------
%% Baselines
%%--------------------------------------------------------------------

baselines(#{n := N0}, Nif) ->
    N = N0 * 5,
    Timer = begin
                S = percall(fun(_) -> ok end, N),
                row("timer: monotonic_time pair", "-", 0.0, pct(S, 0.99), 0, {0, 0})
            end,
    Empty = measure("empty call", "erlang", fun(_) -> warden_ref:empty() end,
                    fun(_) -> warden_ref:empty() end, N),
    Tm = (pct(percall(fun(_) -> ok end, N), 0.5)),
    Rows = [Timer#{median => float(Tm)}, Empty],
    case Nif of
        true ->
            Noop = measure("empty call", "nif noop/0", fun(_) -> vmq_warden_nif:noop() end,
                           fun(_) -> vmq_warden_nif:noop() end, N),
            Rows ++ [Noop];
        false -> Rows
    end.

%%--------------------------------------------------------------------
%% Each hook on its own, over N distinct keys in the state that hook expects
%%--------------------------------------------------------------------

hooks(#{n := N, cached_rounds := R}, Nif) ->
    Impls = [{"ets ref", warden_ref}] ++ [{"vmq_warden", vmq_warden_hooks} || Nif],
    lists:append([hook_rows(Name, M, N) || {Name, M} <- Impls]) ++
        lists:append([cached_rows(Name, M, R) || {Name, M} <- Impls]).

hook_rows(Name, M, N) ->
    Tag = fun(S) -> lists:flatten(io_lib:format("~s~s", [tag(M), S])) end,
    %% persistent sets end offline, clean sets end gone
    [PA, PB, CA, CB] = [keyset(Tag(S), N) || S <- ["pa", "pb", "ca", "cb"]],
    Auth = fun(Ks, Clean) ->
                   fun(I) -> {Sid, Peer, _User} = element(I, Ks),
                             ok = M:auth_on_register(Peer, Sid, undefined, undefined, Clean) end
           end,
    Wake = fun(Ks) -> fun(I) -> M:on_client_wakeup(element(1, element(I, Ks))) end end,
    Reg = fun(Ks) -> fun(I) -> {Sid, Peer, User} = element(I, Ks),
                               M:on_register(Peer, Sid, User) end end,
    Off = fun(Ks) -> fun(I) -> M:on_client_offline(element(1, element(I, Ks))) end end,
    Gone = fun(Ks) -> fun(I) -> M:on_client_gone(element(1, element(I, Ks))) end end,
    R1 = measure("auth_on_register (accept, no password)", Name, Auth(PA, false), Auth(PB, false), N),
    R2 = measure("on_client_wakeup", Name, Wake(PA), Wake(PB), N),
    R3 = measure("on_register", Name, Reg(PA), Reg(PB), N),
    R4 = measure("on_client_offline", Name, Off(PA), Off(PB), N),
    [ok = loop(F, 1, N) || F <- [Auth(CA, true), Auth(CB, true), Wake(CA), Wake(CB), Reg(CA), Reg(CB)]],
    R5 = measure("on_client_gone", Name, Gone(CA), Gone(CB), N),
    %% leave nothing behind: the persistent sets end gone too
    [ok = loop(F, 1, N) || F <- [Gone(PA), Gone(PB)]],
    [R1, R2, R3, R4, R5].

%% The same hooks over only ?CACHED sessions, round after round: each call
%% finds its session's data in the CPU cache, so the figure is the cost of
%% the code path alone. The rows above, over N distinct sessions, also pay
%% for reading it from memory. Both are shown; the targets use the rows
%% above. Rounds go two persistent (ending offline), two clean (ending
%% gone), as in the lifecycle; even rounds are timed in one batch of
%% ?CACHED calls per hook, odd rounds call by call (p99).
-define(CACHED, 100).

cached_rows(Name, M, Rounds) ->
    Ks = keyset(tag(M) ++ "hot", ?CACHED),
    Sid = fun(I) -> element(1, element(I, Ks)) end,
    %% {workload, in which rounds (any, persistent, clean), call}
    Hooks = [{"auth_on_register (accept, no password)", any,
              fun(I, Clean) -> {S, Peer, _} = element(I, Ks),
                               ok = M:auth_on_register(Peer, S, undefined, undefined, Clean) end},
             {"on_client_wakeup", any, fun(I, _) -> M:on_client_wakeup(Sid(I)) end},
             {"on_register", any, fun(I, _) -> {S, Peer, User} = element(I, Ks),
                                               M:on_register(Peer, S, User) end},
             {"on_client_offline", persistent, fun(I, _) -> M:on_client_offline(Sid(I)) end},
             {"on_client_gone", clean, fun(I, _) -> M:on_client_gone(Sid(I)) end}],
    Samples = cached_rounds(Hooks, Rounds, 0, #{}),
    %% leave nothing behind: the last round was a clean one (ending gone)
    [begin
         {Batches, Calls} = maps:get(W, Samples),
         Hook = hd(string:split(W, " (")),
         row(Hook ++ ", " ++ integer_to_list(?CACHED) ++ " sessions cached", Name,
             median(Batches), pct(Calls, 0.99), 0, {0, 0})
     end || {W, _, _} <- Hooks].

cached_rounds(_Hooks, Rounds, R, Acc) when R >= Rounds, R rem 4 =:= 0 ->
    Acc;
cached_rounds(Hooks, Rounds, R, Acc0) ->
    Clean = R rem 4 >= 2,
    Kind = case Clean of true -> clean; false -> persistent end,
    Acc = lists:foldl(
            fun({W, When, F}, A) when When =:= any; When =:= Kind ->
                    Call = fun(I) -> F(I, Clean) end,
                    {B, C} = maps:get(W, A, {[], []}),
                    case R rem 2 of
                        0 ->
                            T0 = now_ns(),
                            loop(Call, 1, ?CACHED),
                            A#{W => {[(now_ns() - T0) / ?CACHED | B], C}};
                        1 ->
                            A#{W => {B, percall(Call, 1, ?CACHED, C)}}
                    end;
               (_, A) ->
                    A
            end, Acc0, Hooks),
    cached_rounds(Hooks, Rounds, R + 1, Acc).

tag(warden_ref) -> "r";
tag(_) -> "n".

%%--------------------------------------------------------------------
%% Full session lifecycle: auth_on_register, on_client_wakeup,
%% on_register, then on_client_offline (even rounds, persistent) or
%% on_client_gone (odd rounds: a clean connect over the offline session).
%%--------------------------------------------------------------------

lifecycle_fun(M, Ks) ->
    K = tuple_size(Ks),
    fun(I) ->
            {Sid, Peer, User} = element((I - 1) rem K + 1, Ks),
            Clean = ((I - 1) div K) rem 2 =:= 1,
            ok = M:auth_on_register(Peer, Sid, User, undefined, Clean),
            M:on_client_wakeup(Sid),
            M:on_register(Peer, Sid, User),
            case Clean of
                true -> M:on_client_gone(Sid);
                false -> M:on_client_offline(Sid)
            end
    end.

%% The same, each of the four hook calls timed on its own.
lifecycle_timed(M, Ks) ->
    K = tuple_size(Ks),
    fun(I, Acc0) ->
            {Sid, Peer, User} = element((I - 1) rem K + 1, Ks),
            Clean = ((I - 1) div K) rem 2 =:= 1,
            T0 = now_ns(),
            ok = M:auth_on_register(Peer, Sid, User, undefined, Clean),
            T1 = now_ns(),
            M:on_client_wakeup(Sid),
            T2 = now_ns(),
            M:on_register(Peer, Sid, User),
            T3 = now_ns(),
            case Clean of
                true -> M:on_client_gone(Sid);
                false -> M:on_client_offline(Sid)
            end,
            T4 = now_ns(),
            [T4 - T3, T3 - T2, T2 - T1, T1 - T0 | Acc0]
    end.

lifecycles(#{life := L, life_keys := K}, Nif) ->
    Impls = [{"ets ref", warden_ref}] ++ [{"vmq_warden", vmq_warden_hooks} || Nif],
    S = erlang:system_info(schedulers_online),
    %% an even number of rounds over the keys leaves every key gone
    Rounds = max(2, 2 * (L div (2 * K))),
    lists:append(
      [begin
           Single = life_run(M, Name, 1, K, Rounds),
           Multi = life_run(M, Name, S, K, Rounds),
           [Single, Multi]
       end || {Name, M} <- Impls]).

life_run(M, Name, Procs, K, Rounds) ->
    Label = lists:flatten(io_lib:format("lifecycle (4 hooks), ~p proc~s", [Procs, [$s || Procs > 1]])),
    Sets = [keyset(lists:flatten(io_lib:format("~sl~p-~p", [tag(M), Procs, P])), K)
            || P <- lists:seq(1, Procs)],
    N = K * Rounds,
    _ = long_sched(),
    %% pass 1: throughput and batch medians (ns per lifecycle)
    {Per, Wall} = parallel(fun(Ks) -> batches(lifecycle_fun(M, Ks), N) end, Sets),
    %% pass 2: every hook call timed
    {Samples, _} = parallel(fun(Ks) ->
                                    F = lifecycle_timed(M, Ks),
                                    lists:foldl(F, [], lists:seq(1, N))
                            end, Sets),
    LS = long_sched(),
    Medians = [median(P) || {P, _} <- Per],
    R = row(Label, Name, lists:sum(Medians) / length(Medians), pct(lists:append(Samples), 0.99),
            Procs * N * 1.0e9 / Wall, LS),
    R#{unit => lifecycle, hook_median => median(lists:append(Samples))}.

%% Run F(Set) in one process per set, all started together; {Results, WallNs}.
parallel(F, Sets) ->
    Parent = self(),
    Go = make_ref(),
    Pids = [spawn_opt(fun() ->
                              receive Go -> ok end,
                              Parent ! {self(), F(Ks)}
                      end, [link, monitor, {min_heap_size, 100000}]) || Ks <- Sets],
    erlang:garbage_collect(),
    T0 = now_ns(),
    [P ! Go || {P, _} <- Pids],
    Res = [receive {P, R} -> R end || {P, _} <- Pids],
    T1 = now_ns(),
    %% workers (and their copies of the key sets) are gone before we return
    [receive {'DOWN', Ref, process, P, _} -> ok end || {P, Ref} <- Pids],
    {Res, T1 - T0}.

%%--------------------------------------------------------------------
%% Logins with a password: slow hash (bcrypt, argon2id) cache miss vs hit,
%% fast hash ($6$ SHA-512) in the plugin and in the reference.
%%--------------------------------------------------------------------

passwords(#{slow_users := SU, hits := H}, Nif) ->
    Ref = ref_passwords(H),
    case Nif of
        false -> Ref;
        true -> Ref ++ nif_passwords(SU, H)
    end.

ref_passwords(H) ->
    Users = 1000,
    Creds = credentials("sha", Users),
    [warden_ref:add_user(User, Pw) || {User, Pw} <- tuple_to_list(Creds)],
    Login = login_fun(warden_ref, keyset("rpw", H)),
    F = fun(Off) -> fun(I) -> Login(Creds, (I + Off) rem Users + 1, I) end end,
    [measure("login $6$ sha512 (auth+wakeup+gone)", "ets ref", F(0), F(7), H)].

pw_user(Kind, I) -> iolist_to_binary(io_lib:format("~s-~p", [Kind, I])).
pw(I) -> iolist_to_binary(io_lib:format("secret-~p", [I])).

%% Users 1..N of a kind as {User, Password}, built before any timing (as the
%% key sets are): formatting them inside the loop cost more than a login.
credentials(Kind, N) ->
    list_to_tuple([{pw_user(Kind, I), pw(I)} || I <- lists:seq(1, N)]).

nif_passwords(SU, H) ->
    Dir = filename:join(tmp_dir(), "vmq_warden_bench"),
    ok = filelib:ensure_path(Dir),
    File = filename:join(Dir, "passwd"),
    Tool = os:getenv("WARDEN_PASSWD", "target/release/vmq-warden-passwd"),
    _ = file:delete(File),
    %% $6$ (vmq_passwd / mosquitto): SHA-512 over password ++ raw salt.
    Sha = [begin
               Salt = crypto:strong_rand_bytes(12),
               [pw_user("sha512", I), ":$6$", base64:encode(Salt), "$",
                base64:encode(crypto:hash(sha512, [pw(I), Salt])), "\n"]
           end || I <- lists:seq(1, 1000)],
    ok = file:write_file(File, Sha),
    ok = file:change_mode(File, 8#600),
    %% slow schemes with the plugin's own tool, default costs
    [[begin
          Cmd = lists:flatten(io_lib:format("~s --scheme ~s -b ~s ~s ~s >/dev/null 2>&1; echo $?",
                                            [Tool, S, File, pw_user(S, I), pw(I)])),
          "0\n" = os:cmd(Cmd)
      end || I <- lists:seq(1, SU)] || S <- ["bcrypt", "argon2id"]],
    application:set_env(vmq_warden, password_file, File),
    ok = vmq_warden:reload(),
    Login = login_fun(vmq_warden_hooks, keyset("npw", H + 2 * SU)),
    Slow = fun(Kind) ->
                   C = credentials(Kind, SU),
                   _ = long_sched(),
                   %% misses: every user's first login (one call each, timed)
                   Miss = [begin T0 = now_ns(), Login(C, I, I), now_ns() - T0 end
                           || I <- lists:seq(1, SU)],
                   LSMiss = long_sched(),
                   MissRow = row("login " ++ Kind ++ ", cache miss (+wakeup+gone)", "vmq_warden",
                                 median(Miss), pct(Miss, 0.99),
                                 length(Miss) * 1.0e9 / lists:sum(Miss), LSMiss),
                   %% hits: the same users again
                   Hit = fun(Off) -> fun(I) -> Login(C, (I + Off) rem SU + 1, I) end end,
                   HitRow = measure("login " ++ Kind ++ ", cache hit (+wakeup+gone)", "vmq_warden",
                                    Hit(0), Hit(1), H),
                   [MissRow, HitRow]
           end,
    Rows = Slow("bcrypt") ++ Slow("argon2id"),
    C6 = credentials("sha512", 1000),
    Fast = fun(Off) -> fun(I) -> Login(C6, (I + Off) rem 1000 + 1, I) end end,
    FastRow = measure("login $6$ sha512 (auth+wakeup+gone)", "vmq_warden", Fast(0), Fast(7), H),
    %% the password file stays configured for the stall audit's logins
    Rows ++ [FastRow].

%% Login(Credentials, UserIndex, KeyIndex) through module M (the plugin's
%% hooks or the reference): auth with the user's password (from
%% credentials/2), then wakeup and gone.
login_fun(M, Ks) ->
    fun(Creds, U, KeyI) ->
            {Sid, Peer, _} = element(KeyI, Ks),
            {User, Pw} = element(U, Creds),
            R = M:auth_on_register(Peer, Sid, User, Pw, true),
            R =:= ok orelse error({login_refused, User, R}),
            M:on_client_wakeup(Sid),
            M:on_client_gone(Sid)
    end.

tmp_dir() -> os:getenv("TMPDIR", "/tmp").

%%--------------------------------------------------------------------
%% Registry at scale
%%--------------------------------------------------------------------

scale(#{scale_n := N, lookups := NL, list_reps := Reps}, Nif) ->
    Impls = [{"ets ref", warden_ref}] ++ [{"vmq_warden", vmq_warden_hooks} || Nif],
    [scale_one(Name, M, N, NL, Reps) || {Name, M} <- Impls].

vm_mem() ->
    erlang:garbage_collect(),
    maps:from_list(erlang:memory()).

rss() ->
    {ok, B} = file:read_file("/proc/self/statm"),
    [_, Res | _] = string:split(B, " ", all),
    binary_to_integer(Res) * 4096.

native_mem(vmq_warden_hooks) -> vmq_warden_nif:memory();
native_mem(_) -> 0.

scale_one(Name, M, N, NL, Reps) ->
    S = erlang:system_info(schedulers_online),
    Chunk = (N + S - 1) div S,
    Ranges = [{P * Chunk + 1, min(N, (P + 1) * Chunk)} || P <- lists:seq(0, S - 1)],
    Tag = tag(M) ++ "s",
    %% key sets built before the clock starts (one per filler process)
    Sets = [list_to_tuple([{sid(Tag, I), scale_peer(I), user(I)} || I <- lists:seq(A, B)])
            || {A, B} <- Ranges],
    Connect = fun(Ks) ->
                      loop(fun(I) ->
                                   {Sid, Peer, User} = element(I, Ks),
                                   ok = M:auth_on_register(Peer, Sid, User, undefined, false),
                                   M:on_client_wakeup(Sid),
                                   M:on_register(Peer, Sid, User)
                           end, 1, tuple_size(Ks))
              end,
    Mem0 = vm_mem(), Rss0 = rss(), Nat0 = native_mem(M),
    _ = long_sched(),
    {_, FillNs} = parallel(Connect, Sets),
    LSFill = long_sched(),
    Mem1 = vm_mem(), Rss1 = rss(), Nat1 = native_mem(M),
    Size = case M of
               warden_ref -> warden_ref:size();
               _ -> maps:get(online, vmq_warden:counts())
           end,
    Size =:= N orelse io:format("  (~s: ~p live sessions after fill, expected ~p)~n", [Name, Size, N]),
    %% reads while one process per scheduler less one runs lifecycles
    Bg = start_background(M, max(1, S - 1)),
    RandT = list_to_tuple([sid(Tag, rand:uniform(N)) || _ <- lists:seq(1, NL)]),
    Lookup = case M of
                 warden_ref -> fun(I) -> {ok, _} = warden_ref:lookup(element(I, RandT)) end;
                 _ -> fun(I) -> {ok, _} = vmq_warden:lookup(element(I, RandT)) end
             end,
    _ = long_sched(),
    {LPer, LTotal} = batches(Lookup, NL),
    LSamples = percall(Lookup, NL),
    LSLookup = long_sched(),
    Filter = #{peer => "172.16.0.0/12", limit => N},
    List = case M of
               warden_ref -> fun() -> warden_ref:sessions(Filter) end;
               _ -> fun() -> vmq_warden:sessions(Filter#{peer => <<"172.16.0.0/12">>}) end
           end,
    _ = long_sched(),
    ListNs = [begin
                  T0 = now_ns(),
                  L = List(),
                  T1 = now_ns(),
                  length(L) =:= N div 100 orelse error({list_len, Name, length(L)}),
                  T1 - T0
              end || _ <- lists:seq(1, Reps)],
    Longest = case M of
                  warden_ref -> #{};
                  _ -> longest_list_call(Reps, N)
              end,
    LSList = long_sched(),
    BgLife = stop_background(Bg),
    %% empty the registry again (gone from the queue that registered is
    %% what the broker would do; a clear is faster and equivalent here)
    case M of
        warden_ref -> warden_ref:reset();
        _ -> vmq_warden_nif:reset()
    end,
    Nat2 = native_mem(M),
    #{impl => Name, n => N, fill_ns => FillNs, ls_fill => LSFill,
      ets_per => (maps:get(ets, Mem1) - maps:get(ets, Mem0)) / N,
      vm_per => (maps:get(total, Mem1) - maps:get(total, Mem0)) / N,
      rss_per => (Rss1 - Rss0) / N,
      native_per => (Nat1 - Nat0) / N,
      native_left => Nat2 - Nat0,
      lookup_median => median(LPer), lookup_p99 => pct(LSamples, 0.99),
      lookup_tput => NL * 1.0e9 / LTotal, ls_lookup => LSLookup,
      list_median => median(ListNs), list_p99 => pct(ListNs, 0.99), ls_list => LSList,
      list_longest_call => Longest,
      matches => N div 100, bg_lifecycles => BgLife}.

%% The same list as vmq_warden:sessions/1 runs it (NIF chunks until done or
%% the limit), Reps times, timing every NIF call on its own: the longest is
%% the longest time the list held a scheduler at once.
longest_list_call(Reps, Limit) ->
    Spec = {undefined, undefined, undefined, undefined, <<"172.16.0.0/12">>},
    Runs = [list_calls(Spec, start, Limit, []) || _ <- lists:seq(1, Reps)],
    Calls = lists:append(Runs),
    #{list_longest => lists:max(Calls),
      list_calls => lists:max([length(R) || R <- Runs]),
      list_calls_over_1ms => {length([Ns || Ns <- Calls, Ns > 1000000]), length(Calls)}}.

list_calls(_Spec, done, _Limit, Ns) -> Ns;
list_calls(_Spec, _Cursor, 0, Ns) -> Ns;
list_calls(Spec, Cursor, Limit, Ns) ->
    T0 = now_ns(),
    {Rows, Next} = vmq_warden_nif:list_chunk(Spec, Cursor, Limit),
    T1 = now_ns(),
    list_calls(Spec, Next, Limit - length(Rows), [T1 - T0 | Ns]).

start_background(M, Procs) ->
    Parent = self(),
    [spawn_link(fun() ->
                        Ks = keyset(lists:flatten(io_lib:format("~sbg~p", [tag(M), P])), 1000),
                        F = lifecycle_fun(M, Ks),
                        bg_loop(F, 1, Parent)
                end) || P <- lists:seq(1, Procs)].

bg_loop(F, I, Parent) ->
    receive
        {stop, Parent} ->
            %% finish the round so every key ends gone
            Left = (2000 - (I - 1) rem 2000) rem 2000,
            loop(F, I, I + Left - 1),
            Parent ! {bg_done, self(), I - 1 + Left}
    after 0 ->
            _ = F(I),
            bg_loop(F, I + 1, Parent)
    end.

stop_background(Pids) ->
    [P ! {stop, self()} || P <- Pids],
    lists:sum([receive {bg_done, P, N} -> N end || P <- Pids]).
