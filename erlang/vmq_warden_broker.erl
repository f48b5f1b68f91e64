%% @doc What the plugin asks the broker itself, outside the hooks: the state
%% of a subscriber's queue, and a disconnect. These are VerneMQ's internal modules
%% (docs/VERNEMQ.md, "What a plugin may call"): used only when they are
%% loaded, never from a hook, and no exception from them escapes.
-module(vmq_warden_broker).

-export([inside_vernemq/0, session_state/1, queues/0, queue_state/1, can_disconnect/0, disconnect/2]).

-define(STATUS_TIMEOUT, 1000).

%% True inside a running VerneMQ node (its queue supervisor is there).
-spec inside_vernemq() -> boolean().
inside_vernemq() ->
    erlang:function_exported(vmq_queue_sup_sup, get_queue_pid, 1)
        andalso is_pid(whereis(vmq_queue_sup_sup)).

%% Whether disconnect/2 can work here: inside VerneMQ, with its queue module.
-spec can_disconnect() -> boolean().
can_disconnect() ->
    inside_vernemq() andalso code:ensure_loaded(vmq_queue) =:= {module, vmq_queue}
        andalso erlang:function_exported(vmq_queue, force_disconnect, 3).

%% Disconnect a subscriber's session as VerneMQ's own `vmq-admin session
%% disconnect' does: its queue's force_disconnect with the reason
%% `administrative_action' (an MQTT 5 client gets DISCONNECT 0x98), and with
%% `DoCleanup' the queue and its messages removed. Not through
%% vernemq_dev_api:disconnect_by_subscriber_id/2: its reason, `normal', is
%% one VerneMQ's MQTT 5 session cannot count, and the connection process
%% crashed on every such kick in a real 2.1.2 node (docs/VERNEMQ.md).
%% `ok', `not_found' (no queue, or it ended meanwhile) or `{error, Why}'.
-spec disconnect({string(), binary()}, boolean()) -> ok | not_found | {error, term()}.
disconnect(SubscriberId, DoCleanup) ->
    %% one try around both calls: a `try ... of' would not catch the second
    try
        case vmq_queue_sup_sup:get_queue_pid(SubscriberId) of
            not_found -> not_found;
            Pid when is_pid(Pid) -> vmq_queue:force_disconnect(Pid, administrative_action, DoCleanup);
            Other -> {error, Other}
        end
    catch
        exit:{Why, _} when Why =:= normal; Why =:= noproc -> not_found;
        Class:Why -> {error, {Class, Why}}
    end.

%% The broker's view of one subscriber id on this node: `absent' (no
%% queue), `offline' (a queue without a session), `online', or `unknown'
%% when the broker could not say (a queue that did not answer in time).
-spec session_state({string(), binary()}) -> absent | offline | online | unknown.
session_state(SubscriberId) ->
    try vmq_queue_sup_sup:get_queue_pid(SubscriberId) of
        not_found -> absent;
        Pid when is_pid(Pid) ->
            case queue_state_within(Pid) of
                {plugin, State} -> State;
                State -> State
            end;
        _ -> unknown
    catch
        _:_ -> unknown
    end.

%% Every queue of this node, `[{SubscriberId, QueuePid}]' (the broker's
%% vmq_queue_sup_sup:fold_queues/2, a fold over its queue tables); `[]' when
%% the broker could not say.
-spec queues() -> [{{string(), binary()}, pid()}].
queues() ->
    try vmq_queue_sup_sup:fold_queues(fun(Sid, Pid, Acc) -> [{Sid, Pid} | Acc] end, []) of
        Queues when is_list(Queues) -> Queues;
        _ -> []
    catch
        _:_ -> []
    end.

%% One queue's state as session_state/1 gives it, and `plugin' for a
%% queue a plugin holds (not a client's session).
-spec queue_state(pid()) -> absent | offline | online | plugin | unknown.
queue_state(Pid) when is_pid(Pid) ->
    case queue_state_within(Pid) of
        {plugin, _} -> plugin;
        State -> State
    end.

%% vmq_queue:status/1 waits forever; a queue stuck in a long operation must
%% not stop the reconciler, so it is asked from a helper with a deadline.
queue_state_within(Pid) ->
    Parent = self(),
    Tag = make_ref(),
    {Helper, Ref} = spawn_monitor(fun() -> Parent ! {Tag, catch vmq_queue:status(Pid)} end),
    receive
        {Tag, {StateName, _Mode, _Stored, Sessions, IsPlugin}} ->
            demonitor(Ref, [flush]),
            State = case StateName =:= online orelse Sessions > 0 of
                        true -> online;
                        false -> offline
                    end,
            case IsPlugin of
                true -> {plugin, State};
                _ -> State
            end;
        {Tag, {'EXIT', {noproc, _}}} ->
            demonitor(Ref, [flush]),
            absent;
        {Tag, _} ->
            demonitor(Ref, [flush]),
            unknown;
        {'DOWN', Ref, process, Helper, _} ->
            unknown
    after ?STATUS_TIMEOUT ->
        exit(Helper, kill),
        receive {'DOWN', Ref, process, Helper, _} -> ok end,
        %% a late answer is dropped with the tag
        receive {Tag, _} -> ok after 0 -> ok end,
        unknown
    end.
