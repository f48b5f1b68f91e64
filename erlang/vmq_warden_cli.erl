%% @doc `vmq-admin warden ...' commands, registered with clique.
%%
%% clique is VerneMQ's CLI library; it exists only inside a VerneMQ node.
%% register/0 registers the commands only when clique can be loaded, so the
%% plugin starts without them anywhere else.
%%
%% Callbacks have the arity-3 form VerneMQ's clique calls,
%% fun(Cmd, KeyValues, Flags), and are external funs (fun ?MODULE:F/3) so
%% that they survive a code reload of this module.
%%
%% A command that fails (the NIF library is not loaded, the API returns an
%% error or raises, a bad flag or argument) prints an alert and returns
%% `{exit_status, 1, Output}': clique (0.3.8 and later, as bundled with
%% VerneMQ 2.x) turns that into `{error, 1}' and nodetool, which runs
%% vmq-admin, halts with status 1. A plain alert would exit with 0.
%%
%% clique has no API to unregister a command (its API is register/1,
%% register_node_finder/1, register_command/4, register_config/2,
%% register_formatter/2, register_writer/2, register_config_whitelist/1,
%% register_usage/2, run/1, print/2). It keeps commands and usage in two
%% public named ETS tables, `clique_commands' and `clique_usage', keyed by the
%% command word list. unregister/0 deletes our keys from those tables when
%% they exist (best effort, relying on that internal layout); when they do
%% not, it does nothing. After a plugin disable without unregister, the
%% entries would stay and point at unloaded code.
-module(vmq_warden_cli).

-export([register/0, unregister/0, available/0, commands/0]).
%% command callbacks (clique calls them; exported so that they are external funs)
-export([session_show/3, stats/3, reload/3, ban_show/3, ban_clear/3, kick/3]).
%% flag typecasts
-export([to_binary/1, to_state/1, to_cidr/1, to_ip/1, to_limit/1]).


-include_lib("kernel/include/logger.hrl").

-define(BASE, ["vmq-admin", "warden"]).
-define(DEFAULT_LIMIT, 100).
%% The states a record of the registry can be in, so the only ones
%% vmq_warden:sessions/1 filters on (warden_core's SessionState: gone and
%% expired are endings, such records leave the registry).
-define(STATES, [authenticated, online, offline]).
%% vmq-admin's exit status when a command fails.
-define(EXIT_FAILED, 1).

%% ------------------------------------------------------------------ registration

%% @doc true when clique's API can be called (we run inside VerneMQ).
-spec available() -> boolean().
available() ->
    case code:ensure_loaded(clique) of
        {module, clique} -> erlang:function_exported(clique, register_command, 4);
        _ -> false
    end.

%% @doc Registers all commands and usage texts if clique is available.
%% Never raises: a failure is logged and returned.
-spec register() -> ok | not_available | {error, term()}.
register() ->
    case available() of
        false ->
            not_available;
        true ->
            try
                _ = [clique:register_command(Cmd, [], Flags, Fun) || {Cmd, Flags, Fun} <- commands()],
                _ = [clique:register_usage(Cmd, Usage) || {Cmd, Usage} <- usages()],
                ok
            catch
                Class:Reason ->
                    ?LOG_WARNING("vmq_warden: could not register vmq-admin commands: ~p:~p",
                                 [Class, Reason]),
                    {error, {Class, Reason}}
            end
    end.

%% @doc Removes our commands and usage texts from clique's tables (see the
%% module doc: clique has no unregister API). Never raises.
-spec unregister() -> ok.
unregister() ->
    Cmds = [Cmd || {Cmd, _, _} <- commands()] ++ [Cmd || {Cmd, _} <- usages()],
    _ = [delete_keys(Tab, Cmds) || Tab <- [clique_commands, clique_usage]],
    ok.

delete_keys(Tab, Keys) ->
    try ets:whereis(Tab) of
        undefined -> ok;
        _ -> [ets:delete(Tab, K) || K <- Keys]
    catch
        _:_ -> ok
    end.

