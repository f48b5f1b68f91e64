%% @doc The NIF stub module. Loaded explicitly by the application (not with
%% -on_load) so that a missing or broken library leaves the module loaded with
%% stubs that raise `nif_not_loaded`; the hook wrappers turn that into the
%% configured failure decision instead of an `undef` crash.
-module(vmq_warden_nif).

-export([load/0, loaded/0]).
-export([ping/0, noop/0, memory/0,
         auth_begin/1, auth_password/2, auth_password_slow/2,
         registered/7, queue_event/4,
         configure/1, load_files/2,
         lookup/2, list_chunk/3, counts/0, stats/0, recent_endings/1, sweep/0, reset/0,
         bans/0, clear_bans/1,
         drain_logs/1, debug_panic/0,
         call_times_start/0, call_times_stop/0, call_times/0, calibrate/1]).

-define(NOT_LOADED, erlang:nif_error(nif_not_loaded)).

-spec load() -> ok | {error, term()}.
load() ->
    case loaded() of
        true -> ok;
        false -> load_from(lib_path())
    end.

load_from(Path) ->
    warn_if_still_mapped(Path),
    case erlang:load_nif(Path, 0) of
        ok -> ok;
        {error, {reload, _}} -> ok;
        {error, {upgrade, _}} -> ok;
        {error, Reason} -> {error, {nif_load_failed, Path, Reason}}
    end.

%% glibc does not unmap a library while a thread holds one of its
%% thread-local destructors, so after a disable the old library can stay in
%% memory, and loading the same path again returns it: a library file
%% replaced in place then only takes effect after a broker restart. Say so.
warn_if_still_mapped(Path) ->
    case file:read_file("/proc/self/maps") of
        {ok, Maps} ->
            Name = list_to_binary(filename:basename(Path) ++ ".so"),
            case binary:match(Maps, Name) of
                nomatch -> ok;
                _ -> logger:warning(#{msg => "vmq_warden: the native library of a previous load "
                                             "is still mapped and will be reused; if its file "
                                             "was replaced, restart the broker to run the new "
                                             "code", path => Path},
                                    #{domain => [vmq_warden]})
            end;
        {error, _} ->
            ok
    end.

%% The library path; `vmq_warden.nif_path` in the app env overrides it (tests
%% use that to simulate a missing library).
lib_path() ->
    case application:get_env(vmq_warden, nif_path) of
        {ok, Path} -> Path;
        undefined ->
            Priv = case code:priv_dir(vmq_warden) of
                       {error, bad_name} ->
                           filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
                       Dir -> Dir
                   end,
            filename:join(Priv, "vmq_warden_nif")
    end.

-spec loaded() -> boolean().
loaded() ->
    try ping() of
        <<"pong">> -> true;
        _ -> false
    catch
        error:nif_not_loaded -> false;
        error:undef -> false
    end.

ping() -> ?NOT_LOADED.

%% Benchmark baselines: a NIF that does nothing, and the bytes the Rust side
%% holds on its heap (counted by its global allocator).
noop() -> ?NOT_LOADED.
memory() -> ?NOT_LOADED.
%% Wall and thread CPU time of every NIF call while on (warden_nif::timing):
%% tells a NIF that kept its scheduler > 1 ms from an OS that preempted it.
call_times_start() -> ?NOT_LOADED.
call_times_stop() -> ?NOT_LOADED.
call_times() -> ?NOT_LOADED.
calibrate(_Rounds) -> ?NOT_LOADED.

%% Hooks (see vmq_warden_hooks for the argument shapes).
auth_begin(_Request) -> ?NOT_LOADED.
auth_password(_Ctx, _Password) -> ?NOT_LOADED.
auth_password_slow(_Ctx, _Password) -> ?NOT_LOADED.
registered(_Mountpoint, _ClientId, _ConnPid, _Ip, _Port, _User, _Proto) -> ?NOT_LOADED.
queue_event(_Event, _Mountpoint, _ClientId, _QueuePid) -> ?NOT_LOADED.

%% Configuration (vmq_warden_config).
configure(_Settings) -> ?NOT_LOADED.
load_files(_PolicyPath, _PasswordPath) -> ?NOT_LOADED.

%% Registry and firewall state (vmq_warden).
lookup(_Mountpoint, _ClientId) -> ?NOT_LOADED.
%% {Rows, Cursor | done}: one bounded piece of a listing, from `start' or the
%% cursor of the previous piece (vmq_warden:sessions/1 loops them).
list_chunk(_FilterSpec, _Cursor, _Limit) -> ?NOT_LOADED.
counts() -> ?NOT_LOADED.
stats() -> ?NOT_LOADED.
recent_endings(_Limit) -> ?NOT_LOADED.
sweep() -> ?NOT_LOADED.
reset() -> ?NOT_LOADED.
bans() -> ?NOT_LOADED.
clear_bans(_Selector) -> ?NOT_LOADED.

%% Logging bridge (vmq_warden_log).
drain_logs(_Max) -> ?NOT_LOADED.

%% Forces a Rust panic inside a NIF: tests show Rustler turns it into an
%% Erlang error and the VM and the hooks survive.
debug_panic() -> ?NOT_LOADED.
