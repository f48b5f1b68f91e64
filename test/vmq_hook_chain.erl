%% @doc A stand-in for VerneMQ's plugin manager in tests: it calls a chain of
%% plugins the way the broker does (docs/VERNEMQ.md, "What the answers do"), in the process
%% the broker would use (section 4).
%%
%% - all_till_ok: plugins in order; `ok' or `{ok, Mods}' accepts and stops,
%%   `next' passes on, `{error, R}' refuses, any other value V is `{error, V}';
%%   if every plugin says next the client is refused. Exceptions are NOT
%%   caught, exactly like the broker: a raising hook fails the test.
%% - all: every plugin is called, results ignored, exceptions not caught.
-module(vmq_hook_chain).

-export([all_till_ok/3, all/3, plugins/0]).
-export([spawn_proc/0, in_proc/2, stop_proc/1]).

%% The chain used by the suites: vmq_warden first, then a fake plugin that
%% knows one user, as with `plugins.NAME.priority'.
plugins() ->
    [vmq_warden_hooks, vmq_fake_plugin].

all_till_ok(Hook, Args, Plugins) ->
    Exported = [M || M <- Plugins, exported(M, Hook, length(Args))],
    case Exported of
        [] -> {error, no_matching_hook_found};
        _ -> till_ok(Hook, Args, Exported)
    end.

till_ok(_Hook, _Args, []) ->
    {error, no_matching_hook_found};
till_ok(Hook, Args, [M | Rest]) ->
    case apply(M, Hook, Args) of
        ok -> ok;
        {ok, Mods} -> {ok, Mods};
        next -> till_ok(Hook, Args, Rest);
        {error, Reason} -> {error, Reason};
        Other -> {error, Other}
    end.

all(Hook, Args, Plugins) ->
    [apply(M, Hook, Args) || M <- Plugins, exported(M, Hook, length(Args))],
    ok.

exported(M, F, A) ->
    _ = code:ensure_loaded(M),
    erlang:function_exported(M, F, A).

%% A process standing for a connection or a queue: hooks called through
%% in_proc/2 see it as self().
spawn_proc() ->
    spawn(fun loop/0).

loop() ->
    receive
        {run, From, Ref, Fun} ->
            From ! {Ref, try {ok, Fun()} catch C:R:St -> {raised, C, R, St} end},
            loop();
        stop ->
            ok
    end.

in_proc(Pid, Fun) ->
    Ref = make_ref(),
    Pid ! {run, self(), Ref, Fun},
    receive
        {Ref, {ok, Result}} -> Result;
        {Ref, {raised, C, R, St}} -> erlang:raise(C, R, St)
    after 10000 ->
        error(proc_timeout)
    end.

stop_proc(Pid) ->
    Pid ! stop,
    ok.
