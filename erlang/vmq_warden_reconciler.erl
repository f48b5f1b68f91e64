%% @doc Inside VerneMQ, compares the registry with the broker's own queues
%% every `reconcile_interval' ms and corrects what the broker does not have
%% (vmq_warden_nif:reconcile/3, warden_core Registry::reconcile): whatever
%% hook order the registry might misread, a ghost session lives at most one
%% period. Off the hooks' path: a process of its own, the registry read in
%% bounded chunks, at most ?STEP records checked per step with a pause
%% between steps. Outside VerneMQ it does nothing.
-module(vmq_warden_reconciler).
-behaviour(gen_server).

-export([start_link/0, run_pass/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-include_lib("kernel/include/logger.hrl").

%% Records checked per step, and the pause between steps.
-define(STEP, 100).
-define(PAUSE_MS, 10).
%% A record that changed this recently may be mid-connect: left alone
%% (app env `reconcile_grace', ms; tests set it to 0).
-define(GRACE_MS, 10000).
%% list_chunk's filter tuple: every record.
-define(ALL, {undefined, undefined, undefined, undefined, undefined}).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% One whole pass now, in the caller's process (tests; `vmq-admin'):
%% #{checked, corrected, differs}.
-spec run_pass() -> #{atom() => non_neg_integer()} | {error, term()}.
run_pass() ->
    case vmq_warden_broker:inside_vernemq() of
        false -> {error, not_inside_vernemq};
        true -> try pass(start, #{checked => 0, corrected => 0, differs => 0}, 0)
                catch error:nif_not_loaded -> {error, nif_not_loaded}
                end
    end.

init([]) ->
    schedule(interval()),
    {ok, #{}}.

handle_call(_Msg, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info(tick, State) ->
    _ = vmq_warden_broker:inside_vernemq() andalso run_pass(),
    schedule(interval()),
    {noreply, State};
handle_info(_Msg, State) ->
    {noreply, State}.

interval() ->
    case application:get_env(vmq_warden, reconcile_interval, 60000) of
        N when is_integer(N), N >= 0 -> N;
        _ -> 60000
    end.

grace() ->
    case application:get_env(vmq_warden, reconcile_grace, ?GRACE_MS) of
        N when is_integer(N), N >= 0 -> N;
        _ -> ?GRACE_MS
    end.

schedule(0) -> ok;
schedule(Ms) -> _ = erlang:send_after(Ms, self(), tick), ok.

pass(Cursor, Acc, _Steps) when Cursor =:= done ->
    finish(Acc);
pass(Cursor, Acc, Steps) ->
    case vmq_warden_nif:list_chunk(?ALL, Cursor, ?STEP) of
        {Rows, Next} when is_list(Rows) ->
            Before = erlang:system_time(millisecond) - grace(),
            Acc1 = lists:foldl(fun(Row, A) -> check(Row, Before, A) end, Acc, Rows),
            Steps > 0 andalso timer:sleep(?PAUSE_MS),
            pass(Next, Acc1, Steps + 1);
        _ ->
            finish(Acc)
    end.

finish(#{corrected := Corrected} = Acc) ->
    vmq_warden_stats:bump(reconcile_passes),
    Corrected > 0 andalso
        ?LOG_WARNING(#{msg => "vmq_warden: the registry held sessions the broker did not "
                              "have; corrected", corrected => Corrected},
                     vmq_warden_log:meta(warning)),
    Acc.

%% Rows as list_chunk returns them (vmq_warden:session/1 names the fields).
check({Mountpoint, ClientId, State, _Gen, _Pending, _Peer, _User, _Clean, _Proto,
       _First, _LastConnect, LastChange, _Count, _LastEnd}, Before, Acc)
  when (State =:= online orelse State =:= offline), LastChange =< Before ->
    Acc1 = maps:update_with(checked, fun(N) -> N + 1 end, Acc),
    case vmq_warden_broker:session_state({Mountpoint, ClientId}) of
        unknown ->
            Acc1;
        Broker ->
            case catch vmq_warden_nif:reconcile({Mountpoint, ClientId}, Broker, LastChange) of
                corrected -> maps:update_with(corrected, fun(N) -> N + 1 end, Acc1);
                differs -> maps:update_with(differs, fun(N) -> N + 1 end, Acc1);
                _ -> Acc1
            end
    end;
check(_Row, _Now, Acc) ->
    Acc.
