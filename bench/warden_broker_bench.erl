%% @doc vmq_warden under the broker's calling conditions (`make bench BROKER=1',
%% `scripts/bench.sh --broker [--quick]'). The micro rows of
%% vmq_warden_bench call the hooks back to back from one warm process with
%% plain-text passwords; a VerneMQ node does not. Here:
%%
%% - every connect runs in a FRESH connection process (auth_on_register,
%%   then on_register), and every subscriber's lifecycle events in ITS OWN
%%   queue process (on_client_wakeup, then on_client_gone for clean
%%   sessions, 3 of 4, or on_client_offline, 1 of 4), ?CONC connects in
%%   flight at once, from ?CONC driver processes spread over the schedulers;
%% - the password arrives as `{encrypted, B}': the connection process first
%%   encrypts it through the stand-in `credentials_obfuscation' (bench/, one
%%   gen_server per node, PBKDF2-SHA256 x1 + AES-128-CBC), as the broker's
%%   CONNECT parsing does, and the hook decrypts it through the same server;
%% - a realistic policy: network allow/deny, client id pattern and
%%   `{username}:*' glob, username rules, a deny rule, 1,000 `$6$' users in
%%   a password file, unknown_user = deny; the plugin started with
%%   vmq_plugin_harness:enable(vmq_warden), as VerneMQ's plugin manager does;
%% - the baseline in the same run: warden_passwd_ref (what vmq_passwd does:
%%   ETS user table from the same file, decrypt, SHA-512, compare), called
%%   the same way; a null pass (same processes, no hook) for the CPU floor;
%%   and a floor pass, warden_floor_hooks: the plugin's hooks without the
%%   core (argument decoding and answer only), so that the plugin's own
%%   work is the hooks' time minus the floor's.
%%
%% Figures (printed, never asserted):
%% - call_time: erlang:trace_pattern(..., [call_time]) on each hook function
%%   (the in-broker method): the calling process's own scheduled-in time in
%%   the hook and everything it calls that is not traced (the NIF included;
%%   the decrypt's work in the server process and the wait for it are not).
%%   The floor, an empty function traced the same way in the same processes,
%%   is subtracted per call. A separate pass from the wall/CPU pass.
%% - wall: erlang:monotonic_time around each hook call in the calling
%%   process (includes the wait for the decrypt server and preemption);
%%   the same pair around an empty function is the floor.
%% - CPU per connect: erlang:statistics(runtime) (all VM threads) and the
%%   schedulers' busy time (scheduler_wall_time) over the pass / connects;
%%   minus the null pass = what the hooks cost the node per connect, the
%%   decrypt server's work included.
%% - profile: one more pass with call_time on every function of the hook,
%%   NIF, stand-in and gen/gen_server modules, in the client processes and
%%   the decrypt server: time per function (own time: time in traced
%%   callees is theirs).
-module(warden_broker_bench).

-export([main/1, run/1]).
%% for the report
-export([traced_mfas/1]).
%% called through the module so that tracing sees the calls
-export([empty_hook/1, conn/3, queue/4]).

-include("warden_broker_bench.hrl").

main(Args) ->
    Quick = lists:member("--quick", Args) orelse lists:member("--smoke", Args),
    Smoke = lists:member("--smoke", Args),
    try run(#{quick => Quick, smoke => Smoke, evict_kib => evict_kib(Args)}) of
        ok -> halt(0)
    catch
        C:R:St ->
            io:format(standard_error, "broker bench failed: ~p:~p~n~p~n", [C, R, St]),
            halt(1)
    end.

%% --cold[=KiB]: before each hook, the calling process reads KiB of other
%% memory (default 4096, twice a core's L2 here), as the broker's own work
%% between two hooks of a connection does (see evict/0).
evict_kib(Args) ->
    case [A || "--cold" ++ _ = A <- Args] of
        [] -> 0;
        ["--cold" | _] -> 4096;
        ["--cold=" ++ N | _] -> list_to_integer(N)
    end.

run(Opts) ->
    persistent_term:put(?EVICT_KIB, maps:get(evict_kib, Opts, 0)),
    {Connects, Rounds} = case Opts of
                             #{smoke := true} -> {500, 1};
                             #{quick := true} -> {5000, 3};
                             _ -> {20000, 5}
                         end,
    T0 = erlang:monotonic_time(millisecond),
    {ok, _} = credentials_obfuscation:start(),
    {Dir, Creds} = write_files(),
    ok = start_plugin(Dir),
    {ok, ?USERS} = warden_passwd_ref:load(filename:join(Dir, "passwd")),
    true = vmq_warden_nif:loaded(),
    _ = erlang:system_flag(scheduler_wall_time, true),
    header(Opts, Connects, Rounds, Dir),
    check(Creds),
    %% warm-up: code loaded, caches and tables grown, not printed
    _ = [pass(I, <<"warm">>, min(1000, Connects), Creds, wall) || I <- ?IMPLS],
    Results = [round_(R, Connects, Creds) || R <- lists:seq(1, Rounds)],
    warden_broker_bench_report:summary(Results, Connects),
    profile(Connects, Creds),
    io:format("~nmachine load at end: ~s~n", [vmq_warden_bench:load()]),
    io:format("Total broker bench time: ~.1f s~n",
              [(erlang:monotonic_time(millisecond) - T0) / 1000]),
    ok.

%%--------------------------------------------------------------------
%% Setup: password file, policy file, the plugin
%%--------------------------------------------------------------------

user(U) -> iolist_to_binary(io_lib:format("user~4..0B", [U])).
password(U) -> iolist_to_binary(io_lib:format("pw-~4..0B-~8.16.0B", [U, erlang:phash2(U)])).

write_files() ->
    Dir = filename:join(os:getenv("TMPDIR", "/tmp"), "vmq_warden_broker_bench"),
    ok = filelib:ensure_path(Dir),
    Creds = list_to_tuple([{user(U), password(U)} || U <- lists:seq(1, ?USERS)]),
    Lines = [begin
                 Salt = crypto:strong_rand_bytes(12),
                 [User, ":$6$", base64:encode(Salt), "$",
                  base64:encode(crypto:hash(sha512, [Pw, Salt])), "\n"]
             end || {User, Pw} <- tuple_to_list(Creds)],
    Passwd = filename:join(Dir, "passwd"),
    ok = file:write_file(Passwd, Lines),
    ok = file:change_mode(Passwd, 8#600),
    Policy = filename:join(Dir, "policy.toml"),
    ok = file:write_file(Policy, policy()),
    ok = file:change_mode(Policy, 8#600),
    {Dir, Creds}.

%% What an operator would run: the peers are in 10.0.0.0/8 (outside the
%% denied 10.66.0.0/16), the client ids are "<user>:dev-<n>".
policy() ->
    <<"version = 1\n"
      "[network]\n"
      "allow = [\"10.0.0.0/8\", \"192.168.0.0/16\", \"2001:db8::/32\", \"127.0.0.1\"]\n"
      "deny = [\"10.66.0.0/16\"]\n"
      "[client_id]\n"
      "max_length = 64\n"
      "allowed_chars = \"A-Za-z0-9_.:-\"\n"
      "pattern = \"[A-Za-z0-9].*\"\n"
      "username_pattern = \"{username}:*\"\n"
      "bind_to_user = true\n"
      "[username]\n"
      "max_length = 32\n"
      "pattern = \"[a-z][a-z0-9_.-]*\"\n"
      "deny = [\"root\", \"admin\"]\n"
      "[[rule]]\n"
      "name = \"block-scanners\"\n"
      "action = \"deny\"\n"
      "reason = \"known scanner network\"\n"
      "code = \"banned\"\n"
      "when = { peer = [\"192.168.66.0/24\"] }\n">>.

start_plugin(Dir) ->
    application:load(vmq_warden),
    [application:set_env(vmq_warden, K, V)
     || {K, V} <- [{policy_file, filename:join(Dir, "policy.toml")},
                   {password_file, filename:join(Dir, "passwd")},
                   {unknown_user, deny},
                   {reload_interval, 0},
                   {log_level, error}]],
    logger:set_primary_config(level, error),
    ok = vmq_plugin_harness:enable(vmq_warden).

%% Both implementations accept every bench login and refuse a wrong password.
check(Creds) ->
    {User, Pw} = element(1, Creds),
    Sid = {"", <<User/binary, ":check">>},
    Peer = {{10, 1, 2, 3}, 4000},
    Bad = credentials_obfuscation:encrypt(<<"wrong">>),
    Good = credentials_obfuscation:encrypt(Pw),
    {error, _} = vmq_warden_hooks:auth_on_register(Peer, Sid, User, Bad, true),
    {error, _} = warden_passwd_ref:auth_on_register(Peer, Sid, User, Bad, true),
    {error, _} = vmq_warden_hooks:auth_on_register({{10, 66, 1, 1}, 4000}, Sid, User, Good, true),
    {error, _} = vmq_warden_hooks:auth_on_register(Peer, {"", <<"user9999:x">>}, User, Good, true),
    ok = accepted(vmq_warden_hooks:auth_on_register(Peer, Sid, User, Good, true)),
    ok = warden_passwd_ref:auth_on_register(Peer, Sid, User, Good, true),
    %% the refused logins above count toward a ban of 10.1.2.3; clear it
    _ = vmq_warden:clear_bans(all),
    ok.

accepted(ok) -> ok;
accepted({ok, _}) -> ok;
accepted(Other) -> error({refused, Other}).

%%--------------------------------------------------------------------
%% One pass: Connects connects, ?CONC at a time
%%--------------------------------------------------------------------

empty_hook(_) -> ok.

%% Impl: null (no hook), passwd (auth_on_register only, as vmq_passwd),
%% warden (the plugin's five hooks), floor (the same hooks without the
%% core). Mode: wall (timers, CPU) or traced
%% (call_time on the hooks and the empty function) or profile.
pass(Impl, Tag, Connects, Creds, Mode) ->
    Parent = self(),
    Go = make_ref(),
    Drivers = [spawn_opt(fun() ->
                                 receive Go -> ok end,
                                 Parent ! {self(), driver(Impl, Tag, D, Connects, Creds)}
                         end, [link]) || D <- lists:seq(0, ?CONC - 1)],
    Svc = whereis(credentials_obfuscation_svc),
    trace_on(Mode, Impl, Drivers, Svc),
    erlang:garbage_collect(),
    {RT0, _} = erlang:statistics(runtime),
    SW0 = lists:sort(erlang:statistics(scheduler_wall_time_all)),
    W0 = erlang:monotonic_time(nanosecond),
    [D ! Go || D <- Drivers],
    Times = [receive {D, R} -> R end || D <- Drivers],
    W1 = erlang:monotonic_time(nanosecond),
    {RT1, _} = erlang:statistics(runtime),
    SW1 = lists:sort(erlang:statistics(scheduler_wall_time_all)),
    Traced = trace_off(Mode, Impl),
    Busy = lists:sum([A1 - A0 || {{I, A0, _}, {I, A1, _}} <- lists:zip(SW0, SW1)]),
    #{impl => Impl, connects => Connects, wall_ns => W1 - W0,
      runtime_ms => RT1 - RT0, busy_ns => busy_ns(Busy),
      times => lists:append(Times), traced => Traced}.

%% scheduler_wall_time is in erlang:perf_counter units
busy_ns(Busy) -> erlang:convert_time_unit(Busy, perf_counter, nanosecond).

%% One driver: connects D+1, D+1+?CONC, ... each from a fresh connection
%% process, one at a time (so ?CONC are in flight over all drivers).
driver(Impl, Tag, D, Connects, Creds) ->
    TagB = iolist_to_binary([atom_to_binary(Impl), "-", Tag]),
    lists:reverse(driver(Impl, TagB, D + 1, Connects, Creds, [])).

driver(_Impl, _Tag, I, Connects, _Creds, Acc) when I > Connects ->
    Acc;
driver(Impl, Tag, I, Connects, Creds, Acc) ->
    {User, Pw} = element((I - 1) rem ?USERS + 1, Creds),
    Sid = {"", <<User/binary, ":", Tag/binary, "-", (integer_to_binary(I))/binary>>},
    Peer = {{10, 1 + (I bsr 16) band 63, (I bsr 8) band 255, I band 255}, 1024 + I rem 60000},
    Clean = I rem 4 =/= 0,
    Conn = spawn(?MODULE, conn, [Impl, {Sid, Peer, User, Pw, Clean}, self()]),
    receive {Conn, R} -> driver(Impl, Tag, I + ?CONC, Connects, Creds, [R | Acc]) end.

-define(NOW, erlang:monotonic_time(nanosecond)).
-define(PLUGIN(Impl), (Impl =:= warden orelse Impl =:= floor)).
-define(DECRYPT_NS, '$warden_bench_decrypt_ns').

%% The connection process: the password encrypted as the broker's CONNECT
%% parsing does, auth_on_register, the queue's wakeup (in the queue
%% process, waited for as the broker's register_subscriber does),
%% on_register, then the disconnect (gone or offline in the queue process).
conn(Impl, {Sid, Peer, User, Pw, Clean}, Driver) ->
    Enc = case Pw of
              {encrypted, _} -> Pw;     % the profile pass: encrypted before it
              _ -> credentials_obfuscation:encrypt(Pw)
          end,
    Sched = erlang:system_info(scheduler_id),
    put(?DECRYPT_NS, 0),
    evict(),
    E0 = ?NOW,
    ok = ?MODULE:empty_hook(Sid),
    E1 = ?NOW,
    ok = accepted(auth(Impl, Peer, Sid, User, Enc, Clean)),
    A1 = ?NOW,
    Dec = get(?DECRYPT_NS),
    Q = spawn(?MODULE, queue, [Impl, Sid, Clean, self()]),
    receive {Q, online, Wake, EQ} -> ok end,
    evict(),
    R0 = ?NOW,
    ok = on_register(Impl, Peer, Sid, User),
    R1 = ?NOW,
    Q ! {self(), disconnect},
    receive {Q, ended, End} -> ok end,
    Driver ! {self(), #{sched => Sched, empty => E1 - E0, empty_q => EQ, auth => A1 - E1,
                        decrypt => Dec, wakeup => Wake, register => R1 - R0,
                        ending => End, clean => Clean}}.

queue(Impl, Sid, Clean, Conn) ->
    evict(),
    E0 = ?NOW,
    ok = ?MODULE:empty_hook(Sid),
    E1 = ?NOW,
    ok = wakeup(Impl, Sid),
    W1 = ?NOW,
    Conn ! {self(), online, W1 - E1, E1 - E0},
    receive {Conn, disconnect} -> ok end,
    evict(),
    G0 = ?NOW,
    ok = ending(Impl, Clean, Sid),
    G1 = ?NOW,
    Conn ! {self(), ended, G1 - G0}.

%% With --cold: the core's private caches emptied before a hook (a
%% diagnostic NIF reading other memory; untraced, outside the timers), as
%% inside a broker, which runs its own code and other clients' between two
%% hooks of one connection. Same in every pass, the null one included.
evict() ->
    case persistent_term:get(?EVICT_KIB) of
        0 -> ok;
        KiB -> _ = vmq_warden_nif:evict_caches(KiB), ok
    end.

auth(null, _Peer, _Sid, _User, _Pw, _Clean) -> ok;
auth(passwd, Peer, Sid, User, Pw, Clean) ->
    warden_passwd_ref:auth_on_register(Peer, Sid, User, Pw, Clean);
auth(Impl, Peer, Sid, User, Pw, Clean) ->
    (hooks(Impl)):auth_on_register(Peer, Sid, User, Pw, Clean).

on_register(Impl, Peer, Sid, User) when ?PLUGIN(Impl) -> (hooks(Impl)):on_register(Peer, Sid, User);
on_register(_, _, _, _) -> ok.

wakeup(Impl, Sid) when ?PLUGIN(Impl) -> (hooks(Impl)):on_client_wakeup(Sid);
wakeup(_, _) -> ok.

ending(Impl, true, Sid) when ?PLUGIN(Impl) -> (hooks(Impl)):on_client_gone(Sid);
ending(Impl, false, Sid) when ?PLUGIN(Impl) -> (hooks(Impl)):on_client_offline(Sid);
ending(_, _, _) -> ok.

hooks(warden) -> vmq_warden_hooks;
hooks(floor) -> warden_floor_hooks.

%%--------------------------------------------------------------------
%% Tracing
%%--------------------------------------------------------------------

%% Every function of the implementation's modules: a hook tail-calls into
%% the NIF, and call_time charges a tail-called untraced function to no
%% one, so tracing the hook functions alone misses most of the work (seen
%% in a real broker: 0.125 us per call by call_time on the hook against
%% 7.25 us by the clock).
traced_mfas(Impl) ->
    [?EMPTY | [{M, F, A} || M <- impl_mods(Impl), {F, A} <- M:module_info(functions)]].

impl_mods(null) -> [];
impl_mods(passwd) -> [warden_passwd_ref];
impl_mods(warden) -> [vmq_warden_hooks, vmq_warden_nif];
impl_mods(floor) -> [warden_floor_hooks, vmq_warden_nif].

%% the decrypt server's work, traced in the server process only
-define(SVC_MFAS, [{credentials_obfuscation, decrypt_term, 2},
                   {credentials_obfuscation, encrypt_term, 2}]).

trace_on(wall, _Impl, _Drivers, _Svc) ->
    ok;
trace_on(Mode, Impl, Drivers, Svc) ->
    MFAs = case Mode of
               traced -> traced_mfas(Impl) ++ ?SVC_MFAS;
               profile -> [{M, '_', '_'} || M <- ?PROFILE_MODS] ++ [?EMPTY]
           end,
    [erlang:trace_pattern(MFA, true, [call_time]) || MFA <- MFAs],
    %% the cache evictor stands for the broker's work, not the plugin's:
    %% untraced in every mode, so no pass counts it
    _ = erlang:trace_pattern(?EVICT, false, [call_time]),
    [erlang:trace(D, true, [call, set_on_spawn]) || D <- Drivers],
    erlang:trace(Svc, true, [call]),
    ok.

trace_off(wall, _) ->
    #{};
trace_off(Mode, Impl) ->
    _ = erlang:trace(all, false, [call, set_on_spawn]),
    Svc = whereis(credentials_obfuscation_svc),
    MFAs = case Mode of
               traced -> traced_mfas(Impl) ++ ?SVC_MFAS;
               profile -> [MFA || M <- ?PROFILE_MODS,
                                  {F, A} <- M:module_info(functions),
                                  MFA <- [{M, F, A}]] ++ [?EMPTY]
           end,
    Res = maps:from_list(
            [{{MFA, Role}, {C, T}} || MFA <- MFAs,
                                      {Role, {C, T}} <- call_time(MFA, Svc), C > 0]),
    _ = erlang:trace_pattern({'_', '_', '_'}, false, [call_time]),
    Res.

%% {Role, {Calls, Microseconds}} for the client processes and the server.
%% The VM keeps the time per process in whole microseconds: a fresh
%% process that calls a function once has that call truncated to whole
%% microseconds (on average 0.5 us less than it took).
call_time(MFA, Svc) ->
    case erlang:trace_info(MFA, call_time) of
        {call_time, L} when is_list(L) ->
            Sum = fun(Ps) -> {lists:sum([C || {_, C, _, _} <- Ps]),
                              lists:sum([S * 1000000 + U || {_, _, S, U} <- Ps])}
                  end,
            {Srv, Cli} = lists:partition(fun({P, _, _, _}) -> P =:= Svc end, L),
            %% client_trim: without the processes above the 99th percentile
            %% (a call the OS preempted, on this shared machine, adds
            %% milliseconds to one process and moves the mean a lot)
            Us = fun({_, _, S, U}) -> S * 1000000 + U end,
            Cut = case Cli of
                      [] -> 0;
                      _ -> warden_broker_bench_report:pct([Us(E) || E <- Cli], 0.99)
                  end,
            [{client, Sum(Cli)}, {server, Sum(Srv)},
             {client_trim, Sum([E || E <- Cli, Us(E) =< Cut])}];
        _ ->
            []
    end.

%%--------------------------------------------------------------------
%% A round: null, passwd, warden, each a wall pass then a traced pass
%%--------------------------------------------------------------------

round_(R, Connects, Creds) ->
    Tag = fun(M) -> iolist_to_binary(io_lib:format("~s~p", [M, R])) end,
    Res = [{Impl, pass(Impl, Tag("w"), Connects, Creds, wall),
            pass(Impl, Tag("t"), Connects, Creds, traced)}
           || Impl <- ?IMPLS],
    warden_broker_bench_report:print_round(R, Res),
    Res.

%%--------------------------------------------------------------------
%% Profile: every function of the hook path, the NIF stubs, the stand-in
%% and gen/gen_server, call_time in the client processes and the server
%%--------------------------------------------------------------------

profile(Connects, Creds0) ->
    %% passwords encrypted before the pass, so that the connection processes'
    %% own encrypt calls (the broker's, not the plugin's) stay out of it
    Creds = list_to_tuple([{U, credentials_obfuscation:encrypt(Pw)}
                           || {U, Pw} <- tuple_to_list(Creds0)]),
    P = pass(warden, <<"prof">>, Connects, Creds, profile),
    #{traced := Tr} = P,
    Floor = case maps:get({?EMPTY, client}, Tr, {0, 0}) of
                {0, _} -> 0.0;
                {C0, T0} -> T0 / C0
            end,
    %% client processes without the top 1% (see call_time/2); the server is one process
    Rows = lists:reverse(lists:keysort(3, [{MFA, role(Role), T, C}
                                           || {{MFA, Role}, {C, T}} <- maps:to_list(Tr),
                                              MFA =/= ?EMPTY, Role =/= client])),
    Total = lists:sum([T || {_, _, T, _} <- Rows]),
    io:format("~n== profile: vmq_warden, ~p connects, call_time on every function of ~p "
              "(own time: a traced callee's time is the callee's) ==~n", [Connects, ?PROFILE_MODS]),
    io:format("  floor (empty function) ~.3f us per call; every figure below is whole "
              "microseconds per process (see the summary), so small functions read low; client "
              "processes above the 99th percentile left out; the passwords are encrypted before "
              "this pass (the broker's encrypt is not the plugin's cost); us/connect over all "
              "~p connects~n", [Floor, Connects]),
    io:format("  ~-52s ~-7s ~8s ~11s ~10s ~10s ~6s~n",
              ["function", "process", "calls", "total us", "us/call", "us/connect", "share"]),
    [io:format("  ~-52s ~-7s ~8b ~11b ~10.3f ~10.3f ~5.1f%~n",
               [fmt_mfa(MFA), Role, C, T, T / C, T / Connects, 100 * T / max(1, Total)])
     || {MFA, Role, T, C} <- lists:sublist(Rows, 30)],
    io:format("  total traced time ~.1f us per connect (~p functions with calls)~n",
              [Total / Connects, length(Rows)]),
    ok.

role(client_trim) -> client;
role(R) -> R.

fmt_mfa({M, F, A}) -> io_lib:format("~s:~s/~p", [M, F, A]).

%%--------------------------------------------------------------------
%% Header
%%--------------------------------------------------------------------

header(Opts, Connects, Rounds, Dir) ->
    io:format("vmq_warden benchmark under broker conditions (~s)~n",
              [case Opts of #{smoke := true} -> "smoke"; #{quick := true} -> "quick"; _ -> "full" end]),
    io:format("machine: ~s, ~p schedulers online, ~p dirty CPU schedulers, OTP ~s (erts ~s)~n",
              [vmq_warden_bench:cpu_model(), erlang:system_info(schedulers_online),
               erlang:system_info(dirty_cpu_schedulers_online),
               erlang:system_info(otp_release), erlang:system_info(version)]),
    io:format("machine load at start: ~s~n", [vmq_warden_bench:load()]),
    io:format("setup: ~p $6$ users (~s/passwd), policy ~s/policy.toml (network allow/deny, "
              "client_id pattern + \"{username}:*\", username rules, 1 deny rule), "
              "unknown_user = deny; plugin started with vmq_plugin_harness:enable(vmq_warden); "
              "credentials_obfuscation stand-in (one gen_server: base64, PBKDF2-SHA256 x1, "
              "AES-128-CBC)~n", [?USERS, Dir, Dir]),
    io:format("passes: ~p rounds of null / vmq_passwd-like ref / vmq_warden / its floor, each a wall pass "
              "and a call_time pass of ~p connects, ~p at a time; a connect: fresh connection "
              "process (encrypt the password, auth_on_register, on_register), fresh queue process "
              "per subscriber (on_client_wakeup, then on_client_gone for clean sessions (3 of 4) "
              "or on_client_offline)~n", [Rounds, Connects, ?CONC]),
    case persistent_term:get(?EVICT_KIB) of
        0 -> io:format("caches: as they are (no --cold)~n");
        KiB -> io:format("caches: COLD, ~p KiB of other memory read in the calling process "
                         "before each hook (--cold)~n", [KiB])
    end,
    ok.

