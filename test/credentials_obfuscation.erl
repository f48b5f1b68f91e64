%% @doc A stand-in for the `credentials_obfuscation' application
%% that VerneMQ 2.x uses to wrap CONNECT passwords (`{encrypted, B}').
%% Written from its documented behaviour, not from its code: ONE registered
%% gen_server per node (`credentials_obfuscation_svc') does every operation,
%% so every decrypt of every connect is a `gen_server:call' to that one
%% process, which
%%   base64-decodes B (layout Salt:16 | IV:16 | ciphertext),
%%   derives the key with PBKDF2-HMAC (sha256, 1 iteration, 16 bytes) from
%%   the node's secret and the salt,
%%   decrypts with aes_128_cbc, strips the PKCS#7 padding and
%%   returns binary_to_term of the clear text.
%% Same API as the real module: encrypt/1, decrypt/1, enabled/0, cipher/0,
%% hash/0, iterations/0, secret/0, set_secret/1 (each a call to the server),
%% plus start/0 and stop/0 (the real one is an OTP application the broker
%% starts) and decrypt_calls/0 for the tests. Like the real one it encrypts
%% `{credentials_obfuscation, Password}' and answers a decrypt that fails
%% with the encrypted term itself. Used by the test suites and the
%% benchmark (scripts/bench.sh compiles it): never part of the plugin.
-module(credentials_obfuscation).
-behaviour(gen_server).

-export([encrypt/1, decrypt/1, enabled/0, cipher/0, hash/0, iterations/0,
         secret/0, set_secret/1]).
-export([start/0, stop/0, decrypt_calls/0]).
-export([init/1, handle_call/3, handle_cast/2]).

-define(SVC, credentials_obfuscation_svc).
-define(CIPHER, aes_128_cbc).
-define(HASH, sha256).
-define(ITERATIONS, 1).
-define(KEY_LEN, 16).
-define(BLOCK, 16).
-define(TIMED, '$warden_bench_decrypt_ns').

%%--------------------------------------------------------------------
%% API (every function is a call to the one server process)
%%--------------------------------------------------------------------

encrypt(Term) -> gen_server:call(?SVC, {encrypt, Term}).

%% The one addition for the benchmark: a calling process that has put an
%% integer under ?TIMED gets the wall time of its decrypt calls (the wait
%% for the server included) added to it, so the bench can tell the hook's own
%% time from the time spent waiting for this server. Without it (the
%% plugin's tests, any other caller) this is a plain call.
decrypt(Term) ->
    case get(?TIMED) of
        Acc when is_integer(Acc) ->
            T0 = erlang:monotonic_time(nanosecond),
            R = gen_server:call(?SVC, {decrypt, Term}),
            put(?TIMED, Acc + erlang:monotonic_time(nanosecond) - T0),
            R;
        _ ->
            gen_server:call(?SVC, {decrypt, Term})
    end.
enabled() -> gen_server:call(?SVC, enabled).
cipher() -> gen_server:call(?SVC, cipher).
hash() -> gen_server:call(?SVC, hash).
iterations() -> gen_server:call(?SVC, iterations).
secret() -> gen_server:call(?SVC, secret).
set_secret(Secret) when is_binary(Secret) -> gen_server:call(?SVC, {set_secret, Secret}).
%% How many decrypts the server did.
decrypt_calls() -> gen_server:call(?SVC, decrypt_calls).

%% Not part of the real API: the broker starts the application instead.
start() ->
    case gen_server:start({local, ?SVC}, ?MODULE, [], []) of
        {ok, Pid} -> {ok, Pid};
        {error, {already_started, Pid}} -> {ok, Pid}
    end.

stop() ->
    case whereis(?SVC) of
        undefined -> ok;
        _ -> gen_server:stop(?SVC)
    end.

%%--------------------------------------------------------------------
%% Server
%%--------------------------------------------------------------------

%% A fresh random secret per node, like the broker's default.
init([]) ->
    {ok, #{secret => crypto:strong_rand_bytes(32), enabled => true, decrypts => 0}}.

handle_call({encrypt, Term}, _From, #{enabled := true, secret := Secret} = S)
  when is_binary(Term); is_list(Term) ->
    {reply, {encrypted, encrypt_term(Secret, Term)}, S};
handle_call({encrypt, Term}, _From, S) ->
    {reply, Term, S};
handle_call({decrypt, {encrypted, B} = Term}, _From, #{secret := Secret, decrypts := N} = S) when is_binary(B) ->
    Reply = case decrypt_term(Secret, B) of
                {credentials_obfuscation, Value} -> Value;
                _ -> Term
            end,
    {reply, Reply, S#{decrypts := N + 1}};
handle_call(decrypt_calls, _From, #{decrypts := N} = S) ->
    {reply, N, S};
handle_call({decrypt, {plaintext, Term}}, _From, S) ->
    {reply, Term, S};
handle_call({decrypt, Term}, _From, S) ->
    {reply, Term, S};
handle_call(enabled, _From, #{enabled := E} = S) -> {reply, E, S};
handle_call(cipher, _From, S) -> {reply, ?CIPHER, S};
handle_call(hash, _From, S) -> {reply, ?HASH, S};
handle_call(iterations, _From, S) -> {reply, ?ITERATIONS, S};
handle_call(secret, _From, #{secret := Secret} = S) -> {reply, Secret, S};
handle_call({set_secret, Secret}, _From, S) -> {reply, ok, S#{secret := Secret}};
handle_call(_, _From, S) -> {reply, {error, unknown_call}, S}.

handle_cast(_, S) -> {noreply, S}.

%%--------------------------------------------------------------------
%% The work of one encrypt / decrypt
%%--------------------------------------------------------------------

encrypt_term(Secret, Term) ->
    Salt = crypto:strong_rand_bytes(16),
    IV = crypto:strong_rand_bytes(?BLOCK),
    Key = key(Secret, Salt),
    Clear = pad(term_to_binary({credentials_obfuscation, iolist_to_binary(Term)})),
    Cipher = crypto:crypto_one_time(?CIPHER, Key, IV, Clear, true),
    base64:encode(<<Salt/binary, IV/binary, Cipher/binary>>).

decrypt_term(Secret, B) ->
    try
        <<Salt:16/binary, IV:?BLOCK/binary, Cipher/binary>> = base64:decode(B),
        Key = key(Secret, Salt),
        Clear = crypto:crypto_one_time(?CIPHER, Key, IV, Cipher, false),
        binary_to_term(unpad(Clear))
    catch
        _:_ -> {error, bad_ciphertext}
    end.

key(Secret, Salt) ->
    crypto:pbkdf2_hmac(?HASH, Secret, Salt, ?ITERATIONS, ?KEY_LEN).

%% PKCS#7
pad(Bin) ->
    N = ?BLOCK - byte_size(Bin) rem ?BLOCK,
    <<Bin/binary, (binary:copy(<<N>>, N))/binary>>.

unpad(Bin) ->
    N = binary:last(Bin),
    true = N >= 1 andalso N =< ?BLOCK andalso N =< byte_size(Bin),
    binary:part(Bin, 0, byte_size(Bin) - N).
