%% @doc The broker benchmark's baseline: what VerneMQ's own vmq_passwd does
%% in auth_on_register, written for the bench from its described behaviour
%% (not its code). Users are loaded from a password file (`user:$6$SALT$HASH'
%% lines, SALT and HASH base64, HASH = SHA-512 over the password bytes
%% followed by the raw salt) into a public ETS table; a connect looks the user
%% up, decrypts the `{encrypted, B}' password through
%% credentials_obfuscation:decrypt/1 (one server process per node), hashes
%% and compares. It has no other hook. Compiled only by scripts/bench.sh.
-module(warden_passwd_ref).

-export([load/1, auth_on_register/5]).

-define(T, warden_passwd_ref_users).

%% Loads (or reloads) the file; the table outlives the caller (heir).
-spec load(file:filename()) -> {ok, non_neg_integer()}.
load(File) ->
    {ok, Bin} = file:read_file(File),
    case ets:whereis(?T) of
        undefined ->
            Owner = spawn(fun() -> receive stop -> ok end end),
            ets:new(?T, [set, public, named_table, {read_concurrency, true},
                         {heir, Owner, none}]),
            ets:give_away(?T, Owner, none);
        _ ->
            ets:delete_all_objects(?T)
    end,
    Users = [User || Line <- binary:split(Bin, <<"\n">>, [global]),
                     {ok, User} <- [parse(Line)]],
    true = ets:insert(?T, Users),
    {ok, length(Users)}.

parse(Line) ->
    case binary:split(Line, <<":">>) of
        [User, <<"$6$", Rest/binary>>] ->
            case binary:split(Rest, <<"$">>) of
                [Salt64, Hash64] -> {ok, {User, base64:decode(Salt64), Hash64}};
                _ -> skip
            end;
        _ ->
            skip
    end.

auth_on_register(_Peer, _SubscriberId, User, Password, _CleanSession) when is_binary(User) ->
    case ets:lookup(?T, User) of
        [{_, Salt, Hash64}] ->
            case base64:encode(crypto:hash(sha512, [plain(Password), Salt])) of
                Hash64 -> ok;
                _ -> {error, invalid_credentials}
            end;
        [] ->
            next
    end;
auth_on_register(_, _, _, _, _) ->
    next.

plain({encrypted, _} = E) ->
    case credentials_obfuscation:decrypt(E) of
        B when is_binary(B) -> B;
        _ -> <<>>
    end;
plain(B) when is_binary(B) -> B;
plain(_) -> <<>>.
