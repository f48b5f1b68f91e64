%% @doc The NIF stub module. Its `-on_load' attaches the native library to
%% every instance of the module that gets loaded, because VerneMQ's plugin
%% manager reloads every module of a plugin right after starting it (see
%% docs/VERNEMQ.md, "How a plugin is started"): the fresh instance finds
%% the library still held by the previous one, and the library's `upgrade'
%% callback (native/warden_nif/src/entry.rs) lets it share that library,
%% registry and all. A missing or broken library does not stop the module
%% from loading: its functions stay stubs that raise `nif_not_loaded', the
%% hook wrappers turn that into the configured failure decision, and the
%% cause is logged once per load and kept for `vmq_warden:stats()'.
-module(vmq_warden_nif).

-on_load(attach/0).

-export([load/0, loaded/0, load_error/0]).
-export([set_obfuscation/4]).
-export([ping/0, noop/0, memory/0,
         auth_begin/1, auth_password/2, auth_password_slow/1, auth_busy/1, slow_slots/1, slow_slots_info/0,
         registered/4, queue_event/2, reconcile/3,
         configure/1, load_files/2,
         lookup/1, list_chunk/3, counts/0, stats/0, recent_endings/1, sweep/0, reset/0,
         bans/0, clear_bans/1,
         cluster_set_key/1, cluster_key_check/0, cluster_configure/2, cluster_local_changes/1,
         cluster_local_counts/1, cluster_apply/2, cluster_drop_node/1, cluster_remote_nodes/0,
         cluster_remote_count/1, cluster_reset/0, cluster_stats/0, restore_session/3,
         drain_logs/1, debug_panic/0,
         events_configure/3, take_events/1, events_stats/0, kick_record/4, kick_cleaned/3,
         expire_credentials_record/3, max_session_age/1, max_sessions/1, recheck_session/7,
         call_times_start/0, call_times_stop/0, call_times/0, calibrate/1,
         evict_caches/1, floor_auth_begin/1, floor_registered/4, floor_queue_event/2]).

-define(NOT_LOADED, erlang:nif_error(nif_not_loaded)).
-define(ATTACH_ERROR, {?MODULE, attach_error}).

%% Runs in every new instance of this module. Always `ok', so that the
%% module loads (with stubs) even when the library cannot be attached. A
%% first attach that fails is reported by the application's start; an
%% instance that replaces one that had the library and cannot attach it
%% (the failure this on_load exists to prevent) is logged here.
attach() ->
    Path = lib_path(),
    %% During on_load, calls by module name still reach the previous
    %% instance, if there is one.
    HadLibrary = erlang:module_loaded(?MODULE) andalso ?MODULE:loaded(),
    Error = case erlang:load_nif(Path, 0) of
                ok -> none;
                {error, {Kind, Text}} -> {nif_load_failed, Path, Kind, Text}
            end,
    %% An equal value is not written again (no global GC on reloads).
    persistent_term:get(?ATTACH_ERROR, none) =:= Error
        orelse persistent_term:put(?ATTACH_ERROR, Error),
    HadLibrary andalso Error =/= none andalso
        logger:error(#{msg => "vmq_warden: NIF library not loaded into the new code of "
                              "vmq_warden_nif; every auth hook answers with the failure decision",
                       reason => Error},
                     vmq_warden_log:meta(error)),
    ok.

%% `ok' when this instance has its native functions, else why not.
-spec load() -> ok | {error, term()}.
load() ->
    case loaded() of
        true -> ok;
        false -> {error, load_error()}
    end.

%% Why the last attach failed (`none' if it did not), kept for stats().
-spec load_error() -> term().
load_error() ->
    case loaded() of
        true -> none;
        false -> persistent_term:get(?ATTACH_ERROR, nif_not_loaded)
    end.

%% The library path; `vmq_warden.nif_path' in the app env overrides it (tests
%% use that to simulate a missing library).
lib_path() ->
    case application:get_env(vmq_warden, nif_path) of
        {ok, Path} -> Path;
        undefined ->
            Priv = case code:priv_dir(vmq_warden) of
                       {error, bad_name} ->
                           filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
                       Dir -> Dir
                   end,
            filename:join(Priv, "vmq_warden_nif")
    end.

-spec loaded() -> boolean().
loaded() ->
    try ping() of
        <<"pong">> -> true;
        _ -> false
    catch
        error:nif_not_loaded -> false;
        error:undef -> false
    end.

ping() -> ?NOT_LOADED.

%% The slow-verification semaphore (native/warden_nif/src/hooks.rs).
auth_busy(_Token) -> ?NOT_LOADED.
slow_slots(_N) -> ?NOT_LOADED.
slow_slots_info() -> ?NOT_LOADED.

%% The bytes the Rust side holds on its heap (counted by its global allocator).
memory() -> ?NOT_LOADED.

