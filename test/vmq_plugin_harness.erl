%% @doc Starts and stops the plugin the way VerneMQ's plugin manager does
%% (`vmq_plugin_mgr', the same in 1.13 to 2.2; docs/VERNEMQ.md, "How a
%% plugin is started"), step for step. Every suite that starts the plugin
%% goes through here, so that a test sees what a real broker does to the
%% plugin's modules, not only what `application:start/1' does.
%%
%% enable: load the application if it is not loaded; call `App:start()' if
%% the application has a module `App' exporting start/0, else
%% `application:ensure_all_started(App)'; then `code:load_file/1' for every
%% module in the application's `modules' key, while the plugin runs.
%% disable: `App:stop()' if exported, else `application:stop(App)'; then
%% `code:purge/1' of every module of the app; then `application:unload/1'.
-module(vmq_plugin_harness).

-export([enable/1, disable/1, reload_modules/1, hot_load/1]).

%% `ok', or `{error, Reason}' where the broker's manager would crash on its
%% `{ok, _} = ...' match (the plugin is then not enabled).
-spec enable(atom()) -> ok | {error, term()}.
enable(App) ->
    case lists:keymember(App, 1, application:which_applications()) of
        true ->
            ok;
        false ->
            _ = lists:keymember(App, 1, application:loaded_applications())
                orelse application:load(App),
            {ok, Mods} = application:get_key(App, modules),
            Started = case lists:member(App, Mods)
                          andalso lists:member({start, 0}, App:module_info(exports)) of
                          true -> App:start();
                          false -> application:ensure_all_started(App)
                      end,
            case Started of
                {ok, _} ->
                    _ = reload_modules(App),
                    ok;
                ok ->
                    _ = reload_modules(App),
                    ok;
                {error, {App, Reason}} ->
                    {error, Reason};
                {error, _} = Error ->
                    Error
            end
    end.

-spec disable(atom()) -> ok.
disable(App) ->
    case application:get_key(App, modules) of
        {ok, Mods} ->
            _ = case lists:member(App, erlang:loaded())
                      andalso lists:member({stop, 0}, App:module_info(exports)) of
                    true -> catch App:stop();
                    false -> application:stop(App)
                end,
            _ = [code:purge(M) || M <- Mods],
            _ = application:unload(App),
            ok;
        undefined ->
            ok
    end.

%% The manager's last start step: a fresh instance of every module of the
%% app. Returns what each `code:load_file/1' said.
-spec reload_modules(atom()) -> [{module(), term()}].
reload_modules(App) ->
    {ok, Mods} = application:get_key(App, modules),
    [{M, code:load_file(M)} || M <- Mods].

%% What an operator's `l(Module)' in a remote console does.
-spec hot_load(module()) -> {module, module()} | {error, term()}.
hot_load(Module) ->
    _ = code:purge(Module),
    code:load_file(Module).
