%% @doc The cluster view: one answer over every connected node's registry.
%% Each node is asked in parallel (erpc:multicall) with one deadline; the
%% rows are merged per subscriber id, the most recent state change
%% (`last_change') winning, and the answer names the nodes that did not
%% answer. Never called from a hook; never runs past its timeout.
%%
%% Uses the cluster VerneMQ already is: the Erlang distribution's connected
%% nodes (`nodes()'), no membership of its own. A node that is connected but
%% does not run the plugin (a remote shell, a tool node) is listed under
%% `not_running', not `unreachable'.
-module(vmq_warden_cluster).

-export([sessions/1, counts/0, stats/0]).
%% Called on each node by the functions above.
-export([local_sessions/1, local_lookup/1, local_counts/0, local_stats/0]).

-type answer() :: #{atom() => term()}.
-export_type([answer/0]).

%% @doc Sessions matching `Filter' on every node (the keys of
%% vmq_warden:sessions/1, plus `timeout' in ms): `#{sessions, nodes,
%% unreachable, not_running}'. `limit' applies to the merged list. A row
%% comes from the node whose record of that subscriber id changed last; a
%% node that did not answer contributes no row (its sessions are not shown
%% as online anywhere) and is named in `unreachable' with the nodes that
%% went down and have not come back (vmq_warden_cluster_sync).
-spec sessions(map()) -> answer() | {error, term()}.
sessions(Filter) when is_map(Filter) ->
    Timeout = timeout(Filter),
    Local = maps:remove(timeout, Filter),
    Limit = maps:get(limit, Local, 1000),
    %% a bad filter is refused here, not once per node
    case vmq_warden:sessions(Local#{limit => 0}) of
        {error, _} = Error ->
            Error;
        _ when not is_integer(Limit); Limit < 0 ->
            {error, {bad_limit, Limit}};
        _ ->
            Deadline = erlang:monotonic_time(millisecond) + Timeout,
            {Answers, Summary} = ask_all(local_sessions, [Local], Timeout),
            Rows = lists:append([Rows || {_Node, Rows} <- Answers]),
            Merged = merge(Rows),
            Checked = newest_elsewhere(Merged, [N || {N, _} <- Answers], Deadline),
            Summary#{sessions => lists:sublist(Checked, Limit)}
    end;
sessions(_) ->
    {error, badarg}.

%% @doc Live records per state, summed over the nodes that answered (a
%% persistent session that moved is counted once per node holding a record
%% of it: offline on one, online on the other), and each node's own.
-spec counts() -> answer().
counts() ->
    {Answers, Summary} = ask_all(local_counts, [], default_timeout()),
    PerNode = maps:from_list([{N, C} || {N, C} <- Answers, is_map(C)]),
    Sum = maps:fold(fun(_N, C, Acc) ->
                            maps:fold(fun(K, V, A) -> maps:update_with(K, fun(X) -> X + V end, V, A) end,
                                      Acc, C)
                    end, #{authenticated => 0, online => 0, offline => 0}, PerNode),
    Summary#{counts => Sum, per_node => PerNode}.

%% @doc Each node's vmq_warden:stats().
-spec stats() -> answer().
stats() ->
    {Answers, Summary} = ask_all(local_stats, [], default_timeout()),
    Summary#{per_node => maps:from_list(Answers)}.

%% ---- on each node ---------------------------------------------------------

%% Each answers `{error, not_running}' on a node where the plugin's
%% application does not run (its modules may still be loaded there).

%% The node's matching rows, each with `node' set (vmq_warden:session/1).
-spec local_sessions(map()) -> [map()] | {error, term()}.
local_sessions(Filter) ->
    if_running(fun() -> vmq_warden:sessions(Filter) end).

%% The node's records of these subscriber ids (those it has).
-spec local_lookup([{string() | binary(), binary()}]) -> [map()] | {error, term()}.
local_lookup(SubscriberIds) ->
    if_running(fun() -> [S || Sid <- SubscriberIds, {ok, S} <- [vmq_warden:lookup(Sid)]] end).

-spec local_counts() -> map() | {error, term()}.
local_counts() ->
    if_running(fun vmq_warden:counts/0).

-spec local_stats() -> map() | {error, term()}.
local_stats() ->
    if_running(fun vmq_warden:stats/0).

if_running(Fun) ->
    case is_pid(whereis(vmq_warden_sup)) of
        true -> Fun();
        false -> {error, not_running}
    end.

%% ---- asking every node -----------------------------------------------------

