%% @doc The build that `make' does (README "Command 1"):
%%
%% - the release NIF library carries no debug info (it made the library
%%   several times larger, docs/BENCHMARKS.md; the `profiling' cargo profile
%%   keeps it for perf);
%% - the NIF and vmq-warden-passwd come from one cargo invocation
%%   (native/build-nif.sh, run by rebar3 before this suite): built
%%   separately, cargo resolves other feature sets and compiles warden_core
%%   and part of its dependencies twice. Checked by running that invocation
%%   again: every unit must be fresh;
%% - the README's set-up line and .ci/run install the same packages,
%%   including the C compiler and C library that rustc links with.
-module(vmq_warden_build_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1]).
-export([release_nif_has_no_debug_info/1,
         one_cargo_invocation_builds_both/1,
         setup_packages_match_ci/1]).

suite() ->
    [{timetrap, {minutes, 20}}].

all() ->
    [release_nif_has_no_debug_info, one_cargo_invocation_builds_both, setup_packages_match_ci].

init_per_suite(Config) ->
    [{root, vmq_warden_robust_util:project_root()} | Config].

end_per_suite(_Config) ->
    ok.

release_nif_has_no_debug_info(Config) ->
    case profile() of
        "release" ->
            Lib = filename:join([?config(root, Config), "target", "release", "libwarden_nif.so"]),
            Sections = elf_sections(Lib),
            ct:log("~ts: ~p", [Lib, Sections]),
            ?assert(lists:member(".text", Sections)),
            ?assertEqual([], [S || S <- Sections, lists:prefix(".debug_", S)]),
            %% the symbol table stays: perf and gdb still name functions
            ?assert(lists:member(".symtab", Sections)),
            %% and the copy VerneMQ loads is that library
            {ok, Bin} = file:read_file(Lib),
            ?assertEqual({ok, Bin},
                         file:read_file(filename:join([?config(root, Config), "priv",
                                                       "vmq_warden_nif.so"])));
        Other ->
            {skip, "built with CARGO_PROFILE=" ++ Other}
    end.

one_cargo_invocation_builds_both(Config) ->
    {ok, Script} = file:read_file(filename:join([?config(root, Config), "native", "build-nif.sh"])),
    ?assertNotEqual(nomatch, binary:match(Script, <<"-p warden_nif -p warden_passwd">>)),
    %% the same features as the build (native/build-nif.sh), else cargo
    %% would build another library
    Features = case os:getenv("WARDEN_NIF_FEATURES", "") of
                   "" -> "";
                   F -> " --features warden_nif/" ++ F
               end,
    Cmd = "cd '" ++ ?config(root, Config) ++ "' && cargo build --profile " ++ profile()
        ++ " --locked -p warden_nif -p warden_passwd" ++ Features ++ " 2>&1",
    Out = os:cmd(Cmd),
    ct:log("~ts~n~ts", [Cmd, Out]),
    ?assertNotEqual(nomatch, string:find(Out, "Finished"), Out),
    ?assertEqual(nomatch, string:find(Out, "Compiling"), Out).

setup_packages_match_ci(Config) ->
    {ok, Readme} = file:read_file(filename:join(?config(root, Config), "README.md")),
    {ok, Ci} = file:read_file(filename:join([?config(root, Config), ".ci", "run"])),
    {match, [AptLine]} = re:run(Readme, "sudo apt-get install -y ((?:[^`]|\\\\\\n)*?)\\n```",
                                [{capture, all_but_first, binary}, dotall]),
    ReadmePkgs = words(binary:replace(AptLine, <<"\\">>, <<" ">>, [global])),
    {match, [CiList]} = re:run(Ci, "PACKAGES=\\(([^)]*)\\)", [{capture, all_but_first, binary}]),
    CiPkgs = words(CiList),
    ?assertEqual(CiPkgs, ReadmePkgs),
    [?assert(lists:member(P, CiPkgs), P) || P <- ["gcc", "libc6-dev", "make", "rebar3"]].

%%--------------------------------------------------------------------

profile() ->
    case os:getenv("CARGO_PROFILE") of
        P when P =:= false; P =:= "" -> "release";
        P -> P
    end.

words(Bin) ->
    lists:sort(string:lexemes(binary_to_list(Bin), " \n\t")).

%% Section names of a 64-bit little-endian ELF file.
elf_sections(File) ->
    {ok, Bin} = file:read_file(File),
    <<16#7f, "ELF", 2, 1, _/binary>> = Bin,
    <<_:40/binary, ShOff:64/little, _:10/binary, ShEntSize:16/little, ShNum:16/little,
      ShStrNdx:16/little, _/binary>> = Bin,
    Headers = [binary:part(Bin, ShOff + I * ShEntSize, ShEntSize) || I <- lists:seq(0, ShNum - 1)],
    <<_:24/binary, StrOff:64/little, StrSize:64/little, _/binary>> = lists:nth(ShStrNdx + 1, Headers),
    Names = binary:part(Bin, StrOff, StrSize),
    [begin
         <<NameOff:32/little, _/binary>> = H,
         [Name | _] = binary:split(binary:part(Names, NameOff, StrSize - NameOff), <<0>>),
         binary_to_list(Name)
     end || H <- Headers].