%% @doc {Command, FlagSpecs, Callback} of every command.
-spec commands() -> [{[string()], list(), fun()}].
commands() ->
    [{?BASE ++ ["session", "show"],
      [{client_id, [{longname, "client-id"}, {typecast, fun ?MODULE:to_binary/1}]},
       {username, [{longname, "username"}, {typecast, fun ?MODULE:to_binary/1}]},
       {state, [{longname, "state"}, {typecast, fun ?MODULE:to_state/1}]},
       {peer, [{longname, "peer"}, {typecast, fun ?MODULE:to_cidr/1}]},
       {mountpoint, [{longname, "mountpoint"}]},
       {limit, [{longname, "limit"}, {typecast, fun ?MODULE:to_limit/1}]},
       {cluster, [{longname, "cluster"}]}],
      fun ?MODULE:session_show/3},
     {?BASE ++ ["stats"], [], fun ?MODULE:stats/3},
     {?BASE ++ ["reload"], [], fun ?MODULE:reload/3},
     {?BASE ++ ["ban", "show"], [], fun ?MODULE:ban_show/3},
     {?BASE ++ ["ban", "clear"],
      [{all, [{longname, "all"}]},
       {peer, [{longname, "peer"}, {typecast, fun ?MODULE:to_ip/1}]},
       {username, [{longname, "username"}, {typecast, fun ?MODULE:to_binary/1}]}],
      fun ?MODULE:ban_clear/3},
     {?BASE ++ ["kick"],
      [{client_id, [{longname, "client-id"}, {typecast, fun ?MODULE:to_binary/1}]},
       {mountpoint, [{longname, "mountpoint"}]},
       {username, [{longname, "username"}, {typecast, fun ?MODULE:to_binary/1}]},
       {peer, [{longname, "peer"}, {typecast, fun ?MODULE:to_cidr/1}]},
       {client_id_prefix, [{longname, "client-id-prefix"}, {typecast, fun ?MODULE:to_binary/1}]},
       {dry_run, [{longname, "dry-run"}]},
       {cleanup, [{longname, "cleanup"}]}],
      fun ?MODULE:kick/3}].

%% ------------------------------------------------------------------ callbacks

%% @doc vmq-admin warden session show [--client-id=C] [--username=U]
%% [--state=S] [--peer=CIDR] [--mountpoint=M] [--limit=N]
session_show(_Cmd, [], Flags) ->
    case proplists:get_value(state, Flags) of
        {not_a_state, S} ->
            failed(io_lib:format("Unknown --state=~ts: the registry has sessions in the states ~ts "
                                 "(sessions that ended are no longer in it).",
                                 [S, states_text()]));
        _ ->
            guarded(fun() ->
                            case proplists:is_defined(cluster, Flags) of
                                true -> cluster_session_show(session_filter(Flags));
                                false -> node_session_show(session_filter(Flags))
                            end
                    end)
    end;
session_show(_Cmd, _, _) ->
    usage_alert(session_show_usage()).

node_session_show(Filter) ->
    case vmq_warden:sessions(Filter) of
        Sessions when is_list(Sessions) ->
            case [session_row(S) || S <- Sessions, is_map(S)] of
                [] -> [clique_status:text("No sessions match.")];
                Rows -> [clique_status:table(Rows)]
            end;
        Error ->
            api_failed("Listing sessions", Error)
    end.

%% The merged rows, then which nodes answered and which did not.
cluster_session_show(Filter) ->
    case vmq_warden:cluster_sessions(Filter) of
        #{sessions := Sessions, nodes := Nodes, unreachable := Unreachable} ->
            Table = case [session_row(S) || S <- Sessions, is_map(S)] of
                        [] -> clique_status:text("No sessions match.");
                        Rows -> clique_status:table(Rows)
                    end,
            Answered = clique_status:text(flat(["Nodes that answered: ", node_list(Nodes)])),
            case Unreachable of
                [] -> [Table, Answered];
                _ -> [Table, Answered,
                      clique_status:alert([clique_status:text(
                          flat(["Nodes that did not answer (their sessions are not shown): ",
                                node_list(Unreachable)]))])]
            end;
        Error ->
            api_failed("Listing the cluster's sessions", Error)
    end.

node_list(Nodes) ->
    lists:join(", ", [atom_to_list(N) || N <- Nodes]).

