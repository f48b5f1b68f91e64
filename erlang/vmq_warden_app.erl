-module(vmq_warden_app).
-behaviour(application).
-export([start/2, prep_stop/1, stop/1]).

-include_lib("kernel/include/logger.hrl").

%% A bad configuration (an invalid setting, a policy or password file that
%% does not load) fails start with `{error, {bad_config, Reason}}'. A missing
%% or broken NIF library does not: the hooks must stay registered so that
%% they answer with the failure decision (fail closed by default) instead of
%% letting the next plugin in the chain admit everyone.
start(_Type, _Args) ->
    vmq_warden_stats:init(),
    %% Present on VerneMQ 2.x (it wraps CONNECT passwords); the hooks only
    %% check that it is loaded.
    _ = code:ensure_loaded(credentials_obfuscation),
    case vmq_warden_config:settings() of
        {ok, Settings} ->
            start(Settings);
        {error, Reason} ->
            bad_config(Reason)
    end.

start(Settings) ->
    case attach_nif() of
        ok ->
            %% A re-enabled plugin may get its old library back (see
            %% vmq_warden_nif:load/0): start from a clean state either way.
            ok = vmq_warden_nif:reset(),
            %% {encrypted, _} passwords decrypted in the NIF (VerneMQ 2.x)
            _ = vmq_warden_obfuscation:hand_over(),
            case vmq_warden_config:apply() of
                ok -> start_sup();
                {error, Reason} -> bad_config(Reason)
            end;
        {error, Reason} ->
            ?LOG_ERROR(#{msg => "vmq_warden: NIF library not loaded; every auth hook answers "
                                "with the failure decision",
                         reason => Reason,
                         failure_decision => maps:get(failure_decision, Settings)},
                       vmq_warden_log:meta(error)),
            start_sup()
    end.

%% The module's on_load attaches the library to each new instance. An
%% instance left with stubs by an earlier failure (a re-enable after the
%% operator fixed the library) gets one fresh instance to try again.
attach_nif() ->
    case vmq_warden_nif:load() of
        ok ->
            ok;
        {error, _} ->
            _ = code:soft_purge(vmq_warden_nif) andalso code:load_file(vmq_warden_nif),
            %% and no old code left, so the plugin manager's reload after
            %% start can load the module again
            _ = code:soft_purge(vmq_warden_nif),
            vmq_warden_nif:load()
    end.

bad_config(Reason) ->
    ?LOG_ERROR(#{msg => "vmq_warden: bad configuration, plugin not started", reason => Reason},
               vmq_warden_log:meta(error)),
    {error, {bad_config, Reason}}.

start_sup() ->
    case vmq_warden_sup:start_link() of
        {ok, Pid} ->
            _ = vmq_warden_cli:register(),
            {ok, Pid};
        Error ->
            Error
    end.

%% Hand the last queued Rust log events to logger before the processes go.
prep_stop(State) ->
    _ = catch vmq_warden_log:flush(),
    State.

stop(_State) ->
    vmq_warden_cli:unregister(),
    ok.
