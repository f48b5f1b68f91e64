%% @doc `make shell': an Erlang shell with the plugin running, outside
%% VerneMQ. Not part of the plugin application (compiled by the Makefile into
%% _build/shell).
%%
%% Two things a plain `erl -eval ...' gets wrong:
%%
%% - OTP's default logger handler only prints events without a domain or
%%   with the domain [otp | ...], and the primary level is `notice': every
%%   line of the plugin below `error' (domain [vmq_warden], mostly `info')
%%   is dropped. start/0 changes that for this shell only. Inside VerneMQ
%%   console.log has no domain filter, and the plugin does not touch
%%   logger's configuration (docs/OPERATIONS.md, "Logs").
%% - `-eval' runs after the boot has finished, while the shell already
%%   prints its prompt. The shell waits for the boot script instead, so
%%   boot/1 writes OTP's start_clean boot script with a call of start/0
%%   added before its end: the plugin is running, and says so, before the
%%   first prompt.
-module(vmq_warden_shell).

-export([boot/1, start/0]).

%% @doc Writes Name.boot: OTP's start_clean.boot with start/0 called as the
%% last step of the boot (before `{progress, started}', which the shell
%% waits for).
-spec boot(file:filename()) -> ok.
boot(Name) ->
    Clean = filename:join([code:root_dir(), "bin", "start_clean.boot"]),
    {ok, Bin} = file:read_file(Clean),
    {script, Id, Steps} = binary_to_term(Bin),
    {Before, [{progress, started} | After]} =
        lists:splitwith(fun(Step) -> Step =/= {progress, started} end, Steps),
    Script = {script, Id, Before ++ [{apply, {?MODULE, start, []}}, {progress, started} | After]},
    ok = file:write_file(Name ++ ".boot", term_to_binary(Script)).

%% @doc Lets the plugin's log lines reach the console, starts the plugin
%% and prints one line saying how it runs. Never fails the boot: a plugin
%% that does not start is reported and the shell opens anyway.
-spec start() -> ok.
start() ->
    _ = application:load(vmq_warden),
    console_logging(application:get_env(vmq_warden, log_level, info)),
    case application:ensure_all_started(vmq_warden) of
        {ok, _} ->
            %% the Rust core's queued events, then everything logger holds,
            %% before the line below
            _ = catch vmq_warden_log:flush(),
            _ = logger_std_h:filesync(default),
            io:format(user, "~n~ts~n~n", [running_line()]);
        {error, Reason} ->
            _ = logger_std_h:filesync(default),
            io:format(user, "~nvmq_warden did not start: ~tp~n~n", [Reason])
    end,
    ok.

console_logging(Level) ->
    %% the level the plugin logs at (its log_level setting), if more verbose
    %% than logger's primary level; no progress reports with it
    #{level := Primary} = logger:get_primary_config(),
    _ = case logger:compare_levels(Level, Primary) of
            lt -> logger:set_primary_config(level, Level);
            _ -> ok
        end,
    _ = logger:add_primary_filter(no_progress, {fun logger_filters:progress/2, stop}),
    _ = logger:add_handler_filter(default, vmq_warden,
                                  {fun logger_filters:domain/2, {log, super, [vmq_warden]}}),
    ok.

running_line() ->
    Files = [io_lib:format("~s ~ts", [Key, file_name(application:get_env(vmq_warden, Key, undefined))])
             || Key <- [policy_file, password_file]],
    case vmq_warden_nif:loaded() of
        true ->
            ["vmq_warden is running (", lists:join(", ", Files), "). "
             "Try vmq_warden:counts(), vmq_warden:stats(), or the hooks of vmq_warden_hooks."];
        false ->
            "vmq_warden is running WITHOUT its NIF library (see the error above): "
            "every auth hook answers with the failure decision."
    end.

file_name(undefined) -> "unset";
file_name(F) -> F.