session_filter(Flags) ->
    Base = maps:from_list([{K, V} || {K, V} <- Flags,
                                     lists:member(K, [client_id, username, state, peer, mountpoint, limit]),
                                     V =/= undefined]),
    maps:merge(#{limit => ?DEFAULT_LIMIT}, Base).

%% Every row has the same columns, in the same order (clique tables take the
%% first row's keys as the header).
session_row(S) ->
    {Host, Port} = case maps:get(peer, S, undefined) of
                       {Ip, P} -> {ip_string(Ip), P};
                       _ -> {"", ""}
                   end,
    [{client_id, str(maps:get(client_id, S, ""))},
     {mountpoint, str(maps:get(mountpoint, S, ""))},
     {username, str(maps:get(username, S, undefined))},
     {state, str(maps:get(state, S, ""))},
     {peer_host, Host},
     {peer_port, str(Port)},
     {protocol, str(maps:get(protocol, S, ""))},
     {clean_session, str(maps:get(clean_session, S, ""))},
     {generation, str(maps:get(generation, S, ""))},
     {node, str(maps:get(node, S, ""))},
     {connect_count, str(maps:get(connect_count, S, ""))},
     {first_connect, time_str(maps:get(first_connect, S, undefined))},
     {last_connect, time_str(maps:get(last_connect, S, undefined))},
     {last_change, time_str(maps:get(last_change, S, undefined))},
     {last_end, last_end_str(maps:get(last_end, S, undefined))}].

%% @doc vmq-admin warden stats
%% Without the NIF library vmq_warden:counts/0 fails and vmq_warden:stats/0
%% returns only the counters kept on the Erlang side (`nif_loaded => false'):
%% they are printed after the alert, and the command fails.
stats(_Cmd, [], []) ->
    guarded(fun() ->
                    %% stats/0 always answers, with nif_loaded => false
                    %% and the cause when the library is missing
                    Counters = [clique_status:text("Counters"),
                                clique_status:table([[{stat, K}, {value, V}]
                                                     || {K, V} <- flatten(vmq_warden:stats())])],
                    case vmq_warden:counts() of
                        Counts when is_map(Counts) ->
                            CountRows = [[{state, str(K)}, {sessions, str(V)}]
                                         || {K, V} <- lists:sort(maps:to_list(Counts))],
                            [clique_status:text("Sessions"), clique_status:table(CountRows)
                             | Counters];
                        Error ->
                            api_failed("Reading the session counts", Error, Counters)
                    end
            end);
stats(_Cmd, _, _) ->
    usage_alert(stats_usage()).

%% @doc vmq-admin warden reload
reload(_Cmd, [], []) ->
    guarded(fun() ->
                    case vmq_warden:reload() of
                        ok ->
                            [clique_status:text("Done")];
                        {error, nif_not_loaded} = Error ->
                            api_failed("Reload", Error);
                        {error, Reason} ->
                            %% the core's message names file, line and reason
                            failed(["Reload failed, the running policy stays in force:\n  ",
                                    reason_text(Reason)])
                    end
            end);
reload(_Cmd, _, _) ->
    usage_alert(reload_usage()).

%% @doc vmq-admin warden ban show
ban_show(_Cmd, [], []) ->
    guarded(fun() ->
                    case vmq_warden:bans() of
                        AllBans when is_list(AllBans) ->
                            case [B || B <- AllBans, is_map(B)] of
                                [] ->
                                    [clique_status:text("No active bans.")];
                                Bans ->
                                    Cols = lists:usort(lists:append([maps:keys(B) || B <- Bans])),
                                    [clique_status:table([[{C, ban_value(C, maps:get(C, B, undefined))}
                                                           || C <- Cols]
                                                          || B <- Bans])]
                            end;
                        Error ->
                            api_failed("Listing bans", Error)
                    end
            end);
ban_show(_Cmd, _, _) ->
    usage_alert(ban_usage()).

%% @doc vmq-admin warden ban clear --all | --peer=IP | --username=U
ban_clear(_Cmd, [], Flags) ->
    case [F || {K, _} = F <- Flags, lists:member(K, [all, peer, username])] of
        [{all, V}] when V =:= undefined; V =:= true; V =:= "true" -> do_clear(all);
        [{peer, Ip}] when is_list(Ip) -> do_clear({peer, Ip});
        [{username, U}] when is_binary(U) -> do_clear({username, U});
        _ -> usage_alert(ban_clear_usage())
    end;
ban_clear(_Cmd, _, _) ->
    usage_alert(ban_clear_usage()).

do_clear(What) ->
    guarded(fun() ->
                    case vmq_warden:clear_bans(What) of
                        {ok, N} when is_integer(N) ->
                            [clique_status:text(lists:flatten(io_lib:format("Cleared ~b ban(s)", [N])))];
                        Error ->
                            api_failed("Clearing bans", Error)
                    end
            end).

%% @doc vmq-admin warden kick --client-id=C [--mountpoint=M] | --username=U
%% | --peer=CIDR | --client-id-prefix=P [--dry-run] [--cleanup]
kick(_Cmd, [], Flags) ->
    Selectors = [F || {K, _} = F <- Flags, lists:member(K, [client_id, username, peer, client_id_prefix])],
    Selector = case Selectors of
                   [{client_id, C}] when is_binary(C) ->
                       {subscriber_id, {proplists:get_value(mountpoint, Flags, ""), C}};
                   [{K, V}] when is_binary(V); is_list(V) -> {K, V};
                   _ -> none
               end,
    Opts = #{dry_run => proplists:is_defined(dry_run, Flags),
             cleanup => proplists:is_defined(cleanup, Flags), by => <<"vmq-admin">>},
    case Selector of
        none ->
            usage_alert(kick_usage());
        _ ->
            guarded(fun() ->
                            case vmq_warden:kick(Selector, Opts) of
                                {ok, []} ->
                                    [clique_status:text("No session matches.")];
                                {ok, Kicked} ->
                                    [clique_status:table([kick_row(K) || K <- Kicked])];
                                Error ->
                                    api_failed("Kick", Error)
                            end
                    end)
    end;
kick(_Cmd, _, _) ->
    usage_alert(kick_usage()).

kick_row(K) ->
    [{client_id, str(maps:get(client_id, K, ""))},
     {mountpoint, str(maps:get(mountpoint, K, ""))},
     {username, str(maps:get(username, K, undefined))},
     {state, str(maps:get(state, K, ""))},
     {generation, str(maps:get(generation, K, ""))},
     {result, str(maps:get(result, K, ""))}].

%% A command must print something useful even when the plugin's API fails
%% (e.g. the registry is not running); clique would otherwise print a crash.
guarded(Fun) ->
    try Fun()
    catch
        Class:Reason ->
            failed(io_lib:format("vmq_warden: command failed: ~tp:~tp", [Class, Reason]))
    end.

%% The API answered with an error. (An answer of another shape raises a
%% case_clause in the callback, which guarded/1 reports.)
api_failed(What, Error) ->
    api_failed(What, Error, []).

api_failed(What, {error, nif_not_loaded}, More) ->
    failed([What, " failed: the vmq_warden NIF library is not loaded, so the session registry "
            "and the firewall are not running and every auth hook answers with the failure "
            "decision. The node's log names the library and why it did not load; fix it, then "
            "disable and enable the plugin."], More);
api_failed(What, {error, Reason}, More) ->
    failed([What, " failed: ", reason_text(Reason)], More).

%% The alert first, then what could still be shown; vmq-admin exits with
%% ?EXIT_FAILED.
failed(Text) ->
    failed(Text, []).

failed(Text, More) ->
    {exit_status, ?EXIT_FAILED, [clique_status:alert([clique_status:text(flat(Text))]) | More]}.

usage_alert(Usage) ->
    failed(Usage).

%% clique's writers append text with ++: always a flat string.
flat(Chars) ->
    case unicode:characters_to_list(Chars) of
        L when is_list(L) -> L;
        _ -> lists:flatten(io_lib:format("~tp", [Chars]))
    end.

%% Error reasons as the API returns them, as text.
reason_text(Msg) when is_binary(Msg) -> unicode:characters_to_list(Msg);
reason_text({invalid_setting, Key, Value}) ->
    io_lib:format("invalid setting ~tp = ~tp (the app env of vmq_warden)", [Key, Value]);
reason_text({reloader, timeout}) ->
    "the reload did not finish in time; it may still complete, see the node's log";
reason_text(bad_address) -> "not an IP address";
reason_text(Reason) ->
    case io_lib:printable_unicode_list(Reason) of
        true -> Reason;
        false -> io_lib:format("~tp", [Reason])
    end.

states_text() ->
    lists:join(", ", [atom_to_list(S) || S <- ?STATES]).

%% ------------------------------------------------------------------ typecasts

to_binary(S) when is_list(S) -> unicode:characters_to_binary(S);
to_binary(S) -> {error, {invalid_flag_value, S}}.

%% An unknown state is passed on as {not_a_state, S} and refused by
%% session_show/3, whose message names the valid states (clique's message for
%% a typecast error would name only the flag).
to_state(S) when is_list(S) ->
    case [St || St <- ?STATES, atom_to_list(St) =:= S] of
        [State] -> State;
        [] -> {not_a_state, S}
    end;
to_state(S) -> {error, {invalid_flag_value, {state, S}}}.

%% "10.0.0.0/8", "::1/128" or a plain address; passed on as the string.
to_cidr(S) when is_list(S) ->
    case string:split(S, "/") of
        [Addr] -> ip_or_error(Addr, S);
        [Addr, Len] ->
            case {inet:parse_strict_address(Addr), catch list_to_integer(Len)} of
                {{ok, Ip}, N} when is_integer(N), N >= 0, tuple_size(Ip) =:= 4, N =< 32 -> S;
                {{ok, Ip}, N} when is_integer(N), N >= 0, tuple_size(Ip) =:= 8, N =< 128 -> S;
                _ -> {error, {invalid_flag_value, {peer, S}}}
            end
    end;
to_cidr(S) -> {error, {invalid_flag_value, {peer, S}}}.

to_ip(S) when is_list(S) -> ip_or_error(S, S);
to_ip(S) -> {error, {invalid_flag_value, {peer, S}}}.

ip_or_error(Addr, Orig) ->
    case inet:parse_strict_address(Addr) of
        {ok, _} -> Orig;
        _ -> {error, {invalid_flag_value, {peer, Orig}}}
    end.

to_limit(S) ->
    case catch list_to_integer(S) of
        N when is_integer(N), N > 0 -> N;
        _ -> {error, {invalid_flag_value, {limit, S}}}
    end.

%% ------------------------------------------------------------------ formatting

str(undefined) -> "";
str(B) when is_binary(B) -> unicode:characters_to_list(B);
str(A) when is_atom(A) -> atom_to_list(A);
str(I) when is_integer(I) -> integer_to_list(I);
str(L) when is_list(L) ->
    case io_lib:printable_unicode_list(L) of
        true -> L;
        false -> lists:flatten(io_lib:format("~tp", [L]))
    end;
str(T) -> lists:flatten(io_lib:format("~tp", [T])).

ip_string(Ip) when is_tuple(Ip) ->
    case inet:ntoa(Ip) of
        {error, _} -> str(Ip);
        S -> S
    end;
ip_string(Other) -> str(Other).

time_str(Ms) when is_integer(Ms), Ms > 0 ->
    calendar:system_time_to_rfc3339(Ms, [{unit, millisecond}, {offset, "Z"}]);
time_str(_) -> "".

last_end_str({Reason, Ms}) -> str(Reason) ++ " at " ++ time_str(Ms);
last_end_str(_) -> "".

ban_value(K, V) when is_integer(V), V > 1000000000000 ->
    %% looks like a time in ms since epoch (until, since, ...)
    case lists:suffix("_ms", atom_to_list_safe(K)) orelse
         lists:member(K, [until, since, expires, expires_at, banned_at]) of
        true -> time_str(V);
        false -> str(V)
    end;
%% target is {peer, <<"10.0.0.9/32">>} or {username, <<"bob">>}
ban_value(target, {Kind, Subject}) when is_atom(Kind) -> str(Kind) ++ " " ++ str(Subject);
ban_value(K, {Ip, Port}) when K =:= peer, is_tuple(Ip) -> ip_string(Ip) ++ ":" ++ str(Port);
ban_value(_, V) when is_tuple(V), (tuple_size(V) =:= 4 orelse tuple_size(V) =:= 8) -> ip_string(V);
ban_value(_, V) -> str(V).

atom_to_list_safe(A) when is_atom(A) -> atom_to_list(A);
atom_to_list_safe(_) -> "".

%% Nested stats map -> [{"a.b.c", "N"}], sorted.
flatten(Map) when is_map(Map) ->
    lists:sort(flatten([], Map)).

flatten(Prefix, Map) when is_map(Map) ->
    lists:append([flatten(Prefix ++ [str(K)], V) || {K, V} <- maps:to_list(Map)]);
flatten(Prefix, V) ->
    [{lists:flatten(lists:join(".", Prefix)), str(V)}].

%% ------------------------------------------------------------------ usage

usages() ->
    [{?BASE, warden_usage()},
     {?BASE ++ ["session"], session_show_usage()},
     {?BASE ++ ["session", "show"], session_show_usage()},
     {?BASE ++ ["stats"], stats_usage()},
     {?BASE ++ ["reload"], reload_usage()},
     {?BASE ++ ["ban"], ban_usage()},
     {?BASE ++ ["ban", "show"], ban_usage()},
     {?BASE ++ ["ban", "clear"], ban_clear_usage()},
     {?BASE ++ ["kick"], kick_usage()}].

warden_usage() ->
    ["vmq-admin warden <sub-command>\n\n",
     "  Operate the vmq_warden plugin (admission firewall and session registry).\n\n",
     "  Sub-commands:\n",
     "    session show   List sessions known to the registry\n",
     "    stats          Show decision, event, cache and reload counters\n",
     "    reload         Reload the policy and password files now\n",
     "    ban show       List active bans\n",
     "    ban clear      Lift bans\n",
     "    kick           Disconnect sessions (by client id, username, peer, prefix)\n\n",
     "  Use --help after a sub-command for more details.\n"].

session_show_usage() ->
    ["vmq-admin warden session show [--client-id=<ClientId>] [--username=<User>]\n",
     "    [--state=<State>] [--peer=<CIDR>] [--mountpoint=<Mountpoint>] [--limit=<N>] [--cluster]\n\n",
     "  Lists sessions of the vmq_warden registry, filtered by the given flags.\n\n",
     "  --cluster     every connected node's sessions, one row per client (the\n",
     "                node whose record changed last), and the nodes that did not answer\n",
     "  --state       one of ", states_text(), "\n",
     "  --peer        an address or a network, e.g. 10.0.0.0/8 or ::1\n",
     "  --limit       at most this many rows (default ", integer_to_list(?DEFAULT_LIMIT), ")\n\n"].

stats_usage() ->
    ["vmq-admin warden stats\n\n",
     "  Shows session counts and the plugin's counters.\n\n"].

reload_usage() ->
    ["vmq-admin warden reload\n\n",
     "  Reloads the policy and password files now. A file that does not parse\n",
     "  is refused and the previous version stays in force; the command then\n",
     "  prints the file, the line and the reason and exits with status 1.\n\n"].

ban_usage() ->
    ["vmq-admin warden ban show | clear\n\n",
     "  ban show    Lists active bans (peer addresses and usernames).\n",
     "  ban clear   Lifts bans: --all | --peer=<IP> | --username=<User>\n\n"].

ban_clear_usage() ->
    ["vmq-admin warden ban clear --all | --peer=<IP> | --username=<User>\n\n",
     "  Lifts all bans, the ban of one peer address, or the ban of one username.\n",
     "  Exactly one of the flags is required.\n\n"].

kick_usage() ->
    ["vmq-admin warden kick --client-id=<ClientId> [--mountpoint=<M>] | --username=<User>\n",
     "    | --peer=<CIDR> | --client-id-prefix=<Prefix> [--dry-run] [--cleanup]\n\n",
     "  Disconnects the online sessions the one selector names; each ends `kicked'\n",
     "  (by vmq-admin) in the registry and the event stream.\n",
     "  --dry-run   only list the sessions that would be kicked\n",
     "  --cleanup   also remove their queues (offline messages), and kick offline\n",
     "              sessions too\n\n"].
