%% @doc Moves log events of the Rust core into OTP logger (and so into
%% VerneMQ's log files). The core queues events without blocking; this
%% process drains them every 200 ms.
-module(vmq_warden_log).
-behaviour(gen_server).

-export([start_link/0, flush/0, meta/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(INTERVAL, 200).
-define(BATCH, 500).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc The logger metadata of the plugin's events at `Level'. Below
%% `error' they carry the domain [vmq_warden], for routing them. Errors carry
%% none: VerneMQ's error.log is logger's `default' handler, which OTP gives
%% its default domain filters (no domain, [otp | _] or [sasl | _] pass), so
%% an error with the plugin's domain would never reach that file.
-spec meta(logger:level()) -> logger:metadata().
meta(Level) ->
    case logger:compare_levels(Level, error) of
        lt -> #{domain => [vmq_warden]};
        _ -> #{}
    end.

%% @doc Drain now (tests, and before a stop).
flush() ->
    gen_server:call(?MODULE, flush).

%% The log level reaches the core with the other settings
%% (vmq_warden_config:apply/0).
init([]) ->
    erlang:send_after(?INTERVAL, self(), drain),
    {ok, #{}}.

handle_call(flush, _From, State) ->
    drain(),
    {reply, ok, State};
handle_call(_Req, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info(drain, State) ->
    drain(),
    erlang:send_after(?INTERVAL, self(), drain),
    {noreply, State};
handle_info(_Msg, State) ->
    {noreply, State}.

drain() ->
    try vmq_warden_nif:drain_logs(?BATCH) of
        {Lines, Dropped} ->
            lists:foreach(fun emit/1, Lines),
            Dropped > 0 andalso
                logger:warning(#{msg => "vmq_warden: log events dropped under load",
                                 dropped => Dropped}, meta(warning)),
            length(Lines) =:= ?BATCH andalso drain(),
            ok
    catch
        error:nif_not_loaded -> ok
    end.

emit({Level, Target, Message, Fields}) ->
    Report = maps:from_list([{binary_to_atom(K, utf8), V} || {K, V} <- Fields,
                                                             byte_size(K) < 64]),
    logger:log(Level, Report#{msg => Message}, (meta(Level))#{target => Target}).
