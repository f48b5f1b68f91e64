%% Helpers of the suites that drive sessions through the real hooks in the
%% broker's hook orders and read what the plugin published
%% (vmq_warden_events_SUITE, vmq_warden_control_SUITE): the settings, the
%% MQTT sink with the broker's publish function mocked, the broker's queues
%% as VerneMQ has them for a disconnect, and each hook called from its own process (those hook
%% steps also serve vmq_warden_lifecycle_SUITE and vmq_warden_plugin_mgr_SUITE).
-module(vmq_warden_events_util).

-include("vmq_warden_events.hrl").

-export([suite_start/0, suite_end/0, case_start/0, case_end/0,
         events_on/1, published/0, by_client/1, sid/1, procs/1,
         auth/3, auth/6, reg/2, reg/4, wakeup/2, offline/2, gone/2, expired/2,
         connect/4, connect/6, connect/7, mock_broker_queues/0, unmock_broker_queues/0, disconnects/0, online/0]).

-define(CHAIN, vmq_hook_chain).
%% drained only when a test calls flush/0
-define(NEVER, 3600000).

suite_start() ->
    ok = vmq_plugin_harness:enable(vmq_warden).

suite_end() ->
    vmq_warden_robust_util:reset_env(),
    catch meck:unload(),
    stop_queue_sup(),
    _ = vmq_plugin_harness:disable(vmq_warden),
    ok.

