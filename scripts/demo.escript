#!/usr/bin/env escript
%% Drives vmq_warden's hooks the way VerneMQ does, without a broker, and
%% prints what the registry and the firewall make of it. Run: make demo
-mode(compile).

main(_) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    true = code:add_patha(filename:join(Root, "_build/default/lib/vmq_warden/ebin")),
    %% Started as VerneMQ's plugin manager starts it (test/vmq_plugin_harness.erl).
    {ok, Harness, Bin} = compile:file(filename:join(Root, "test/vmq_plugin_harness.erl"), [binary]),
    {module, Harness} = code:load_binary(Harness, "vmq_plugin_harness.erl", Bin),
    ok = application:load(vmq_warden),
    application:set_env(vmq_warden, default_decision, allow),
    ok = vmq_plugin_harness:enable(vmq_warden),
    Peer = {{192, 0, 2, 10}, 51515},
    Sid = {"", <<"sensor-42">>},
    say("1. A clean-session client connects (auth -> wakeup -> on_register)"),
    Conn1 = proc(), Queue1 = proc(),
    show("auth_on_register", run(Conn1, fun() -> vmq_warden_hooks:auth_on_register(Peer, Sid, <<"sensor">>, undefined, true) end)),
    run(Queue1, fun() -> vmq_warden_hooks:on_client_wakeup(Sid) end),
    run(Conn1, fun() -> vmq_warden_hooks:on_register(Peer, Sid, <<"sensor">>) end),
    show("vmq_warden:lookup", vmq_warden:lookup(Sid)),
    say("2. The same client id connects again: a takeover, and the old queue's\n"
        "   on_client_gone arrives late, after the new queue's wakeup"),
    Conn2 = proc(), Queue2 = proc(),
    run(Conn2, fun() -> vmq_warden_hooks:auth_on_register(Peer, Sid, <<"sensor">>, undefined, true) end),
    run(Queue2, fun() -> vmq_warden_hooks:on_client_wakeup(Sid) end),
    run(Conn2, fun() -> vmq_warden_hooks:on_register(Peer, Sid, <<"sensor">>) end),
    run(Queue1, fun() -> vmq_warden_hooks:on_client_gone(Sid) end),
    show("vmq_warden:lookup (still online, session 2)", vmq_warden:lookup(Sid)),
    show("vmq_warden:recent_endings(5)", vmq_warden:recent_endings(5)),
    say("3. The firewall in deny mode"),
    application:set_env(vmq_warden, default_decision, deny),
    ok = vmq_warden:reload(),
    show("auth_on_register", vmq_warden_hooks:auth_on_register(Peer, {"", <<"intruder">>}, undefined, undefined, true)),
    show("auth_on_register_m5", vmq_warden_hooks:auth_on_register_m5(Peer, {"", <<"intruder">>}, undefined, undefined, true, #{})),
    show("vmq_warden:counts()", vmq_warden:counts()),
    show("vmq_warden:stats()", vmq_warden:stats()),
    ok.

say(Text) -> io:format("~n~s~n", [Text]).
show(Label, Value) -> io:format("  ~s ->~n    ~p~n", [Label, Value]).

proc() -> spawn(fun loop/0).
loop() -> receive {F, From, Ref} -> From ! {Ref, F()}, loop() end.
run(Pid, F) -> Ref = make_ref(), Pid ! {F, self(), Ref}, receive {Ref, R} -> R end.
