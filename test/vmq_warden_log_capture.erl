%% @doc A logger handler for tests: every event logged while it is installed
%% is sent to the process that installed it, which reads them back with
%% captured/0 (new since the last call) or all_captured/0 (the whole case).
-module(vmq_warden_log_capture).

-export([install/1, remove/1, captured/0, all_captured/0, contains/2]).
-export([log/2]).

-spec install(logger:handler_id()) -> ok.
install(Id) ->
    _ = logger:remove_handler(Id),
    ok = logger:add_handler(Id, ?MODULE, #{level => all, config => #{pid => self(), id => Id}}),
    put(?MODULE, Id),
    erase(all_captured),
    ok.

remove(Id) ->
    _ = logger:remove_handler(Id),
    ok.

%% Events logged since the last call (all of the case: all_captured/0).
captured() ->
    New = receive_all(get(?MODULE)),
    put(all_captured, all_captured() ++ New),
    New.

all_captured() ->
    case get(all_captured) of
        undefined -> [];
        L -> L
    end.

%% Whether the printed event contains String.
contains(Event, String) ->
    Text = lists:flatten(io_lib:format("~0tp", [Event])),
    string:find(Text, String) =/= nomatch.

receive_all(Id) ->
    receive
        {?MODULE, Id, Event} -> [Event | receive_all(Id)]
    after 0 -> []
    end.

%% logger handler callback
log(Event, #{config := #{pid := Pid, id := Id}}) ->
    Pid ! {?MODULE, Id, Event},
    ok.
