%% The event stream's costs: the hooks' time per call with events off, on
%% (queued only) and on and drained every 100 ms (the default), the drain's
%% NIF call, and each
%% sink's throughput (events/s): the MQTT sink with a publish function that
%% does nothing, the webhook against a loopback HTTP server.
%% Run: scripts/bench.sh --events [--quick]
-module(warden_events_bench).
-export([main/1]).

main(Args) ->
    Quick = lists:member("--quick", Args),
    N = case Quick of true -> 20000; false -> 200000 end,
    application:load(vmq_warden),
    [application:set_env(vmq_warden, K, V) || {K, V} <- [{default_decision, allow}, {allow_anonymous, true},
                                                         {reload_interval, 0}, {reconcile_interval, 0},
                                                         {log_level, error}]],
    ok = vmq_plugin_harness:enable(vmq_warden),
    logger:set_primary_config(level, error),
    io:format("events bench: ~b connects (auth, wakeup, on_register, gone) per run, ~s~n",
              [N, erlang:system_info(system_version) -- "\n"]),
    %% alternate the modes, twice, so drift shows. `queued': the hook path
    %% only (nothing drains during the run); `drained': drained every
    %% 100 ms, the JSON encoding competing with the hooks for the CPUs.
    {Off, Queued} = off_vs_queued(N),
    Runs = [{off, Off}, {queued, Queued}, {drained, hook_ns(drained, N)}],
    [io:format("  hooks, events ~-7s: ~6.1f us per connect (4 hook calls), ~6b ns per hook call~n",
               [Mode, Ns / 1000, round(Ns / 4)]) || {Mode, Ns} <- Runs],
    io:format("  take_events(200): ~b us per call (median of 20 full calls)~n", [take_us()]),
    io:format("  mqtt sink:    ~8b events/s~n", [round(mqtt_rate(N))]),
    io:format("  webhook sink: ~8b events/s (batches of 100, loopback)~n", [round(webhook_rate(N))]),
    halt(0).

settings(Extra) ->
    [application:set_env(vmq_warden, K, V) || {K, V} <- Extra],
    ok = vmq_warden_config:apply(),
    ok = vmq_warden_nif:reset(),
    [begin
         ok = supervisor:terminate_child(vmq_warden_sup, Id),
         {ok, _} = supervisor:restart_child(vmq_warden_sup, Id)
     end || Id <- [vmq_warden_webhook, vmq_warden_events]],
    ok.

sid(I) -> {"", <<"bench-", (integer_to_binary(I))/binary>>}.
peer(I) -> {{10, (I bsr 16) band 255, (I bsr 8) band 255, I band 255}, 1024 + I rem 60000}.

connects(From, To) ->
    [begin
         Sid = sid(I),
         ok = vmq_warden_hooks:auth_on_register(peer(I), Sid, undefined, undefined, true),
         ok = vmq_warden_hooks:on_client_wakeup(Sid),
         ok = vmq_warden_hooks:on_register(peer(I), Sid, undefined),
         ok = vmq_warden_hooks:on_client_gone(Sid)
     end || I <- lists:seq(From, To)],
    ok.

%% Off and queued in alternating slices (40 of N/40 connects each, the queue
%% switched on and off between them), so the machine's drift hits both
%% alike: the medians, ns per connect.
off_vs_queued(N) ->
    settings([{events_enabled, true}, {events_drain_interval, 3600000}, {events_queue_bytes, 1 bsl 30},
              {events_mqtt, false}, {events_webhook, false}]),
    Slice = N div 40,
    Bin = atom_to_binary(node(), utf8),
    Pairs = [begin
                 Times = [begin
                              ok = vmq_warden_nif:events_configure(On, 1 bsl 30, Bin),
                              Base = (2 * K + B) * Slice,
                              T0 = erlang:monotonic_time(nanosecond),
                              connects(Base, Base + Slice - 1),
                              (erlang:monotonic_time(nanosecond) - T0) / Slice
                          end || {B, On} <- [{0, false}, {1, true}]],
                 list_to_tuple(Times)
             end || K <- lists:seq(0, 19)],
    _ = vmq_warden_nif:take_events(200),
    ok = vmq_warden_nif:reset(),
    {median([O || {O, _} <- Pairs]), median([Q || {_, Q} <- Pairs])}.

