%% @doc VerneMQ hook callbacks. Each callback hands what the broker passes
%% (docs/VERNEMQ.md, "Hooks and arguments") to the NIF as it is; the NIF
%% bounds and decodes it (native/warden_nif/src/decode.rs) and the Rust core
%% decides.
%%
%% Two rules hold for every function here, because VerneMQ catches nothing
%% (docs/VERNEMQ.md, "What the answers do"): a hook never raises, and an auth hook never
%% returns anything the broker does not understand. When the NIF is missing
%% or fails, auth hooks answer with the configured failure decision and
%% lifecycle hooks log and return `ok'.
-module(vmq_warden_hooks).

-export([auth_on_register/5, auth_on_register/6,
         auth_on_register_m5/6, auth_on_register_m5/7,
         on_register/3, on_register_m5/4,
         on_client_wakeup/1, on_client_offline/1, on_client_gone/1,
         on_session_expired/1]).

%% Exported for the operator API and tests.
-export([failure_decision/2]).

-include_lib("kernel/include/logger.hrl").

-define(NEED_SLOW_HASH, '$warden_need_slow_hash').
-define(NEED_PLAINTEXT, '$warden_need_plaintext').
-define(BUSY, '$warden_busy').
%% How long a connect waits for a slow-verification slot before it is
%% refused as server busy, and the longest step between two tries.
-define(SLOW_WAIT_MS, 3000).
-define(SLOW_MAX_STEP_MS, 20).

%%--------------------------------------------------------------------
%% auth_on_register (all_till_ok)
%%--------------------------------------------------------------------

auth_on_register(Peer, SubscriberId, User, Password, CleanSession) ->
    authorize(3, Peer, SubscriberId, User, Password, CleanSession, #{}, #{}).

%% VerneMQ 2.1+ calls /6 instead of /5 on listeners with forward_connection_opts.
auth_on_register(Peer, SubscriberId, User, Password, CleanSession, Meta) ->
    authorize(3, Peer, SubscriberId, User, Password, CleanSession, #{}, Meta).

auth_on_register_m5(Peer, SubscriberId, User, Password, CleanStart, Properties) ->
    authorize(5, Peer, SubscriberId, User, Password, CleanStart, Properties, #{}).

auth_on_register_m5(Peer, SubscriberId, User, Password, CleanStart, Properties, Meta) ->
    authorize(5, Peer, SubscriberId, User, Password, CleanStart, Properties, Meta).

%% The NIF takes the hook's own arguments and bounds and decodes them
%% itself (native/warden_nif/src/decode.rs): anything that does not fit is
%% `badarg', answered here with the failure decision. The password goes
%% along as the broker gave it; the NIF decrypts `{encrypted, _}' itself,
%% with the node's credentials_obfuscation settings (vmq_warden_obfuscation),
%% and only if the decision needs it, so the clear password never becomes an
%% Erlang term and no call goes to the library's one server process. Most
%% connects are decided in this one call.
authorize(Proto, Peer, SubscriberId, User, Password, Clean, Properties, Meta) ->
    try
        next_step(vmq_warden_nif:auth_begin({Proto, Peer, SubscriberId, User, as_given(Password),
                                             Clean, Properties, Meta}), Password)
    catch
        Class:Reason ->
            failure_decision(Proto, {auth_on_register, Class, Reason})
    end.

%% Only when the NIF cannot decrypt (other settings, a changed secret) is the
%% password decrypted here, through the library, once.
next_step({?NEED_PLAINTEXT, Token}, Password) ->
    _ = vmq_warden_obfuscation:refresh(),
    next_step(vmq_warden_nif:auth_password(Token, plaintext(Password)), clear);
next_step({?NEED_SLOW_HASH, Token}, _Password) ->
    %% bcrypt/argon2/PBKDF2: runs on a dirty CPU scheduler, at most
    %% max(1, dirty CPU schedulers - 1) at once; the NIF kept the password.
    Deadline = erlang:monotonic_time(millisecond) + ?SLOW_WAIT_MS,
    slow_hash(Token, Deadline, 1);
next_step(Decision, _Password) ->
    Decision.

%% No slot free: wait in this (the connection's) process, never on a
%% scheduler, then try again; past the deadline the connect is refused as
%% server busy.
slow_hash(Token, Deadline, Wait) ->
    case vmq_warden_nif:auth_password_slow(Token) of
        ?BUSY ->
            case erlang:monotonic_time(millisecond) + Wait > Deadline of
                true ->
                    vmq_warden_nif:auth_busy(Token);
                false ->
                    receive after Wait -> ok end,
                    slow_hash(Token, Deadline, min(2 * Wait, ?SLOW_MAX_STEP_MS))
            end;
        Decision ->
            Decision
    end.

%% What the NIF takes: a binary, `{encrypted, B}' or `undefined' (anything
%% else, as no password). `{plaintext, B}' is unwrapped here.
as_given(Bin) when is_binary(Bin) -> Bin;
as_given({plaintext, Bin}) when is_binary(Bin) -> Bin;
as_given({encrypted, B} = Encrypted) when is_binary(B) -> Encrypted;
as_given(_) -> undefined.

plaintext({encrypted, _} = Encrypted) ->
    %% VerneMQ 2.x wraps passwords with credentials_obfuscation (loaded by
    %% the broker; the app start loads it too). No code server call here: a
    %% connect storm must not queue on it.
    case erlang:function_exported(credentials_obfuscation, decrypt, 1) of
        true ->
            case credentials_obfuscation:decrypt(Encrypted) of
                Bin when is_binary(Bin) -> Bin;
                List when is_list(List) -> iolist_to_binary(List);
                _ -> undefined
            end;
        false ->
            undefined
    end;
plaintext(Other) ->
    as_given(Other).

%%--------------------------------------------------------------------
%% on_register (all): runs in the connection process
%%--------------------------------------------------------------------

on_register(Peer, SubscriberId, User) ->
    registered(3, Peer, SubscriberId, User).

on_register_m5(Peer, SubscriberId, User, _Properties) ->
    registered(5, Peer, SubscriberId, User).

registered(Proto, Peer, SubscriberId, User) ->
    try
        _ = vmq_warden_nif:registered(Proto, Peer, SubscriberId, User),
        ok
    catch
        Class:Reason ->
            log_failure(on_register, Class, Reason),
            ok
    end.

%%--------------------------------------------------------------------
%% Queue lifecycle (all): runs in the subscriber's queue process, so
%% self() tells an old queue's late event from the live session's.
%%--------------------------------------------------------------------

on_client_wakeup(SubscriberId) -> queue_event(wakeup, on_client_wakeup, SubscriberId).
on_client_offline(SubscriberId) -> queue_event(offline, on_client_offline, SubscriberId).
on_client_gone(SubscriberId) -> queue_event(gone, on_client_gone, SubscriberId).
on_session_expired(SubscriberId) -> queue_event(expired, on_session_expired, SubscriberId).

%% The broker ignores the result of `all' hooks but not their exceptions:
%% one here would crash the queue holding the client's offline messages.
%% (The try is inline, without a closure: these run on every state change.)
queue_event(Event, Hook, SubscriberId) ->
    try
        _ = vmq_warden_nif:queue_event(Event, SubscriberId),
        ok
    catch
        Class:Reason ->
            log_failure(Hook, Class, Reason),
            ok
    end.

