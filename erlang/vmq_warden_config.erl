%% @doc The plugin's settings: read from the application environment (which
%% cuttlefish fills from vernemq.conf, see priv/vmq_warden.schema), checked,
%% and handed to the Rust core; policy and password files loaded from disk.
-module(vmq_warden_config).

-export([defaults/0, settings/0, native_settings/1, apply/0, reload/0, watched_files/0]).

-include_lib("kernel/include/logger.hrl").

%% Every setting with its default (docs/DESIGN.md, README "Settings").
-spec defaults() -> #{atom() => term()}.
defaults() ->
    #{policy_file => undefined,
      password_file => undefined,
      reload_interval => 5000,
      failure_decision => deny,
      unknown_user => next,
      default_decision => next,
      allow_anonymous => false,
      auth_cache_size => 10000,
      auth_cache_ttl => 60000,
      auth_fail_ttl => 5000,
      rate_per_peer => 0,
      burst_per_peer => 10,
      rate_per_user => 0,
      burst_per_user => 10,
      ban_threshold => 10,
      ban_users => false,
      ban_window => 60000,
      ban_duration => 300000,
      history_size => 1000,
      pending_ttl => 60000,
      reconcile_interval => 60000,
      log_level => info,
      events_enabled => false,
      events_queue_bytes => 1048576,
      events_drain_interval => 100,
      events_mqtt => false,
      events_mqtt_prefix => "warden/events",
      events_webhook => false,
      events_webhook_url => "http://127.0.0.1:8080/warden/events",
      events_webhook_queue => 10000,
      events_webhook_batch => 100,
      events_webhook_timeout => 5000,
      credential_check_interval => 0,
      enforce_on_reload => false,
      cluster_query_timeout => 2000,
      cluster_sync_interval => 1000,
      cluster_counts_max_bytes => 16777216}.

%% @doc The effective settings, or the first invalid one.
-spec settings() -> {ok, #{atom() => term()}} | {error, {invalid_setting, atom(), term()}}.
settings() ->
    Defaults = defaults(),
    maps:fold(fun(_Key, _Default, {error, _} = E) -> E;
                 (Key, Default, {ok, Acc}) ->
                      Value = application:get_env(vmq_warden, Key, Default),
                      case valid(Key, Value) of
                          true -> {ok, Acc#{Key => Value}};
                          false -> {error, {invalid_setting, Key, Value}}
                      end
              end, {ok, #{}}, Defaults).

valid(K, V) when K =:= policy_file; K =:= password_file ->
    V =:= undefined orelse io_lib:char_list(V) orelse is_binary(V);
valid(failure_decision, V) -> lists:member(V, [deny, next]);
valid(unknown_user, V) -> lists:member(V, [next, deny]);
valid(default_decision, V) -> lists:member(V, [allow, deny, next]);
valid(K, V) when K =:= allow_anonymous; K =:= ban_users; K =:= events_enabled; K =:= enforce_on_reload;
                 K =:= events_mqtt; K =:= events_webhook -> is_boolean(V);
valid(events_mqtt_prefix, V) -> (io_lib:char_list(V) orelse is_binary(V)) andalso V =/= "" andalso V =/= <<>>;
valid(events_webhook_url, V) ->
    (io_lib:char_list(V) orelse is_binary(V))
        andalso lists:any(fun(P) -> string:prefix(V, P) =/= nomatch end, ["http://", "https://"]);
valid(K, V) when K =:= events_queue_bytes; K =:= events_drain_interval; K =:= events_webhook_queue;
                 K =:= events_webhook_batch; K =:= events_webhook_timeout ->
    is_integer(V) andalso V > 0;
valid(log_level, V) -> lists:member(V, [debug, info, notice, warning, error]);
valid(K, V) when K =:= rate_per_peer; K =:= rate_per_user -> is_number(V) andalso V >= 0;
valid(_, V) -> is_integer(V) andalso V >= 0.

%% @doc Push the settings into the Rust core and load the files. A bad
%% setting changes nothing; a bad file keeps the running policy.
-spec apply() -> ok | {error, term()}.
apply() ->
    case settings() of
        {ok, Settings} ->
            case vmq_warden_nif:configure(native_settings(Settings)) of
                ok ->
                    _ = vmq_warden_nif:slow_slots(slow_slots()),
                    load_files(Settings);
                {error, _} = Error ->
                    Error
            end;
        {error, _} = Error ->
            Error
    end.

%% How many slow password verifications (bcrypt, argon2, costly PBKDF2) may
%% run at once: all dirty CPU schedulers but one, so the broker always has
%% one (docs/POLICY.md, "Cost budget").
%% The settings the native side takes: all but those only this side
%% reads. The NIF refuses a name it does not know, so a setting added here
%% and forgotten there fails every start of the test suites.
-spec native_settings(#{atom() => term()}) -> #{atom() => term()}.
native_settings(Settings) ->
    maps:without([policy_file, password_file, reload_interval, failure_decision,
                  reconcile_interval,
                  %% the event stream and its sinks (vmq_warden_events) and
                  %% the enforcer (vmq_warden_enforcer)
                  events_enabled, events_queue_bytes, events_drain_interval,
                  events_mqtt, events_mqtt_prefix, events_webhook, events_webhook_url,
                  events_webhook_queue, events_webhook_batch, events_webhook_timeout,
                  credential_check_interval, enforce_on_reload,
                  %% the cluster processes (vmq_warden_cluster, _cluster_sync)
                  cluster_query_timeout, cluster_sync_interval, cluster_counts_max_bytes],
                 Settings).

-spec slow_slots() -> pos_integer().
slow_slots() ->
    max(1, erlang:system_info(dirty_cpu_schedulers_online) - 1).

%% After a successful reload with `enforce_on_reload' on, the live sessions
%% are re-checked against the new policy (vmq_warden_enforcer, a message:
%% the reload does not wait for it).
-spec reload() -> ok | {error, term()}.
reload() ->
    try apply() of
        ok ->
            _ = application:get_env(vmq_warden, enforce_on_reload, false) =:= true
                andalso vmq_warden_enforcer:enforce() =:= ok,
            ok;
        Error ->
            Error
    catch
        error:nif_not_loaded -> {error, nif_not_loaded}
    end.

load_files(#{policy_file := Policy, password_file := Passwd}) ->
    case vmq_warden_nif:load_files(path(Policy), path(Passwd)) of
        {ok, Report} ->
            log_report(Report),
            ok;
        {error, Reason} ->
            ?LOG_ERROR(#{msg => "vmq_warden: policy not loaded, the running one stays",
                         reason => Reason}, vmq_warden_log:meta(error)),
            {error, Reason}
    end.

log_report(#{warnings := Warnings} = Report) ->
    %% a skipped line, or a file others may read
    _ = [?LOG_WARNING(#{msg => "vmq_warden: password file warning", warning => W},
                  vmq_warden_log:meta(warning)) || W <- Warnings],
    ?LOG_INFO(#{msg => "vmq_warden: policy loaded", report => maps:remove(warnings, Report)},
              vmq_warden_log:meta(info));
log_report(_) ->
    ok.

path(undefined) -> undefined;
path(P) when is_list(P) -> unicode:characters_to_binary(P);
path(P) when is_binary(P) -> P.

%% @doc The files the reloader watches for changes.
-spec watched_files() -> [file:filename()].
watched_files() ->
    [F || Key <- [policy_file, password_file],
          F <- [application:get_env(vmq_warden, Key, undefined)],
          F =/= undefined].
