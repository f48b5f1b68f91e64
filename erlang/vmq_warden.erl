%% @doc Operator API: who is connected, since when, from where, and what
%% happened to each session; the firewall's bans; reloading the policy.
%% Results are plain maps (documented in the README). Other plugins may call
%% these functions too.
-module(vmq_warden).

-export([lookup/1, sessions/0, sessions/1, counts/0, stats/0,
         cluster_sessions/1, cluster_counts/0, cluster_stats/0,
         recent_endings/1, reload/0, bans/0, clear_bans/1,
         kick/1, kick/2, events/0]).
%% Exported for tests, which script the NIF's pieces.
-export([list_chunks/2]).

-type subscriber_id() :: {string() | binary(), binary()}.

-define(FILTER_KEYS, [state, username, mountpoint, client_id, peer, limit]).
%% A listing's heap is sized for at most this many rows, of about this many
%% words each with their map (list_chunks/2).
-define(PRESIZED_ROWS, 10000).
-define(ROW_WORDS, 60).
-type session() :: #{atom() => term()}.
-type kick_selector() :: {subscriber_id, subscriber_id()} | {username, binary()}
                       | {peer, string() | binary()} | {client_id_prefix, binary()} | map().
-export_type([session/0, kick_selector/0]).

%% @doc One subscriber's session record.
-spec lookup(subscriber_id()) -> {ok, session()} | not_found | {error, term()}.
lookup(SubscriberId) ->
    call(fun() ->
                 case vmq_warden_nif:lookup(SubscriberId) of
                     not_found -> not_found;
                     Session -> {ok, session(Session)}
                 end
         end).

sessions() -> sessions(#{}).

%% @doc Sessions matching every given filter: `state' (atom), `username'
%% (binary), `mountpoint' (string), `client_id' (prefix, binary), `peer'
%% (CIDR or address, e.g. <<"10.0.0.0/8">>, "::1/128", "10.1.2.3"), `limit'
%% (default 1000).
-spec sessions(map()) -> [session()] | {error, term()}.
sessions(Filter) when is_map(Filter) ->
    case maps:keys(maps:without(?FILTER_KEYS, Filter)) of
        [] ->
            Spec = {opt(state, Filter), opt(username, Filter), opt(mountpoint, Filter),
                    opt(client_id, Filter), opt(peer, Filter)},
            case maps:get(limit, Filter, 1000) of
                Limit when is_integer(Limit), Limit >= 0 ->
                    Fetch = fun(Cursor, Left) -> vmq_warden_nif:list_chunk(Spec, Cursor, Left) end,
                    call(fun() -> list_chunks(Fetch, Limit) end);
                Bad ->
                    {error, {bad_limit, Bad}}
            end;
        Unknown ->
            %% a misspelt key would otherwise list everything
            {error, {unknown_filter_keys, lists:sort(Unknown)}}
    end;
sessions(_) ->
    {error, badarg}.

%% @doc The rows of one listing, as maps, fetched with `Fetch(Cursor,
%% Left)' (the NIF's list_chunk/3 for sessions/1): at most `Limit' of them,
%% in the order fetched.
%%
%% The NIF returns the list in pieces of a fraction of a millisecond each,
%% so that no scheduler is held for long; a record moved inside the
%% registry between two pieces can come twice, so a repeat is dropped (the
%% first row kept) and not counted toward the limit. Repeats are rare, so
%% they are looked for once the rows are in, by sorting their keys, rather
%% than with a map of the keys grown (and left as garbage) at every row.
%%
%% The rows land on this process's heap piece by piece, and growing the
%% heap one garbage collection at a time copied them again and again: the
%% heap is sized once for the rows the limit allows, up to ?PRESIZED_ROWS,
%% unless a max_heap_size set on the process leaves no room for that
%% (docs/BENCHMARKS.md, "Measured design choices").
-spec list_chunks(fun((term(), non_neg_integer()) -> term()), non_neg_integer()) ->
          [session()] | term().
list_chunks(Fetch, Limit) ->
    Words = min(Limit, ?PRESIZED_ROWS) * ?ROW_WORDS,
    case process_info(self(), max_heap_size) of
        {max_heap_size, #{size := Max}} when Max =/= 0, Max < 4 * Words ->
            list_chunks(Fetch, start, Limit, [], 0);
        _ ->
            Old = process_flag(min_heap_size, Words),
            try
                list_chunks(Fetch, start, Limit, [], 0)
            after
                process_flag(min_heap_size, Old)
            end
    end.

%% `Chunks': the pieces so far, newest first; `Got': their rows.
list_chunks(Fetch, Cursor, Limit, Chunks, Got) ->
    case Fetch(Cursor, Limit - Got) of
        {Rows, Next} when is_list(Rows) ->
            Chunks1 = [Rows | Chunks],
            Got1 = Got + length(Rows),
            case Next =:= done orelse Got1 >= Limit of
                true -> without_repeats(Fetch, Next, Limit, lists:append(lists:reverse(Chunks1)));
                false -> list_chunks(Fetch, Next, Limit, Chunks1, Got1)
            end;
        Error ->
            Error
    end.