%%--------------------------------------------------------------------
%% Failure handling
%%--------------------------------------------------------------------

%% What an auth hook answers when it cannot decide (NIF not loaded, bad
%% term, internal error): `deny' by default (fail closed), or `next'.
-spec failure_decision(3 | 5, term()) -> next | {error, term()}.
failure_decision(Proto, Why) ->
    log_failure(auth_on_register, failed, Why),
    vmq_warden_stats:bump(failed),
    case application:get_env(vmq_warden, failure_decision, deny) of
        next -> next;
        _ when Proto =:= 5 -> {error, #{reason_code => server_unavailable}};
        _ -> {error, plugin_unavailable}
    end.

log_failure(Hook, Class, Reason) ->
    case vmq_warden_stats:should_log() of
        true ->
            ?LOG_ERROR(#{msg => "vmq_warden hook failed", hook => Hook,
                         class => Class, reason => redact(Reason)},
                       vmq_warden_log:meta(error));
        false ->
            ok
    end.

%% A failure reason may carry hook arguments; never log a password.
redact({nif_not_loaded, _} = R) -> R;
redact({_, _, nif_not_loaded} = R) -> R;
redact(R) when is_atom(R) -> R;
redact({auth_on_register, Class, Reason}) -> {auth_on_register, Class, redact(Reason)};
redact({badarg, _}) -> badarg;
redact(R) when is_tuple(R), tuple_size(R) > 0, is_atom(element(1, R)) -> element(1, R);
redact(_) -> internal_error.
