%% @doc Reloads the policy and password files when they change (checked every
%% `reload_interval' ms) and drops connects that were accepted but never
%% registered. A failed reload keeps the running policy (the core only swaps
%% in a policy that parsed) and is retried only after the files change again.
-module(vmq_warden_reloader).
-behaviour(gen_server).

-export([start_link/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

init([]) ->
    schedule(),
    {ok, #{stamps => stamps()}}.

handle_call(_Req, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info(tick, #{stamps := Old} = State) ->
    New = stamps(),
    _ = case New =:= Old of
            true -> ok;
            false -> vmq_warden_config:reload()
        end,
    _ = catch vmq_warden_nif:sweep(),
    schedule(),
    {noreply, State#{stamps => New}};
handle_info(_Msg, State) ->
    {noreply, State}.

schedule() ->
    case application:get_env(vmq_warden, reload_interval, 5000) of
        I when is_integer(I), I > 0 -> erlang:send_after(I, self(), tick);
        _ -> erlang:send_after(5000, self(), tick)
    end.

%% Modification time, size and inode of each watched file: an editor that
%% replaces a file by rename changes the inode even within one second.
stamps() ->
    [{F, case file:read_file_info(F, [{time, posix}]) of
             {ok, Info} -> {element(6, Info), element(2, Info), element(12, Info)};
             {error, Reason} -> Reason
         end} || F <- vmq_warden_config:watched_files()].
