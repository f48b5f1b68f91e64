%% @doc The plugin's own control over live sessions, off the hooks' path,
%% inside VerneMQ only (it disconnects as `vmq-admin session disconnect'
%% does, vmq_warden_broker:disconnect/2):
%% - credential lifetime: every `credential_check_interval' the online
%%   sessions are compared with their user's `max_session_age' (policy, user
%%   or group); an older one ends `expired_credentials' and is disconnected,
%%   for brokers that do not honour the `max_connection_lifetime' modifier;
%% - enforce on reload (`enforce_on_reload'): after a successful reload each
%%   online session is re-checked against the new policy and the time its
%%   user's password last changed (`vmq_warden_nif:recheck_session/7'), and
%%   each user's sessions against a lowered `max_sessions'; one that would
%%   now be refused ends `kicked' by "reload: <the rule>" and is
%%   disconnected.
%% Each pass reads at most ?MAX_PER_PASS sessions through the chunked listing
%% and makes one short NIF call per session.
-module(vmq_warden_enforcer).
-behaviour(gen_server).

-export([start_link/0, check_now/0, enforce/0, enforce_now/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/logger.hrl").

-define(MAX_PER_PASS, 10000).
-define(LOGGED_SESSIONS, 20).
-define(SHOWN_BYTES, 256).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc One credential-lifetime pass now: `{ok, [SubscriberId]}' of the
%% sessions disconnected, or `{error, not_inside_vernemq}'.
-spec check_now() -> {ok, [{string(), binary()}]} | {error, term()}.
check_now() ->
    gen_server:call(?MODULE, check_now, 30000).

%% @doc Ask for an enforce-on-reload pass (the reload calls it); returns at once.
-spec enforce() -> ok.
enforce() ->
    gen_server:cast(?MODULE, enforce).

%% @doc One enforce-on-reload pass now: `{ok, [{SubscriberId, Rule}]}'.
-spec enforce_now() -> {ok, [{{string(), binary()}, binary()}]} | {error, term()}.
enforce_now() ->
    gen_server:call(?MODULE, enforce_now, 30000).

init([]) ->
    {ok, #{credential_check_interval := Interval}} = vmq_warden_config:settings(),
    schedule(Interval),
    {ok, Interval}.

handle_call(check_now, _From, Interval) ->
    {reply, check(), Interval};
handle_call(enforce_now, _From, Interval) ->
    {reply, enforce_pass(), Interval};
handle_call(_, _From, Interval) ->
    {reply, {error, unknown_call}, Interval}.

handle_cast(enforce, Interval) ->
    report("sessions refused by the reloaded policy disconnected", enforce_pass()),
    {noreply, Interval};
handle_cast(_, Interval) ->
    {noreply, Interval}.

handle_info(check, Interval) ->
    report("sessions past their max_session_age disconnected", check()),
    schedule(Interval),
    {noreply, Interval};
handle_info(_, Interval) ->
    {noreply, Interval}.

schedule(0) -> ok;
schedule(Interval) -> _ = erlang:send_after(Interval, self(), check), ok.

%% The operator's record of what a pass ended: how many, and the first
%% ?LOGGED_SESSIONS of them by client id (at most ?SHOWN_BYTES of it, as the
%% audit lines show a client value) and rule.
report(Msg, {ok, [_ | _] = Ended}) ->
    ?LOG_NOTICE(#{msg => "vmq_warden: " ++ Msg, count => length(Ended),
                  sessions => [shown(E) || E <- lists:sublist(Ended, ?LOGGED_SESSIONS)]},
                vmq_warden_log:meta(notice));
report(_, _) ->
    ok.

shown({{_Mp, _ClientId} = Sid, Rule}) -> iolist_to_binary([shown(Sid), " (", Rule, ")"]);
shown({Mp, ClientId}) ->
    Cut = binary:part(ClientId, 0, min(byte_size(ClientId), ?SHOWN_BYTES)),
    iolist_to_binary([[[Mp, "/"] || Mp =/= ""], Cut]).

%% Folds `Fun(Session, Acc) -> {Ended, Acc}' over the online sessions;
%% returns every `Ended' list appended.
fold_online(Fun, Acc0) ->
    case vmq_warden_broker:can_disconnect() of
        false ->
            {error, not_inside_vernemq};
        true ->
            case vmq_warden:sessions(#{state => online, limit => ?MAX_PER_PASS}) of
                Sessions when is_list(Sessions) ->
                    {Ended, _} = lists:foldl(fun(S, {Done, Acc}) ->
                                                     {E, Acc1} = Fun(S, Acc),
                                                     {[E | Done], Acc1}
                                             end, {[], Acc0}, Sessions),
                    {ok, lists:append(lists:reverse(Ended))};
                Error ->
                    Error
            end
    end.

%% ------------------------------------------------------------------ credential lifetime

check() ->
    Now = erlang:system_time(millisecond),
    fold_online(fun(S, Limits) -> check(S, Now, Limits) end, #{}).

%% Each username's limit is read once a pass.
check(#{username := User, last_connect := Since} = S, Now, Limits) when is_binary(User) ->
    {Limit, Limits1} = case Limits of
                           #{User := L} -> {L, Limits};
                           #{} -> L = limit(max_session_age, User), {L, Limits#{User => L}}
                       end,
    case is_integer(Limit) andalso Now - Since > Limit * 1000 of
        true -> {expire(S), Limits1};
        false -> {[], Limits1}
    end;
check(_, _Now, Limits) ->
    {[], Limits}.

%% The running policy's limit of `User' (`max_session_age' or
%% `max_sessions'), or `undefined'.
limit(Setting, User) ->
    try vmq_warden_nif:Setting(User)
    catch error:_ -> undefined
    end.

expire(#{mountpoint := Mp, client_id := ClientId, generation := Gen}) ->
    Recorded = try vmq_warden_nif:expire_credentials_record(unicode:characters_to_binary(Mp), ClientId, Gen)
               catch error:_ -> false
               end,
    case Recorded of
        true -> disconnect({Mp, ClientId}), [{Mp, ClientId}];
        false -> []
    end.

%% ------------------------------------------------------------------ enforce on reload

%% Each online session re-checked alone; then, among those left, each
%% user's sessions over a lowered `max_sessions': the ones that connected
%% last go, as a connect over the limit is refused. Counted on this node's
%% sessions only: every node of a cluster runs its own pass, and two nodes
%% each cutting to the cluster's total would cut twice.
enforce_pass() ->
    case fold_online(fun(S, Acc) -> {recheck(S), Acc} end, none) of
        {ok, Refused} -> {ok, Refused ++ over_max_sessions()};
        Error -> Error
    end.

recheck(#{mountpoint := Mp, client_id := ClientId, username := User,
          peer := Peer, protocol := Proto, last_connect := LoggedInAt} = S) ->
    {Ip, Port} = case Peer of
                     {_, _} -> Peer;
                     _ -> {undefined, undefined}
                 end,
    Verdict = try vmq_warden_nif:recheck_session(unicode:characters_to_binary(Mp), ClientId, User,
                                                 Ip, Port, Proto, LoggedInAt)
              catch error:_ -> ok
              end,
    case Verdict of
        {refuse, _Code, Rule} -> kick(S, Rule);
        _ -> []
    end;
recheck(_) ->
    [].

%% Listed again, not taken from the first step's list: the sessions it
%% kicked are gone from it, and so are those that ended meanwhile, which
%% must not count toward a user's limit.
over_max_sessions() ->
    case vmq_warden:sessions(#{state => online, limit => ?MAX_PER_PASS}) of
        Sessions when is_list(Sessions) ->
            ByUser = maps:groups_from_list(fun(#{username := U}) -> U end,
                                           [S || #{username := U} = S <- Sessions, is_binary(U)]),
            lists:append([newest_over(User, Ss) || {User, Ss} <- maps:to_list(ByUser)]);
        _ ->
            []
    end.

newest_over(User, Sessions) ->
    Max = limit(max_sessions, User),
    case is_integer(Max) andalso length(Sessions) > Max of
        true ->
            ByAge = lists:sort(fun(#{last_connect := A}, #{last_connect := B}) -> A =< B end, Sessions),
            Rule = iolist_to_binary(io_lib:format("max_sessions: ~b sessions of this user, at most ~b",
                                                  [length(Sessions), Max])),
            lists:append([kick(S, Rule) || S <- lists:nthtail(Max, ByAge)]);
        false ->
            []
    end.

%% The session ends `kicked' by "reload: Rule" (if it is still the one
%% listed) and is disconnected.
kick(#{mountpoint := Mp, client_id := ClientId, generation := Gen}, Rule) ->
    case catch vmq_warden_nif:kick_record(unicode:characters_to_binary(Mp), ClientId, Gen,
                                          <<"reload: ", Rule/binary>>) of
        true -> disconnect({Mp, ClientId}), [{{Mp, ClientId}, Rule}];
        _ -> []
    end.

disconnect(SubscriberId) ->
    _ = vmq_warden_broker:disconnect(SubscriberId, false),
    ok.
