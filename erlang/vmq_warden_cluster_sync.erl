%% @doc Keeps `max_sessions' cluster-wide without a remote call per
%% connect: every `cluster_sync_interval' ms this process sends the users
%% whose live-session count changed on this node (their count now) to the
%% same process on every connected node, which keeps them in the library's
%% byte-bounded table (warden_core::cluster::RemoteCounts); the firewall
%% counts local + remote. A remote count is at most one period plus one
%% message old. Also watches nodes (net_kernel:monitor_nodes/1): a node that
%% goes down has its counts dropped at once and is remembered as down (for
%% the cluster view) until it comes back.
%%
%% Messages (to `{?MODULE, Node}', never blocking: noconnect, nosuspend):
%%   {vmq_warden_counts, From, KeyCheck, hello}    From (re)started or came
%%       back: forget its counts, and send it all of ours
%%   {vmq_warden_counts, From, KeyCheck, reset}    all of From's counts follow
%%   {vmq_warden_counts, From, KeyCheck, [{UserHash, Count}]}
%% Every node keys the username hash with a key derived from the cluster's
%% cookie; KeyCheck (a hash under that key) tells a node keyed otherwise,
%% whose counts are ignored and counted.
-module(vmq_warden_cluster_sync).
-behaviour(gen_server).

-export([start_link/0, down_nodes/0, sync_now/0, key/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/logger.hrl").

%% Changed users sent per period at most; the rest wait for the next one.
-define(MAX_CHANGES, 10000).
%% Counts per NIF call (taken or applied): well under a millisecond each.
-define(NIF_BATCH, 1000).
%% Down nodes remembered at most (the oldest is forgotten first), and for
%% how long: a node that left the cluster for good stops being listed.
-define(MAX_DOWN, 256).
-define(DOWN_MEMORY_MS, 3600000).
-define(DOWN_TABLE, vmq_warden_cluster_down).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% Nodes that went down in the last hour and have not come back, newest
%% first. Read from a table, so the cluster view never waits for this
%% process.
-spec down_nodes() -> [node()].
down_nodes() ->
    Since = erlang:system_time(millisecond) - ?DOWN_MEMORY_MS,
    try ets:tab2list(?DOWN_TABLE) of
        Down -> [N || {N, At} <- lists:reverse(lists:keysort(2, Down)), At >= Since]
    catch
        error:badarg -> []
    end.

%% Publish now (tests; an operator who does not want to wait a period).
-spec sync_now() -> ok.
sync_now() ->
    gen_server:call(?MODULE, sync_now).

%% The username hash key every node of the cluster derives alike: from the
%% distribution cookie, which the nodes share and clients do not know.
-spec key() -> binary().
key() ->
    crypto:hash(sha256, [<<"vmq_warden username hash key\n">>, atom_to_binary(erlang:get_cookie())]).

init([]) ->
    ok = net_kernel:monitor_nodes(true),
    _ = ets:new(?DOWN_TABLE, [named_table, protected, {read_concurrency, true}]),
    Interval = interval(),
    State = #{interval => Interval, check => undefined, mismatched => 0, resend => #{}},
    case Interval > 0 andalso configure() of
        false ->
            {ok, State};
        Check ->
            hello_all(Check),
            schedule(Interval),
            {ok, State#{check := Check}}
    end.

%% Keys the hash, turns the change tracker on if a peer is there to send
%% to, forgets earlier remote counts. The KeyCheck, or false without the
%% library.
configure() ->
    try
        case vmq_warden_nif:cluster_set_key(key()) of
            ok -> ok;
            busy -> ?LOG_WARNING(#{msg => "vmq_warden: users already counted with another hash key; "
                                          "cluster-wide counts may not match until a restart"},
                                 vmq_warden_log:meta(warning))
        end,
        ok = vmq_warden_nif:cluster_configure(nodes() =/= [], max_bytes()),
        ok = vmq_warden_nif:cluster_reset(),
        %% changes made before this start reach the peers in the full sends
        _ = local_changes([], false),
        vmq_warden_nif:cluster_key_check()
    catch
        error:nif_not_loaded -> false
    end.

handle_call(sync_now, _From, #{check := Check} = State) when Check =/= undefined ->
    {reply, ok, publish(State)};
handle_call(sync_now, _From, State) ->
    {reply, ok, State};
handle_call(_Msg, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info(tick, #{interval := Interval} = State) ->
    State1 = publish(State),
    schedule(Interval),
    {noreply, State1};
handle_info({nodeup, Node}, #{check := Check} = State) ->
    ets:delete(?DOWN_TABLE, Node),
    %% Back (restarted, or a partition healed): our hello asks it for all
    %% its counts, its hello on its own nodeup asks us for ours. A node
    %% whose plugin starts later says hello from its init.
    Check =/= undefined andalso track(true) andalso send(Node, {vmq_warden_counts, node(), Check, hello}),
    {noreply, State};
handle_info({nodedown, Node}, State) ->
    %% counts first: a node listed as down has no counts left here
    _ = catch vmq_warden_nif:cluster_drop_node(atom_to_binary(Node)),
    remember_down(Node),
    _ = nodes() =:= [] andalso track(false),
    {noreply, State};
handle_info({vmq_warden_counts, From, Check, Msg}, #{check := Check} = State) ->
    case lists:member(From, nodes()) of
        false ->
            %% sent before its node went down, read after: dropped with it
            {noreply, State};
        true when Msg =:= hello ->
            _ = catch vmq_warden_nif:cluster_drop_node(atom_to_binary(From)),
            %% tracking before the full send: a change after it is sent next
            _ = track(true),
            {noreply, send_all_to(From, State)};
        true when Msg =:= reset ->
            _ = catch vmq_warden_nif:cluster_drop_node(atom_to_binary(From)),
            {noreply, State};
        true when is_list(Msg) ->
            apply_counts(atom_to_binary(From), Msg),
            {noreply, State}
    end;
handle_info({vmq_warden_counts, From, _OtherCheck, _}, #{check := Check, mismatched := N} = State)
  when Check =/= undefined ->
    N =:= 0 andalso ?LOG_WARNING(#{msg => "vmq_warden: a node hashes usernames with another key "
                                          "(another cookie?); its session counts are ignored",
                                   node => From}, vmq_warden_log:meta(warning)),
    {noreply, State#{mismatched := N + 1}};
handle_info(_Msg, State) ->
    {noreply, State}.

%% ---- publishing ------------------------------------------------------------

apply_counts(_Node, []) ->
    ok;
apply_counts(Node, Counts) ->
    {Batch, Rest} = split(Counts, ?NIF_BATCH),
    _ = catch vmq_warden_nif:cluster_apply(Node, Batch),
    apply_counts(Node, Rest).

split(List, N) when length(List) =< N -> {List, []};
split(List, N) -> lists:split(N, List).

%% Up to ?MAX_CHANGES changed users, ?NIF_BATCH per call; and whether the
%% tracker lost some (then everything is sent again).
local_changes(Acc, Lost) when length(Acc) >= ?MAX_CHANGES ->
    {Acc, Lost};
local_changes(Acc, Lost) ->
    case vmq_warden_nif:cluster_local_changes(?NIF_BATCH) of
        {[], L} -> {Acc, Lost orelse L};
        {Changes, L} -> local_changes(Changes ++ Acc, Lost orelse L)
    end.

publish(#{check := Check, resend := Resend} = State) ->
    {Changes, Lost} = try local_changes([], false)
                      catch error:nif_not_loaded -> {[], false}
                      end,
    Peers = nodes(),
    lists:foldl(fun(Node, S) ->
                        case Lost orelse maps:is_key(Node, Resend) of
                            true -> send_all_to(Node, S);
                            false when Changes =:= [] -> S;
                            false -> sent(Node, send(Node, {vmq_warden_counts, node(), Check, Changes}), S)
                        end
                end, State, Peers).

%% Every count of this node, one index shard per message, after a `reset'
%% (users whose count fell to 0 while changes were lost are not listed).
send_all_to(Node, #{check := Check} = State) ->
    case send(Node, {vmq_warden_counts, node(), Check, reset}) of
        true -> send_all_to(Node, Check, 0, State);
        false -> sent(Node, false, State)
    end.

send_all_to(Node, Check, Shard, State) ->
    case catch vmq_warden_nif:cluster_local_counts(Shard) of
        {Counts, Next} when is_list(Counts) ->
            Sent = Counts =:= [] orelse send(Node, {vmq_warden_counts, node(), Check, Counts}),
            State1 = sent(Node, Sent, State),
            case {Sent, Next} of
                {true, N} when is_integer(N) -> send_all_to(Node, Check, N, State1);
                _ -> State1
            end;
        _ ->
            State
    end.

%% A message the distribution could not take now (busy, not connected)
%% makes the next period send everything to that node again.
sent(Node, true, #{resend := Resend} = State) -> State#{resend := maps:remove(Node, Resend)};
sent(Node, false, #{resend := Resend} = State) -> State#{resend := Resend#{Node => true}}.

send(Node, Msg) ->
    ok =:= erlang:send({?MODULE, Node}, Msg, [noconnect, nosuspend]).

%% The change tracker costs every connect and disconnect a set insert, so
%% it runs only while a peer is there to send changes to. A peer that comes
%% gets every count in full first (its hello), so nothing from before is
%% missed. True if the library took it.
track(On) ->
    ok =:= (catch vmq_warden_nif:cluster_configure(On, max_bytes())).

hello_all(Check) ->
    _ = [send(N, {vmq_warden_counts, node(), Check, hello}) || N <- nodes()],
    ok.

remember_down(Node) ->
    ets:insert(?DOWN_TABLE, {Node, erlang:system_time(millisecond)}),
    case ets:info(?DOWN_TABLE, size) > ?MAX_DOWN of
        true ->
            [{Oldest, _} | _] = lists:keysort(2, ets:tab2list(?DOWN_TABLE)),
            ets:delete(?DOWN_TABLE, Oldest);
        false ->
            true
    end.

schedule(Ms) -> _ = erlang:send_after(Ms, self(), tick), ok.

interval() ->
    case application:get_env(vmq_warden, cluster_sync_interval, 1000) of
        N when is_integer(N), N >= 0 -> N;
        _ -> 1000
    end.

max_bytes() ->
    case application:get_env(vmq_warden, cluster_counts_max_bytes, 16777216) of
        N when is_integer(N), N >= 0 -> N;
        _ -> 16777216
    end.
