%% @doc The events' HTTP sink: POSTs batches of JSON lines
%% (application/x-ndjson) to `events_webhook_url', one request in flight,
%% with retries and back-off, a circuit breaker for a dead endpoint, and
%% counters of sent, retried and dropped events.
%%
%% It never blocks: requests are asynchronous (httpc `{sync, false}' in its
%% own stand-alone httpc profile), so a slow endpoint delays only this
%% process, whose queue is bounded (`events_webhook_queue'; beyond it new
%% events are dropped and counted). `offer/1' refuses while its mailbox is
%% not empty, so its mailbox holds at most a few batches.
-module(vmq_warden_webhook).
-behaviour(gen_server).

-export([start_link/0, offer/1, stats/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-include_lib("kernel/include/logger.hrl").

%% One batch is tried at most this often (the first POST and 3 retries),
%% then dropped, counted.
-define(MAX_ATTEMPTS, 4).
%% Retry back-off: 100 ms doubling per attempt, at most 5 s.
-define(BACKOFF_BASE, 100).
-define(BACKOFF_MAX, 5000).
%% After this many failed POSTs in a row the breaker opens: nothing is sent
%% for ?BREAKER_OPEN ms, then one batch tries the endpoint again.
-define(BREAKER_FAILURES, 5).
-define(BREAKER_OPEN, 10000).
%% offer/1 answers busy above this many messages waiting.
-define(MAILBOX_MAX, 4).

-record(st, {enabled = false :: boolean(),
             url = "" :: string(),
             timeout = 5000 :: pos_integer(),
             batch = 100 :: pos_integer(),
             max = 10000 :: pos_integer(),
             httpc :: undefined | pid(),
             queue = queue:new() :: queue:queue(binary()),
             len = 0 :: non_neg_integer(),
             %% the batch being sent or waiting for its retry: {Lines, N, Attempt}
             current = none :: none | {[binary()], pos_integer(), pos_integer()},
             request = none :: none | reference(),
             timer = undefined :: undefined | reference(),
             failures = 0 :: non_neg_integer(),
             %% monotonic ms (may be negative) until which the breaker is open
             open_until = none :: none | integer(),
             sent = 0 :: non_neg_integer(),
             retried = 0 :: non_neg_integer(),
             dropped = 0 :: non_neg_integer(),
             failed_requests = 0 :: non_neg_integer()}).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Hand over events (JSON lines). `busy' when the sink is behind or
%% not running (being restarted): the caller counts the batch dropped.
-spec offer([binary()]) -> ok | busy.
offer(Lines) ->
    case whereis(?MODULE) of
        undefined ->
            busy;
        Pid ->
            case process_info(Pid, message_queue_len) of
                {message_queue_len, N} when N > ?MAILBOX_MAX -> busy;
                _ -> gen_server:cast(Pid, {events, Lines})
            end
    end.

-spec stats() -> map().
stats() ->
    gen_server:call(?MODULE, stats, 1000).

init([]) ->
    {ok, Settings} = vmq_warden_config:settings(),
    #{events_enabled := Events, events_webhook := On, events_webhook_url := Url,
      events_webhook_queue := Max, events_webhook_batch := Batch,
      events_webhook_timeout := Timeout} = Settings,
    St = #st{url = unicode:characters_to_list(Url), timeout = Timeout, batch = Batch, max = Max},
    case Events andalso On of
        true -> {ok, start_httpc(St)};
        false -> {ok, St}
    end.

handle_call(stats, _From, St) ->
    {reply, #{enabled => St#st.enabled, sent => St#st.sent, retried => St#st.retried,
              dropped => St#st.dropped, failed_requests => St#st.failed_requests,
              queued => St#st.len + current_len(St),
              breaker => breaker(St)}, St};
handle_call(_, _From, St) ->
    {reply, {error, unknown_call}, St}.

handle_cast({events, Lines}, #st{enabled = true} = St) ->
    {noreply, maybe_send(enqueue(Lines, St))};
handle_cast({events, Lines}, #st{dropped = D} = St) ->
    {noreply, St#st{dropped = D + length(Lines)}};
handle_cast(_, St) ->
    {noreply, St}.

handle_info({http, {Ref, Result}}, #st{request = Ref} = St) ->
    St1 = St#st{request = none},
    {noreply, case success(Result) of
                  true -> maybe_send(sent(St1));
                  false -> failed(St1)
              end};
handle_info(retry, St) ->
    {noreply, maybe_send(St#st{timer = undefined})};
handle_info(_, St) ->
    {noreply, St}.

terminate(_Reason, #st{httpc = Pid}) when is_pid(Pid) ->
    _ = catch inets:stop(stand_alone, Pid),
    ok;
terminate(_Reason, _St) ->
    ok.

%% ------------------------------------------------------------------ internals

start_httpc(#st{url = Url} = St) ->
    _ = lists:prefix("https://", Url) andalso application:ensure_all_started(ssl),
    case inets:start(httpc, [{profile, vmq_warden_webhook}], stand_alone) of
        {ok, Pid} ->
            St#st{enabled = true, httpc = Pid};
        {error, Reason} ->
            ?LOG_ERROR(#{msg => "vmq_warden: events webhook off, httpc did not start", reason => Reason},
                       vmq_warden_log:meta(error)),
            St
    end.

current_len(#st{current = none}) -> 0;
current_len(#st{current = {_, N, _}}) -> N.

breaker(#st{open_until = none}) ->
    closed;
breaker(#st{open_until = Until}) ->
    case Until > now_ms() of
        true -> open;
        false -> closed
    end.

%% Keep what fits; count the rest dropped.
enqueue(Lines, #st{queue = Q, len = Len, max = Max, dropped = D} = St) ->
    Room = max(0, Max - Len - current_len(St)),
    {Keep, Drop} = lists:split(min(Room, length(Lines)), Lines),
    St#st{queue = queue:join(Q, queue:from_list(Keep)), len = Len + length(Keep),
          dropped = D + length(Drop)}.

maybe_send(#st{request = Ref} = St) when is_reference(Ref) -> St;
maybe_send(#st{timer = T} = St) when is_reference(T) -> St;
maybe_send(#st{current = none, len = 0} = St) -> St;
maybe_send(#st{current = none, queue = Q, len = Len, batch = B} = St) ->
    N = min(B, Len),
    {Batch, Rest} = queue:split(N, Q),
    maybe_send(St#st{current = {queue:to_list(Batch), N, 1}, queue = Rest, len = Len - N});
maybe_send(#st{open_until = none} = St) ->
    post(St);
maybe_send(#st{open_until = Until} = St) ->
    case Until - now_ms() of
        Wait when Wait > 0 -> St#st{timer = erlang:send_after(Wait, self(), retry)};
        _ -> post(St)
    end.

post(#st{current = {Lines, _, _}, url = Url, timeout = T, httpc = Httpc} = St) ->
    Body = [[L, $\n] || L <- Lines],
    Request = {Url, [], "application/x-ndjson", iolist_to_binary(Body)},
    try httpc:request(post, Request, [{timeout, T}, {connect_timeout, T}],
                      [{sync, false}, {receiver, self()}, {body_format, binary}], Httpc) of
        {ok, Ref} -> St#st{request = Ref};
        {error, _} -> failed(St)
    catch
        _:_ -> failed(St)
    end.

success({{_Version, Code, _Phrase}, _Headers, _Body}) -> Code >= 200 andalso Code < 300;
success(_) -> false.

sent(#st{current = {_, N, _}, sent = S} = St) ->
    St#st{current = none, sent = S + N, failures = 0, open_until = none}.

%% A failed POST: the batch is retried after a back-off, or dropped after
%% ?MAX_ATTEMPTS; enough failures in a row open the breaker.
failed(#st{current = {Lines, N, Attempt}, failures = F, failed_requests = FR} = St0) ->
    St = St0#st{failures = F + 1, failed_requests = FR + 1},
    St1 = case Attempt >= ?MAX_ATTEMPTS of
              true -> St#st{current = none, dropped = St#st.dropped + N};
              false -> St#st{current = {Lines, N, Attempt + 1}, retried = St#st.retried + N}
          end,
    {Wait, St2} = case St1#st.failures >= ?BREAKER_FAILURES of
                      true -> {?BREAKER_OPEN, St1#st{open_until = now_ms() + ?BREAKER_OPEN}};
                      false -> {min(?BACKOFF_MAX, ?BACKOFF_BASE bsl (Attempt - 1)), St1}
                  end,
    St2#st{timer = erlang:send_after(Wait, self(), retry)}.

now_ms() ->
    erlang:monotonic_time(millisecond).