%% {[{Node, Answer}], #{nodes, unreachable, not_running}}: this node and
%% every connected one, in parallel, within Timeout ms.
ask_all(Fun, Args, Timeout) ->
    Nodes = [node() | nodes()],
    Results = erpc:multicall(Nodes, ?MODULE, Fun, Args, Timeout),
    {Answers, Unreachable, NotRunning} = classify(lists:zip(Nodes, Results), [], [], []),
    Down = [N || N <- vmq_warden_cluster_sync:down_nodes(), not lists:member(N, Nodes)],
    {Answers, #{nodes => lists:sort([N || {N, _} <- Answers]),
                unreachable => lists:usort(Unreachable ++ Down),
                not_running => lists:sort(NotRunning)}}.

classify([], Answers, Unreachable, NotRunning) ->
    {lists:reverse(Answers), Unreachable, NotRunning};
classify([{Node, Result} | Rest], Answers, Unreachable, NotRunning) ->
    case Result of
        {ok, {error, _}} ->
            %% the plugin is loaded there but its library is not
            classify(Rest, Answers, Unreachable, [Node | NotRunning]);
        {ok, Answer} ->
            classify(Rest, [{Node, Answer} | Answers], Unreachable, NotRunning);
        {error, {erpc, Why}} when Why =:= timeout; Why =:= noconnection ->
            classify(Rest, Answers, [Node | Unreachable], NotRunning);
        {error, {exception, undef, _}} ->
            classify(Rest, Answers, Unreachable, [Node | NotRunning]);
        _ ->
            %% an exception there: as good as no answer
            classify(Rest, Answers, [Node | Unreachable], NotRunning)
    end.

%% ---- merging -----------------------------------------------------------------

%% One row per subscriber id: the one whose state changed last. On a tie
%% (two nodes' clocks), an online row wins over an offline one.
merge(Rows) ->
    Best = lists:foldl(fun(#{mountpoint := M, client_id := C} = Row, Acc) ->
                               Key = {M, C},
                               case Acc of
                                   #{Key := Old} -> Acc#{Key := newer(Old, Row)};
                                   #{} -> Acc#{Key => Row}
                               end
                       end, #{}, Rows),
    lists:sort(fun order/2, maps:values(Best)).

newer(#{last_change := A} = Old, #{last_change := B} = New) ->
    if B > A -> New;
       B < A -> Old;
       true -> case maps:get(state, New) of online -> New; _ -> Old end
    end.

%% Stable output: by client id, then mountpoint.
order(#{client_id := A, mountpoint := Ma}, #{client_id := B, mountpoint := Mb}) ->
    {A, Ma} =< {B, Mb}.

%% A filter is applied on each node: a subscriber whose newer record, on
%% another node, does not match (offline on A, woken up on B, asked for
%% `state => offline') would show its older state. So the ids found are
%% looked up on the other nodes that answered, and a row that a newer
%% record there replaces is dropped (the newer record is shown only if it
%% matches, i.e. if its node returned it too). Within what is left of the
%% deadline; without an answer the rows stay as they are.
newest_elsewhere([], _Nodes, _Deadline) ->
    [];
newest_elsewhere(Rows, Nodes, Deadline) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    Ids = [{M, C} || #{mountpoint := M, client_id := C} <- Rows],
    Results = erpc:multicall(Nodes, ?MODULE, local_lookup, [Ids], Left),
    Newest = lists:foldl(fun({ok, Found}, Acc) when is_list(Found) ->
                                 lists:foldl(fun(#{mountpoint := M, client_id := C, last_change := T} = S, A) ->
                                                     Key = {M, C},
                                                     case A of
                                                         #{Key := {T0, _}} when T0 >= T -> A;
                                                         #{} -> A#{Key => {T, maps:get(node, S)}}
                                                     end
                                             end, Acc, Found);
                            (_, Acc) -> Acc
                         end, #{}, Results),
    [R || #{mountpoint := M, client_id := C, last_change := T, node := N} = R <- Rows,
          case maps:get({M, C}, Newest, {T, N}) of
              {T1, N1} -> T1 =< T orelse N1 =:= N
          end].

%% ---- settings ----------------------------------------------------------------

timeout(Filter) ->
    case maps:get(timeout, Filter, undefined) of
        T when is_integer(T), T > 0 -> T;
        _ -> default_timeout()
    end.

default_timeout() ->
    case application:get_env(vmq_warden, cluster_query_timeout, 2000) of
        T when is_integer(T), T > 0 -> T;
        _ -> 2000
    end.