%% Diagnostics, only in a library built with the cargo feature
%% `diagnostics' (`make test', `make bench'; native/warden_nif/src/
%% diagnostics.rs): an empty NIF (the benchmark's baseline), the wall and
%% thread CPU time of every NIF call while on (tells a NIF that kept its
%% scheduler > 1 ms from an OS that preempted it), and a Rust panic inside a
%% NIF (tests show Rustler turns it into an Erlang error and the VM and the
%% hooks survive), and a cache evictor (the broker bench's stand-in for the
%% broker's own work between two hooks), and the hook NIFs' floor (their
%% argument decoding and answer, without the core: the broker bench's floor
%% pass). In the shipped library they stay these stubs.
noop() -> ?NOT_LOADED.
debug_panic() -> ?NOT_LOADED.
call_times_start() -> ?NOT_LOADED.
call_times_stop() -> ?NOT_LOADED.
call_times() -> ?NOT_LOADED.
calibrate(_Rounds) -> ?NOT_LOADED.
evict_caches(_KiB) -> ?NOT_LOADED.
floor_auth_begin(_Request) -> ?NOT_LOADED.
floor_registered(_Proto, _Peer, _SubscriberId, _User) -> ?NOT_LOADED.
floor_queue_event(_Event, _SubscriberId) -> ?NOT_LOADED.

%% Hooks, with the broker's own arguments (see vmq_warden_hooks).
%% {Proto, Peer, SubscriberId, User, Password, Clean, Properties, Meta}
auth_begin(_Request) -> ?NOT_LOADED.
auth_password(_Ctx, _Password) -> ?NOT_LOADED.
auth_password_slow(_Ctx) -> ?NOT_LOADED.
%% credentials_obfuscation's settings, to decrypt {encrypted, _} passwords in place.
set_obfuscation(_Cipher, _Hash, _Iterations, _Secret) -> ?NOT_LOADED.
%% From the connection process: 3 | 5, Peer, SubscriberId, User.
registered(_Proto, _Peer, _SubscriberId, _User) -> ?NOT_LOADED.
%% From the queue process: wakeup | offline | gone | expired.
queue_event(_Event, _SubscriberId) -> ?NOT_LOADED.
%% The reconciler's correction: absent | offline | online, last_change as read.
reconcile(_SubscriberId, _BrokerState, _SeenChange) -> ?NOT_LOADED.

%% Configuration (vmq_warden_config).
configure(_Settings) -> ?NOT_LOADED.
load_files(_PolicyPath, _PasswordPath) -> ?NOT_LOADED.

%% Registry and firewall state (vmq_warden).
lookup(_SubscriberId) -> ?NOT_LOADED.
%% {Rows, Cursor | done}: one bounded piece of a listing, from `start' or the
%% cursor of the previous piece (vmq_warden:sessions/1 loops them).
list_chunk(_FilterSpec, _Cursor, _Limit) -> ?NOT_LOADED.
counts() -> ?NOT_LOADED.
stats() -> ?NOT_LOADED.
recent_endings(_Limit) -> ?NOT_LOADED.
sweep() -> ?NOT_LOADED.
reset() -> ?NOT_LOADED.
bans() -> ?NOT_LOADED.
clear_bans(_Selector) -> ?NOT_LOADED.

%% The event stream (vmq_warden_events, native/warden_nif/src/events.rs).
events_configure(_Enabled, _MaxBytes, _Node) -> ?NOT_LOADED.
%% [{Kind, Mountpoint, ClientId, Json}], oldest first, at most 200.
take_events(_Max) -> ?NOT_LOADED.
events_stats() -> ?NOT_LOADED.
%% Records the current session's ending `kicked' (vmq_warden:kick/2).
kick_record(_Mountpoint, _ClientId, _GenerationOrUndefined, _By) -> ?NOT_LOADED.
kick_cleaned(_Mountpoint, _ClientId, _Generation) -> ?NOT_LOADED.
%% Credential lifetime (vmq_warden_enforcer): the ending, and the policy's limit.
expire_credentials_record(_Mountpoint, _ClientId, _Generation) -> ?NOT_LOADED.
max_session_age(_Username) -> ?NOT_LOADED.
max_sessions(_Username) -> ?NOT_LOADED.
%% Enforce on reload: ok | {refuse, Code, Rule} for a live session.
recheck_session(_Mountpoint, _ClientId, _Username, _Ip, _Port, _Protocol, _LoggedInAt) -> ?NOT_LOADED.
%% The cluster's per-user counts (vmq_warden_cluster_sync,
%% native/warden_nif/src/cluster.rs).
cluster_set_key(_Key32) -> ?NOT_LOADED.
cluster_key_check() -> ?NOT_LOADED.
cluster_configure(_TrackChanges, _MaxBytes) -> ?NOT_LOADED.
cluster_local_changes(_Max) -> ?NOT_LOADED.
cluster_local_counts(_Shard) -> ?NOT_LOADED.
cluster_apply(_NodeBin, _Counts) -> ?NOT_LOADED.
cluster_drop_node(_NodeBin) -> ?NOT_LOADED.
cluster_remote_nodes() -> ?NOT_LOADED.
cluster_remote_count(_Username) -> ?NOT_LOADED.
cluster_reset() -> ?NOT_LOADED.
cluster_stats() -> ?NOT_LOADED.
%% The rebuild after a restart (vmq_warden_rebuild): restored | kept.
restore_session(_SubscriberId, _QueuePid, _Online) -> ?NOT_LOADED.

%% Logging bridge (vmq_warden_log).
drain_logs(_Max) -> ?NOT_LOADED.