%% With repeats dropped the limit may not be reached yet: fetch on.
without_repeats(Fetch, Next, Limit, Rows) ->
    Keys = [{element(1, R), element(2, R)} || R <- Rows],
    case length(lists:usort(Keys)) =:= length(Keys) of
        true ->
            [session(R) || R <- Rows];
        false ->
            Unique = first_of_each(Rows, Keys, #{}),
            case Next of
                done -> [session(R) || R <- Unique];
                _ -> list_chunks(Fetch, Next, Limit, [Unique], length(Unique))
            end
    end.

first_of_each([], [], _Seen) ->
    [];
first_of_each([Row | Rows], [Key | Keys], Seen) ->
    case Seen of
        #{Key := _} -> first_of_each(Rows, Keys, Seen);
        #{} -> [Row | first_of_each(Rows, Keys, Seen#{Key => []})]
    end.

opt(Key, Filter) ->
    case maps:get(Key, Filter, undefined) of
        undefined -> undefined;
        V when is_atom(V) -> atom_to_binary(V, utf8);
        V when is_list(V) -> unicode:characters_to_binary(V);
        V -> V
    end.

%% @doc Live records per state.
-spec counts() -> #{authenticated | online | offline => non_neg_integer()} | {error, term()}.
counts() ->
    call(fun vmq_warden_nif:counts/0).

%% @doc Every counter of the plugin (decisions, hook calls, registry, cache,
%% bans, reloads, verification time).
-spec stats() -> map().
stats() ->
    Local = vmq_warden_stats:read(),
    case call(fun vmq_warden_nif:stats/0) of
        #{decisions := Decisions} = Stats ->
            Stats#{decisions => Decisions#{failed => maps:get(failed, Local)},
                   nif_loaded => true,
                   log_suppressed => maps:get(log_suppressed, Local),
                   reconcile_passes => maps:get(reconcile_passes, Local),
                   event_stream => vmq_warden_events:stats(),
                   cluster => call(fun vmq_warden_nif:cluster_stats/0)};
        _ ->
            %% Says why, so that `vmq-admin warden stats' shows the cause.
            #{decisions => #{failed => maps:get(failed, Local)}, nif_loaded => false,
              nif_error => vmq_warden_nif:load_error()}
    end.

%% @doc Sessions over every connected node, merged per subscriber id by the
%% most recent state change; the filter of sessions/1 plus `timeout' (ms).
%% `#{sessions, nodes, unreachable, not_running}' (vmq_warden_cluster).
-spec cluster_sessions(map()) -> map() | {error, term()}.
cluster_sessions(Filter) ->
    vmq_warden_cluster:sessions(Filter).

%% @doc counts() summed over the nodes that answered, and per node.
-spec cluster_counts() -> map().
cluster_counts() ->
    vmq_warden_cluster:counts().

%% @doc stats() of every node that answered.
-spec cluster_stats() -> map().
cluster_stats() ->
    vmq_warden_cluster:stats().

%% @doc The most recent session endings, newest first.
-spec recent_endings(non_neg_integer()) -> [map()] | {error, term()}.
recent_endings(Limit) when is_integer(Limit), Limit >= 0 ->
    call(fun() -> [with_node(E) || E <- vmq_warden_nif:recent_endings(Limit)] end);
recent_endings(_) ->
    {error, badarg}.

%% @doc Re-read the policy and password files now. On error the running
%% policy stays and the error names the file, line and reason.
-spec reload() -> ok | {error, term()}.
reload() ->
    vmq_warden_reloader:reload().

-spec bans() -> [map()] | {error, term()}.
bans() ->
    call(fun vmq_warden_nif:bans/0).

%% @doc Lift bans: `all', `{peer, "10.0.0.1"}' or `{username, <<"bob">>}'.
-spec clear_bans(all | {peer, string() | binary()} | {username, binary()}) ->
          {ok, non_neg_integer()} | {error, term()}.
clear_bans(all) ->
    call(fun() -> {ok, vmq_warden_nif:clear_bans(all)} end);
clear_bans({peer, Ip}) when is_list(Ip); is_binary(Ip) ->
    case inet:parse_address(unicode:characters_to_list(Ip)) of
        {ok, Addr} -> call(fun() -> {ok, vmq_warden_nif:clear_bans({peer, Addr})} end);
        {error, _} -> {error, bad_address}
    end;
clear_bans({username, User}) when is_binary(User) ->
    call(fun() -> {ok, vmq_warden_nif:clear_bans({username, User})} end);
clear_bans(_) ->
    {error, badarg}.

%% @doc The event queue's and the sinks' counters (docs/OPERATIONS.md, "Events").
-spec events() -> map().
events() ->
    vmq_warden_events:stats().

%% @doc Disconnect the sessions a selector names, see kick/2.
-spec kick(kick_selector()) -> {ok, [map()]} | {error, term()}.
kick(Selector) ->
    kick(Selector, #{}).

%% @doc Disconnect the online sessions that `Selector' names: a subscriber
%% id, a username, a peer address or network (CIDR), a client-id prefix, or
%% any filter map of sessions/1. Each is recorded as ending `kicked' with
%% `by' (who asked; default `<<"api">>'), then disconnected as VerneMQ's
%% `vmq-admin session disconnect' does (vmq_warden_broker:disconnect/2).
%% Options: `dry_run' (true: only list what would be kicked), `cleanup'
%% (true: also remove the queue and kick offline sessions too), `limit'
%% (1000).
%% Returns the sessions, each with its `result' (the broker's answer, or
%% `dry_run').
-spec kick(kick_selector(), map()) -> {ok, [map()]} | {error, term()}.
kick(Selector, Opts) when is_map(Opts) ->
    DryRun = maps:get(dry_run, Opts, false) =:= true,
    Cleanup = maps:get(cleanup, Opts, false) =:= true,
    By = unicode:characters_to_binary(maps:get(by, Opts, <<"api">>)),
    case {kick_filter(Selector), DryRun orelse vmq_warden_broker:can_disconnect()} of
        {{error, _} = E, _} ->
            E;
        {_, false} ->
            {error, not_inside_vernemq};
        {{ok, Filter, Exact}, true} ->
            case sessions(Filter#{limit => maps:get(limit, Opts, 1000)}) of
                Sessions when is_list(Sessions) ->
                    Targets = [S || #{state := State} = S <- Sessions, Exact(S),
                                    State =:= online orelse (Cleanup andalso State =:= offline)],
                    {ok, [kick_one(S, DryRun, Cleanup, By) || S <- Targets]};
                Error ->
                    Error
            end
    end;
kick(_, _) ->
    {error, badarg}.

kick_filter({subscriber_id, {Mountpoint, ClientId}} = Selector) when is_binary(ClientId) ->
    case unicode:characters_to_binary(Mountpoint) of
        Mp when is_binary(Mp) ->
            {ok, #{mountpoint => Mp, client_id => ClientId},
             fun(#{client_id := C}) -> C =:= ClientId end};
        _ ->
            {error, {bad_selector, Selector}}
    end;
kick_filter({username, User}) when is_binary(User) -> {ok, #{username => User}, fun all/1};
kick_filter({peer, Cidr}) when is_binary(Cidr); is_list(Cidr) -> {ok, #{peer => Cidr}, fun all/1};
kick_filter({client_id_prefix, P}) when is_binary(P), P =/= <<>> -> {ok, #{client_id => P}, fun all/1};
kick_filter(Filter) when is_map(Filter), map_size(Filter) > 0 -> {ok, maps:remove(limit, Filter), fun all/1};
kick_filter(Other) -> {error, {bad_selector, Other}}.

all(_) -> true.

kick_one(#{mountpoint := Mp, client_id := ClientId, generation := Gen} = S, true, _Cleanup, _By) ->
    kicked(S, Mp, ClientId, Gen, dry_run);
kick_one(#{mountpoint := Mp, client_id := ClientId, generation := Gen} = S, false, Cleanup, By) ->
    MpBin = unicode:characters_to_binary(Mp),
    %% Recorded first: the broker's gone/offline hook follows the disconnect
    %% and ends the session.
    _ = call(fun() -> vmq_warden_nif:kick_record(MpBin, ClientId, Gen, By) end),
    Result = vmq_warden_broker:disconnect({Mp, ClientId}, Cleanup),
    %% A queue cleaned up stops without calling a hook, online or offline
    %% (docs/VERNEMQ.md): the session ends here.
    _ = [call(fun() -> vmq_warden_nif:kick_cleaned(MpBin, ClientId, Gen) end)
         || Cleanup, Result =:= ok, is_integer(Gen)],
    kicked(S, Mp, ClientId, Gen, Result).

kicked(S, Mp, ClientId, Gen, Result) ->
    #{mountpoint => Mp, client_id => ClientId, generation => Gen, state => maps:get(state, S),
      username => maps:get(username, S), peer => maps:get(peer, S), result => Result}.

%% The NIF returns sessions as tuples (see warden_nif::encode::session): a
%% map literal here shares one key tuple among all the maps it builds.
session({Mountpoint, ClientId, State, Generation, PendingGeneration, Peer, Username,
         CleanSession, Protocol, FirstConnect, LastConnect, LastChange, ConnectCount,
         LastEnd}) ->
    #{mountpoint => Mountpoint, client_id => ClientId, state => State,
      generation => Generation, pending_generation => PendingGeneration, peer => Peer,
      username => Username, clean_session => CleanSession, protocol => Protocol,
      first_connect => FirstConnect, last_connect => LastConnect,
      last_change => LastChange, connect_count => ConnectCount, last_end => LastEnd,
      node => node()};
session(Other) ->
    Other.

with_node(Map) when is_map(Map) -> Map#{node => node()};
with_node(Other) -> Other.

call(Fun) ->
    try
        Fun()
    catch
        error:nif_not_loaded -> {error, nif_not_loaded};
        error:badarg -> {error, badarg};
        Class:Reason -> {error, {Class, Reason}}
    end.
