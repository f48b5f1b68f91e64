%% @doc Reloads the policy and password files when they change (checked every
%% `reload_interval' ms; 0 turns the check off) and drops connects that were
%% accepted but never registered (every `reload_interval' ms, or 5 s when
%% it is 0). A failed reload keeps the running policy (the core only swaps
%% in a policy that parsed) and is retried only after the files change again.
%%
%% An operator's reload (vmq_warden:reload/0) runs here too: the files it
%% loaded are then not loaded a second time at the next check, which would
%% also empty the password cache again (every client's next login a slow
%% hash once more).
-module(vmq_warden_reloader).
-behaviour(gen_server).

-export([start_link/0, reload/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% Loading reads two small files on a dirty I/O scheduler.
-define(RELOAD_TIMEOUT, 30000).
%% The sweep's interval when automatic reloading is off.
-define(SWEEP_ONLY_INTERVAL, 5000).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Load the files now. Without this process (the application is not
%% running) the caller loads them.
-spec reload() -> ok | {error, term()}.
reload() ->
    try
        gen_server:call(?MODULE, reload, ?RELOAD_TIMEOUT)
    catch
        exit:{noproc, _} -> vmq_warden_config:reload();
        exit:{Reason, _} -> {error, {reloader, Reason}}
    end.

init([]) ->
    {ok, schedule(#{stamps => stamps(), timer => undefined})}.

handle_call(reload, _From, State) ->
    %% stamps first: a change while loading is seen by the next check
    Stamps = stamps(),
    {reply, vmq_warden_config:reload(), State#{stamps => Stamps}};
handle_call(_Req, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info(tick, #{stamps := Old} = State) ->
    State1 = case interval() of
                 0 ->
                     State;
                 _ ->
                     New = stamps(),
                     _ = case New of
                             Old -> ok;
                             _ -> vmq_warden_config:reload()
                         end,
                     State#{stamps => New}
             end,
    _ = catch vmq_warden_nif:sweep(),
    {noreply, schedule(State1)};
handle_info(_Msg, State) ->
    {noreply, State}.

%% One timer at a time, also when a tick comes from elsewhere.
schedule(#{timer := Old} = State) ->
    _ = is_reference(Old) andalso erlang:cancel_timer(Old),
    Interval = case interval() of
                   0 -> ?SWEEP_ONLY_INTERVAL;
                   I -> I
               end,
    State#{timer => erlang:send_after(Interval, self(), tick)}.

interval() ->
    case application:get_env(vmq_warden, reload_interval, 5000) of
        I when is_integer(I), I > 0 -> I;
        _ -> 0
    end.

%% Modification time, size and inode of each watched file: an editor that
%% replaces a file by rename changes the inode even within one second.
stamps() ->
    [{F, case file:read_file_info(F, [{time, posix}]) of
             {ok, Info} -> {element(6, Info), element(2, Info), element(12, Info)};
             {error, Reason} -> Reason
         end} || F <- vmq_warden_config:watched_files()].
