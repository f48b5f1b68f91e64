-module(vmq_warden_app).
-behaviour(application).
-export([start/2, stop/1]).

-include_lib("kernel/include/logger.hrl").

%% A bad configuration fails start with a clear error. A missing NIF does
%% not: the hooks must stay registered so they answer with the failure
%% decision (fail closed) instead of letting other plugins admit everyone.
start(_Type, _Args) ->
    vmq_warden_stats:init(),
    case vmq_warden_nif:load() of
        ok ->
            case vmq_warden_config:apply() of
                ok -> start_sup();
                {error, Reason} -> {error, {bad_config, Reason}}
            end;
        {error, Reason} ->
            ?LOG_ERROR(#{msg => "vmq_warden: NIF library not loaded; every auth hook answers "
                                "with the failure decision", reason => Reason},
                       #{domain => [vmq_warden]}),
            start_sup()
    end.

start_sup() ->
    case vmq_warden_sup:start_link() of
        {ok, Pid} ->
            _ = vmq_warden_cli:register(),
            {ok, Pid};
        Error ->
            Error
    end.

stop(_State) ->
    vmq_warden_cli:unregister(),
    ok.