median(L) -> lists:nth(length(L) div 2 + 1, lists:sort(L)).

%% Median of 10 slices: ns per connect.
hook_ns(Mode, N) ->
    Drain = case Mode of drained -> 100; _ -> 3600000 end,
    settings([{events_enabled, Mode =/= off}, {events_drain_interval, Drain}, {events_queue_bytes, 1 bsl 30},
              {events_mqtt, false}, {events_webhook, false}]),
    Slice = N div 10,
    Times = [begin
                 T0 = erlang:monotonic_time(nanosecond),
                 connects(K * Slice, K * Slice + Slice - 1),
                 (erlang:monotonic_time(nanosecond) - T0) / Slice
             end || K <- lists:seq(0, 9)],
    lists:nth(5, lists:sort(Times)).

%% The drain's NIF call on a full batch: 200 events encoded as JSON.
take_us() ->
    settings([{events_enabled, true}, {events_drain_interval, 3600000}, {events_mqtt, false},
              {events_webhook, false}, {events_queue_bytes, 1 bsl 30}]),
    connects(0, 20 * 200 div 4 - 1),
    Times = [element(1, timer:tc(fun() -> 200 = length(vmq_warden_nif:take_events(200)) end))
             || _ <- lists:seq(1, 20)],
    lists:nth(10, lists:sort(Times)).

%% Events through the MQTT sink (publish does nothing), per second of the
%% events process's time.
mqtt_rate(N) ->
    ok = meck:new(vmq_reg, [non_strict, no_link]),
    Publish = fun(_Topic, _Payload, _Opts) -> ok end,
    ok = meck:expect(vmq_reg, direct_plugin_exports, fun(_) -> {fun() -> ok end, Publish, {x, x}} end),
    settings([{events_enabled, true}, {events_drain_interval, 3600000}, {events_mqtt, true},
              {events_queue_bytes, 1 bsl 30}]),
    connects(0, N div 4 - 1),
    T0 = erlang:monotonic_time(nanosecond),
    Sent = drain(0),
    Rate = Sent / ((erlang:monotonic_time(nanosecond) - T0) / 1.0e9),
    meck:unload(vmq_reg),
    Rate.

drain(Acc) ->
    case vmq_warden_events:flush() of
        0 -> Acc;
        K -> drain(Acc + K)
    end.

webhook_rate(N) ->
    {ok, Port} = vmq_warden_http_stub:start(ok),
    Url = "http://127.0.0.1:" ++ integer_to_list(Port) ++ "/events",
    Total = N div 4 * 4,
    settings([{events_enabled, true}, {events_drain_interval, 3600000}, {events_mqtt, false},
              {events_webhook, true}, {events_webhook_url, Url}, {events_webhook_batch, 100},
              {events_webhook_queue, Total}, {events_queue_bytes, 1 bsl 30}]),
    connects(0, N div 4 - 1),
    T0 = erlang:monotonic_time(nanosecond),
    _ = drain_to_webhook(0),
    wait_sent(Total, 600),
    Rate = Total / ((erlang:monotonic_time(nanosecond) - T0) / 1.0e9),
    Rate.

%% One flush at a time, each when the webhook has taken the last one (the
%% events process hands it one batch a tick and skips it while it is behind).
drain_to_webhook(Acc) ->
    case vmq_warden_events:flush() of
        0 -> Acc;
        K ->
            wait_mailbox(whereis(vmq_warden_webhook)),
            drain_to_webhook(Acc + K)
    end.

wait_mailbox(Pid) ->
    case process_info(Pid, message_queue_len) of
        {message_queue_len, 0} -> ok;
        _ -> timer:sleep(1), wait_mailbox(Pid)
    end.

wait_sent(Total, 0) -> io:format("  webhook: not all sent: ~p~n", [vmq_warden_webhook:stats()]), Total;
wait_sent(Total, Left) ->
    flush_stub(),
    case vmq_warden_webhook:stats() of
        #{sent := Total} -> ok;
        _ -> timer:sleep(50), wait_sent(Total, Left - 1)
    end.

flush_stub() ->
    receive {http_stub, _, _} -> flush_stub() after 0 -> ok end.
