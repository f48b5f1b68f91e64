%% A small JSON decoder for the tests (OTP 25 has no json module): objects
%% become maps with binary keys, strings binaries, null `null'.
-module(vmq_warden_json).
-export([decode/1]).

decode(Bin) when is_binary(Bin) ->
    {Value, Rest} = value(ws(Bin)),
    <<>> = ws(Rest),
    Value.

ws(<<C, R/binary>>) when C =:= $\s; C =:= $\n; C =:= $\r; C =:= $\t -> ws(R);
ws(B) -> B.

value(<<"{", R/binary>>) -> object(ws(R), #{});
value(<<"[", R/binary>>) -> array(ws(R), []);
value(<<"\"", R/binary>>) -> string(R, <<>>);
value(<<"true", R/binary>>) -> {true, R};
value(<<"false", R/binary>>) -> {false, R};
value(<<"null", R/binary>>) -> {null, R};
value(B) -> number(B, <<>>).

object(<<"}", R/binary>>, Acc) -> {Acc, R};
object(<<"\"", R/binary>>, Acc) ->
    {Key, R1} = string(R, <<>>),
    <<":", R2/binary>> = ws(R1),
    {Value, R3} = value(ws(R2)),
    case ws(R3) of
        <<",", R4/binary>> -> object(ws(R4), Acc#{Key => Value});
        <<"}", R4/binary>> -> {Acc#{Key => Value}, R4}
    end.

array(<<"]", R/binary>>, []) -> {[], R};
array(B, Acc) ->
    {Value, R} = value(B),
    case ws(R) of
        <<",", R1/binary>> -> array(ws(R1), [Value | Acc]);
        <<"]", R1/binary>> -> {lists:reverse([Value | Acc]), R1}
    end.

string(<<"\"", R/binary>>, Acc) -> {Acc, R};
string(<<"\\u", H:4/binary, R/binary>>, Acc) ->
    C = binary_to_integer(H, 16),
    string(R, <<Acc/binary, C/utf8>>);
string(<<"\\", C, R/binary>>, Acc) ->
    Esc = case C of $n -> $\n; $r -> $\r; $t -> $\t; $b -> $\b; $f -> $\f; Other -> Other end,
    string(R, <<Acc/binary, Esc>>);
string(<<C, R/binary>>, Acc) when C >= 16#20 -> string(R, <<Acc/binary, C>>).

number(<<C, R/binary>>, Acc) when (C >= $0 andalso C =< $9); C =:= $-; C =:= $.; C =:= $e; C =:= $E; C =:= $+ ->
    number(R, <<Acc/binary, C>>);
number(R, Acc) ->
    Value = try binary_to_integer(Acc) catch error:badarg -> binary_to_float(Acc) end,
    {Value, R}.
