%% @doc Hands the node's credentials_obfuscation settings (cipher, hash,
%% iterations, secret) to the NIF, which then decrypts `{encrypted, _}'
%% passwords itself (warden_core::obfuscation) instead of calling the
%% library's one server process per password. Read at start and again
%% when the NIF could not decrypt a password (the secret changed, or the
%% settings are not supported there), at most once a second. The secret is
%% kept only in the NIF's memory, not in an Erlang term.
-module(vmq_warden_obfuscation).

-export([refresh/0, hand_over/0]).

-define(LAST_KEY, {?MODULE, last_refresh}).
-define(MIN_INTERVAL_S, 1).

%% `ok' when the NIF decrypts in place from now on, else why not.
-spec refresh() -> ok | {error, term()}.
refresh() ->
    Now = erlang:system_time(second),
    Last = last_refresh(),
    case atomics:get(Last, 1) of
        Before when Now - Before < ?MIN_INTERVAL_S ->
            {error, too_soon};
        _ ->
            atomics:put(Last, 1, Now),
            hand_over()
    end.

%% One atomics array for the node, made once (a persistent_term written
%% again would cost a global scan each time).
last_refresh() ->
    case persistent_term:get(?LAST_KEY, undefined) of
        undefined ->
            Ref = atomics:new(1, [{signed, true}]),
            persistent_term:put(?LAST_KEY, Ref),
            Ref;
        Ref ->
            Ref
    end.

%% Now, whatever the last refresh (the plugin's start).
-spec hand_over() -> ok | {error, term()}.
hand_over() ->
    try
        read_and_hand_over()
    catch
        _:Reason -> {error, Reason}
    end.

read_and_hand_over() ->
    case erlang:function_exported(credentials_obfuscation, secret, 0)
         andalso credentials_obfuscation:enabled() of
        true ->
            case credentials_obfuscation:secret() of
                Secret when is_binary(Secret) ->
                    case vmq_warden_nif:set_obfuscation(credentials_obfuscation:cipher(),
                                                        credentials_obfuscation:hash(),
                                                        credentials_obfuscation:iterations(),
                                                        Secret) of
                        ok -> ok;
                        unsupported -> {error, unsupported_settings}
                    end;
                _Pending ->
                    {error, no_secret_yet}
            end;
        false ->
            {error, not_enabled}
    end.
