%% @doc Rebuilds the registry from the broker's own state when the plugin
%% starts inside VerneMQ (a disable/enable or a restart of the application
%% empties the in-memory registry while the broker keeps its sessions):
%% every queue of this node becomes an online or offline session again.
%% Outside VerneMQ the registry starts empty.
%%
%% Bounded work per step: the queues are read once from the broker's
%% tables (vmq_warden_broker:queues/0, plain Erlang code, preemptible),
%% then checked ?STEP at a time with a pause between steps; each check is
%% one vmq_queue:status/1 with a deadline and one short NIF call. A key
%% that a hook has touched since the start keeps what the hook said.
%% Restored sessions have no username or peer (the broker's queue does not
%% tell them): they count for no user's max_sessions until their clients
%% connect again.
-module(vmq_warden_rebuild).
-behaviour(gen_server).

-export([start_link/0, run/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/logger.hrl").

-define(STEP, 100).
-define(PAUSE_MS, 10).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% One rebuild now, in the caller's process: #{queues, restored, kept,
%% skipped, steps}, or {error, not_inside_vernemq}.
-spec run() -> #{atom() => non_neg_integer()} | {error, term()}.
run() ->
    case vmq_warden_broker:inside_vernemq() of
        false -> {error, not_inside_vernemq};
        true -> rebuild(vmq_warden_broker:queues())
    end.

init([]) ->
    self() ! rebuild,
    {ok, #{}}.

handle_call(_Msg, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info(rebuild, State) ->
    case run() of
        #{restored := N} = Result when N > 0 ->
            ?LOG_INFO(#{msg => "vmq_warden: registry rebuilt from the broker's queues",
                        result => Result}, vmq_warden_log:meta(info));
        _ ->
            ok
    end,
    {noreply, State};
handle_info(_Msg, State) ->
    {noreply, State}.

rebuild(Queues) ->
    step(Queues, #{queues => length(Queues), restored => 0, kept => 0, skipped => 0, steps => 0}).

step([], Acc) ->
    Acc;
step(Queues, #{steps := Steps} = Acc) ->
    Steps > 0 andalso timer:sleep(?PAUSE_MS),
    {Chunk, Rest} = split(Queues, ?STEP),
    step(Rest, lists:foldl(fun restore/2, Acc#{steps := Steps + 1}, Chunk)).

split(List, N) when length(List) =< N -> {List, []};
split(List, N) -> lists:split(N, List).

restore({Sid, QueuePid}, Acc) ->
    case vmq_warden_broker:queue_state(QueuePid) of
        State when State =:= online; State =:= offline ->
            case catch vmq_warden_nif:restore_session(Sid, QueuePid, State =:= online) of
                restored -> bump(restored, Acc);
                kept -> bump(kept, Acc);
                _ -> bump(skipped, Acc)
            end;
        _ ->
            %% gone meanwhile, a plugin's queue, or no answer in time
            bump(skipped, Acc)
    end.

bump(Key, Acc) ->
    maps:update_with(Key, fun(N) -> N + 1 end, Acc).
