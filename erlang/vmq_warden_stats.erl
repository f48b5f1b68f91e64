%% @doc Counters kept on the Erlang side: what happens when the NIF cannot
%% answer (so they work without it), and log rate limiting for those failures.
-module(vmq_warden_stats).

-export([init/0, bump/1, read/0, should_log/0]).

-define(KEY, {?MODULE, counters}).
-define(NAMES, [failed, log_suppressed, reconcile_passes]).
%% One slot per name, plus the second of the last failure log line.
-define(LAST_LOG_SLOT, 4).

-spec init() -> ok.
init() ->
    case persistent_term:get(?KEY, undefined) of
        undefined ->
            persistent_term:put(?KEY, counters:new(length(?NAMES) + 1, [write_concurrency]));
        _ ->
            ok
    end,
    ok.

-spec bump(failed | log_suppressed | reconcile_passes) -> ok.
bump(Name) ->
    case persistent_term:get(?KEY, undefined) of
        undefined -> ok;
        Ref -> counters:add(Ref, index(Name), 1)
    end.

-spec read() -> #{atom() => non_neg_integer()}.
read() ->
    case persistent_term:get(?KEY, undefined) of
        undefined -> maps:from_list([{N, 0} || N <- ?NAMES]);
        Ref -> maps:from_list([{N, counters:get(Ref, index(N))} || N <- ?NAMES])
    end.

%% At most one failure log line a second, so a storm of failing connects
%% cannot flood the broker's log; the rest are counted.
-spec should_log() -> boolean().
should_log() ->
    Now = erlang:monotonic_time(second),
    case persistent_term:get(?KEY, undefined) of
        undefined -> true;
        Ref ->
            case counters:get(Ref, ?LAST_LOG_SLOT) of
                Now -> bump(log_suppressed), false;
                _ -> counters:put(Ref, ?LAST_LOG_SLOT, Now), true
            end
    end.

index(failed) -> 1;
index(log_suppressed) -> 2;
index(reconcile_passes) -> 3.
