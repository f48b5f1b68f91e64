%% The plugin on a cluster of real Erlang nodes (OTP's `peer', loopback
%% only): the cluster view, node loss and return, a persistent session
%% moving between nodes, max_sessions counted over the cluster, a partition,
%% and the time of a filtered query over several nodes.
%%
%% The CT node starts distribution itself (net_kernel:start/1, long names on
%% 127.0.0.1, epmd started on 127.0.0.1 if none runs, and stopped again at
%% the end), so `make test' needs nothing more.
%% Peers start with `-connect_all false': a partition made with
%% erlang:disconnect_node/1 stays until the test heals it. Every peer runs
%% the plugin from the built code path, started through vmq_plugin_harness.
-module(vmq_warden_cluster_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-compile([export_all, nowarn_export_all]).

-define(PEER_ADDR, {{127, 0, 0, 1}, 40300}).
-define(SYNC_MS, 200).

all() ->
    [sessions_on_several_nodes,
     persistent_session_moves_between_nodes,
     node_stopped_in_the_middle_of_a_query,
     slow_node_does_not_hold_the_query,
     node_down_and_back,
     node_restart_leaves_no_old_sessions,
     max_sessions_across_nodes,
     partition_each_side_sees_itself,
     remote_counts_bounded_in_bytes,
     filtered_query_time_over_nodes].

init_per_suite(Config) ->
    case node() of
        nonode@nohost ->
            StartedEpmd = case erl_epmd:names() of
                              {ok, _} -> false;
                              _ -> _ = os:cmd("epmd -daemon -address 127.0.0.1"), true
                          end,
            ok = application:set_env(kernel, inet_dist_use_interface, {127, 0, 0, 1}),
            Name = list_to_atom("warden_ct_" ++ os:getpid() ++ "@127.0.0.1"),
            ok = start_distribution(Name, 50),
            [{stop_dist, true}, {stop_epmd, StartedEpmd} | Config];
        _ ->
            Config
    end.

%% epmd started just now may not listen yet: a few tries, 100 ms apart.
start_distribution(Name, Tries) ->
    case net_kernel:start([Name, longnames]) of
        {ok, _} -> ok;
        {error, _} when Tries > 1 -> timer:sleep(100), start_distribution(Name, Tries - 1);
        Error -> Error
    end.

end_per_suite(Config) ->
    _ = proplists:get_value(stop_dist, Config, false) andalso net_kernel:stop(),
    %% the epmd this suite started, unless a node still uses it
    _ = proplists:get_value(stop_epmd, Config, false)
        andalso erl_epmd:names() =:= {ok, []}
        andalso os:cmd("epmd -kill"),
    ok.

init_per_testcase(Case, Config) ->
    _ = ets:new(warden_cluster_peers, [named_table, public]),
    Policy = filename:join(?config(priv_dir, Config), "alice_max2.toml"),
    %% every user of the suite has the password "pw"; alice at most 2 sessions
    User = fun(Name, Extra) ->
                   ["[users.", Name, "]\npassword = \"", vmq_warden_robust_util:sha512_line(<<"pw">>), "\"\n", Extra]
           end,
    ok = file:write_file(Policy, ["version = 1\n", User("alice", "max_sessions = 2\n"),
                                  [User(U, "") || U <- ["bob", "u" | ["u" ++ integer_to_list(I) || I <- lists:seq(0, 9)]]]]),
    [{policy, Policy}, {case_name, Case} | Config].

end_per_testcase(_Case, _Config) ->
    _ = [catch peer:stop(P) || {_, P} <- ets:tab2list(warden_cluster_peers)],
    ets:delete(warden_cluster_peers),
    ok.

%% ---- cases ------------------------------------------------------------------

sessions_on_several_nodes(Config) ->
    [A, B, C] = Nodes = start_peers(Config, 3),
    [connect(N, "c-" ++ short(N) ++ "-" ++ integer_to_list(I), <<"u", (integer_to_binary(I rem 2))/binary>>, true)
     || N <- Nodes, I <- lists:seq(1, 5)],
    All = call(A, vmq_warden, cluster_sessions, [#{}]),
    ?assertMatch(#{unreachable := [], not_running := _}, All),
    ?assertEqual(lists:sort(Nodes), lists:sort(maps:get(nodes, All))),
    Rows = maps:get(sessions, All),
    ?assertEqual(15, length(Rows)),
    %% each row comes from the node that holds it
    [?assertEqual(node_of(Row, Nodes), maps:get(node, Row)) || Row <- Rows],
    %% filters and limit as on one node
    #{sessions := U1} = call(B, vmq_warden, cluster_sessions, [#{username => <<"u1">>}]),
    ?assertEqual(9, length(U1)),
    #{sessions := OnC} = call(B, vmq_warden, cluster_sessions, [#{client_id => iolist_to_binary(["c-", short(C)])}]),
    ?assertEqual(5, length(OnC)),
    #{sessions := Four} = call(C, vmq_warden, cluster_sessions, [#{limit => 4}]),
    ?assertEqual(4, length(Four)),
    ?assertEqual({error, {unknown_filter_keys, [colour]}}, call(A, vmq_warden, cluster_sessions, [#{colour => red}])),
    ?assertEqual({error, {bad_limit, -1}}, call(A, vmq_warden, cluster_sessions, [#{limit => -1}])),
    #{counts := Counts, per_node := PerNode} = call(A, vmq_warden, cluster_counts, []),
    ?assertEqual(#{authenticated => 0, online => 15, offline => 0}, Counts),
    ?assertEqual(3, map_size(PerNode)),
    #{per_node := Stats} = call(A, vmq_warden, cluster_stats, []),
    ?assertMatch(#{registry := #{online := 5}}, maps:get(B, Stats)),
    %% the vmq-admin command prints the merged rows and the nodes (clique
    %% exists only inside VerneMQ: its status constructors stand in)
    ok = call(A, ?MODULE, fake_clique_status, []),
    Out = call(A, vmq_warden_cli, session_show, [["vmq-admin", "warden", "session", "show"], [], [{cluster, undefined}]]),
    ?assertMatch([{table, [_ | _]}, {text, "Nodes that answered: " ++ _}], Out),
    [{table, CliRows}, _] = Out,
    ?assertEqual(15, length(CliRows)).

%% Offline on A, woken up on B (docs/VERNEMQ.md, "Processes and hook
%% order"): one row, online on B; a filter on the old state finds nothing.
persistent_session_moves_between_nodes(Config) ->
    [A, B] = start_peers(Config, 2),
    Sid = {"", <<"mover">>},
    QA = connect(A, "mover", <<"bob">>, false),
    ok = call(A, ?MODULE, queue_event, [QA, on_client_offline, Sid]),
    #{sessions := [Off]} = call(B, vmq_warden, cluster_sessions, [#{}]),
    ?assertMatch(#{state := offline, node := A}, Off),
    timer:sleep(5),
    _ = connect(B, "mover", <<"bob">>, false),
    #{sessions := [On]} = call(A, vmq_warden, cluster_sessions, [#{}]),
    ?assertMatch(#{state := online, node := B, client_id := <<"mover">>}, On),
    %% A still holds its older, offline record: not shown for `offline'
    ?assertMatch({ok, #{state := offline}}, call(A, vmq_warden, lookup, [Sid])),
    ?assertMatch(#{sessions := []}, call(A, vmq_warden, cluster_sessions, [#{state => offline}])),
    ?assertMatch(#{sessions := [#{node := B}]}, call(A, vmq_warden, cluster_sessions, [#{state => online}])).

%% A node stops while it is answering: the query returns the others' rows
%% and names it, without waiting for the timeout.
node_stopped_in_the_middle_of_a_query(Config) ->
    [A, B, C] = start_peers(Config, 3),
    [connect(N, "s-" ++ short(N), <<"u">>, true) || N <- [A, B, C]],
    slow_answers(C, 3000),
    Self = self(),
    spawn_link(fun() ->
                       T0 = erlang:monotonic_time(millisecond),
                       R = call(A, vmq_warden, cluster_sessions, [#{timeout => 10000}]),
                       Self ! {answer, R, erlang:monotonic_time(millisecond) - T0}
               end),
    timer:sleep(300),
    ok = peer:stop(peer_of(C)),
    receive
        {answer, R, Ms} ->
            ct:pal("query with a node stopped after 300 ms returned in ~b ms", [Ms]),
            ?assert(Ms < 3000),
            ?assertEqual([C], maps:get(unreachable, R)),
            ?assertEqual(lists:sort([A, B]), maps:get(nodes, R)),
            ?assertEqual(lists:sort([A, B]), lists:sort([N || #{node := N} <- maps:get(sessions, R)]))
    after 10000 ->
        ct:fail(no_answer)
    end.

%% A node that answers too late is named unreachable when the timeout runs
%% out; the query never runs past it.
slow_node_does_not_hold_the_query(Config) ->
    [A, B] = start_peers(Config, 2),
    _ = connect(A, "fast", <<"u">>, true),
    _ = connect(B, "slow", <<"u">>, true),
    slow_answers(B, 5000),
    {Us, R} = timer:tc(fun() -> call(A, vmq_warden, cluster_sessions, [#{timeout => 500}]) end),
    ct:pal("timeout 500 ms, one node sleeping 5 s: returned in ~b ms", [Us div 1000]),
    ?assert(Us div 1000 >= 500 andalso Us div 1000 < 1500),
    ?assertMatch(#{unreachable := [B], nodes := [A], sessions := [#{client_id := <<"fast">>}]}, R).

%% A node that goes down: named unreachable (remembered as down, not only
%% missing from nodes()), its sessions not shown, its per-user counts
%% dropped at once; when it is back, its sessions are back.
node_down_and_back(Config) ->
    [A, B] = start_peers(Config, 2),
    _ = connect(B, "on-b", <<"alice">>, true),
    ok = wait_until(fun() -> call(A, vmq_warden_nif, cluster_remote_count, [<<"alice">>]) =:= 1 end),
    true = call(A, erlang, disconnect_node, [B]),
    ok = wait_until(fun() -> call(A, vmq_warden_cluster_sync, down_nodes, []) =:= [B] end),
    R = call(A, vmq_warden, cluster_sessions, [#{}]),
    ?assertMatch(#{unreachable := [B], sessions := []}, R),
    ?assertEqual(0, call(A, vmq_warden_nif, cluster_remote_count, [<<"alice">>])),
    true = call(A, net_kernel, connect_node, [B]),
    ok = wait_until(fun() -> call(A, vmq_warden_nif, cluster_remote_count, [<<"alice">>]) =:= 1 end),
    ?assertMatch(#{unreachable := [], sessions := [#{client_id := <<"on-b">>, state := online, node := B}]},
                 call(A, vmq_warden, cluster_sessions, [#{}])).

%% A node that restarts answers from its fresh registry: none of its old
%% sessions or counts stays in the other nodes' answers.
node_restart_leaves_no_old_sessions(Config) ->
    [A, B] = start_peers(Config, 2),
    [connect(B, "old-" ++ integer_to_list(I), <<"alice">>, true) || I <- [1, 2]],
    ok = wait_until(fun() -> call(A, vmq_warden_nif, cluster_remote_count, [<<"alice">>]) =:= 2 end),
    ok = peer:stop(peer_of(B)),
    {ok, _, B} = start_peer(Config, B),
    true = call(B, net_kernel, connect_node, [A]),
    _ = connect(B, "new", <<"alice">>, true),
    ok = wait_until(fun() -> call(A, vmq_warden_nif, cluster_remote_count, [<<"alice">>]) =:= 1 end),
    ?assertMatch(#{unreachable := [], sessions := [#{client_id := <<"new">>, node := B}]},
                 call(A, vmq_warden, cluster_sessions, [#{}])).

%% max_sessions = 2 for alice, her sessions on two other nodes: refused on
%% the third once the counts arrive; admitted again once one ends there.
%% Also measures how fresh a remote count is.
max_sessions_across_nodes(Config) ->
    [A, B, C] = start_peers(Config, 3),
    _ = connect(A, "alice-a", <<"alice">>, true),
    QB = connect(B, "alice-b", <<"alice">>, true),
    T0 = erlang:monotonic_time(millisecond),
    ok = wait_until(fun() -> call(C, vmq_warden_nif, cluster_remote_count, [<<"alice">>]) =:= 2 end),
    Fresh = erlang:monotonic_time(millisecond) - T0,
    ?assertEqual({error, quota_exceeded}, auth(C, "alice-c", <<"alice">>, true)),
    %% bob has no limit; alice's own reconnect on A is a takeover, not a third
    ?assertEqual(ok, auth(C, "bob-c", <<"bob">>, true)),
    ok = call(B, ?MODULE, queue_event, [QB, on_client_gone, {"", <<"alice-b">>}]),
    T1 = erlang:monotonic_time(millisecond),
    ok = wait_until(fun() -> call(C, vmq_warden_nif, cluster_remote_count, [<<"alice">>]) =:= 1 end),
    Gone = erlang:monotonic_time(millisecond) - T1,
    ct:pal("remote count fresh after ~b ms (new sessions) and ~b ms (a session gone); period ~b ms",
           [Fresh, Gone, ?SYNC_MS]),
    %% one period plus one message; the slack is for a loaded 2-core machine
    ?assert(Fresh =< ?SYNC_MS + 800 andalso Gone =< ?SYNC_MS + 800),
    ?assertEqual(ok, auth(C, "alice-c", <<"alice">>, true)),
    ?assertMatch(#{entries := 1, nodes := 1}, call(C, vmq_warden_nif, cluster_stats, [])).

%% A and B cut off from each other (C still sees both): each side drops
%% the other's counts, so alice, limited to 2, gets a session on each side
%% beyond the limit (the other side's count); healed, the counts meet again.
partition_each_side_sees_itself(Config) ->
    [A, B, C] = start_peers(Config, 3),
    _ = connect(A, "alice-a1", <<"alice">>, true),
    _ = connect(B, "alice-b1", <<"alice">>, true),
    ok = wait_until(fun() -> call(A, vmq_warden_nif, cluster_remote_count, [<<"alice">>]) =:= 1 end),
    ?assertEqual({error, quota_exceeded}, auth(A, "alice-a2", <<"alice">>, true)),
    true = call(A, erlang, disconnect_node, [B]),
    ok = wait_until(fun() -> call(A, vmq_warden_nif, cluster_remote_count, [<<"alice">>]) =:= 0
                                 andalso call(B, vmq_warden_nif, cluster_remote_count, [<<"alice">>]) =:= 0 end),
    _ = connect(A, "alice-a2", <<"alice">>, true),
    _ = connect(B, "alice-b2", <<"alice">>, true),
    %% four sessions of a user limited to two: each side exceeded by the other's
    ?assertMatch(#{counts := #{online := 4}}, call(C, vmq_warden, cluster_counts, [])),
    ?assertEqual({error, quota_exceeded}, auth(A, "alice-a3", <<"alice">>, true)),
    true = call(A, net_kernel, connect_node, [B]),
    ok = wait_until(fun() -> call(A, vmq_warden_nif, cluster_remote_count, [<<"alice">>]) =:= 2
                                 andalso call(B, vmq_warden_nif, cluster_remote_count, [<<"alice">>]) =:= 2 end).

%% cluster.counts_max_bytes = 128: two (node, user) entries of 64 bytes;
%% the other users' counts are dropped and counted as such.
remote_counts_bounded_in_bytes(Config) ->
    [A, B] = start_peers([{extra_env, [{cluster_counts_max_bytes, 128}]} | Config], 2),
    [connect(B, "b-" ++ integer_to_list(I), <<"u", (integer_to_binary(I))/binary>>, true) || I <- lists:seq(0, 4)],
    ok = wait_until(fun() -> maps:get(dropped, call(A, vmq_warden_nif, cluster_stats, [])) =:= 3 end),
    ?assertMatch(#{entries := 2, bytes := 128, max_bytes := 128, nodes := 1},
                 call(A, vmq_warden_nif, cluster_stats, [])),
    ?assertMatch(#{cluster := #{dropped := 3}}, call(A, vmq_warden, stats, [])),
    Kept = [U || I <- lists:seq(0, 4), U <- [<<"u", (integer_to_binary(I))/binary>>],
                 call(A, vmq_warden_nif, cluster_remote_count, [U]) =:= 1],
    ?assertEqual(2, length(Kept)).

%% The figure of the README ("In a cluster"): 4 nodes holding
%% WARDEN_CLUSTER_SESSIONS sessions each (default 50,000), a filtered query
%% for 1,000 of them from one node.
filtered_query_time_over_nodes(Config) ->
    PerNode = list_to_integer(os:getenv("WARDEN_CLUSTER_SESSIONS", "50000")),
    Nodes = [A | _] = start_peers(Config, 4),
    {FillUs, _} = timer:tc(fun() ->
                                   Fillers = [{N, erpc:send_request(N, ?MODULE, fill, [short(N), PerNode])} || N <- Nodes],
                                   [{ok, PerNode} = {ok, erpc:receive_response(R, 600000)} || {_, R} <- Fillers]
                           end),
    ct:pal("filled ~b nodes x ~b sessions in ~b s", [length(Nodes), PerNode, FillUs div 1000000]),
    #{counts := #{online := Online}} = call(A, vmq_warden, cluster_counts, []),
    ?assertEqual(4 * PerNode, Online),
    Queries = [{"username (1 in 10)", #{username => <<"u3">>, limit => 1000}},
               {"state online", #{state => online, limit => 1000}},
               {"client id prefix", #{client_id => <<"f-">>, limit => 1000}},
               {"matching nothing (every record read)", #{username => <<"nobody">>, limit => 1000}}],
    Times = [begin
                 Runs = [begin
                             {Us, #{sessions := S, unreachable := []}} =
                                 timer:tc(fun() -> call(A, vmq_warden, cluster_sessions, [F]) end),
                             {Us, length(S)}
                         end || _ <- lists:seq(1, 5)],
                 Median = lists:nth(3, lists:sort([Us || {Us, _} <- Runs])),
                 [{_, Found} | _] = Runs,
                 ct:pal("cluster query, ~s: ~b rows, median of 5 ~.1f ms", [Name, Found, Median / 1000]),
                 {Name, Found, Median}
             end || {Name, F} <- Queries],
    [{_, 1000, FirstMs} | _] = Times,
    ?assert(FirstMs < 500000).

%% ---- on the peers -------------------------------------------------------------

%% One session: auth and on_register in a connection process, the wakeup in
%% a queue process, as the broker does. Returns the queue process.
connect(Node, ClientId, User, Clean) ->
    call(Node, ?MODULE, connect_here, [iolist_to_binary(ClientId), User, Clean]).

connect_here(ClientId, User, Clean) ->
    Sid = {"", ClientId},
    [S, Q] = [vmq_hook_chain:spawn_proc() || _ <- [1, 2]],
    ok = auth_here(S, Sid, User, Clean),
    ok = vmq_hook_chain:in_proc(Q, fun() -> vmq_warden_hooks:on_client_wakeup(Sid) end),
    ok = vmq_hook_chain:in_proc(S, fun() -> vmq_warden_hooks:on_register(?PEER_ADDR, Sid, User) end),
    Q.

auth(Node, ClientId, User, Clean) ->
    call(Node, ?MODULE, auth_new_conn, [{"", iolist_to_binary(ClientId)}, User, Clean]).

auth_new_conn(Sid, User, Clean) ->
    auth_here(vmq_hook_chain:spawn_proc(), Sid, User, Clean).

auth_here(Conn, Sid, User, Clean) ->
    vmq_hook_chain:in_proc(Conn, fun() -> vmq_warden_hooks:auth_on_register(?PEER_ADDR, Sid, User, <<"pw">>, Clean) end).

queue_event(Queue, Hook, Sid) ->
    vmq_hook_chain:in_proc(Queue, fun() -> vmq_warden_hooks:Hook(Sid) end).

%% Many sessions, fast: one process is connection and queue of them all
%% (the registry tells sessions apart by subscriber id).
fill(Prefix, N) ->
    Self = self(),
    Pid = spawn(fun() ->
                        [begin
                             Sid = {"", iolist_to_binary(["f-", Prefix, "-", integer_to_list(I)])},
                             User = <<"u", (integer_to_binary(I rem 10))/binary>>,
                             ok = vmq_warden_hooks:auth_on_register(?PEER_ADDR, Sid, User, <<"pw">>, true),
                             ok = vmq_warden_hooks:on_client_wakeup(Sid),
                             ok = vmq_warden_hooks:on_register(?PEER_ADDR, Sid, User)
                         end || I <- lists:seq(1, N)],
                        Self ! {filled, self()},
                        receive stop -> ok end
                end),
    receive {filled, Pid} -> N after 600000 -> timeout end.

%% The node's answers to cluster queries take Ms longer (a node that is
%% busy or stuck).
slow_answers(Node, Ms) ->
    ok = call(Node, meck, new, [vmq_warden_cluster, [passthrough, no_link]]),
    ok = call(Node, meck, expect, [vmq_warden_cluster, local_sessions,
                                   fun(F) -> timer:sleep(Ms), meck:passthrough([F]) end]).

fake_clique_status() ->
    ok = meck:new(clique_status, [non_strict, no_link]),
    ok = meck:expect(clique_status, table, fun(Rows) -> {table, Rows} end),
    ok = meck:expect(clique_status, text, fun(T) -> {text, lists:flatten(io_lib:format("~ts", [T]))} end),
    ok = meck:expect(clique_status, alert, fun(L) -> {alert, L} end).

%% ---- peers --------------------------------------------------------------------

start_peers(Config, N) ->
    Base = atom_to_list(?config(case_name, Config)),
    Started = [start_peer(Config, list_to_atom(lists:sublist(Base, 12) ++ "_" ++ integer_to_list(I) ++ "@127.0.0.1"))
               || I <- lists:seq(1, N)],
    Nodes = [Node || {ok, _, Node} <- Started],
    %% connect_all is off: the peers are connected to each other here
    [true = call(X, net_kernel, connect_node, [Y]) || X <- Nodes, Y <- Nodes, X < Y],
    [ok = wait_until(fun() -> lists:sort(call(X, erlang, nodes, [])) -- [node()] =:= lists:sort(Nodes -- [X]) end)
     || X <- Nodes],
    %% each sync process has said hello to the others
    [ok = call(X, vmq_warden_cluster_sync, sync_now, []) || X <- Nodes],
    Nodes.

start_peer(Config, Node) ->
    [Name, Host] = string:split(atom_to_list(Node), "@"),
    Paths = lists:append([["-pa", P] || P <- code_paths()]),
    {ok, Peer, Node} = peer:start(#{name => Name, host => Host, longnames => true,
                                   args => ["-connect_all", "false",
                                            "-kernel", "prevent_overlapping_partitions", "false",
                                            "-kernel", "inet_dist_use_interface", "{127,0,0,1}" | Paths]}),
    register_peer(Config, Node, Peer),
    ok = call(Node, application, load, [vmq_warden]),
    [ok = call(Node, application, set_env, [vmq_warden, K, V])
     || {K, V} <- [{default_decision, allow}, {policy_file, ?config(policy, Config)},
                   {cluster_sync_interval, ?SYNC_MS}, {reconcile_interval, 0}
                   | proplists:get_value(extra_env, Config, [])]],
    ok = call(Node, vmq_plugin_harness, enable, [vmq_warden]),
    {ok, Peer, Node}.

%% The peers of the running case, in the table init_per_testcase made.
register_peer(_Config, Node, Peer) ->
    ets:insert(warden_cluster_peers, {Node, Peer}).

peer_of(Node) ->
    ets:lookup_element(warden_cluster_peers, Node, 2).

code_paths() ->
    Root = filename:dirname(filename:dirname(code:which(vmq_warden))),
    Build = filename:dirname(filename:dirname(Root)),
    Mine = filename:dirname(code:which(?MODULE)),
    lists:usort([Mine | [P || P <- code:get_path(), lists:prefix(Build, P)]]).

call(Node, M, F, A) ->
    erpc:call(Node, M, F, A, 60000).

short(Node) ->
    [Name | _] = string:split(atom_to_list(Node), "@"),
    Name.

node_of(#{client_id := <<"c-", Rest/binary>>}, Nodes) ->
    [Short | _] = string:split(binary_to_list(Rest), "-", trailing),
    hd([N || N <- Nodes, short(N) =:= Short]).

%% Bounded wait: 10 s in 20 ms steps.
wait_until(Fun) ->
    wait_until(Fun, 500).

wait_until(_Fun, 0) ->
    timeout;
wait_until(Fun, N) ->
    case catch Fun() of
        true -> ok;
        _ -> timer:sleep(20), wait_until(Fun, N - 1)
    end.
