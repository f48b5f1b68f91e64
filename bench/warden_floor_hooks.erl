%% @doc The floor of vmq_warden's hooks, for the broker bench: each function
%% is shaped like its hook in vmq_warden_hooks (the same argument tuple, the
%% same try), but calls the diagnostic NIF that decodes the arguments and
%% answers without calling the core (native/warden_nif/src/hooks.rs, `floor').
%% A hook's time minus this is what the plugin's own work costs; this is
%% what any native hook with the broker's arguments costs. Compiled only by
%% scripts/bench.sh.
-module(warden_floor_hooks).

-export([auth_on_register/5, on_register/3, on_client_wakeup/1, on_client_gone/1,
         on_client_offline/1]).

auth_on_register(Peer, SubscriberId, User, Password, CleanSession) ->
    try
        vmq_warden_nif:floor_auth_begin({3, Peer, SubscriberId, User, Password, CleanSession,
                                         #{}, #{}})
    catch
        _:_ -> next
    end.

on_register(Peer, SubscriberId, User) ->
    try
        _ = vmq_warden_nif:floor_registered(3, Peer, SubscriberId, User),
        ok
    catch
        _:_ -> ok
    end.

on_client_wakeup(SubscriberId) -> queue_event(wakeup, SubscriberId).
on_client_offline(SubscriberId) -> queue_event(offline, SubscriberId).
on_client_gone(SubscriberId) -> queue_event(gone, SubscriberId).

queue_event(Event, SubscriberId) ->
    try
        _ = vmq_warden_nif:floor_queue_event(Event, SubscriberId),
        ok
    catch
        _:_ -> ok
    end.
