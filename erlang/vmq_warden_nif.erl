%% @doc The NIF stub module. Loaded explicitly by the application (not with
%% -on_load) so that a missing or broken library leaves the module loaded with
%% stubs that raise `nif_not_loaded`; the hook wrappers turn that into the
%% configured failure decision instead of an `undef` crash.
-module(vmq_warden_nif).

-export([load/0, loaded/0]).
-export([ping/0]).

-define(NOT_LOADED, erlang:nif_error(nif_not_loaded)).

-spec load() -> ok | {error, term()}.
load() ->
    case loaded() of
        true -> ok;
        false -> load_from(lib_path())
    end.

load_from(Path) ->
    case erlang:load_nif(Path, 0) of
        ok -> ok;
        {error, {reload, _}} -> ok;
        {error, {upgrade, _}} -> ok;
        {error, Reason} -> {error, {nif_load_failed, Path, Reason}}
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
