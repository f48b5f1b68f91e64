%% @doc Credential lifetime: every `credential_check_interval' the online
%% sessions are compared with their user's `max_session_age' (policy, user
%% or group); a session older than that is recorded as ending
%% `expired_credentials' and disconnected through
%% `vernemq_dev_api:disconnect_by_subscriber_id/2', for brokers that do not
%% honour the `max_connection_lifetime' modifier. Inside VerneMQ only.
-module(vmq_warden_lifetime).
-behaviour(gen_server).

-export([start_link/0, check_now/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/logger.hrl").

%% Sessions one pass reads at most (the listing itself is chunked).
-define(MAX_PER_PASS, 10000).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc One pass now: `{ok, [SubscriberId]}' of the sessions disconnected,
%% or `{error, not_inside_vernemq}'.
-spec check_now() -> {ok, [{string(), binary()}]} | {error, term()}.
check_now() ->
    gen_server:call(?MODULE, check_now, 30000).

init([]) ->
    {ok, #{credential_check_interval := Interval}} = vmq_warden_config:settings(),
    schedule(Interval),
    {ok, Interval}.

handle_call(check_now, _From, Interval) ->
    {reply, check(), Interval};
handle_call(_, _From, Interval) ->
    {reply, {error, unknown_call}, Interval}.

handle_cast(_, Interval) ->
    {noreply, Interval}.

handle_info(check, Interval) ->
    case check() of
        {ok, [_ | _] = Expired} ->
            ?LOG_INFO(#{msg => "vmq_warden: sessions past their max_session_age disconnected",
                        count => length(Expired)}, #{domain => [vmq_warden]});
        _ ->
            ok
    end,
    schedule(Interval),
    {noreply, Interval};
handle_info(_, Interval) ->
    {noreply, Interval}.

schedule(0) -> ok;
schedule(Interval) -> _ = erlang:send_after(Interval, self(), check), ok.

check() ->
    case available() of
        false ->
            {error, not_inside_vernemq};
        true ->
            case vmq_warden:sessions(#{state => online, limit => ?MAX_PER_PASS}) of
                Sessions when is_list(Sessions) ->
                    Now = erlang:system_time(millisecond),
                    {Expired, _} = lists:foldl(fun(S, Acc) -> check(S, Now, Acc) end, {[], #{}}, Sessions),
                    {ok, lists:reverse(Expired)};
                Error ->
                    Error
            end
    end.

%% The limit of each username is read once a pass.
check(#{username := User, last_connect := Since} = S, Now, {Expired, Limits}) when is_binary(User) ->
    {Limit, Limits1} = case Limits of
                           #{User := L} -> {L, Limits};
                           #{} -> L = limit(User), {L, Limits#{User => L}}
                       end,
    case is_integer(Limit) andalso Now - Since > Limit * 1000 of
        true -> {expire(S) ++ Expired, Limits1};
        false -> {Expired, Limits1}
    end;
check(_, _Now, Acc) ->
    Acc.

limit(User) ->
    try vmq_warden_nif:max_session_age(User)
    catch error:_ -> undefined
    end.

expire(#{mountpoint := Mp, client_id := ClientId, generation := Gen}) ->
    Recorded = try vmq_warden_nif:expire_credentials_record(unicode:characters_to_binary(Mp), ClientId, Gen)
               catch error:_ -> false
               end,
    case Recorded of
        true ->
            _ = try vernemq_dev_api:disconnect_by_subscriber_id({Mp, ClientId}, [])
                catch _:_ -> error
                end,
            [{Mp, ClientId}];
        false ->
            []
    end.

available() ->
    code:ensure_loaded(vernemq_dev_api) =:= {module, vernemq_dev_api}
        andalso erlang:function_exported(vernemq_dev_api, disconnect_by_subscriber_id, 2).
