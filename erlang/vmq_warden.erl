%% @doc Operator API: who is connected, since when, from where, and what
%% happened to each session; the firewall's bans; reloading the policy.
%% Results are plain maps (documented in the README). Other plugins may call
%% these functions too.
-module(vmq_warden).

-export([lookup/1, sessions/0, sessions/1, counts/0, stats/0,
         cluster_sessions/1, cluster_counts/0, cluster_stats/0,
         recent_endings/1, reload/0, bans/0, clear_bans/1]).

-type subscriber_id() :: {string() | binary(), binary()}.

-define(FILTER_KEYS, [state, username, mountpoint, client_id, peer, limit]).
-type session() :: #{atom() => term()}.
-export_type([session/0]).

%% @doc One subscriber's session record.
-spec lookup(subscriber_id()) -> {ok, session()} | not_found | {error, term()}.
lookup(SubscriberId) ->
    call(fun() ->
                 {Mountpoint, ClientId} = vmq_warden_hooks:normalize_subscriber_id(SubscriberId),
                 case vmq_warden_nif:lookup(Mountpoint, ClientId) of
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
                    call(fun() -> list_chunks(Spec, start, Limit, #{}, []) end);
                Bad ->
                    {error, {bad_limit, Bad}}
            end;
        Unknown ->
            %% a misspelt key would otherwise list everything
            {error, {unknown_filter_keys, lists:sort(Unknown)}}
    end;
sessions(_) ->
    {error, badarg}.

%% The NIF returns the list in pieces of a fraction of a millisecond each, so
%% that no scheduler is held for long; a record moved inside the registry
%% between two pieces can come twice, hence the keys already taken (`Seen').
list_chunks(Spec, Cursor, Limit, Seen, Acc) ->
    case vmq_warden_nif:list_chunk(Spec, Cursor, Limit) of
        {Rows, Next} when is_list(Rows) ->
            {Seen1, Acc1, Left} = take_new(Rows, Seen, Acc, Limit),
            case Next =:= done orelse Left =:= 0 of
                true -> lists:reverse(Acc1);
                false -> list_chunks(Spec, Next, Left, Seen1, Acc1)
            end;
        Error ->
            Error
    end.

take_new([], Seen, Acc, Left) ->
    {Seen, Acc, Left};
take_new([Row | Rows], Seen, Acc, Left) ->
    Key = {element(1, Row), element(2, Row)},
    case Seen of
        #{Key := _} -> take_new(Rows, Seen, Acc, Left);
        #{} -> take_new(Rows, Seen#{Key => []}, [session(Row) | Acc], Left - 1)
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
