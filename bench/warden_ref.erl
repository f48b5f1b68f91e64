%% @doc The pure-Erlang REFERENCE the benchmark compares vmq_warden against:
%% what an operator would write instead of a native plugin. Not part of the
%% plugin application; compiled only by scripts/bench.sh.
%%
%% - Registry: one public ETS set (read/write_concurrency), one tuple per
%%   subscriber, with the lifecycle state machine of docs/DESIGN.md at the
%%   level the workloads need: auth accepted (pending connect) -> wakeup ->
%%   register -> offline/gone; a pending connect promoted over a live
%%   session ends it as taken_over; offline/gone from a queue pid that is
%%   not the current session's queue are stale (counted, not applied); a
%%   clean connect over an offline session discards it. Endings go to a
%%   bounded ring (ETS, slot = counter rem size), like the native history.
%% - Rules: peer CIDR allow-list (integer mask compare), client-id pattern
%%   (`re', compiled once, kept in persistent_term), password lookup in ETS
%%   with a fast hash (SHA-512 of password ++ salt, via crypto).
%%
%% The hook functions have the same arguments as VerneMQ's hooks and do the
%% same normalisation as vmq_warden_hooks (reused from it), so the two are
%% compared call for call.
-module(warden_ref).

-export([init/1, reset/0, empty/0, empty/1]).
-export([auth_on_register/5, on_register/3, on_client_wakeup/1,
         on_client_offline/1, on_client_gone/1]).
-export([lookup/1, sessions/1, add_user/2, size/0]).

-define(IS_BYTE(X), (is_integer(X) andalso X >= 0 andalso X =< 255)).
-define(IS_WORD(X), (is_integer(X) andalso X >= 0 andalso X =< 65535)).
-define(T, warden_ref_sessions).
-define(USERS, warden_ref_users).
-define(RING, warden_ref_endings).
-define(CFG, {?MODULE, config}).
-define(GEN, {?MODULE, counters}).
-define(RING_SIZE, 1000).
%% counters slots
-define(C_GEN, 1).
-define(C_STALE, 2).
-define(C_TAKEN, 3).
-define(C_RING, 4).

%% Tuple positions of a session record:
%% {Key, State, Gen, Peer, User, Clean, Proto, First, LastConnect, LastChange,
%%  ConnectCount, Queue, Pending}
%% Pending = undefined | {Gen, ConnPid, Peer, User, Clean, Proto, Created}
-define(P_STATE, 2).
-define(P_QUEUE, 12).
-define(P_PENDING, 13).

%% @doc Opts: #{nets => ["10.0.0.0/8", ...], client_id_re => "^[a-z0-9-]+$",
%% allow_anonymous => true}.
init(Opts) ->
    [catch ets:delete(T) || T <- [?T, ?USERS, ?RING]],
    Owner = heir(),
    Conc = [{read_concurrency, true}, {write_concurrency, true}],
    ets:new(?T, [set, public, named_table, {heir, Owner, none} | Conc]),
    ets:new(?USERS, [set, public, named_table, {heir, Owner, none}, {read_concurrency, true}]),
    ets:new(?RING, [set, public, named_table, {heir, Owner, none}, {write_concurrency, true}]),
    ets:give_away(?T, Owner, none),
    ets:give_away(?USERS, Owner, none),
    ets:give_away(?RING, Owner, none),
    Nets = [parse_cidr(N) || N <- maps:get(nets, Opts, ["0.0.0.0/0"])],
    {ok, Re} = re:compile(maps:get(client_id_re, Opts, "^.*$")),
    persistent_term:put(?CFG, {Nets, Re, maps:get(allow_anonymous, Opts, true)}),
    persistent_term:put(?GEN, counters:new(4, [write_concurrency])),
    ok.

%% Tables survive the process that created them.
heir() ->
    case whereis(warden_ref_owner) of
        undefined ->
            Pid = spawn(fun() -> receive stop -> ok end end),
            register(warden_ref_owner, Pid),
            Pid;
        Pid -> Pid
    end.

reset() ->
    ets:delete_all_objects(?T),
    ets:delete_all_objects(?RING),
    ok.

size() -> ets:info(?T, size).

%% Baseline (1): an empty remote Erlang call.
empty() -> ok.
empty(_) -> ok.

%% A user with a $6$-style hash: SHA-512 over password ++ raw salt.
add_user(User, Password) ->
    Salt = crypto:strong_rand_bytes(12),
    ets:insert(?USERS, {User, Salt, crypto:hash(sha512, [Password, Salt])}),
    ok.

%%--------------------------------------------------------------------
%% Hooks
%%--------------------------------------------------------------------

auth_on_register(Peer, SubscriberId, User0, Password, Clean) ->
    Key = normalize_subscriber_id(SubscriberId),
    {Ip, Port} = normalize_peer(Peer),
    User = if is_binary(User0) -> User0; true -> undefined end,
    {Nets, Re, Anon} = persistent_term:get(?CFG),
    case peer_allowed(Ip, Nets) andalso client_id_ok(element(2, Key), Re)
        andalso password_ok(User, Password, Anon) of
        true ->
            auth_accepted(Key, self(), {Ip, Port}, User, Clean =:= true orelse Clean =:= 1, 3),
            ok;
        false ->
            {error, not_authorized}
    end.

on_register(Peer, SubscriberId, User) ->
    Key = normalize_subscriber_id(SubscriberId),
    registered(Key, self(), normalize_peer(Peer),
               if is_binary(User) -> User; true -> undefined end, 3),
    ok.

on_client_wakeup(SubscriberId) ->
    woke_up(normalize_subscriber_id(SubscriberId), self()), ok.
on_client_offline(SubscriberId) ->
    went_offline(normalize_subscriber_id(SubscriberId), self()), ok.
on_client_gone(SubscriberId) ->
    gone(normalize_subscriber_id(SubscriberId), self()), ok.

%%--------------------------------------------------------------------
%% Rules
%%--------------------------------------------------------------------

parse_cidr(S) ->
    [A, B] = string:split(S, "/"),
    {ok, {I1, I2, I3, I4}} = inet:parse_ipv4strict_address(A),
    Bits = list_to_integer(B),
    Mask = (16#FFFFFFFF bsl (32 - Bits)) band 16#FFFFFFFF,
    {((I1 bsl 24) bor (I2 bsl 16) bor (I3 bsl 8) bor I4) band Mask, Mask}.

peer_allowed({A, B, C, D}, Nets) ->
    Int = (A bsl 24) bor (B bsl 16) bor (C bsl 8) bor D,
    in_nets(Int, Nets);
peer_allowed(_, _) ->
    false.

in_nets(_, []) -> false;
in_nets(Int, [{Net, Mask} | Rest]) ->
    (Int band Mask) =:= Net orelse in_nets(Int, Rest).

client_id_ok(ClientId, Re) ->
    re:run(ClientId, Re, [{capture, none}]) =:= match.

%% No username or no password: the anonymous rule decides.
password_ok(undefined, _, Anon) -> Anon;
password_ok(_, undefined, Anon) -> Anon;
password_ok(User, Password, _) when is_binary(Password) ->
    case ets:lookup(?USERS, User) of
        [{_, Salt, Hash}] -> crypto:hash(sha512, [Password, Salt]) =:= Hash;
        [] -> false
    end;
password_ok(_, _, _) -> false.

%%--------------------------------------------------------------------
%% Registry state machine
%%--------------------------------------------------------------------

now_ms() -> erlang:system_time(millisecond).

new_gen() ->
    C = persistent_term:get(?GEN),
    counters:add(C, ?C_GEN, 1),
    counters:get(C, ?C_GEN).

bump(Slot) -> counters:add(persistent_term:get(?GEN), Slot, 1).

ending(Key, Gen, Reason, Peer, User) ->
    C = persistent_term:get(?GEN),
    counters:add(C, ?C_RING, 1),
    Slot = counters:get(C, ?C_RING) rem ?RING_SIZE,
    ets:insert(?RING, {Slot, Key, Gen, Reason, Peer, User, now_ms()}).

auth_accepted(Key, Conn, Peer, User, Clean, Proto) ->
    Now = now_ms(),
    Gen = new_gen(),
    Pending = {Gen, Conn, Peer, User, Clean, Proto, Now},
    case ets:lookup(?T, Key) of
        [] ->
            ets:insert(?T, {Key, authenticated, Gen, Peer, User, Clean, Proto,
                            Now, Now, Now, 0, undefined, Pending});
        [{_, offline, OldGen, OPeer, OUser, _, _, _, _, _, _, _, _} = R] when Clean ->
            %% A clean connect over an offline persistent session: discarded.
            ending(Key, OldGen, discarded, OPeer, OUser),
            ets:insert(?T, setelement(?P_QUEUE, setelement(?P_STATE,
                                     setelement(?P_PENDING, R, Pending), authenticated), undefined));
        [_] ->
            ets:update_element(?T, Key, {?P_PENDING, Pending})
    end.

%% Promote the pending connect to the current session.
promote(R, {PGen, _Conn, Peer, User, Clean, Proto, _}, Queue, Now) ->
    {Key, State, Gen, OPeer, OUser, _, _, First, _, _, Count, _, _} = R,
    State =:= online andalso begin bump(?C_TAKEN), ending(Key, Gen, taken_over, OPeer, OUser) end,
    ets:insert(?T, {Key, online, PGen, Peer, User, Clean, Proto, First, Now, Now,
                    Count + 1, Queue, undefined}).

woke_up(Key, Queue) ->
    Now = now_ms(),
    case ets:lookup(?T, Key) of
        [{_, _, _, _, _, _, _, _, _, _, _, _, Pending} = R] when Pending =/= undefined ->
            promote(R, Pending, Queue, Now);
        [{_, online, _, _, _, _, _, _, _, _, _, undefined, _}] ->
            ets:update_element(?T, Key, [{?P_QUEUE, Queue}, {10, Now}]);
        [{_, online, _, _, _, _, _, _, _, _, _, Queue, _}] ->
            duplicate;
        [{_, _, _, _, _, _, _, _, _, _, Count, _, _}] ->
            %% offline session resumed, or a session from another queue
            ets:update_element(?T, Key, [{?P_STATE, online}, {?P_QUEUE, Queue},
                                         {9, Now}, {10, Now}, {11, Count + 1}]);
        [] ->
            ets:insert(?T, {Key, online, new_gen(), undefined, undefined, false, 3,
                            Now, Now, Now, 1, Queue, undefined})
    end.

registered(Key, Conn, Peer, User, Proto) ->
    Now = now_ms(),
    case ets:lookup(?T, Key) of
        [{_, _, _, _, _, _, _, _, _, _, _, _, {_, Conn, _, _, _, _, _} = Pending} = R] ->
            promote(R, Pending, undefined, Now);
        [{_, _, _, _, _, _, _, _, _, _, _, _, {_, _, _, _, _, _, _}}] ->
            stale;
        [{_, online, _, _, _, _, _, _, _, _, _, _, _}] ->
            ets:update_element(?T, Key, [{4, Peer}, {5, User}, {7, Proto}, {10, Now}]);
        [_] ->
            ets:update_element(?T, Key, [{?P_STATE, online}, {4, Peer}, {5, User},
                                         {7, Proto}, {10, Now}]);
        [] ->
            ets:insert(?T, {Key, online, new_gen(), Peer, User, true, Proto,
                            Now, Now, Now, 1, undefined, undefined})
    end.

went_offline(Key, Queue) ->
    case ets:lookup(?T, Key) of
        [{_, online, Gen, Peer, User, _, _, _, _, _, _, Queue, _}] ->
            ending(Key, Gen, offline, Peer, User),
            ets:update_element(?T, Key, [{?P_STATE, offline}, {10, now_ms()}]);
        _ ->
            bump(?C_STALE), stale
    end.

gone(Key, Queue) ->
    case ets:lookup(?T, Key) of
        [{_, State, Gen, Peer, User, _, _, _, _, _, _, Queue, Pending}]
          when State =/= authenticated ->
            ending(Key, Gen, gone, Peer, User),
            case Pending of
                undefined -> ets:delete(?T, Key);
                _ -> ets:update_element(?T, Key, [{?P_STATE, authenticated},
                                                  {?P_QUEUE, undefined}])
            end;
        _ ->
            bump(?C_STALE), stale
    end.

%%--------------------------------------------------------------------
%% Operator reads
%%--------------------------------------------------------------------

lookup(SubscriberId) ->
    Key = normalize_subscriber_id(SubscriberId),
    case ets:lookup(?T, Key) of
        [R] -> {ok, to_map(R)};
        [] -> not_found
    end.

%% Filter by peer CIDR (IPv4) and/or state, in chunks of 1000 (ets:select/3
%% continuations), as an operator would to avoid one huge select.
sessions(Filter) ->
    Limit = maps:get(limit, Filter, 1000),
    StateM = maps:get(state, Filter, '_'),
    %% the CIDR test runs inside ETS, in the match spec guard
    Guards = case maps:get(peer, Filter, undefined) of
                 undefined -> [];
                 Cidr ->
                     {Net, Mask} = parse_cidr(Cidr),
                     Int = {'bor', {'bor', {'bsl', {element, 1, '$1'}, 24},
                                            {'bsl', {element, 2, '$1'}, 16}},
                                   {'bor', {'bsl', {element, 3, '$1'}, 8}, {element, 4, '$1'}}},
                     [{is_tuple, '$1'}, {'=:=', {size, '$1'}, 4},
                      {'=:=', {'band', Int, Mask}, Net}]
             end,
    MS = [{{'_', StateM, '_', {'$1', '_'}, '_', '_', '_', '_', '_', '_', '_', '_', '_'},
           Guards, ['$_']}],
    collect(ets:select(?T, MS, 1000), Limit, []).

collect(_, 0, Acc) -> Acc;
collect('$end_of_table', _, Acc) -> Acc;
collect({Rs, Cont}, Limit, Acc) ->
    {Acc1, Left} = keep(Rs, Limit, Acc),
    collect(ets:select(Cont), Left, Acc1).

keep([], Left, Acc) -> {Acc, Left};
keep(_, 0, Acc) -> {Acc, 0};
keep([R | Rs], Left, Acc) -> keep(Rs, Left - 1, [to_map(R) | Acc]).

to_map({{Mp, Cid}, State, Gen, Peer, User, Clean, Proto, First, Last, Change, Count, Queue, _}) ->
    #{mountpoint => Mp, client_id => Cid, state => State, generation => Gen,
      peer => Peer, username => User, clean_session => Clean, protocol => Proto,
      first_connect => First, last_connect => Last, last_change => Change,
      connect_count => Count, queue => Queue, node => node()}.

%%--------------------------------------------------------------------
%% Normalisation of the hooks' arguments, as an Erlang plugin does it
%% (vmq_warden itself decodes them in the NIF)
%%--------------------------------------------------------------------

%% Mountpoint is a charlist (usually ""), client id a binary. Anything else
%% is `badarg': the auth hooks answer it with the failure decision and the
%% lifecycle hooks ignore it (logged). It is never mapped to some other,
%% valid subscriber id.
-spec normalize_subscriber_id(term()) -> {binary(), binary()}.
normalize_subscriber_id({Mountpoint, ClientId}) when is_binary(ClientId) ->
    {mountpoint(Mountpoint), ClientId};
normalize_subscriber_id(_) ->
    error(badarg).

%% The usual mountpoint first: profiled, unicode:characters_to_binary/1 of
%% "" was the most expensive step of a lifecycle hook on the Erlang side.
mountpoint([]) -> <<>>;
mountpoint(B) when is_binary(B) -> B;
mountpoint(L) when is_list(L) ->
    case unicode:characters_to_binary(L) of
        B when is_binary(B) -> B;
        _ -> error(badarg)
    end;
mountpoint(_) ->
    error(badarg).

-spec normalize_peer(term()) -> {inet:ip_address() | undefined, inet:port_number() | undefined}.
normalize_peer({Ip, Port}) ->
    {ip_or_undefined(Ip), int_or_undefined(Port)};
normalize_peer(_) ->
    {undefined, undefined}.

ip_or_undefined({A, B, C, D} = Ip)
  when ?IS_BYTE(A), ?IS_BYTE(B), ?IS_BYTE(C), ?IS_BYTE(D) -> Ip;
ip_or_undefined({A, B, C, D, E, F, G, H} = Ip)
  when ?IS_WORD(A), ?IS_WORD(B), ?IS_WORD(C), ?IS_WORD(D),
       ?IS_WORD(E), ?IS_WORD(F), ?IS_WORD(G), ?IS_WORD(H) -> Ip;
ip_or_undefined(_) -> undefined.

int_or_undefined(I) when is_integer(I), I >= 0, I =< 65535 -> I;
int_or_undefined(_) -> undefined.