%% The queues connect/7 remembers for the mocked disconnect, and the events off.
case_start() ->
    _ = (catch ets:delete(kick_queues)),
    ets:new(kick_queues, [public, named_table]),
    events_on(#{events_enabled => false}).

case_end() ->
    catch meck:unload(),
    stop_queue_sup(),
    events_on(#{events_enabled => false}).

%% Settings (default_decision allow, events on, mqtt sink on, drained by
%% flush/0 only), then `Extra'; the registry and the event queue empty; the
%% sink processes restarted so they read them.
events_on(Extra) ->
    Test = self(),
    catch meck:unload(vmq_reg),
    ok = meck:new(vmq_reg, [non_strict, no_link]),
    Publish = fun(Topic, Payload, Opts) -> Test ! {published, Topic, Payload, Opts}, ok end,
    ok = meck:expect(vmq_reg, direct_plugin_exports,
                     fun(_Mod) -> {fun() -> ok end, Publish, {fun(_) -> ok end, fun(_) -> ok end}} end),
    vmq_warden_robust_util:set_env(maps:merge(#{default_decision => allow, events_enabled => true,
                                                events_mqtt => true,
                                                events_drain_interval => ?NEVER}, Extra)),
    ok = vmq_warden_nif:reset(),
    [begin
         ok = supervisor:terminate_child(vmq_warden_sup, Id),
         {ok, _} = supervisor:restart_child(vmq_warden_sup, Id)
     end || Id <- [vmq_warden_webhook, vmq_warden_events]],
    flush_mailbox(),
    ok.

flush_mailbox() ->
    receive {published, _, _, _} -> flush_mailbox(); {http_stub, _, _} -> flush_mailbox()
    after 0 -> ok
    end.

%% Drains the queue into the sinks; returns what the MQTT sink published:
%% [{Topic, DecodedJson}], in order.
published() ->
    _ = vmq_warden_events:flush(),
    collect().

collect() ->
    receive
        {published, Topic, Payload, #{qos := 0, retain := false}} ->
            [{Topic, vmq_warden_json:decode(Payload)} | collect()]
    after 0 -> []
    end.

%% Per client id: [{Kind, Session}] in order.
by_client(Published) ->
    lists:foldl(fun({_, #{<<"client_id">> := C, <<"kind">> := K, <<"session">> := S}}, Acc) ->
                        maps:update_with(C, fun(L) -> L ++ [{K, S}] end, [{K, S}], Acc)
                end, #{}, Published).

sid(ClientId) -> {"", ClientId}.
procs(N) -> [?CHAIN:spawn_proc() || _ <- lists:seq(1, N)].

auth(Conn, Sid, Clean) -> auth(Conn, Sid, Clean, undefined, undefined, ?PEER).
auth(Conn, Sid, Clean, User, Password, Peer) ->
    ?CHAIN:in_proc(Conn, fun() ->
        ?CHAIN:all_till_ok(auth_on_register, [Peer, Sid, User, Password, Clean], ?CHAIN:plugins())
    end).
reg(Conn, Sid) -> reg(Conn, Sid, undefined, ?PEER).
reg(Conn, Sid, User, Peer) ->
    ?CHAIN:in_proc(Conn, fun() -> ?CHAIN:all(on_register, [Peer, Sid, User], ?CHAIN:plugins()) end).
queue(Queue, Hook, Sid) ->
    ?CHAIN:in_proc(Queue, fun() -> ?CHAIN:all(Hook, [Sid], ?CHAIN:plugins()) end).
wakeup(Q, Sid) -> queue(Q, on_client_wakeup, Sid).
offline(Q, Sid) -> queue(Q, on_client_offline, Sid).
gone(Q, Sid) -> queue(Q, on_client_gone, Sid).
expired(Q, Sid) -> queue(Q, on_session_expired, Sid).

%% auth, wakeup, on_register (docs/VERNEMQ.md); the queue is remembered
%% for the mocked broker's disconnect. Returns the session number.
connect(Conn, Queue, Sid, Clean) -> connect(Conn, Queue, Sid, Clean, undefined, ?PEER).
connect(Conn, Queue, Sid, Clean, User, Peer) -> connect(Conn, Queue, Sid, Clean, User, Peer, undefined).
connect(Conn, Queue, {_, ClientId} = Sid, Clean, User, Peer, Password) ->
    ok = auth(Conn, Sid, Clean, User, Password, Peer),
    ok = wakeup(Queue, Sid),
    ok = reg(Conn, Sid, User, Peer),
    true = ets:insert(kick_queues, {ClientId, Queue, Clean}),
    {ok, #{generation := G}} = vmq_warden:lookup(Sid),
    G.

%% The broker's queues as VerneMQ 2.0.1 and 2.1.2 have them, for the
%% plugin's disconnects (vmq_queue_sup_sup:get_queue_pid/1 and
%% vmq_queue:force_disconnect/3): disconnecting an online session calls the
%% queue's gone hook (offline for a persistent session kept); with cleanup
%% the queue stops at once, online or offline, and no hook is called at
%% all. Every call is recorded, reason included.
mock_broker_queues() ->
    Sup = spawn(fun() -> receive stop -> ok end end),
    true = register(vmq_queue_sup_sup, Sup),
    ok = meck:new(vmq_queue_sup_sup, [non_strict, no_link]),
    ok = meck:new(vmq_queue, [non_strict, no_link]),
    ok = meck:expect(vmq_queue_sup_sup, get_queue_pid,
                     fun({_, ClientId}) ->
                             case ets:lookup(kick_queues, ClientId) of
                                 [{_, Q, _}] -> Q;
                                 [] -> not_found
                             end
                     end),
    ok = meck:expect(vmq_queue, force_disconnect,
                     fun(Q, _Reason, DoCleanup) ->
                             [{ClientId, Q, Clean}] = ets:match_object(kick_queues, {'_', Q, '_'}),
                             Sid = {"", ClientId},
                             case {Clean, DoCleanup} of
                                 {_, true} -> true = ets:delete(kick_queues, ClientId), ok;
                                 {true, false} -> true = ets:delete(kick_queues, ClientId), ok = gone(Q, Sid);
                                 {false, false} -> ok = offline(Q, Sid)
                             end
                     end).

%% Outside VerneMQ: no queue supervisor, no queue module.
unmock_broker_queues() ->
    meck:unload([vmq_queue_sup_sup, vmq_queue]),
    stop_queue_sup().

stop_queue_sup() ->
    case whereis(vmq_queue_sup_sup) of
        undefined -> ok;
        Pid -> unregister(vmq_queue_sup_sup), exit(Pid, kill), ok
    end.

%% Every disconnect the plugin asked for used VerneMQ's own reason for an
%% operator's disconnect (`vmq-admin session disconnect'): the MQTT 5
%% session counts its DISCONNECT by reason and crashes on one it does not
%% know, such as the `normal' of vernemq_dev_api:disconnect_by_subscriber_id/2.
disconnects() ->
    All = meck:num_calls(vmq_queue, force_disconnect, '_'),
    All = meck:num_calls(vmq_queue, force_disconnect, ['_', administrative_action, '_']),
    All.

online() ->
    lists:sort([C || #{client_id := C} <- vmq_warden:sessions(#{state => online})]).
