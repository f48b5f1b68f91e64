%% A loopback HTTP/1.1 server for the webhook tests: answers every POST
%% after an optional delay with the status its mode says, and sends each
%% request's body to the process that started it as {http_stub, Port, Body}.
-module(vmq_warden_http_stub).
-export([start/1, set_mode/2, stop/1, dead_port/0]).

%% Mode: ok | fail (500) | {slow, Ms}. Returns {ok, Port}.
start(Mode) ->
    Owner = self(),
    {ok, L} = gen_tcp:listen(0, [binary, {active, false}, {ip, {127, 0, 0, 1}}, {reuseaddr, true}]),
    {ok, Port} = inet:port(L),
    ModeTab = ets:new(http_stub_mode, [public, {read_concurrency, true}]),
    true = ets:insert(ModeTab, {mode, Mode}),
    Acceptor = spawn(fun() -> accept(L, Owner, Port, ModeTab) end),
    ok = gen_tcp:controlling_process(L, Acceptor),
    put({http_stub, Port}, {L, Acceptor, ModeTab}),
    {ok, Port}.

set_mode(Port, Mode) ->
    {_, _, ModeTab} = get({http_stub, Port}),
    true = ets:insert(ModeTab, {mode, Mode}),
    ok.

stop(Port) ->
    {L, Acceptor, _} = get({http_stub, Port}),
    exit(Acceptor, kill),
    _ = gen_tcp:close(L),
    ok.

%% A loopback port nothing listens on (a dead endpoint).
dead_port() ->
    {ok, L} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(L),
    ok = gen_tcp:close(L),
    Port.

accept(L, Owner, Port, ModeTab) ->
    case gen_tcp:accept(L) of
        {ok, S} ->
            Pid = spawn(fun() -> receive go -> serve(S, Owner, Port, ModeTab, <<>>) end end),
            ok = gen_tcp:controlling_process(S, Pid),
            Pid ! go,
            accept(L, Owner, Port, ModeTab);
        {error, _} ->
            ok
    end.

serve(S, Owner, Port, ModeTab, Buf) ->
    case binary:split(Buf, <<"\r\n\r\n">>) of
        [Head, Rest] ->
            Len = content_length(Head),
            case byte_size(Rest) >= Len of
                true ->
                    <<Body:Len/binary, More/binary>> = Rest,
                    Owner ! {http_stub, Port, Body},
                    [{mode, Mode}] = ets:lookup(ModeTab, mode),
                    Status = case Mode of
                                 ok -> <<"200 OK">>;
                                 fail -> <<"500 Internal Server Error">>;
                                 {slow, Ms} -> timer:sleep(Ms), <<"200 OK">>
                             end,
                    _ = gen_tcp:send(S, [<<"HTTP/1.1 ">>, Status, <<"\r\ncontent-length: 0\r\n\r\n">>]),
                    serve(S, Owner, Port, ModeTab, More);
                false ->
                    recv(S, Owner, Port, ModeTab, Buf)
            end;
        [_] ->
            recv(S, Owner, Port, ModeTab, Buf)
    end.

recv(S, Owner, Port, ModeTab, Buf) ->
    case gen_tcp:recv(S, 0) of
        {ok, Data} -> serve(S, Owner, Port, ModeTab, <<Buf/binary, Data/binary>>);
        {error, _} -> ok
    end.

content_length(Head) ->
    Lines = binary:split(Head, <<"\r\n">>, [global]),
    case [V || L <- Lines, [K, V] <- [binary:split(L, <<":">>)],
               string:lowercase(K) =:= <<"content-length">>] of
        [V | _] -> binary_to_integer(string:trim(V));
        [] -> 0
    end.
