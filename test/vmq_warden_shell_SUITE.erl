%% @doc `make shell' (README): the plugin is started, its log lines reach
%% the console and one line says that it runs, all before the shell's first
%% prompt. Runs the real target (`make -s shell', the build is then up to
%% date) with `q().' on its standard input.
%%
%% And the other side of it: the application itself leaves logger's
%% configuration alone, so that inside VerneMQ its lines go to VerneMQ's
%% handlers as they are configured there.
-module(vmq_warden_shell_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, end_per_testcase/2]).
-export([make_shell_ready_before_prompt/1,
         make_shell_shows_nif_error/1,
         app_leaves_logger_config_alone/1]).

suite() ->
    %% a first `make shell' on a machine that never built the plugin
    %% compiles the NIF (minutes)
    [{timetrap, {minutes, 15}}].

all() ->
    [make_shell_ready_before_prompt, make_shell_shows_nif_error, app_leaves_logger_config_alone].

end_per_testcase(_Case, _Config) ->
    _ = application:stop(vmq_warden),
    ok.

%% The plugin's start-up line (domain [vmq_warden], level info) and the
%% ready line come before the banner and the prompt; no progress reports.
make_shell_ready_before_prompt(_Config) ->
    Out = make_shell(""),
    Loaded = at(Out, "msg: vmq_warden: policy loaded"),
    Ready = at(Out, "vmq_warden is running ("),
    ?assert(Loaded < Ready, Out),
    ?assert(Ready < at(Out, "Eshell V"), Out),
    ?assert(Ready < at(Out, "1> "), Out),
    ?assertEqual(nomatch, string:find(Out, "PROGRESS REPORT"), Out).

%% Without its NIF library the plugin's error line (level error, no domain,
%% as VerneMQ's error.log needs) is shown, and the ready line says how the
%% plugin runs.
make_shell_shows_nif_error(Config) ->
    Conf = filename:join(?config(priv_dir, Config), "no_nif.config"),
    Missing = filename:join(?config(priv_dir, Config), "no_such_library"),
    ok = file:write_file(Conf, io_lib:format("~tp.~n", [[{vmq_warden, [{nif_path, Missing}]}]])),
    Out = make_shell("ERL_AFLAGS='-config " ++ Conf ++ "' "),
    Error = at(Out, "msg: vmq_warden: NIF library not loaded"),
    Ready = at(Out, "vmq_warden is running WITHOUT its NIF library"),
    ?assertNotEqual(nomatch, string:find(Out, Missing), Out),
    ?assert(Error < Ready, Out),
    ?assert(Ready < at(Out, "1> "), Out).

%% Starting and stopping the application changes neither the primary
%% logger configuration nor any handler's.
app_leaves_logger_config_alone(_Config) ->
    Before = logger_config(),
    ok = vmq_plugin_harness:enable(vmq_warden),
    ?assertEqual(Before, logger_config()),
    ok = vmq_plugin_harness:disable(vmq_warden),
    ?assertEqual(Before, logger_config()).

%%--------------------------------------------------------------------

logger_config() ->
    {logger:get_primary_config(),
     lists:sort([maps:without([config], H) || H <- logger:get_handler_config()])}.

make_shell(Env) ->
    Cmd = "cd '" ++ vmq_warden_robust_util:project_root() ++ "' && echo 'q().' | " ++ Env
        ++ "timeout 600 make -s --no-print-directory shell 2>&1",
    Out = os:cmd(Cmd),
    ct:log("~ts~n~ts", [Cmd, Out]),
    Out.

%% Position of Pattern in Out (fails when absent).
at(Out, Pattern) ->
    case string:find(Out, Pattern) of
        nomatch -> ct:fail({not_in_output, Pattern});
        Rest -> length(Out) - length(Rest)
    end.

