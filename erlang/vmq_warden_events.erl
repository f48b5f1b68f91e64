%% @doc The event stream's Erlang side: switches the NIF's event queue on or
%% off, drains it every `events_drain_interval' (bounded batches, never a
%% hook's process) and hands the events to the sinks: the MQTT sink here
%% (the broker's plugin publish function, docs/VERNEMQ.md "What a plugin may
%% call") and the webhook (`vmq_warden_webhook', its own process).
%%
%% Memory stays bounded: the NIF queue is byte-bounded and counts its
%% drops; this process takes at most ?MAX_PER_TICK events a tick; the
%% webhook keeps a bounded queue and is skipped (its batch counted dropped)
%% while its mailbox is not empty.
-module(vmq_warden_events).
-behaviour(gen_server).

-export([start_link/0, flush/0, stats/0, topic/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/logger.hrl").

%% Events one take_events/1 call returns (the NIF's own bound).
-define(TAKE, 200).
%% Events one tick drains at most: 25 NIF calls of well under 1 ms each.
-define(MAX_PER_TICK, 5000).

-record(st, {enabled = false :: boolean(),
             interval :: pos_integer(),
             publish :: undefined | fun(),
             prefix = [] :: [binary()],
             webhook = false :: boolean(),
             published = 0 :: non_neg_integer(),
             publish_failed = 0 :: non_neg_integer(),
             webhook_skipped = 0 :: non_neg_integer()}).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Drain now and fan out (tests, and a clean stop). Returns how many
%% events went out.
-spec flush() -> non_neg_integer().
flush() ->
    gen_server:call(?MODULE, flush, 10000).

%% @doc The counters of the event queue and of the sinks.
-spec stats() -> map().
stats() ->
    Queue = try vmq_warden_nif:events_stats() catch error:_ -> #{} end,
    Sinks = try gen_server:call(?MODULE, stats, 1000) catch exit:_ -> #{} end,
    Webhook = try vmq_warden_webhook:stats() catch exit:_ -> #{} end,
    maps:merge(Queue, Sinks#{webhook => Webhook}).

init([]) ->
    {ok, Settings} = vmq_warden_config:settings(),
    #{events_enabled := Enabled, events_queue_bytes := Bytes,
      events_drain_interval := Interval, events_mqtt := Mqtt,
      events_mqtt_prefix := Prefix, events_webhook := Webhook} = Settings,
    On = configure_queue(Enabled, Bytes),
    Publish = case On andalso Mqtt of
                  true -> publish_fun();
                  false -> undefined
              end,
    St = #st{enabled = On, interval = Interval, publish = Publish,
             prefix = binary:split(unicode:characters_to_binary(Prefix), <<"/">>, [global]),
             webhook = On andalso Webhook},
    _ = On andalso schedule(St),
    {ok, St}.

handle_call(flush, _From, St) ->
    {N, St1} = drain(St, ?MAX_PER_TICK),
    {reply, N, St1};
handle_call(stats, _From, #st{} = St) ->
    {reply, #{mqtt_published => St#st.published,
              mqtt_failed => St#st.publish_failed,
              webhook_skipped => St#st.webhook_skipped}, St};
handle_call(_, _From, St) ->
    {reply, {error, unknown_call}, St}.

handle_cast(_, St) ->
    {noreply, St}.

handle_info(drain, St) ->
    {_, St1} = drain(St, ?MAX_PER_TICK),
    schedule(St1),
    {noreply, St1};
handle_info(_, St) ->
    {noreply, St}.

%% ------------------------------------------------------------------ internals

configure_queue(Enabled, Bytes) ->
    try vmq_warden_nif:events_configure(Enabled, Bytes, atom_to_binary(node(), utf8)) of
        ok -> Enabled
    catch
        error:nif_not_loaded -> false
    end.

schedule(#st{interval = I}) ->
    erlang:send_after(I, self(), drain).

%% The MQTT sink gets each piece as it is taken; the webhook gets the whole
%% tick's events in one message, so its mailbox holds at most a few.
drain(#st{enabled = false} = St, _Left) ->
    {0, St};
drain(St, Left) ->
    {Done, Lines, St1} = drain(St, Left, 0, []),
    {Done, to_webhook(lists:append(lists:reverse(Lines)), St1)}.

drain(St, Left, Done, Lines) when Left =< 0 ->
    {Done, Lines, St};
drain(St, Left, Done, Lines) ->
    case take(min(?TAKE, Left)) of
        [] ->
            {Done, Lines, St};
        Events ->
            St1 = publish_all(Events, St),
            Lines1 = case St#st.webhook of
                         true -> [[Json || {_, _, _, Json} <- Events] | Lines];
                         false -> Lines
                     end,
            N = length(Events),
            case N < min(?TAKE, Left) of
                true -> {Done + N, Lines1, St1};
                false -> drain(St1, Left - N, Done + N, Lines1)
            end
    end.

take(Max) ->
    try vmq_warden_nif:take_events(Max)
    catch error:_ -> []
    end.

publish_all(_Events, #st{publish = undefined} = St) ->
    St;
publish_all(Events, #st{publish = Publish, prefix = Prefix} = St) ->
    Node = atom_to_binary(node(), utf8),
    lists:foldl(
      fun({Kind, _Mountpoint, ClientId, Json}, #st{published = P, publish_failed = F} = S) ->
              try Publish(topic(Prefix, Node, [Kind, ClientId]), Json, #{qos => 0, retain => false}) of
                  ok -> S#st{published = P + 1};
                  {ok, _} -> S#st{published = P + 1};
                  _ -> S#st{publish_failed = F + 1}
              catch
                  _:_ -> S#st{publish_failed = F + 1}
              end
      end, St, Events).

%% @doc The MQTT sink's topic as the publish function takes it (a list of
%% levels): the prefix, the node, then the kind and the client id, each
%% made a single level (`/', `+', `#' become `_'; an empty one is `_').
-spec topic([binary()], binary(), [binary()]) -> [binary()].
topic(Prefix, Node, Levels) ->
    Prefix ++ [level(L) || L <- [Node | Levels]].

level(<<>>) -> <<"_">>;
level(L) -> binary:replace(L, [<<"/">>, <<"+">>, <<"#">>], <<"_">>, [global]).

to_webhook(_Lines, #st{webhook = false} = St) ->
    St;
to_webhook([], St) ->
    St;
to_webhook(Lines, #st{webhook_skipped = Skipped} = St) ->
    case vmq_warden_webhook:offer(Lines) of
        ok -> St;
        busy -> St#st{webhook_skipped = Skipped + length(Lines)}
    end.

%% The broker's plugin publish function (vmq_reg:direct_plugin_exports/1,
%% facts of docs/VERNEMQ.md); absent outside VerneMQ: the sink stays off.
publish_fun() ->
    case code:ensure_loaded(vmq_reg) =:= {module, vmq_reg}
        andalso erlang:function_exported(vmq_reg, direct_plugin_exports, 1) of
        true ->
            try vmq_reg:direct_plugin_exports(?MODULE) of
                {_Register, Publish, _SubUnsub} when is_function(Publish, 3) -> Publish;
                Other -> no_publish(Other)
            catch
                Class:Reason -> no_publish({Class, Reason})
            end;
        false ->
            no_publish(not_inside_vernemq)
    end.

no_publish(Why) ->
    ?LOG_WARNING(#{msg => "vmq_warden: events MQTT sink off, no publish function", reason => Why},
                 vmq_warden_log:meta(warning)),
    undefined.
